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
use tokio::sync::{broadcast, watch};

use crate::channels::CHANNELS;

/// What a payload subscriber receives after (re)connecting: notifications sent while
/// the connection was down are lost, so everything it derived may be stale.
pub const RECONNECTED: &str = "*";

/// The process's one LISTEN connection, shared by its followers; cheap to clone.
#[derive(Clone)]
pub struct Listener {
    inner: Arc<Inner>,
}

/// A follower's counter and the channels that bump it.
type Subscription = (Vec<&'static str>, watch::Sender<u64>);

/// A follower of one channel's payloads.
type PayloadSubscription = (&'static str, broadcast::Sender<Arc<str>>);

struct Inner {
    url: String,
    subscriptions: Mutex<Vec<Subscription>>,
    payloads: Mutex<Vec<PayloadSubscription>>,
}

impl Listener {
    /// A listener on `url`; it connects when [`Listener::spawn`] runs it.
    pub fn new(url: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                url,
                subscriptions: Mutex::new(Vec::new()),
                payloads: Mutex::new(Vec::new()),
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

    /// Every notification's payload on `channel` (one of [`CHANNELS`]), and
    /// [`RECONNECTED`] whenever the connection is (re)established. A receiver that lags
    /// more than `capacity` payloads behind gets `Lagged` and should treat it as
    /// [`RECONNECTED`].
    pub fn subscribe_payloads(
        &self,
        channel: &'static str,
        capacity: usize,
    ) -> broadcast::Receiver<Arc<str>> {
        let (tx, rx) = broadcast::channel(capacity.max(1));
        self.inner
            .payloads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((channel, tx));
        rx
    }

    /// Bumps the followers of `channel` at once, as a notification would: for this
    /// process's own commits, whose followers here need not wait for the round trip
    /// through the database (nor for the announcer's spacing between sends).
    pub fn poke(&self, channel: &str) {
        self.inner.bump(Some(channel));
    }

    /// Runs the connection until `shutdown`, reconnecting with backoff.
    pub fn spawn(&self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            run(
                &inner.url,
                &CHANNELS,
                |notice| {
                    inner.bump(notice.map(|(channel, _)| channel));
                    inner.deliver(notice);
                },
                shutdown,
            )
            .await;
        })
    }
}

impl Inner {
    /// Hands a payload to its channel's followers (or [`RECONNECTED`] to all).
    fn deliver(&self, notice: Option<(&str, &str)>) {
        let payloads = self.payloads.lock().unwrap_or_else(PoisonError::into_inner);
        for (channel, tx) in payloads.iter() {
            match notice {
                Some((c, payload)) if c == *channel => {
                    let _ = tx.send(Arc::from(payload));
                }
                Some(_) => {}
                None => {
                    let _ = tx.send(Arc::from(RECONNECTED));
                }
            }
        }
    }

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

/// The connection loop: `notified(Some((channel, payload)))` on every notification,
/// `notified(None)` once LISTEN is in place after each (re)connect.
async fn run(
    url: &str,
    channels: &[&str],
    notified: impl Fn(Option<(&str, &str)>),
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
                                Some(Ok(n)) => notified(Some((&n.channel, &n.payload))),
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
