//! Where read-model queries run: on the primary, or on PostgreSQL streaming read
//! replicas (`TILL_READ_DATABASE_URLS`).
//!
//! A monitor polls each replica's replay position (`pg_last_wal_replay_lsn()`) and the
//! primary's WAL position, and keeps a replica in rotation while its replay lag (how
//! long ago the primary was where the replica is now) stays under the configured bound.
//! A query that must see a point of the log (a consistency token, a cache fill after an
//! invalidation) names the WAL position that covers it: only a replica known to have
//! replayed that far may serve it, else the primary does. Positions are bytes of WAL
//! (`pg_lsn - '0/0'`); the primary counts as having replayed everything.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Bool, Nullable};
use diesel::QueryableByName;
use diesel_async::AsyncPgConnection;
use till_domain::db::transactions::Repeatable;
use till_domain::db::PgPool;
use tokio::sync::{watch, Notify};

use crate::error::ReadError;

/// A WAL position in bytes from the start of the WAL (`pg_lsn - '0/0'`).
pub type Lsn = u64;

/// What a query on the primary counts as having replayed: everything.
pub const PRIMARY: Lsn = Lsn::MAX;

/// How often the monitor polls while token reads wait for a replica.
const FAST_POLL: Duration = Duration::from_millis(5);

/// Longest a poll of one server may take before it counts as failed.
const POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// The primary's positions kept for measuring lag: at most this many...
const MAX_SAMPLES: usize = 4096;
/// ...taken at least this far apart.
const SAMPLE_SPACING: Duration = Duration::from_millis(10);

/// How replicas are used.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaSettings {
    /// Out of rotation above this replay lag; back in below half of it.
    pub max_lag: Duration,
    /// Longest a token read waits for a replica before the primary serves it.
    pub wait: Duration,
    /// How often replay positions are polled when nobody waits.
    pub poll: Duration,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        Self {
            max_lag: Duration::from_secs(2),
            wait: Duration::from_secs(1),
            poll: Duration::from_millis(100),
        }
    }
}

/// One replica as the monitor last saw it.
struct Replica {
    /// `host:port` from its URL (for operators; never the credentials).
    host: String,
    pool: PgPool,
    /// Last replay position seen (only grows while it stays the same server).
    replayed: AtomicU64,
    /// Replay lag in microseconds.
    lag_us: AtomicU64,
    /// Its last poll succeeded and it is a standby.
    up: AtomicBool,
    in_rotation: AtomicBool,
    queries: AtomicU64,
}

/// What the admin `/readyz` and the metrics show of one replica.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Its index in `TILL_READ_DATABASE_URLS` (the metrics' `replica` label).
    pub replica: usize,
    /// `host:port`.
    pub host: String,
    /// Replay lag.
    pub lag_seconds: f64,
    /// Whether reads are sent to it.
    pub in_rotation: bool,
    /// Whether its last poll succeeded (and it is a standby).
    pub up: bool,
    /// Read-model queries it has served.
    #[serde(skip)]
    pub queries: u64,
}

/// Counters of where reads went.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceCounts {
    /// Queries the primary served.
    pub primary_queries: u64,
    /// Reads the primary served because no replica had replayed far enough in time (or
    /// none was in rotation).
    pub fallbacks_lagging: u64,
    /// Reads the primary served after a replica failed under them.
    pub fallbacks_error: u64,
}

struct Inner {
    primary: PgPool,
    replicas: Vec<Replica>,
    settings: ReplicaSettings,
    next: AtomicUsize,
    /// Token reads waiting for a replica (the monitor polls fast while any do).
    waiters: AtomicUsize,
    wake_monitor: Notify,
    /// Bumped after every poll, for waiters.
    polled: watch::Sender<u64>,
    /// The primary's recent WAL positions, oldest first.
    samples: Mutex<VecDeque<(Instant, Lsn)>>,
    primary_queries: AtomicU64,
    fallbacks_lagging: AtomicU64,
    fallbacks_error: AtomicU64,
}

/// The primary and the replicas reads may use; cheap to clone.
#[derive(Clone)]
pub struct ReadSources(Arc<Inner>);

/// Where one read runs, chosen for the WAL position it must see.
#[derive(Debug, Clone, Copy)]
pub struct Choice {
    replica: Option<usize>,
    /// The position the source is known to have replayed ([`PRIMARY`] for the primary).
    pub at: Lsn,
}

