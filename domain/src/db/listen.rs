//! A LISTEN connection that bumps a counter on every notification of its channels.

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use tokio::sync::watch;

/// Holds a LISTEN connection and bumps `wake` on every notification; reconnects with
/// backoff when the database goes away, and wakes the runners after reconnecting so
/// nothing sent meanwhile is missed.
pub async fn listen(
    url: String,
    channels: &'static [&'static str],
    wake: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        match AsyncPgConnection::establish(&url).await {
            Ok(mut conn) => {
                let mut listening = Ok(0);
                for channel in channels {
                    listening = diesel::sql_query(format!("LISTEN {channel}"))
                        .execute(&mut conn)
                        .await;
                    if listening.is_err() {
                        break;
                    }
                }
                if let Err(e) = listening {
                    tracing::warn!(error = %e, "LISTEN failed");
                } else {
                    failures = 0;
                    wake.send_modify(|n| *n += 1);
                    let mut stream = std::pin::pin!(conn.notifications_stream());
                    loop {
                        tokio::select! {
                            n = stream.next() => match n {
                                Some(Ok(_)) => wake.send_modify(|n| *n += 1),
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "notification stream failed");
                                    break;
                                }
                                None => break,
                            },
                            _ = shutdown.changed() => return,
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot open the LISTEN connection"),
        }
        failures = failures.saturating_add(1);
        let backoff = Duration::from_millis(100u64 << failures.min(4));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
    }
}
