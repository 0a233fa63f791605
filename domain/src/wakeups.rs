//! Waking the log's followers (every process's projector) after events commit, and the
//! job workers after jobs are enqueued, from outside the transaction that wrote them.
//!
//! A transaction that NOTIFYs takes a database-wide lock at commit and holds it until
//! its commit record is flushed, so that notifications queue in commit order. With a
//! `pg_notify` in every command, all order transactions of the cluster committed one at
//! a time, at about half the rate (benches/HISTORY.md, load run 4).
//!
//! Instead, [`Commands`](crate::commands::Commands) tell an [`Announcer`] after a
//! transaction that appended events or enqueued jobs has committed (`event_log` and
//! `jobs` mark what the running attempt wrote, see [`track`]). The announcer sends one
//! `pg_notify` per channel of its own on a dedicated connection, without waiting for its
//! commit to be flushed (a lost notification costs at most one poll interval; the events
//! and jobs are already durable). Calls
//! that arrive while one is being sent are folded into one more send after it, so a
//! process sends at most one notification at a time and none is lost after the last
//! commit. Sends are at least 10 ms apart (commits meanwhile fold into the next).

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};

use crate::channels::{EVENTS_CHANNEL, JOBS_CHANNEL};
use crate::db::listen::Listener;
use crate::db::PgPool;

/// Who to wake after a commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wakes {
    /// Events were appended: the log's followers (projectors).
    pub events: bool,
    /// Jobs were enqueued: the job workers.
    pub jobs: bool,
}

const EVENTS: u8 = 1;
const JOBS: u8 = 2;

impl Wakes {
    /// Nobody to wake.
    pub fn none(self) -> bool {
        self == Self::default()
    }

    fn bits(self) -> u8 {
        (if self.events { EVENTS } else { 0 }) | (if self.jobs { JOBS } else { 0 })
    }
}

tokio::task_local! {
    static WROTE: Cell<u8>;
}

/// Runs `work`, and tells whom what it wrote should wake once it commits (see
/// [`appended`] and [`enqueued`]).
pub async fn track<F: Future>(work: F) -> (F::Output, Wakes) {
    WROTE
        .scope(Cell::new(0), async move {
            let out = work.await;
            let bits = WROTE.with(Cell::get);
            (
                out,
                Wakes {
                    events: bits & EVENTS != 0,
                    jobs: bits & JOBS != 0,
                },
            )
        })
        .await
}

/// Called by the event log on every append: the [`track`]ed work appended events.
pub(crate) fn appended() {
    // Outside `track` (bulk seeding, tests) there is nobody to tell.
    let _ = WROTE.try_with(|w| w.set(w.get() | EVENTS));
}

/// Called by the job queue on every enqueue. True when the [`track`]ed work will have
/// the workers woken after it commits; false outside `track`, where the caller must
/// notify them itself.
pub(crate) fn enqueued() -> bool {
    WROTE.try_with(|w| w.set(w.get() | JOBS)).is_ok()
}

/// The statement that wakes whom `bits` names: its own transaction, committed without
/// waiting for the flush.
fn wake_sql(bits: u8) -> String {
    let mut sql = String::from("BEGIN; SET LOCAL synchronous_commit = off; ");
    if bits & EVENTS != 0 {
        sql.push_str(&format!("SELECT pg_notify('{EVENTS_CHANNEL}', ''); "));
    }
    if bits & JOBS != 0 {
        sql.push_str(&format!("SELECT pg_notify('{JOBS_CHANNEL}', ''); "));
    }
    sql.push_str("COMMIT");
    sql
}

/// Wakes the followers on `conn`, in the caller's transaction when there is one
/// (delivered at its commit). For bulk writers that append outside commands.
pub async fn wake_followers(conn: &mut AsyncPgConnection) -> Result<(), diesel::result::Error> {
    conn.batch_execute(&format!("SELECT pg_notify('{EVENTS_CHANNEL}', '')"))
        .await
}