/// A read: queries on a connection, run again on the primary when a replica fails
/// under it.
pub trait Read<T>:
    for<'r> AsyncFn(&'r mut AsyncPgConnection) -> Result<T, ReadError>
    + for<'r> Repeatable<&'r mut AsyncPgConnection, Result<T, ReadError>, Fut: Send>
    + Send
    + Sync
{
}

impl<F, T> Read<T> for F where
    F: for<'r> AsyncFn(&'r mut AsyncPgConnection) -> Result<T, ReadError>
        + for<'r> Repeatable<&'r mut AsyncPgConnection, Result<T, ReadError>, Fut: Send>
        + Send
        + Sync
{
}

#[derive(QueryableByName)]
struct Position {
    #[diesel(sql_type = Nullable<BigInt>)]
    lsn: Option<i64>,
}

#[derive(QueryableByName)]
struct Replay {
    #[diesel(sql_type = Bool)]
    standby: bool,
    #[diesel(sql_type = Nullable<BigInt>)]
    lsn: Option<i64>,
}

/// The primary's WAL insert position: after a commit returns, at or past its commit
/// record, so a replica that has replayed this far shows the commit.
pub async fn wal_position(conn: &mut AsyncPgConnection) -> Result<Lsn, ReadError> {
    use diesel_async::RunQueryDsl as _;
    let p: Position =
        diesel::sql_query("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint AS lsn")
            .get_result(conn)
            .await?;
    Ok(p.lsn.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
}

impl ReadSources {
    /// Reads on `primary` only.
    pub fn primary_only(primary: PgPool) -> Self {
        Self::new(primary, Vec::new(), ReplicaSettings::default())
    }

    /// Reads on `primary` and `replicas` (pools with the `host:port` they reach).
    pub fn new(
        primary: PgPool,
        replicas: Vec<(String, PgPool)>,
        settings: ReplicaSettings,
    ) -> Self {
        Self(Arc::new(Inner {
            primary,
            replicas: replicas
                .into_iter()
                .map(|(host, pool)| Replica {
                    host,
                    pool,
                    replayed: AtomicU64::new(0),
                    lag_us: AtomicU64::new(0),
                    up: AtomicBool::new(false),
                    in_rotation: AtomicBool::new(false),
                    queries: AtomicU64::new(0),
                })
                .collect(),
            settings,
            next: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            wake_monitor: Notify::new(),
            polled: watch::Sender::new(0),
            samples: Mutex::new(VecDeque::new()),
            primary_queries: AtomicU64::new(0),
            fallbacks_lagging: AtomicU64::new(0),
            fallbacks_error: AtomicU64::new(0),
        }))
    }

    /// The primary's pool (for what must see the latest state: checkpoints, the log).
    pub fn primary(&self) -> &PgPool {
        &self.0.primary
    }

    /// Whether any replica is configured (WAL positions are worth tracking).
    pub fn has_replicas(&self) -> bool {
        !self.0.replicas.is_empty()
    }

    /// How replicas are used.
    pub fn settings(&self) -> ReplicaSettings {
        self.0.settings
    }

    /// A source that has replayed `floor`: a replica in rotation (taken in turn), else
    /// the primary.
    pub fn pick(&self, floor: Lsn) -> Choice {
        let replicas = &self.0.replicas;
        if replicas.is_empty() || floor == PRIMARY {
            return Choice {
                replica: None,
                at: PRIMARY,
            };
        }
        let start = self.0.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..replicas.len() {
            let index = (start + i) % replicas.len();
            let r = &replicas[index];
            if !r.in_rotation.load(Ordering::Acquire) {
                continue;
            }
            let at = r.replayed.load(Ordering::Acquire);
            if at >= floor {
                return Choice {
                    replica: Some(index),
                    at,
                };
            }
        }
        if floor == 0 {
            // No replica in rotation at all.
            self.0.fallbacks_lagging.fetch_add(1, Ordering::Relaxed);
        }
        Choice {
            replica: None,
            at: PRIMARY,
        }
    }

    /// Runs `read` on the chosen source. A replica that fails under it (connection
    /// lost, pool exhausted, a conflict with recovery) is taken out of rotation until
    /// its next good poll, and the read runs again on the primary.
    pub async fn run<T: Send>(&self, choice: Choice, read: impl Read<T>) -> Result<T, ReadError> {
        if let Some(replica) = choice.replica.and_then(|i| self.0.replicas.get(i)) {
            let outcome = match replica.pool.get().await {
                Ok(mut conn) => read(&mut conn).await,
                Err(e) => Err(ReadError::from(e)),
            };
            match outcome {
                Ok(value) => {
                    replica.queries.fetch_add(1, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(e) if replica_trouble(&e) => {
                    tracing::warn!(replica = %replica.host, error = %e, "read replica failed; the primary serves the read");
                    replica.up.store(false, Ordering::Release);
                    replica.in_rotation.store(false, Ordering::Release);
                    self.0.fallbacks_error.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        let mut conn = self.0.primary.get().await?;
        self.0.primary_queries.fetch_add(1, Ordering::Relaxed);
        read(&mut conn).await
    }

    /// Whether a replica in rotation has replayed `floor`.
    fn caught_up(&self, floor: Lsn) -> bool {
        self.0.replicas.iter().any(|r| {
            r.in_rotation.load(Ordering::Acquire) && r.replayed.load(Ordering::Acquire) >= floor
        })
    }

    /// Whether any replica is in rotation.
    fn any_in_rotation(&self) -> bool {
        self.0
            .replicas
            .iter()
            .any(|r| r.in_rotation.load(Ordering::Acquire))
    }

    /// Waits, at most the configured wait, until a replica in rotation has replayed
    /// `floor`; holds no connection meanwhile. False when none did in time, or none is
    /// in rotation to wait for (the primary then serves the read at once).
    pub async fn wait_for(&self, floor: Lsn) -> bool {
        if self.0.replicas.is_empty() {
            return false;
        }
        if self.caught_up(floor) {
            return true;
        }
        if !self.any_in_rotation() {
            self.0.fallbacks_lagging.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.0.waiters.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.0.waiters);
        self.0.wake_monitor.notify_one();
        let mut polled = self.0.polled.subscribe();
        let reached = tokio::time::timeout(self.0.settings.wait, async {
            loop {
                if self.caught_up(floor) {
                    return true;
                }
                if !self.any_in_rotation() {
                    return false;
                }
                if polled.changed().await.is_err() {
                    // The monitor is gone (shutting down): nothing will move.
                    return false;
                }
            }
        })
        .await
        .unwrap_or(false);
        if !reached {
            self.0.fallbacks_lagging.fetch_add(1, Ordering::Relaxed);
        }
        reached
    }

    /// Each replica's state.
    pub fn status(&self) -> Vec<ReplicaStatus> {
        self.0
            .replicas
            .iter()
            .enumerate()
            .map(|(replica, r)| ReplicaStatus {
                replica,
                host: r.host.clone(),
                lag_seconds: r.lag_us.load(Ordering::Relaxed) as f64 / 1e6,
                in_rotation: r.in_rotation.load(Ordering::Relaxed),
                up: r.up.load(Ordering::Relaxed),
                queries: r.queries.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Where reads went so far.
    pub fn counts(&self) -> SourceCounts {
        SourceCounts {
            primary_queries: self.0.primary_queries.load(Ordering::Relaxed),
            fallbacks_lagging: self.0.fallbacks_lagging.load(Ordering::Relaxed),
            fallbacks_error: self.0.fallbacks_error.load(Ordering::Relaxed),
        }
    }

    /// Polls the replicas until `shutdown`: every `poll`, or every few milliseconds
    /// while token reads wait. Does nothing without replicas.
    pub fn spawn_monitor(
        &self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if self.0.replicas.is_empty() {
            return None;
        }
        let this = self.clone();
        Some(tokio::spawn(async move {
            loop {
                this.poll_once().await;
                let pause = if this.0.waiters.load(Ordering::Acquire) > 0 {
                    FAST_POLL
                } else {
                    this.0.settings.poll
                };
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = this.0.wake_monitor.notified() => {}
                    _ = shutdown.changed() => return,
                }
                if *shutdown.borrow() {
                    return;
                }
            }
        }))
    }

    /// Polls the primary's position, then every replica's (concurrently), and updates
    /// their lag and rotation.
    pub async fn poll_once(&self) {
        use diesel_async::RunQueryDsl as _;
        let primary = async {
            let mut conn = self.0.primary.get().await.ok()?;
            let p: Position =
                diesel::sql_query("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS lsn")
                    .get_result(&mut conn)
                    .await
                    .ok()?;
            p.lsn.and_then(|v| u64::try_from(v).ok())
        };
        if let Ok(Some(lsn)) = tokio::time::timeout(POLL_TIMEOUT, primary).await {
            self.sample(Instant::now(), lsn);
        }
        let polls = self.0.replicas.iter().map(|r| async move {
            let replay = async {
                let mut conn = r.pool.get().await.map_err(|e| e.to_string())?;
                let row: Replay = diesel::sql_query(
                    "SELECT pg_is_in_recovery() AS standby, \
                     (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint AS lsn",
                )
                .get_result(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
                Ok::<_, String>(row)
            };
            let outcome = tokio::time::timeout(POLL_TIMEOUT, replay)
                .await
                .unwrap_or_else(|_| Err("timed out".into()));
            self.observe(r, outcome);
        });
        futures_util::future::join_all(polls).await;
        self.0.polled.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn sample(&self, now: Instant, lsn: Lsn) {
        let mut samples = self
            .0
            .samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match samples.back() {
            Some(&(_, last)) if last >= lsn => return,
            Some(&(t, _)) if now.duration_since(t) < SAMPLE_SPACING => {
                // Keep the time the primary first passed the older position; only
                // the newest position moves on.
                if let Some(back) = samples.back_mut() {
                    back.1 = lsn;
                }
                return;
            }
            _ => {}
        }
        if samples.len() >= MAX_SAMPLES {
            samples.pop_front();
        }
        samples.push_back((now, lsn));
    }

    /// How long ago the primary was past `replayed` (zero when it is not known to
    /// have been).
    fn lag(&self, now: Instant, replayed: Lsn) -> Duration {
        let samples = self
            .0
            .samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let first_ahead = samples.partition_point(|&(_, lsn)| lsn <= replayed);
        samples
            .get(first_ahead)
            .map_or(Duration::ZERO, |&(t, _)| now.duration_since(t))
    }

    fn observe(&self, r: &Replica, outcome: Result<Replay, String>) {
        let was_in = r.in_rotation.load(Ordering::Acquire);
        let replay = match outcome {
            Ok(Replay {
                standby: true,
                lsn: Some(lsn),
            }) => u64::try_from(lsn).unwrap_or(0),
            Ok(_) => {
                if r.up.swap(false, Ordering::AcqRel) || was_in {
                    tracing::warn!(replica = %r.host, "read replica is not a streaming standby: out of rotation");
                }
                r.in_rotation.store(false, Ordering::Release);
                return;
            }
            Err(error) => {
                if r.up.swap(false, Ordering::AcqRel) || was_in {
                    tracing::warn!(replica = %r.host, %error, "read replica unreachable: out of rotation");
                }
                r.in_rotation.store(false, Ordering::Release);
                return;
            }
        };
        // Its word, not the highest seen: a replica rebuilt (or a name that now points
        // at another one) may stand further back than before.
        r.replayed.store(replay, Ordering::Release);
        r.up.store(true, Ordering::Release);
        let lag = self.lag(Instant::now(), replay);
        r.lag_us.store(
            u64::try_from(lag.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let bound = if was_in {
            self.0.settings.max_lag
        } else {
            self.0.settings.max_lag / 2
        };
        let now_in = lag <= bound;
        r.in_rotation.store(now_in, Ordering::Release);
        if now_in != was_in {
            if now_in {
                tracing::info!(replica = %r.host, lag_ms = lag.as_millis() as u64, "read replica in rotation");
            } else {
                tracing::warn!(replica = %r.host, lag_ms = lag.as_millis() as u64, "read replica lags: out of rotation");
            }
        }
    }
}

/// Errors that say the replica (not the query) is in trouble.
fn replica_trouble(e: &ReadError) -> bool {
    match e {
        ReadError::Unavailable(_) => true,
        // A conflict with recovery cancels a standby's query (SQLSTATE 40001).
        ReadError::Internal(m) => m.contains("conflict with recovery"),
        _ => false,
    }
}

/// `host:port` of a PostgreSQL URL, without its credentials.
pub fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sources over pools that never connect (the tests drive the monitor's
    /// observations by hand).
    fn sources(replicas: usize) -> ReadSources {
        let pool = || {
            till_domain::db::pool(
                "postgres://nobody@127.0.0.1:1/none",
                &till_domain::db::PoolSettings::default(),
            )
        };
        ReadSources::new(
            pool(),
            (0..replicas)
                .map(|i| (format!("replica-{i}"), pool()))
                .collect(),
            ReplicaSettings {
                max_lag: Duration::from_millis(1_000),
                ..ReplicaSettings::default()
            },
        )
    }

    fn standby(lsn: i64) -> Result<Replay, String> {
        Ok(Replay {
            standby: true,
            lsn: Some(lsn),
        })
    }

    #[tokio::test]
    async fn lag_is_the_time_since_the_primary_passed_the_replayed_position() {
        let s = sources(1);
        let t0 = Instant::now();
        s.sample(t0, 100);
        s.sample(t0 + Duration::from_millis(500), 200);
        s.sample(t0 + Duration::from_millis(900), 300);
        let now = t0 + Duration::from_millis(1_000);
        assert_eq!(s.lag(now, 300), Duration::ZERO, "caught up");
        assert_eq!(s.lag(now, 250), Duration::from_millis(100));
        assert_eq!(s.lag(now, 150), Duration::from_millis(500));
        assert_eq!(
            s.lag(now, 50),
            Duration::from_millis(1_000),
            "behind every sample"
        );
        // An idle primary (no new position) does not make a caught-up replica lag.
        assert_eq!(s.lag(now + Duration::from_secs(60), 300), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_replica_leaves_the_rotation_past_the_lag_and_comes_back_under_half_of_it() {
        let s = sources(1);
        let r = &s.0.replicas[0];
        let start = Instant::now() - Duration::from_secs(10);
        s.sample(start, 1_000);
        s.observe(r, standby(1_000));
        assert!(
            r.in_rotation.load(Ordering::Acquire),
            "a caught-up replica serves"
        );
        assert_eq!(s.pick(1_000).replica, Some(0));
        assert_eq!(
            s.pick(1_001).replica,
            None,
            "the primary serves what it has not replayed"
        );

        // The primary moved on 10 s ago (its first sample past 1,000) and the replica
        // did not follow: out.
        let mut samples = s.0.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.clear();
        samples.push_back((start, 2_000));
        drop(samples);
        s.observe(r, standby(1_000));
        assert!(!r.in_rotation.load(Ordering::Acquire));
        assert_eq!(s.pick(0).replica, None, "no read goes to a lagging replica");

        // 700 ms behind: under the bound, but not under half of it: still out.
        let mut samples = s.0.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.push_back((Instant::now() - Duration::from_millis(700), 3_000));
        drop(samples);
        s.observe(r, standby(2_000));
        assert!(
            !r.in_rotation.load(Ordering::Acquire),
            "back in before half the bound"
        );
        s.observe(r, standby(3_000));
        assert!(r.in_rotation.load(Ordering::Acquire), "caught up, back in");

        // A failed poll, or a server that is not a standby, takes it out.
        s.observe(r, Err("refused".into()));
        assert!(!r.in_rotation.load(Ordering::Acquire) && !r.up.load(Ordering::Acquire));
        s.observe(r, standby(3_000));
        s.observe(
            r,
            Ok(Replay {
                standby: false,
                lsn: None,
            }),
        );
        assert!(
            !r.in_rotation.load(Ordering::Acquire),
            "a primary is not a replica"
        );
    }

    #[tokio::test]
    async fn reads_take_the_replicas_in_turn_and_only_those_far_enough() {
        let s = sources(2);
        s.sample(Instant::now(), 500);
        s.observe(&s.0.replicas[0], standby(500));
        s.observe(&s.0.replicas[1], standby(400));
        let picks: Vec<_> = (0..4).map(|_| s.pick(0).replica).collect();
        assert!(
            picks.contains(&Some(0)) && picks.contains(&Some(1)),
            "{picks:?}"
        );
        for _ in 0..4 {
            let choice = s.pick(450);
            assert_eq!(choice.replica, Some(0));
            assert_eq!(choice.at, 500);
        }
        assert_eq!(s.pick(PRIMARY).replica, None);
        assert_eq!(s.pick(PRIMARY).at, PRIMARY);
        assert!(sources(0).pick(0).replica.is_none());
    }

    #[tokio::test]
    async fn a_token_read_does_not_wait_when_no_replica_is_in_rotation() {
        let s = sources(1);
        let started = Instant::now();
        assert!(!s.wait_for(1).await, "nothing to wait for");
        assert!(
            started.elapsed() < s.settings().wait,
            "it waited out TILL_REPLICA_WAIT_MS for a replica out of rotation"
        );
        assert_eq!(s.counts().fallbacks_lagging, 1);
        s.sample(Instant::now(), 10);
        s.observe(&s.0.replicas[0], standby(10));
        assert!(s.wait_for(10).await, "a caught-up replica needs no wait");
    }

    #[test]
    fn hosts_leave_credentials_out() {
        assert_eq!(
            host_of("postgres://till:secret@db.example:5432/till?sslmode=verify-full"),
            "db.example:5432"
        );
        assert_eq!(host_of("postgres://db/till"), "db");
    }
}
