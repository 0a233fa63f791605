//! The projector: applies the event log to every projection, in log order, each batch
//! in one transaction together with the projection's checkpoint (exactly-once effect).
//! It wakes on NOTIFY from writers, and polls as a fallback.

mod applying;
mod checkpointing;
mod scheduling;

use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use till_domain::channels::EVENTS_CHANNEL;
use till_domain::db::listen::Listener;
use till_domain::db::prepared::Reuse;
use till_domain::db::transactions;
use till_domain::db::PgPool;
use till_domain::event_log::{self, LogPoint};
use till_domain::schema::projection_checkpoints;
use tokio::sync::watch;

use crate::cache::ReadCache;
use crate::error::ReadError;
use crate::progress::Progress;
use crate::projections::{changes_of, Applied, Change, Projection};
use crate::sources::{wal_position, Lsn};
use till_domain::events::StoredEvent;

/// The default [`ProjectorSettings::pace`], in milliseconds (also the default of
/// `TILL_PROJECTOR_PACE_MS`).
pub const DEFAULT_PACE_MS: u64 = 25;

/// The default [`ProjectorSettings::pace_full_at`], in events (also the default of
/// `TILL_PROJECTOR_PACE_FULL_AT`).
pub const DEFAULT_PACE_FULL_AT: usize = 50;

/// Tuning of the projector.
#[derive(Debug, Clone)]
pub struct ProjectorSettings {
    /// Most events applied in one transaction.
    pub batch_size: i64,
    /// How often to look for events when no NOTIFY arrives.
    pub poll_interval: Duration,
    /// How soon to look again when committed events wait behind a transaction still
    /// in flight; doubled at every look that finds them still hidden, up to
    /// [`ProjectorSettings::horizon_retry_max`], and back to this after progress or a
    /// wake-up.
    pub horizon_retry: Duration,
    /// The longest wait between two looks while the horizon stays held (a long
    /// transaction anywhere on the cluster): bounds how late the projector notices that
    /// a holder that sends no notification (a rebuild's index build, an open psql
    /// session) has ended.
    pub horizon_retry_max: Duration,
    /// Longest time between the starts of two batches of one group of projections
    /// while events keep arriving (a full batch goes on at once). Each batch is a
    /// transaction with its own round trips, and its commit wakes every listening
    /// session; waking on every commit made batches of a few events each, and a shorter
    /// pace cost order throughput (benches/HISTORY.md, load run 11).
    pub pace: Duration,
    /// The batch size, in events, from which the next batch waits the whole
    /// [`ProjectorSettings::pace`]; after a smaller batch it waits that share of it
    /// (see [`ProjectorSettings::pause_after`]).
    pub pace_full_at: usize,
}

impl ProjectorSettings {
    /// How long after the start of a batch that applied `applied` events (fewer than a
    /// full batch) the group's next batch starts, at the earliest: the pace's share
    /// `applied / pace_full_at`. The pause grows with the load: a batch of a few events
    /// means they arrive slower than the projector applies them, so the next is applied
    /// at once (a mutation's payload and a read with its token wait for one batch, not
    /// for a tick); at a rate of `pace_full_at` events per pace or more the batches
    /// gather for the whole pace, as a fixed tick did, and the order load keeps its
    /// share of the cores (docs/architecture.md, benches/HISTORY.md load run 19).
    pub fn pause_after(&self, applied: usize) -> Duration {
        let full_at = self.pace_full_at.max(1);
        if applied >= full_at {
            return self.pace;
        }
        // applied < full_at, so both fit in u32 after the clamp.
        let applied = u32::try_from(applied).unwrap_or(u32::MAX);
        let full_at = u32::try_from(full_at).unwrap_or(u32::MAX);
        self.pace * applied / full_at
    }
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            horizon_retry: Duration::from_millis(5),
            horizon_retry_max: Duration::from_millis(50),
            pace: Duration::from_millis(DEFAULT_PACE_MS),
            pace_full_at: DEFAULT_PACE_FULL_AT,
        }
    }
}

/// Result of one batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchOutcome {
    /// Events applied.
    pub applied: usize,
    /// The checkpoint before the batch (other processes may have moved it).
    pub from: LogPoint,
    /// The checkpoint after the batch.
    pub checkpoint: LogPoint,
    /// The generation of the projection's tables (see `rebuild`).
    pub generation: i64,
}

/// Most events a process reads to learn what other processes applied; past this it
/// drops its whole cache instead.
const MAX_MISSED_EVENTS: usize = 20_000;

pub use till_domain::channels::PROJECTED_CHANNEL;

