//! `Idempotency-Key` on mutations (Stripe semantics): keyed by (principal, key); the
//! first request's command claims the key in its own transaction and records its
//! outcome there; the full response is stored right after. A retry of the same request
//! replays the stored response (`Idempotent-Replayed: true`); the same key with another
//! request is IDEMPOTENCY_KEY_REUSED; a duplicate that arrives while the first runs
//! waits for it (the claim blocks), then replays. When the first request died between
//! its commit and storing its response, the replay renders the response again from the
//! recorded outcome without running the command again.

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use async_graphql::BatchResponse;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use till_domain::idempotency::{self, ClaimConflict, IdempotencyClaim, StoredKey};

use super::{from_json, refusal, render, request_error, Media};
use crate::auth::Principal;
use crate::graphql::error::Code;
use crate::graphql::{Replay, RequestInfo};
use crate::http::state::AppData;

/// The header clients send.
pub const HEADER: &str = "idempotency-key";

/// How long a replay waits for the first request to store its response.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(2);

/// Reads and validates the key: 1-255 visible ASCII characters.
pub fn key_from(req: &HttpRequest) -> Result<Option<String>, &'static str> {
    let Some(raw) = req.headers().get(HEADER) else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .map_err(|_| "Idempotency-Key must be visible ASCII")?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err("Idempotency-Key must be 1 to 255 visible ASCII characters");
    }
    Ok(Some(key.to_owned()))
}

/// Hash of what makes two requests the same: the document as resolved (the text a
/// persisted-query hash stands for, so hash-only and full-text sends of one document
/// agree and two documents never do), operation name and variables.
fn fingerprint(document: &str, body: &Value) -> String {
    let canonical = json!({
        "query": document,
        "operationName": body.get("operationName"),
        "variables": body.get("variables"),
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn principal_key(p: &Principal) -> String {
    match p {
        Principal::User { id, .. } => format!("user:{id}"),
        Principal::Anonymous => "anonymous".into(),
    }
}

fn unavailable(media: Media) -> HttpResponse {
    request_error(
        StatusCode::SERVICE_UNAVAILABLE,
        media,
        Code::ServiceUnavailable,
        "the service is temporarily unavailable; retry shortly",
    )
}

fn replayed(media: Media, body: &Value) -> HttpResponse {
    metrics::counter!("till_idempotent_replays_total").increment(1);
    let mut r = HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, media.content_type()))
        .json(body);
    r.headers_mut().insert(
        header::HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    r
}

/// Runs one POSTed request under an idempotency key.
pub(super) async fn run(
    data: &AppData,
    media: Media,
    info: RequestInfo,
    key: &str,
    body: Value,
) -> HttpResponse {
    let principal = principal_key(&info.principal);
    let request = match from_json(body.clone(), &data.graphql.documents) {
        Ok(r) => r,
        Err(r) => return refusal(media, &r),
    };
    let fp = fingerprint(&request.request.query, &body);
    // A stored key answers at once.
    match idempotency::lookup(&data.pool, &principal, key).await {
        Ok(Some(stored)) => {
            return replay(data, media, &info, &principal, key, &fp, stored, &body).await
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "idempotency lookup failed");
            return unavailable(media);
        }
    }
    let claim = IdempotencyClaim::new(
        principal.clone(),
        key.to_owned(),
        fp.clone(),
        data.idempotency_ttl,
    );
    let mut claimed = info.clone();
    claimed.idempotency = Some(claim.clone());
    let response = data.graphql.execute_one(request, &claimed).await;
    match claim.conflict() {
        None => {
            if let Ok(v) = serde_json::to_value(&response) {
                // Stored only when this request's command committed the key.
                if let Err(e) =
                    idempotency::store_response(&data.pool, &principal, key, &fp, v).await
                {
                    tracing::warn!(error = %e, "could not store the idempotent response");
                }
            }
            render(media, true, &BatchResponse::Single(response))
        }
        Some(ClaimConflict::KeyReused) => key_reused(media),
        Some(ClaimConflict::Replay) => match idempotency::lookup(&data.pool, &principal, key).await
        {
            Ok(Some(stored)) => {
                replay(data, media, &info, &principal, key, &fp, stored, &body).await
            }
            Ok(None) => in_progress(media),
            Err(_) => unavailable(media),
        },
    }
}

fn key_reused(media: Media) -> HttpResponse {
    request_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        media,
        Code::IdempotencyKeyReused,
        "this Idempotency-Key was used for a different request",
    )
}

fn in_progress(media: Media) -> HttpResponse {
    let mut r = request_error(
        StatusCode::CONFLICT,
        media,
        Code::IdempotencyInProgress,
        "a request with this Idempotency-Key is still in progress; retry shortly",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

#[allow(clippy::too_many_arguments)]
async fn replay(
    data: &AppData,
    media: Media,
    info: &RequestInfo,
    principal: &str,
    key: &str,
    fp: &str,
    mut stored: StoredKey,
    body: &Value,
) -> HttpResponse {
    if stored.fingerprint != fp {
        return key_reused(media);
    }
    // The first request may still be writing its response: give it a moment.
    let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
    while stored.response.is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
        match idempotency::lookup(&data.pool, principal, key).await {
            Ok(Some(s)) => stored = s,
            Ok(None) => return in_progress(media),
            Err(_) => return unavailable(media),
        }
    }
    if let Some(response) = &stored.response {
        return replayed(media, response);
    }
    let Some(outcome) = stored.outcome.clone() else {
        return in_progress(media);
    };
    // The first request committed but never stored its response (it died, or is
    // stuck): render it again from the recorded outcome, without the command.
    let request = match from_json(body.clone(), &data.graphql.documents) {
        Ok(r) => r.data(Replay(outcome)),
        Err(r) => return refusal(media, &r),
    };
    let response = data.graphql.execute_one(request, info).await;
    let value = match serde_json::to_value(&response) {
        Ok(v) => v,
        Err(_) => return unavailable(media),
    };
    if let Err(e) = idempotency::store_response(&data.pool, principal, key, fp, value.clone()).await
    {
        tracing::warn!(error = %e, "could not store the re-rendered response");
    }
    replayed(media, &value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_ignore_key_order_but_not_values() {
        let doc = "mutation { x }";
        let a = json!({"query": doc, "variables": {"a": 1, "b": 2}});
        let b = json!({"variables": {"b": 2, "a": 1}, "query": doc});
        let c = json!({"query": doc, "variables": {"a": 1, "b": 3}});
        assert_eq!(fingerprint(doc, &a), fingerprint(doc, &b));
        assert_ne!(fingerprint(doc, &a), fingerprint(doc, &c));
    }

    #[test]
    fn fingerprints_are_of_the_resolved_document_not_the_body_text() {
        let vars = json!({"variables": {"a": 1}});
        let hash_only = json!({"variables": {"a": 1},
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": "ab"}}});
        assert_eq!(
            fingerprint("mutation { x }", &vars),
            fingerprint("mutation { x }", &hash_only)
        );
        assert_ne!(
            fingerprint("mutation { x }", &hash_only),
            fingerprint("mutation { y }", &hash_only)
        );
    }
}
