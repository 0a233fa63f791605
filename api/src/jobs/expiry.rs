//! Order expiry: every interval, unpaid orders older than the configured time (and
//! without a payment in progress) become EXPIRED and their stock is released. Several
//! replicas may run it: each order changes state under its row lock, once.

use std::time::Duration;

use till_domain::commands::Commands;
use tokio::sync::watch;

/// Orders a sweep expires per chunk (each order in a transaction of its own).
pub const CHUNK: i64 = 500;

/// Runs until `stop` turns true, expiring `chunk` due orders at a time. A sweep with
/// many orders due (after downtime, or a burst of abandoned checkouts) stops between
/// chunks when asked: what is left is due again at the next sweep, here or on another
/// replica, and shutdown does not wait for the whole backlog.
pub async fn run(
    commands: Commands,
    after: Duration,
    every: Duration,
    chunk: i64,
    mut stop: watch::Receiver<bool>,
) {
    let chunk = chunk.max(1);
    let full = usize::try_from(chunk).unwrap_or(usize::MAX);
    loop {
        let expired =
            super::in_chunks(full, &stop, || commands.expire_unpaid_orders(after, chunk)).await;
        match expired {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "unpaid orders expired"),
            Err(e) => tracing::warn!(error = %e, "order expiry failed"),
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}