/// Sends the followers' and workers' wake-ups after commits; cheap to clone.
#[derive(Clone)]
pub struct Announcer {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    /// Whom commits asked to wake that no send has covered yet (bits).
    pending: AtomicU8,
    /// A task is sending (at most one per announcer).
    sending: AtomicBool,
    /// The dedicated connection, between sends.
    conn: Mutex<Option<AsyncPgConnection>>,
    /// When the last send started.
    last_sent: Mutex<Option<tokio::time::Instant>>,
    /// This process's listener, whose followers are woken at once (see
    /// [`Announcer::wake_locally`]).
    local: std::sync::OnceLock<Listener>,
}

/// Shortest time between two sends of one announcer. The projector starts a batch at
/// most every 10 ms while events keep coming, so waking it more often only costs every
/// listening session of the database a wake-up per send; commits meanwhile fold into
/// the next send. After a quiet spell the first commit is announced at once.
const SPACING: std::time::Duration = std::time::Duration::from_millis(10);

impl Announcer {
    /// An announcer that opens its own connection from `pool`'s settings when it first
    /// sends (it does not hold one of the pool's connections).
    pub fn new(pool: PgPool) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                pending: AtomicU8::new(0),
                sending: AtomicBool::new(false),
                conn: Mutex::new(None),
                last_sent: Mutex::new(None),
                local: std::sync::OnceLock::new(),
            }),
        }
    }

    /// From now on, wakes `listener`'s followers (this process's projector and job
    /// workers) at once on every commit, before and besides the NOTIFY that the other
    /// processes get: the NOTIFY's round trips and the spacing between sends would
    /// otherwise come before a local read of one's own write. The first listener given
    /// stays.
    pub fn wake_locally(&self, listener: &Listener) {
        let _ = self.inner.local.set(listener.clone());
    }

    /// Events have committed: wake the followers soon. Returns at once; must be called
    /// within a tokio runtime.
    pub fn committed(&self) {
        self.wake(Wakes {
            events: true,
            jobs: false,
        });
    }

    /// Something committed that `wakes` names: wake them soon. Returns at once; must be
    /// called within a tokio runtime.
    pub fn wake(&self, wakes: Wakes) {
        if wakes.none() {
            return;
        }
        if let Some(local) = self.inner.local.get() {
            if wakes.events {
                local.poke(EVENTS_CHANNEL);
            }
            if wakes.jobs {
                local.poke(JOBS_CHANNEL);
            }
        }
        self.inner.pending.fetch_or(wakes.bits(), Ordering::SeqCst);
        if self.inner.sending.swap(true, Ordering::SeqCst) {
            // The running task sees `pending` before it stops.
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.send_pending().await });
    }
}

impl Inner {
    async fn send_pending(self: Arc<Self>) {
        loop {
            let mut conn = self
                .conn
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            loop {
                let last = *self
                    .last_sent
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(last) = last {
                    tokio::time::sleep_until(last + SPACING).await;
                }
                let bits = self.pending.swap(0, Ordering::SeqCst);
                if bits == 0 {
                    break;
                }
                *self
                    .last_sent
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(tokio::time::Instant::now());
                conn = self.send(conn, bits).await;
            }
            *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = conn;
            self.sending.store(false, Ordering::SeqCst);
            // A commit between the last swap and the store above found `sending` still
            // true and left its wake-up to this task: take it, unless a new task did.
            if self.pending.load(Ordering::SeqCst) == 0 || self.sending.swap(true, Ordering::SeqCst)
            {
                return;
            }
        }
    }

    /// Sends one wake-up; returns the connection when it is still usable.
    async fn send(&self, conn: Option<AsyncPgConnection>, bits: u8) -> Option<AsyncPgConnection> {
        let mut conn = match conn {
            Some(conn) => conn,
            None => match self.pool.dedicated_connection().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot connect to wake the projectors; they poll");
                    return None;
                }
            },
        };
        match conn.batch_execute(&wake_sql(bits)).await {
            Ok(()) => Some(conn),
            Err(e) => {
                tracing::warn!(error = %e, "cannot wake the projectors; they poll");
                None
            }
        }
    }
}
