//! What a process runs in the background, beside its HTTP server (`till serve`) or as
//! its whole work (`till worker`): one LISTEN connection for every follower, the
//! projector (applying, or following another process's), the housekeeping of the
//! database and of the cache, and the jobs when they are on. [`Background`] assembles
//! the part both commands share; the tasks themselves are below it.

use std::sync::Arc;
use std::time::Duration;

use till_domain::commands::Commands;
use till_domain::db::listen::Listener;
use till_read_models::{Projector, ReadCache};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::JobsConfig;
use crate::graphql::execution::rate_limit::CostLimiter;

/// The background tasks of one process, stopped together.
pub struct Background {
    /// The process's one LISTEN connection (started by [`Background::listen`], after
    /// every follower has subscribed).
    pub notifications: Listener,
    /// Every task started so far.
    pub tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Background {
    /// Nothing running yet; followers listen on the database at `database_url`.
    pub fn new(database_url: String) -> Self {
        Self {
            notifications: Listener::new(database_url),
            tasks: Vec::new(),
            stop: watch::channel(false).0,
        }
    }

    /// Turns true when the tasks are to stop.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// What every process with a read side runs: its own commits wake its followers at
    /// once; the projector applies the projections (`apply`) or follows the process
    /// that does, invalidating `cache` and feeding subscriptions; expired keys and
    /// tokens are purged, and the cache's idle entries dropped with the heap they held.
    pub fn start_read_side(
        &mut self,
        commands: &Commands,
        projector: &Projector,
        apply: bool,
        cache: ReadCache,
    ) {
        commands.wake_locally(&self.notifications);
        let stopping = self.stopping();
        self.tasks.push(if apply {
            projector.spawn_on(&self.notifications, stopping)
        } else {
            projector.spawn_follower(&self.notifications, stopping)
        });
        self.tasks.push(tokio::spawn(housekeeping(
            commands.clone(),
            HOUSEKEEPING_CHUNK,
            self.stopping(),
        )));
        self.tasks
            .push(tokio::spawn(cache_housekeeping(cache, self.stopping())));
    }

    /// The job workers (payments against `provider`, webhooks, expiry).
    pub fn start_jobs(
        &mut self,
        commands: Commands,
        cfg: &JobsConfig,
        provider: Option<String>,
    ) -> Result<(), String> {
        let jobs = crate::jobs::start(
            commands,
            &self.notifications,
            cfg,
            provider,
            self.stopping(),
        )?;
        self.tasks.extend(jobs);
        Ok(())
    }

    /// Starts the LISTEN connection: last, once every follower has subscribed.
    pub fn listen(&mut self) {
        let stopping = self.stopping();
        self.tasks.push(self.notifications.spawn(stopping));
    }

    /// Asks every task to stop, without waiting.
    pub fn signal_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Asks every task to stop and waits for each at most `timeout`.
    pub async fn stop(self, timeout: Duration) {
        self.signal_stop();
        for task in self.tasks {
            if tokio::time::timeout(timeout, task).await.is_err() {
                tracing::warn!("a background worker did not stop in time");
            }
        }
    }
}

pub(crate) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Drops idle cache entries every few seconds even when no request touches the cache:
/// moka does its housekeeping only on access, so after a burst the entries (and the
/// weighted size the metrics show) stayed until the next request. Then hands the
/// heap the dropped entries and the load's buffers left free back to the system
/// when it has grown (`heap`), so that resident memory falls after load.
pub(crate) async fn cache_housekeeping(cache: ReadCache, mut stop: watch::Receiver<bool>) {
    let mut heap = crate::heap::Heap::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                cache.run_pending_tasks().await;
                // After the cache let go of expired entries: hand the memory the
                // load left free back to the system (see `heap`).
                heap.tick();
            }
            _ = stop.changed() => return,
        }
    }
}

