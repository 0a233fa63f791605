//! Order expiry: every interval, unpaid orders older than the configured time (and
//! without a payment in progress) become EXPIRED and their stock is released. Several
//! replicas may run it: each order changes state under its row lock, once.

use std::time::Duration;

use till_domain::commands::Commands;
use tokio::sync::watch;

/// Runs until `stop` turns true.
pub async fn run(
    commands: Commands,
    after: Duration,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        loop {
            match commands.expire_unpaid_orders(after, 500).await {
                Ok(0) => break,
                Ok(n) => {
                    tracing::info!(expired = n, "unpaid orders expired");
                    if n < 500 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "order expiry failed");
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}