pub(crate) use applying::apply_next;
use applying::{apply_batch, apply_round, lock_sql, read_range};
use checkpointing::checkpoints;
pub(crate) use checkpointing::{checkpoint, lock_applier};

/// Runs projections over a pool; cheap to clone.
#[derive(Clone)]
pub struct Projector {
    pool: PgPool,
    database_url: String,
    cache: ReadCache,
    progress: Arc<Progress>,
    settings: ProjectorSettings,
    /// Note the primary's WAL position after each batch (read replicas are in use).
    track_wal: bool,
}

impl Projector {
    /// A projector that invalidates `cache` and publishes to `progress`.
    pub fn new(
        pool: PgPool,
        database_url: String,
        cache: ReadCache,
        progress: Arc<Progress>,
        settings: ProjectorSettings,
    ) -> Self {
        Self {
            pool,
            database_url,
            cache,
            progress,
            settings,
            track_wal: false,
        }
    }

    /// Notes, after each batch, the primary's WAL position past its commit, with the
    /// checkpoint it reached and the cache entries it invalidated: what reads from
    /// replicas need ([`crate::sources`]). Costs a round trip per batch.
    pub fn tracking_wal(mut self, on: bool) -> Self {
        self.track_wal = on;
        self
    }

    /// The primary's WAL position now, past everything this connection has seen
    /// committed (0 when not tracked).
    async fn wal_now(&self, conn: &mut AsyncPgConnection) -> Result<Lsn, ReadError> {
        if self.track_wal {
            wal_position(conn).await
        } else {
            Ok(0)
        }
    }

    /// Applies at most one batch of `projection` and returns how far it got. Batches
    /// other processes applied since this one last looked are taken into account too:
    /// their changes are derived from the log, invalidated and announced.
    #[tracing::instrument(name = "projection.batch", level = "debug", skip(self), fields(projection = projection.name()))]
    pub async fn run_batch(&self, projection: Projection) -> Result<BatchOutcome, ReadError> {
        let local = self.progress.current(projection);
        let mut conn = self.pool.get().await?;
        let limit = self.settings.batch_size;
        let (outcome, mine, batch) = transactions::derived_transaction_with(
            &mut conn,
            &lock_sql(&[projection]),
            async |conn| apply_batch(conn, projection, limit).await,
        )
        .await?;
        let missed = if outcome.from > local {
            read_range(&mut conn, local, outcome.from).await?
        } else {
            Some(Vec::new())
        };
        let wal = self.wal_now(&mut conn).await?;
        self.publish(
            projection,
            outcome.generation,
            missed,
            mine,
            batch.into(),
            (outcome.checkpoint, wal),
        )
        .await;
        Ok(outcome)
    }

    /// Applies one batch to every projection of `group` in one transaction, when this
    /// process knows them all to stand at the same point of the log (the usual case
    /// while serving): one round trip takes their applier locks, one reads their
    /// checkpoints and the events, and their statements go out together (pipelined) with
    /// the checkpoints' move. A batch per projection cost a transaction of about seven
    /// round trips and a read of the same events each. Returns None when they do not
    /// stand together (each then needs [`Projector::run_batch`]).
    #[tracing::instrument(name = "projection.round", level = "debug", skip(self))]
    pub async fn run_round(
        &self,
        group: &'static [Projection],
    ) -> Result<Option<RoundOutcome>, ReadError> {
        let Some(&first) = group.first() else {
            return Ok(None);
        };
        let from = self.progress.current(first);
        if group.iter().any(|p| self.progress.current(*p) != from) {
            return Ok(None);
        }
        let mut conn = self.pool.get().await?;
        let limit = self.settings.batch_size;
        let Some(round) =
            transactions::derived_transaction_with(&mut conn, &lock_sql(group), async |conn| {
                apply_round(conn, group, from, limit).await
            })
            .await?
        else {
            return Ok(None);
        };
        let wal = self.wal_now(&mut conn).await?;
        let batch: Arc<[StoredEvent]> = round.batch.into();
        for ((projection, changes), generation) in group
            .iter()
            .copied()
            .zip(round.changes)
            .zip(round.generations)
        {
            self.publish(
                projection,
                generation,
                Some(round.missed.clone()),
                changes,
                batch.clone(),
                (round.checkpoint, wal),
            )
            .await;
        }
        Ok(Some(RoundOutcome {
            applied: batch.len(),
            checkpoint: round.checkpoint,
        }))
    }

