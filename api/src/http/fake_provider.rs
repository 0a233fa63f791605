//! A small fake payment provider served by `till` itself in dev mode, so the whole
//! payment flow works with no account anywhere (`TILL_PAYMENT_PROVIDER_URL` unset).
//!
//! `POST /fake-provider/charges` with `Idempotency-Key`: token `tok_ok` succeeds,
//! `tok_declined` is declined (402), `tok_flaky` fails with 503 on its first two
//! attempts per key and then succeeds; anything else is 400. The same key always gets
//! the same charge id: a retried capture is one logical charge.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

/// Per-key state of the fake provider (bounded).
pub struct FakeProvider {
    charges: moka::sync::Cache<String, (u32, String)>,
}

impl Default for FakeProvider {
    fn default() -> Self {
        Self {
            charges: moka::sync::Cache::builder().max_capacity(10_000).build(),
        }
    }
}

#[derive(Deserialize)]
pub(super) struct ChargeRequest {
    amount: i64,
    currency: String,
    source: String,
}

/// `POST /fake-provider/charges`.
pub(super) async fn charges(
    req: HttpRequest,
    body: web::Json<ChargeRequest>,
    data: web::Data<std::sync::Arc<crate::app::AppData>>,
) -> HttpResponse {
    let Some(state) = &data.fake_provider else {
        return HttpResponse::NotFound().finish();
    };
    let Some(key) = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
    else {
        return HttpResponse::BadRequest()
            .json(json!({ "error": { "code": "idempotency_key_required" } }));
    };
    if body.amount <= 0 || body.currency.trim().len() != 3 {
        return HttpResponse::BadRequest().json(json!({ "error": { "code": "invalid_amount" } }));
    }
    let entry = state
        .charges
        .get(key)
        .unwrap_or_else(|| (0, format!("ch_{}", uuid::Uuid::new_v4().simple())));
    let attempts = entry.0 + 1;
    state
        .charges
        .insert(key.to_owned(), (attempts, entry.1.clone()));
    match body.source.as_str() {
        "tok_ok" => HttpResponse::Ok()
            .json(json!({ "id": entry.1, "status": "succeeded", "amount": body.amount })),
        "tok_flaky" if attempts <= 2 => {
            HttpResponse::ServiceUnavailable().json(json!({ "error": { "code": "try_again" } }))
        }
        "tok_flaky" => HttpResponse::Ok()
            .json(json!({ "id": entry.1, "status": "succeeded", "amount": body.amount })),
        "tok_declined" => {
            HttpResponse::PaymentRequired().json(json!({ "error": { "code": "card_declined" } }))
        }
        _ => HttpResponse::BadRequest().json(json!({ "error": { "code": "invalid_token" } })),
    }
}
