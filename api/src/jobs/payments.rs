//! Payment capture against the provider's HTTP API.
//!
//! `POST {provider}/charges` with `{amount, currency, source, orderId}` and the order id
//! as `Idempotency-Key`, so every retry of one order is the same logical charge and the
//! provider never charges twice. 2xx -> captured (PAID); 402 -> declined
//! (PAYMENT_FAILED, stock released); other 4xx -> permanent failure (dead letter);
//! 5xx, timeouts and connection errors -> retried with backoff.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use till_domain::commands::{Commands, Settlement};
use till_domain::jobs::Job;
use till_domain::types::{OrderId, OrderStatus};
use till_domain::DomainError;

use super::{Handler, JobError};

/// The provider's HTTP API.
#[derive(Clone)]
pub struct ProviderClient {
    base: String,
    http: reqwest::Client,
}

/// What the provider answered.
#[derive(Debug)]
pub enum Charge {
    /// Captured with this charge id.
    Captured(String),
    /// Declined for this reason.
    Declined(String),
}

impl ProviderClient {
    /// A client with connect and read timeouts.
    pub fn new(base: &str, connect: Duration, read: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .connect_timeout(connect)
                .timeout(read)
                .build()?,
        })
    }

    /// Charges `amount` for `order` (idempotent per order).
    pub async fn charge(
        &self,
        order: OrderId,
        amount_minor: i64,
        currency: &str,
        token: &str,
    ) -> Result<Charge, JobError> {
        let mut request = self
            .http
            .post(format!("{}/charges", self.base))
            .header("Idempotency-Key", order.0.to_string());
        for (k, v) in crate::telemetry::trace_headers() {
            request = request.header(k, v);
        }
        let resp = request
            .json(&json!({
                "amount": amount_minor,
                "currency": currency.trim(),
                "source": token,
                "orderId": order.0,
            }))
            .send()
            .await
            .map_err(|e| JobError::transient(format!("provider unreachable: {e}")))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let reason = || {
            body["error"]["code"]
                .as_str()
                .or_else(|| body["error"]["message"].as_str())
                .unwrap_or("unknown")
                .to_owned()
        };
        if status.is_success() {
            return body["id"]
                .as_str()
                .map(|id| Charge::Captured(id.to_owned()))
                .ok_or_else(|| JobError::transient("provider answered without a charge id"));
        }
        match status.as_u16() {
            402 => Ok(Charge::Declined(reason())),
            408 | 409 | 425 | 429 => Err(JobError::transient(format!(
                "provider answered {status}: {}",
                reason()
            ))),
            400..=499 => Err(JobError::permanent(format!(
                "provider refused the charge ({status}): {}",
                reason()
            ))),
            _ => Err(JobError::transient(format!(
                "provider failed ({status}): {}",
                reason()
            ))),
        }
    }
}

fn domain_err(e: DomainError) -> JobError {
    match e {
        DomainError::Unavailable(_) | DomainError::Transient(_) => {
            JobError::transient(e.to_string())
        }
        DomainError::NotFound { .. } => JobError::permanent(e.to_string()),
        other => JobError::transient(other.to_string()),
    }
}

/// The handler of the `payments` queue.
pub fn capture_handler(commands: Commands, provider: ProviderClient) -> Handler {
    let shared = Arc::new((commands, provider));
    Arc::new(move |job: Job| {
        let shared = shared.clone();
        Box::pin(async move {
            let (commands, provider) = &*shared;
            let order = job.payload["orderId"]
                .as_str()
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
                .map(OrderId)
                .ok_or_else(|| JobError::permanent("payload has no orderId"))?;
            let payment = commands
                .payment_to_capture(order)
                .await
                .map_err(domain_err)?;
            if payment.status != OrderStatus::PendingPayment {
                // Settled meanwhile (by the provider's webhook, or cancelled): no charge.
                tracing::info!(%order, status = %payment.status, "nothing to capture");
                return Ok(());
            }
            let settlement = match provider
                .charge(
                    order,
                    payment.amount_minor,
                    &payment.currency,
                    &payment.method_token,
                )
                .await?
            {
                Charge::Captured(charge_id) => Settlement::Captured { charge_id },
                Charge::Declined(reason) => Settlement::Declined { reason },
            };
            commands
                .settle_payment(order, settlement)
                .await
                .map_err(domain_err)?;
            Ok(())
        })
    })
}