    /// For a process that applies nothing itself (`--projector false`): catch up with
    /// the checkpoint other processes wrote.
    pub async fn observe(&self, projection: Projection) -> Result<LogPoint, ReadError> {
        let local = self.progress.current(projection);
        let mut conn = self.pool.get().await?;
        let (stored, generation) = checkpoint(&mut conn, projection).await?;
        if stored > local {
            let missed = read_range(&mut conn, local, stored).await?;
            let wal = self.wal_now(&mut conn).await?;
            self.publish(
                projection,
                generation,
                missed,
                Vec::new(),
                Arc::from([]),
                (stored, wal),
            )
            .await;
        } else if self.progress.saw_generation(projection, generation) {
            let wal = self.wal_now(&mut conn).await?;
            self.swapped(projection, wal);
        }
        Ok(stored)
    }

    /// Invalidates what changed, then publishes progress, then announces the events
    /// (in that order: a reader woken by either must not find a stale cache entry).
    async fn publish(
        &self,
        projection: Projection,
        generation: i64,
        missed: Option<Vec<StoredEvent>>,
        mine: Vec<Change>,
        batch: Arc<[StoredEvent]>,
        (checkpoint, wal): (LogPoint, Lsn),
    ) {
        if self.progress.saw_generation(projection, generation) {
            self.swapped(projection, wal);
        }
        let missed = match missed {
            Some(events) => {
                let mut changes = changes_of(projection, &events);
                changes.extend(mine);
                self.cache.invalidate(&changes, wal).await;
                events
            }
            None => {
                tracing::warn!(
                    projection = projection.name(),
                    "far behind other processes: dropping the whole cache"
                );
                self.cache.invalidate_everything(wal);
                self.cache.invalidate(&mine, wal).await;
                Vec::new()
            }
        };
        self.progress.advance(projection, checkpoint, wal);
        let events = if missed.is_empty() {
            batch
        } else {
            missed.into_iter().chain(batch.iter().cloned()).collect()
        };
        self.progress.publish(Applied { projection, events });
    }

    /// A rebuild swapped `projection`'s tables for new ones: nothing cached from the old
    /// ones can be trusted (the rebuild may have corrected them).
    fn swapped(&self, projection: Projection, wal: Lsn) {
        tracing::info!(
            projection = projection.name(),
            "rebuilt tables swapped in: dropping the whole cache"
        );
        self.cache.invalidate_everything(wal);
    }

    /// Follows the checkpoints other processes write (LISTEN plus a 1 s poll), for a
    /// server that runs no projector itself.
    pub fn spawn_follower(
        &self,
        listener: &Listener,
        shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let mut wake = listener.subscribe(&[PROJECTED_CHANNEL]);
        let this = self.clone();
        let mut stop = shutdown;
        tokio::spawn(async move {
            loop {
                wake.borrow_and_update();
                for p in Projection::ALL {
                    if let Err(e) = this.observe(p).await {
                        tracing::debug!(projection = p.name(), error = %e, "following checkpoints failed");
                    }
                }
                tokio::select! {
                    _ = wake.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    }

    /// Applies batches until `projection` has nothing more it can read now.
    pub async fn catch_up(&self, projection: Projection) -> Result<LogPoint, ReadError> {
        loop {
            let out = self.run_batch(projection).await?;
            if out.applied == 0 {
                return Ok(out.checkpoint);
            }
        }
    }

    /// Catches every projection up to the head of the log as it is now (waiting for
    /// transactions still in flight), for the CLI and tests.
    pub async fn catch_up_all(&self) -> Result<(), ReadError> {
        let target = {
            let mut conn = self.pool.get().await?;
            event_log::head(&mut conn).await?
        };
        for p in Projection::ALL {
            loop {
                let reached = self.catch_up(p).await?;
                if reached >= target {
                    break;
                }
                tokio::time::sleep(self.settings.horizon_retry).await;
            }
        }
        Ok(())
    }

    /// Starts the runner of the projections, woken through `listener` (new events, and
    /// batches other processes applied); it stops when `shutdown` turns true.
    pub fn spawn_on(
        &self,
        listener: &Listener,
        shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let wake = listener.subscribe(&[EVENTS_CHANNEL, PROJECTED_CHANNEL]);
        let this = self.clone();
        tokio::spawn(async move { this.run(wake, shutdown).await })
    }

    /// [`Projector::spawn_on`] with a listener of its own (also started), for a process
    /// that follows nothing else.
    pub fn spawn(&self, shutdown: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
        let listener = Listener::new(self.database_url.clone());
        let runner = self.spawn_on(&listener, shutdown.clone());
        vec![listener.spawn(shutdown), runner]
    }
}

/// What a round of all projections applied.
#[derive(Debug, Clone, Copy)]
pub struct RoundOutcome {
    /// Events applied (to every projection).
    pub applied: usize,
    /// Where every projection now stands.
    pub checkpoint: LogPoint,
}
