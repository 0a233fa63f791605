//! A small fake payment provider served by `till` itself in dev mode, so the whole
//! payment flow works with no account anywhere (`TILL_PAYMENT_PROVIDER_URL` unset).
//!
//! `POST /fake-provider/charges` with `Idempotency-Key`: token `tok_ok` succeeds,
//! `tok_slow` succeeds after half a second (a capture still in flight when the customer
//! acts), `tok_declined` is declined (402), `tok_flaky` fails with 503 on its first two
//! attempts per key and then succeeds; anything else is 400. The same key always gets
//! the same charge id: a retried capture is one logical charge.
//!
//! `POST /fake-provider/refunds` with `Idempotency-Key` and `{charge, amount}` refunds a
//! charge it made (the same key gets the same refund id); an unknown charge is 404.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

/// How long `tok_slow` takes to be charged.
const SLOW_CHARGE: std::time::Duration = std::time::Duration::from_millis(500);

/// Per-key state of the fake provider (bounded).
pub struct FakeProvider {
    charges: moka::sync::Cache<String, (u32, String)>,
    /// Refund id per refund key.
    refunds: moka::sync::Cache<String, String>,
}

impl Default for FakeProvider {
    fn default() -> Self {
        Self {
            charges: moka::sync::Cache::builder().max_capacity(10_000).build(),
            refunds: moka::sync::Cache::builder().max_capacity(10_000).build(),
        }
    }
}

impl FakeProvider {
    fn charged(&self, charge: &str) -> bool {
        self.charges.iter().any(|(_, (_, id))| id == charge)
    }
}

fn bad_request(code: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": { "code": code } }))
}

/// Why a request is not admitted.
enum Refused {
    /// The fake provider is off.
    Off,
    /// A 400 with this code.
    Bad(&'static str),
}

impl Refused {
    fn answer(self) -> HttpResponse {
        match self {
            Self::Off => HttpResponse::NotFound().finish(),
            Self::Bad(code) => bad_request(code),
        }
    }
}

/// The provider's state and the request's `Idempotency-Key`, unless the fake provider
/// is off, the key is missing or the amount is not positive.
fn admit<'a>(
    req: &'a HttpRequest,
    provider: &'a Option<FakeProvider>,
    amount: i64,
) -> Result<(&'a FakeProvider, &'a str), Refused> {
    let state = provider.as_ref().ok_or(Refused::Off)?;
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .ok_or(Refused::Bad("idempotency_key_required"))?;
    if amount <= 0 {
        return Err(Refused::Bad("invalid_amount"));
    }
    Ok((state, key))
}

#[derive(Deserialize)]
pub(super) struct RefundRequest {
    charge: String,
    amount: i64,
}

/// `POST /fake-provider/refunds`.
pub(super) async fn refunds(
    req: HttpRequest,
    body: web::Json<RefundRequest>,
    provider: web::Data<Option<FakeProvider>>,
) -> HttpResponse {
    let (state, key) = match admit(&req, &provider, body.amount) {
        Ok(admitted) => admitted,
        Err(refused) => return refused.answer(),
    };
    if !state.charged(&body.charge) {
        return HttpResponse::NotFound().json(json!({ "error": { "code": "no_such_charge" } }));
    }
    let id = state.refunds.get_with(key.to_owned(), || {
        format!("re_{}", uuid::Uuid::new_v4().simple())
    });
    HttpResponse::Ok().json(json!({ "id": id, "status": "succeeded", "charge": body.charge }))
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
    provider: web::Data<Option<FakeProvider>>,
) -> HttpResponse {
    let (state, key) = match admit(&req, &provider, body.amount) {
        Ok(admitted) => admitted,
        Err(refused) => return refused.answer(),
    };
    if body.currency.trim().len() != 3 {
        return bad_request("invalid_amount");
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
        "tok_slow" => {
            tokio::time::sleep(SLOW_CHARGE).await;
            HttpResponse::Ok()
                .json(json!({ "id": entry.1, "status": "succeeded", "amount": body.amount }))
        }
        "tok_flaky" if attempts <= 2 => {
            HttpResponse::ServiceUnavailable().json(json!({ "error": { "code": "try_again" } }))
        }
        "tok_flaky" => HttpResponse::Ok()
            .json(json!({ "id": entry.1, "status": "succeeded", "amount": body.amount })),
        "tok_declined" => {
            HttpResponse::PaymentRequired().json(json!({ "error": { "code": "card_declined" } }))
        }
        _ => bad_request("invalid_token"),
    }
}
