//! Waking the log's followers (every process's projector) after events commit, from
//! outside the transaction that wrote them.
//!
//! A transaction that NOTIFYs takes a database-wide lock at commit and holds it until
//! its commit record is flushed, so that notifications queue in commit order. With a
//! `pg_notify` in every command, all order transactions of the cluster committed one at
//! a time: Till's own placeOrder transaction ran at 1,111-1,288 tps under pgbench with
//! the NOTIFY and 2,014-2,376 without it (`benches/README.md`).
//!
//! Instead, [`Commands`](crate::commands::Commands) tell an [`Announcer`] after a
//! transaction that appended events has committed (`event_log` marks the appends of the
//! running attempt, see [`track`]). The announcer sends one `pg_notify` of its own on a
//! dedicated connection, without waiting for its commit to be flushed (a lost
//! notification costs at most one poll interval; the events are already durable). Calls
//! that arrive while one is being sent are folded into one more send after it, so a
//! process sends at most one notification at a time and none is lost after the last
//! commit.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};

use crate::db::PgPool;
use crate::event_log::EVENTS_CHANNEL;

tokio::task_local! {
    static APPENDED: Cell<bool>;
}

/// Runs `work`, and tells whether it appended events to the log (see [`appended`]).
pub async fn track<F: Future>(work: F) -> (F::Output, bool) {
    APPENDED
        .scope(Cell::new(false), async move {
            let out = work.await;
            (out, APPENDED.with(Cell::get))
        })
        .await
}

/// Called by the event log on every append: the [`track`]ed work appended events.
pub(crate) fn appended() {
    // Outside `track` (bulk seeding, tests) there is nobody to tell.
    let _ = APPENDED.try_with(|a| a.set(true));
}

/// The statement that wakes the followers: its own transaction, committed without
/// waiting for the flush.
fn wake_sql() -> String {
    format!(
        "BEGIN; SET LOCAL synchronous_commit = off; SELECT pg_notify('{EVENTS_CHANNEL}', ''); COMMIT"
    )
}

/// Wakes the followers on `conn`, in the caller's transaction when there is one
/// (delivered at its commit). For bulk writers that append outside commands.
pub async fn wake_followers(conn: &mut AsyncPgConnection) -> Result<(), diesel::result::Error> {
    conn.batch_execute(&format!("SELECT pg_notify('{EVENTS_CHANNEL}', '')"))
        .await
}

/// Sends the followers' wake-up after commits; cheap to clone.
#[derive(Clone)]
pub struct Announcer {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    /// A commit happened that no send has covered yet.
    pending: AtomicBool,
    /// A task is sending (at most one per announcer).
    sending: AtomicBool,
    /// The dedicated connection, between sends.
    conn: Mutex<Option<AsyncPgConnection>>,
}

impl Announcer {
    /// An announcer that opens its own connection from `pool`'s settings when it first
    /// sends (it does not hold one of the pool's connections).
    pub fn new(pool: PgPool) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                pending: AtomicBool::new(false),
                sending: AtomicBool::new(false),
                conn: Mutex::new(None),
            }),
        }
    }

    /// Events have committed: wake the followers soon. Returns at once; must be called
    /// within a tokio runtime.
    pub fn committed(&self) {
        self.inner.pending.store(true, Ordering::SeqCst);
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
            while self.pending.swap(false, Ordering::SeqCst) {
                conn = self.send(conn).await;
            }
            *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = conn;
            self.sending.store(false, Ordering::SeqCst);
            // A commit between the last swap and the store above found `sending` still
            // true and left its wake-up to this task: take it, unless a new task did.
            if !self.pending.load(Ordering::SeqCst) || self.sending.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Sends one wake-up; returns the connection when it is still usable.
    async fn send(&self, conn: Option<AsyncPgConnection>) -> Option<AsyncPgConnection> {
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
        match conn.batch_execute(&wake_sql()).await {
            Ok(()) => Some(conn),
            Err(e) => {
                tracing::warn!(error = %e, "cannot wake the projectors; they poll");
                None
            }
        }
    }
}
