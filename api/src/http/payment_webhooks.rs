//! Inbound payment-provider webhooks at `POST /webhooks/payments`.
//!
//! Signature: header `Till-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"<t>.<raw body>"` with the shared secret (`TILL_PAYMENT_WEBHOOK_SECRET`); `t` must
//! be within the tolerance of now (replays of old deliveries fail). Events are
//! deduplicated by their `id` and settle the order through the same idempotent path as
//! the capture job, so whichever arrives first wins and the other is a no-op.
//!
//! Body: `{"id": "evt_..", "type": "charge.succeeded" | "charge.failed",
//!         "data": {"orderId": "<uuid>", "chargeId": "..", "reason": ".."}}`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::header::RETRY_AFTER;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use till_domain::commands::Settlement;
use till_domain::types::OrderId;
use till_domain::DomainError;

use crate::auth::Principal;
use crate::http::state::AppData;
use crate::webhook_signatures::{verify, SIGNATURE_HEADER};

const PROVIDER: &str = "payments";

fn refuse(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message }))
}

/// `POST /webhooks/payments`.
pub async fn payments(
    req: HttpRequest,
    body: web::Bytes,
    data: web::Data<Arc<AppData>>,
) -> HttpResponse {
    let Some(secret) = &data.payment_webhook_secret else {
        return refuse(StatusCode::NOT_FOUND, "payment webhooks are not configured");
    };
    // Charged before anything is verified: a caller without the secret pays too.
    if let Some(limiter) = &data.webhook_rate {
        let client = crate::http::clients::client_ip(&req, &data.trusted_proxies);
        let charge = limiter.charge(&Principal::Anonymous, client, 1);
        if let Some(wait) = charge.retry_after {
            metrics::counter!("till_throttled_requests_total", "class" => "webhook").increment(1);
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            return HttpResponse::TooManyRequests()
                .insert_header((RETRY_AFTER, secs.to_string()))
                .json(json!({ "error": format!("too many webhook deliveries from this address; retry in {secs} s") }));
        }
    }
    let header = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if let Err(why) = verify(
        secret.expose().as_bytes(),
        header,
        &body,
        now,
        data.payment_webhook_tolerance_s,
    ) {
        tracing::warn!(%why, "payment webhook refused");
        return refuse(StatusCode::BAD_REQUEST, &why.to_string());
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let Some(event_id) = event["id"]
        .as_str()
        .filter(|s| !s.is_empty() && s.len() <= 255)
    else {
        return refuse(StatusCode::BAD_REQUEST, "the event has no id");
    };
    let commands = &data.api.commands;
    match commands.webhook_seen(PROVIDER, event_id).await {
        Ok(true) => return HttpResponse::Ok().json(json!({ "received": true, "duplicate": true })),
        Ok(false) => {}
        Err(e) => return unavailable(&e),
    }
    let order = event["data"]["orderId"]
        .as_str()
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .map(OrderId);
    let settlement = match (event["type"].as_str(), order) {
        (Some("charge.succeeded"), Some(order)) => Some((
            order,
            Settlement::Captured {
                charge_id: event["data"]["chargeId"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_owned(),
            },
        )),
        (Some("charge.failed"), Some(order)) => Some((
            order,
            Settlement::Declined {
                reason: event["data"]["reason"]
                    .as_str()
                    .unwrap_or("declined")
                    .to_owned(),
            },
        )),
        (Some("charge.succeeded" | "charge.failed"), None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "data.orderId is missing or not a UUID",
            )
        }
        // Other event types are acknowledged and ignored.
        _ => None,
    };
    if let Some((order, settlement)) = settlement {
        match commands.settle_payment(order, settlement).await {
            Ok(_) => {}
            Err(DomainError::NotFound { .. }) => {
                return refuse(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "no payment for that order",
                )
            }
            Err(DomainError::InvalidState(m)) => {
                // The order went another way (cancelled, expired): acknowledge, log.
                tracing::warn!(%order, reason = %m, "payment webhook for a settled order");
            }
            Err(e) => return unavailable(&e),
        }
    }
    if let Err(e) = commands.record_webhook(PROVIDER, event_id).await {
        return unavailable(&e);
    }
    HttpResponse::Ok().json(json!({ "received": true }))
}

fn unavailable(e: &DomainError) -> HttpResponse {
    tracing::warn!(error = %e, "payment webhook could not be processed");
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "5"))
        .json(json!({ "error": "temporarily unavailable; retry" }))
}