/// Rows a housekeeping statement deletes at most.
pub(crate) const HOUSEKEEPING_CHUNK: usize = 10_000;

/// Housekeeping every 5 minutes: expired idempotency keys and refresh tokens are
/// deleted in chunks of `chunk` rows (safe on several replicas at once), looking at
/// `stop` between chunks so that a backlog does not hold up shutdown.
/// Takes the process's `commands` (one per process: each holds the connection that
/// wakes the projectors).
/// How often a serving replica says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A replica not heard from for this long no longer shares the budgets.
const HEARTBEAT_WINDOW: Duration = Duration::from_secs(3);

/// Keeps this replica in `api_replicas` and the rate limiter's replica count current;
/// leaves the table on shutdown so the others take the budget back at once. When the
/// database is away the last count stands.
pub(crate) async fn replica_heartbeat(
    pool: till_domain::db::PgPool,
    rate: Arc<CostLimiter>,
    mut stop: watch::Receiver<bool>,
) {
    let me = uuid::Uuid::now_v7();
    loop {
        match till_domain::replicas::heartbeat(&pool, me, HEARTBEAT_WINDOW).await {
            Ok(n) => {
                rate.set_replicas(n);
                metrics::gauge!("till_api_replicas").set(f64::from(n));
            }
            Err(e) => tracing::debug!(error = %e, "replica heartbeat failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT) => {}
            _ = stop.changed() => break,
        }
    }
    if let Err(e) = till_domain::replicas::leave(&pool, me).await {
        tracing::debug!(error = %e, "could not leave the replica table");
    }
}

pub(crate) async fn housekeeping(
    commands: Commands,
    chunk: usize,
    mut stop: watch::Receiver<bool>,
) {
    let pool = commands.pool().clone();
    let limit = i64::try_from(chunk).unwrap_or(i64::MAX);
    loop {
        let keys = crate::jobs::in_chunks(chunk, &stop, || {
            till_domain::idempotency::purge_expired(&pool, limit)
        })
        .await;
        report("expired idempotency keys", keys);
        if *stop.borrow() {
            return;
        }
        let tokens =
            crate::jobs::in_chunks(chunk, &stop, || commands.purge_refresh_tokens(limit)).await;
        report("expired refresh tokens", tokens);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(300)) => {}
            _ = stop.changed() => return,
        }
    }
}

fn report(what: &str, purged: Result<usize, till_domain::error::DomainError>) {
    match purged {
        Ok(0) => {}
        Ok(n) => tracing::info!(purged = n, "{what} purged"),
        Err(e) => tracing::debug!(error = %e, "purging {what} failed"),
    }
}

#[cfg(test)]
mod tests {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;
    use till_domain::db::testing::TestDb;

    use super::*;

    #[derive(diesel::QueryableByName)]
    struct Left {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    /// Shutdown does not wait for a backlog of expired rows: housekeeping stops after
    /// the chunk in flight, and the rest is purged at its next run.
    #[tokio::test]
    async fn housekeeping_stops_between_chunks_when_asked() {
        let db = TestDb::new().await;
        let mut conn = db.pool.get().await.unwrap();
        diesel::sql_query(
            "INSERT INTO idempotency_keys (principal, key, fingerprint, expires_at) \
             SELECT 'test', 'k' || g, 'f', now() - interval '1 hour' FROM generate_series(1, 5) g",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        // Asked to stop before the first chunk ends.
        stop_tx.send(true).unwrap();
        let run = housekeeping(Commands::new(db.pool.clone()), 2, stop_rx);
        assert!(
            tokio::time::timeout(Duration::from_secs(30), run)
                .await
                .is_ok(),
            "housekeeping did not stop"
        );
        let left: Left = diesel::sql_query("SELECT count(*) AS n FROM idempotency_keys")
            .get_result(&mut conn)
            .await
            .unwrap();
        assert_eq!(left.n, 3, "one chunk of 2 purged, then it stopped");
    }
}
