//! Outbound webhook delivery: one job per (event, subscriber). The body is the event as
//! JSON; `Till-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">` signs it with
//! the subscriber's secret (the same scheme as inbound payment webhooks, see
//! docs/async.md); `Till-Event-Id` is stable across retries so subscribers can
//! deduplicate. 2xx is delivered; anything else is retried, then dead-lettered.
//! Deliveries reach public addresses only ([`super::egress`]); a failure is recorded in
//! fixed words ([`super::egress::Failure`]) and its details are logged.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use till_domain::db::PgPool;
use till_domain::jobs::Job;
use till_domain::webhooks;
use tokio::sync::watch;

use super::egress::{self, Failure};
use super::{Handler, JobError};

/// The handler of the `webhooks` queue. `http` must be an [`egress::client`] with
/// the same `allow_private`.
pub fn delivery_handler(pool: PgPool, http: reqwest::Client, allow_private: bool) -> Handler {
    let shared = Arc::new((pool, http));
    Arc::new(move |job: Job| {
        let shared = shared.clone();
        Box::pin(async move {
            let (pool, http) = &*shared;
            let id = job.payload["deliveryId"]
                .as_i64()
                .ok_or_else(|| JobError::permanent("payload has no deliveryId"))?;
            let Some(out) = webhooks::outgoing(pool, id)
                .await
                .map_err(|e| JobError::transient(e.to_string()))?
            else {
                // The subscriber was removed or disabled: nothing to deliver.
                return Ok(());
            };
            let body = out.body.to_string();
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let sig = crate::webhook_signatures::sign(out.secret.as_bytes(), t, body.as_bytes());
            let sent = match egress::check_url(&out.url, allow_private) {
                Ok(url) => {
                    let mut request = http.post(url);
                    for (k, v) in crate::telemetry::trace_headers() {
                        request = request.header(k, v);
                    }
                    request
                        .header("content-type", "application/json")
                        .header("till-event-id", &out.event_id)
                        .header("till-signature", format!("t={t},v1={sig}"))
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| {
                            let failure = Failure::of(&e);
                            tracing::warn!(
                                delivery = out.delivery_id,
                                %failure,
                                error = %egress::detail(&e),
                                "webhook delivery failed"
                            );
                            failure
                        })
                }
                Err(failure) => {
                    tracing::warn!(
                        delivery = out.delivery_id,
                        %failure,
                        "webhook delivery refused before sending"
                    );
                    Err(failure)
                }
            };
            let last = job.attempts >= job.max_attempts;
            let (ok, status, failure) = match sent {
                Ok(r) if r.status().is_success() => {
                    (true, Some(i32::from(r.status().as_u16())), None)
                }
                Ok(r) => (
                    false,
                    Some(i32::from(r.status().as_u16())),
                    Some(Failure::Status(r.status().as_u16())),
                ),
                Err(failure) => (false, None, Some(failure)),
            };
            let error = failure.map(|f| f.to_string());
            webhooks::record_attempt(pool, out.delivery_id, ok, last, status, error.as_deref())
                .await
                .map_err(|e| JobError::transient(e.to_string()))?;
            match error {
                None => Ok(()),
                Some(e) => Err(JobError::transient(e)),
            }
        })
    })
}

/// Shortest time between the starts of two fan-out batches while events keep arriving
/// (a full batch goes on at once). Deliveries are jobs with their own latency anyway;
/// following every commit made a fan-out transaction per order under checkout load.
const PACE: Duration = Duration::from_millis(200);

/// Events a fan-out batch reads.
pub const FAN_OUT_BATCH: i64 = 500;

/// Follows the event log and turns events into deliveries, `batch` events at a time,
/// until `stop` (checked between batches, so a backlog does not hold up shutdown).
/// `wake` changes when events commit.
pub async fn fan_out(
    pool: PgPool,
    mut wake: watch::Receiver<u64>,
    max_attempts: i32,
    batch: i64,
    mut stop: watch::Receiver<bool>,
) {
    let batch = batch.max(1);
    let full = usize::try_from(batch).unwrap_or(usize::MAX);
    loop {
        if *stop.borrow() {
            break;
        }
        wake.borrow_and_update();
        let started = tokio::time::Instant::now();
        let idle = match webhooks::fan_out(&pool, batch, max_attempts).await {
            Ok(n) if n >= full => Duration::ZERO,
            Ok(_) => Duration::from_secs(1),
            Err(e) => {
                tracing::warn!(error = %e, "webhook fan-out failed");
                Duration::from_secs(2)
            }
        };
        if idle.is_zero() {
            continue;
        }
        tokio::select! {
            _ = wake.changed() => {
                // Let the writer's transaction become visible below the horizon, and
                // let more events gather.
                let soonest = tokio::time::Instant::now() + Duration::from_millis(5);
                tokio::select! {
                    _ = tokio::time::sleep_until(soonest.max(started + PACE)) => {}
                    _ = stop.changed() => break,
                }
            }
            _ = tokio::time::sleep(idle) => {}
            _ = stop.changed() => break,
        }
    }
}
