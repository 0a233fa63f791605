//! Payment capture and refunds against the provider's HTTP API.
//!
//! `POST {provider}/charges` with `{amount, currency, source, orderId}` and the order id
//! as `Idempotency-Key`, so every retry of one order is the same logical charge and the
//! provider never charges twice. 2xx -> captured (PAID); 402 -> declined
//! (PAYMENT_FAILED, stock released); other 4xx -> permanent failure; 5xx, timeouts and
//! connection errors -> retried with backoff. A capture that fails for good (permanent,
//! or out of attempts) is given up: the payment fails and the order becomes
//! PAYMENT_FAILED with its stock released, before the job becomes a dead letter.
//!
//! `POST {provider}/refunds` with `{charge, amount, currency, orderId}` and
//! `refund-<order id>` as `Idempotency-Key` refunds money captured for an order that
//! could no longer be paid (the `refunds` queue); a refund that fails for good stays a
//! dead letter for staff, with the payment `refunding`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use till_domain::commands::{Commands, PaymentStatus, Settlement};
use till_domain::jobs::Job;
use till_domain::types::OrderId;
use till_domain::DomainError;

use super::{GiveUp, Handler, JobError};

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
        let (status, body) = self
            .post(
                "charges",
                order.0.to_string(),
                json!({
                    "amount": amount_minor,
                    "currency": currency.trim(),
                    "source": token,
                    "orderId": order.0,
                }),
            )
            .await?;
        let reason = || error_reason(&body);
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

    /// Refunds `charge` of `order` (idempotent per order); returns the refund id.
    pub async fn refund(
        &self,
        order: OrderId,
        charge: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<String, JobError> {
        let (status, body) = self
            .post(
                "refunds",
                format!("refund-{}", order.0),
                json!({
                    "charge": charge,
                    "amount": amount_minor,
                    "currency": currency.trim(),
                    "orderId": order.0,
                }),
            )
            .await?;
        if status.is_success() {
            return body["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| JobError::transient("provider answered without a refund id"));
        }
        let reason = error_reason(&body);
        match status.as_u16() {
            408 | 409 | 425 | 429 => Err(JobError::transient(format!(
                "provider answered {status}: {reason}"
            ))),
            400..=499 => Err(JobError::permanent(format!(
                "provider refused the refund ({status}): {reason}"
            ))),
            _ => Err(JobError::transient(format!(
                "provider failed ({status}): {reason}"
            ))),
        }
    }

    /// POSTs `body` to `{base}/{what}` under `key`; the status and the JSON answer
    /// (null when it is not JSON).
    async fn post(
        &self,
        what: &str,
        key: String,
        body: Value,
    ) -> Result<(reqwest::StatusCode, Value), JobError> {
        let mut request = self
            .http
            .post(format!("{}/{what}", self.base))
            .header("Idempotency-Key", key);
        for (k, v) in crate::telemetry::trace_headers() {
            request = request.header(k, v);
        }
        let resp = request
            .json(&body)
            .send()
            .await
            .map_err(|e| JobError::transient(format!("provider unreachable: {e}")))?;
        let status = resp.status();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }
}

/// The provider's error code or message, for the job's error.
fn error_reason(body: &Value) -> String {
    body["error"]["code"]
        .as_str()
        .or_else(|| body["error"]["message"].as_str())
        .unwrap_or("unknown")
        .to_owned()
}

fn domain_err(e: DomainError) -> JobError {
    match e {
        DomainError::Unavailable(_) | DomainError::Transient(_) => {
            JobError::transient(e.to_string())
        }
        DomainError::NotFound { .. } | DomainError::InvalidState(_) => {
            JobError::permanent(e.to_string())
        }
        other => JobError::transient(other.to_string()),
    }
}

/// The order a payments or refunds job is about.
fn order_of(job: &Job) -> Result<OrderId, JobError> {
    job.payload["orderId"]
        .as_str()
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .map(OrderId)
        .ok_or_else(|| JobError::permanent("payload has no orderId"))
}

/// A handler of a queue whose jobs are about one order (`{"orderId": ...}`), running
/// `work` with the commands, the provider and that order.
fn per_order<F, Fut>(commands: Commands, provider: ProviderClient, work: F) -> Handler
where
    F: Fn(Arc<(Commands, ProviderClient)>, OrderId) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), JobError>> + Send + 'static,
{
    let shared = Arc::new((commands, provider));
    let work = Arc::new(work);
    Arc::new(move |job: Job| {
        let (shared, work) = (shared.clone(), work.clone());
        Box::pin(async move { work(shared, order_of(&job)?).await })
    })
}

/// The handler of the `payments` queue.
pub fn capture_handler(commands: Commands, provider: ProviderClient) -> Handler {
    per_order(commands, provider, |shared, order| async move {
        let (commands, provider) = &*shared;
        let payment = commands
            .payment_to_capture(order)
            .await
            .map_err(domain_err)?;
        if payment.status != PaymentStatus::Pending {
            // Settled meanwhile (by the provider's webhook): no charge.
            tracing::info!(%order, status = payment.status.as_str(), "nothing to capture");
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
}

/// What the `payments` queue does with a capture that failed for good: the payment
/// fails and the order becomes PAYMENT_FAILED with its stock released.
pub fn give_up_handler(commands: Commands) -> GiveUp {
    Arc::new(move |job: Job, error: String| {
        let commands = commands.clone();
        Box::pin(async move {
            let Ok(order) = order_of(&job) else {
                return Ok(());
            };
            match commands.give_up_payment(order, &error).await {
                Ok(Some(_)) => {
                    tracing::warn!(%order, %error, "capture given up: PAYMENT_FAILED, stock released");
                    Ok(())
                }
                Ok(None) | Err(DomainError::NotFound { .. }) => Ok(()),
                Err(e) => Err(domain_err(e)),
            }
        })
    })
}

/// The handler of the `refunds` queue.
pub fn refund_handler(commands: Commands, provider: ProviderClient) -> Handler {
    per_order(commands, provider, |shared, order| async move {
        let (commands, provider) = &*shared;
        let Some(refund) = commands
            .payment_to_refund(order)
            .await
            .map_err(domain_err)?
        else {
            tracing::info!(%order, "refunded already");
            return Ok(());
        };
        let refund_id = provider
            .refund(
                order,
                &refund.charge_id,
                refund.amount_minor,
                &refund.currency,
            )
            .await?;
        commands
            .record_refund(order, &refund_id)
            .await
            .map_err(domain_err)?;
        tracing::info!(%order, %refund_id, "refunded a capture of an order that could not be paid");
        Ok(())
    })
}
