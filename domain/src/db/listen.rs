//! LISTEN connections that bump a counter on every notification of their channels.
//!
//! PostgreSQL signals every listening session of a database on every NOTIFY, whatever
//! its channels, so each LISTEN connection costs a wake-up per notification. A process
//! therefore holds one, the [`Listener`], which listens on every channel Till uses and
//! hands each follower (the projector, the job workers, the webhook fan-out) a counter
//! for the channels it cares about.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use diesel_async::RunQueryDsl;
use futures_util::StreamExt;
use tokio::sync::watch;

/// Every channel Till notifies: new events, moved projection checkpoints, new jobs.
pub const CHANNELS: [&str; 3] = [
    crate::event_log::EVENTS_CHANNEL,
    crate::event_log::PROJECTED_CHANNEL,
    crate::jobs::JOBS_CHANNEL,
];

/// The process's one LISTEN connection, shared by its followers; cheap to clone.
#[derive(Clone)]
pub struct Listener {
    inner: Arc<Inner>,
}

/// A follower's counter and the channels that bump it.
type Subscription = (Vec<&'static str>, watch::Sender<u64>);

struct Inner {
    url: String,
    subscriptions: Mutex<Vec<Subscription>>,
}

impl Listener {
    /// A listener on `url`; it connects when [`Listener::spawn`] runs it.
    pub fn new(url: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                url,
                subscriptions: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A counter bumped on every notification of one of `channels` (names from
    /// [`CHANNELS`]), and whenever the connection is (re)established, since
    /// notifications sent while it was down are lost.
    pub fn subscribe(&self, channels: &[&'static str]) -> watch::Receiver<u64> {
        let (tx, rx) = watch::channel(0u64);
        self.inner
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((channels.to_vec(), tx));
        rx
    }

    /// Runs the connection until `shutdown`, reconnecting with backoff.
    pub fn spawn(&self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            run(
                &inner.url,
                &CHANNELS,
                |channel| inner.bump(channel),
                shutdown,
            )
            .await;
        })
    }
}

impl Inner {
    /// Bumps the subscriptions to `channel`, or all of them (None: (re)connected).
    fn bump(&self, channel: Option<&str>) {
        for (channels, tx) in self
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            if channel.is_none_or(|c| channels.contains(&c)) {
                tx.send_modify(|n| *n += 1);
            }
        }
    }
}

/// Holds a LISTEN connection of its own and bumps `wake` on every notification of
/// `channels`; reconnects with backoff when the database goes away, and bumps it after
/// reconnecting so nothing sent meanwhile is missed. (Servers use one [`Listener`].)
pub async fn listen(
    url: String,
    channels: &'static [&'static str],
    wake: watch::Sender<u64>,
    shutdown: watch::Receiver<bool>,
) {
    run(&url, channels, |_| wake.send_modify(|n| *n += 1), shutdown).await;
}

/// The connection loop: `notified(Some(channel))` on every notification, `notified(None)`
/// once LISTEN is in place after each (re)connect.
async fn run(
    url: &str,
    channels: &[&str],
    notified: impl Fn(Option<&str>),
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        match super::connect(url).await {
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
                    notified(None);
                    let mut stream = std::pin::pin!(conn.notifications_stream());
                    loop {
                        tokio::select! {
                            n = stream.next() => match n {
                                Some(Ok(n)) => notified(Some(&n.channel)),
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
