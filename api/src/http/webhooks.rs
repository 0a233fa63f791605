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

use actix_web::{web, HttpRequest, HttpResponse};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use till_domain::commands::Settlement;
use till_domain::types::OrderId;
use till_domain::DomainError;

use crate::app::AppData;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "till-signature";
const PROVIDER: &str = "payments";

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// Computes the `v1` signature of a payload (also used by tests and the docs' recipe).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    mac(secret, timestamp, body)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Checks a `t=..,v1=..` header against the body; constant-time comparison.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_s: i64,
) -> Result<(), &'static str> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(v.to_owned()),
            _ => {}
        }
    }
    let t = t.ok_or("the signature has no timestamp")?;
    if (now - t).abs() > tolerance_s {
        return Err("the signature's timestamp is outside the tolerance");
    }
    for sig in sigs {
        let Ok(expected) = hex::decode(&sig) else {
            continue;
        };
        let Some(mac) = mac(secret, t, body) else {
            return Err("no webhook secret");
        };
        if mac.verify_slice(&expected).is_ok() {
            return Ok(());
        }
    }
    Err("the signature does not match")
}

fn refuse(status: actix_web::http::StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message }))
}

/// `POST /webhooks/payments`.
pub async fn payments(
    req: HttpRequest,
    body: web::Bytes,
    data: web::Data<Arc<AppData>>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let Some(secret) = &data.payment_webhook_secret else {
        return refuse(StatusCode::NOT_FOUND, "payment webhooks are not configured");
    };
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
        tracing::warn!(why, "payment webhook refused");
        return refuse(StatusCode::BAD_REQUEST, why);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_bad_ones_do_not() {
        let secret = b"whsec_test";
        let body = br#"{"id":"evt_1"}"#;
        let sig = sign(secret, 1000, body);
        let header = format!("t=1000,v1={sig}");
        assert!(verify(secret, &header, body, 1010, 300).is_ok());
        assert!(verify(secret, &header, body, 2000, 300).is_err(), "too old");
        assert!(verify(secret, &header, br#"{"id":"evt_2"}"#, 1010, 300).is_err());
        assert!(verify(b"other", &header, body, 1010, 300).is_err());
        assert!(verify(secret, &format!("v1={sig}"), body, 1010, 300).is_err());
        // Several v1 values (secret rotation): any match passes.
        assert!(verify(secret, &format!("t=1000,v1=00,v1={sig}"), body, 1010, 300).is_ok());
    }
}
