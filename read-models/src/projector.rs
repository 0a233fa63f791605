//! The projector: applies the event log to every projection, in log order, each batch
//! in one transaction together with the projection's checkpoint (exactly-once effect).
//! It wakes on NOTIFY from writers, and polls as a fallback.

use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use till_domain::db::plans;
use till_domain::db::prepared::Reuse;
use till_domain::db::PgPool;
use till_domain::event_log::{self, LogPoint, EVENTS_CHANNEL};
use till_domain::schema::projection_checkpoints;
use tokio::sync::watch;

use crate::cache::ReadCache;
use crate::error::ReadError;
use crate::progress::Progress;
use crate::projections::{changes_of, Applied, Change, Projection};
use till_domain::events::StoredEvent;

/// Tuning of the projector.
#[derive(Debug, Clone)]
pub struct ProjectorSettings {
    /// Most events applied in one transaction.
    pub batch_size: i64,
    /// How often to look for events when no NOTIFY arrives.
    pub poll_interval: Duration,
    /// How soon to look again when committed events wait behind a transaction still
    /// in flight.
    pub horizon_retry: Duration,
    /// Shortest time between the starts of two batches of one projection while events
    /// keep arriving (a full batch goes on at once). Each batch is a transaction with
    /// its own round trips; waking on every commit made batches of a few events each.
    pub pace: Duration,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            horizon_retry: Duration::from_millis(5),
            pace: Duration::from_millis(10),
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

/// The channel a projector NOTIFYs after committing a batch, so projectors and
/// followers in other processes invalidate their caches at once.
pub const PROJECTED_CHANNEL: &str = "till_projected";

/// Runs projections over a pool; cheap to clone.
#[derive(Clone)]
pub struct Projector {
    pool: PgPool,
    database_url: String,
    cache: ReadCache,
    progress: Arc<Progress>,
    settings: ProjectorSettings,
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
        let (outcome, mine, batch) = plans::derived_transaction(&mut conn, async |conn| {
            apply_batch(conn, projection, limit).await
        })
        .await?;
        let missed = if outcome.from > local {
            read_range(&mut conn, local, outcome.from).await?
        } else {
            Some(Vec::new())
        };
        self.publish(
            projection,
            outcome.generation,
            missed,
            mine,
            batch,
            outcome.checkpoint,
        )
        .await;
        Ok(outcome)
    }

    /// For a process that applies nothing itself (`--projector false`): catch up with
    /// the checkpoint other processes wrote.
    pub async fn observe(&self, projection: Projection) -> Result<LogPoint, ReadError> {
        let local = self.progress.current(projection);
        let mut conn = self.pool.get().await?;
        let (stored, generation) = checkpoint(&mut conn, projection).await?;
        if stored > local {
            let missed = read_range(&mut conn, local, stored).await?;
            self.publish(
                projection,
                generation,
                missed,
                Vec::new(),
                Vec::new(),
                stored,
            )
            .await;
        } else if self.progress.saw_generation(projection, generation) {
            self.swapped(projection);
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
        batch: Vec<StoredEvent>,
        checkpoint: LogPoint,
    ) {
        if self.progress.saw_generation(projection, generation) {
            self.swapped(projection);
        }
        let mut events = match missed {
            Some(events) => {
                let mut changes = changes_of(projection, &events);
                changes.extend(mine);
                self.cache.invalidate(&changes).await;
                events
            }
            None => {
                tracing::warn!(
                    projection = projection.name(),
                    "far behind other processes: dropping the whole cache"
                );
                self.cache.invalidate_everything();
                self.cache.invalidate(&mine).await;
                Vec::new()
            }
        };
        self.progress.advance(projection, checkpoint);
        events.extend(batch);
        self.progress.publish(Applied { projection, events });
    }

    /// A rebuild swapped `projection`'s tables for new ones: nothing cached from the old
    /// ones can be trusted (the rebuild may have corrected them).
    fn swapped(&self, projection: Projection) {
        tracing::info!(
            projection = projection.name(),
            "rebuilt tables swapped in: dropping the whole cache"
        );
        self.cache.invalidate_everything();
    }

    /// Follows the checkpoints other processes write (LISTEN plus a 1 s poll), for a
    /// server that runs no projector itself.
    pub fn spawn_follower(
        &self,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let (wake_tx, mut wake) = watch::channel(0u64);
        let listener = tokio::spawn(till_domain::db::listen::listen(
            self.database_url.clone(),
            &[PROJECTED_CHANNEL],
            wake_tx,
            shutdown.clone(),
        ));
        let this = self.clone();
        let mut stop = shutdown;
        let follower = tokio::spawn(async move {
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
        });
        vec![listener, follower]
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

    /// Starts the listener and one runner per projection; they stop when `shutdown`
    /// turns true.
    pub fn spawn(&self, shutdown: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
        let (wake_tx, wake_rx) = watch::channel(0u64);
        let mut handles = vec![tokio::spawn(till_domain::db::listen::listen(
            self.database_url.clone(),
            &[EVENTS_CHANNEL, PROJECTED_CHANNEL],
            wake_tx,
            shutdown.clone(),
        ))];
        for p in Projection::ALL {
            let this = self.clone();
            let wake = wake_rx.clone();
            let stop = shutdown.clone();
            handles.push(tokio::spawn(async move { this.run(p, wake, stop).await }));
        }
        handles
    }

    async fn run(
        &self,
        projection: Projection,
        mut wake: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut failures: u32 = 0;
        loop {
            if *shutdown.borrow() {
                return;
            }
            wake.borrow_and_update();
            let started = tokio::time::Instant::now();
            let idle = match self.run_batch(projection).await {
                Ok(out) if out.applied > 0 => {
                    failures = 0;
                    if i64::try_from(out.applied).unwrap_or(i64::MAX) < self.settings.batch_size {
                        // Let the next events gather; then look again whether woken or not.
                        tokio::select! {
                            _ = tokio::time::sleep_until(started + self.settings.pace) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                    continue;
                }
                Ok(out) => {
                    failures = 0;
                    match self.waiting_behind_horizon(out.checkpoint).await {
                        Ok(true) => self.settings.horizon_retry,
                        _ => self.settings.poll_interval,
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let backoff = Duration::from_millis(100u64 << failures.min(4));
                    tracing::warn!(projection = projection.name(), error = %e, ?backoff, "projection batch failed");
                    backoff
                }
            };
            tokio::select! {
                _ = wake.changed() => {}
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
    }

    /// True when committed events exist past `checkpoint` that the horizon still hides
    /// (an older transaction is in flight): worth looking again very soon.
    async fn waiting_behind_horizon(&self, checkpoint: LogPoint) -> Result<bool, ReadError> {
        let mut conn = self.pool.get().await?;
        Ok(event_log::any_after(&mut conn, checkpoint).await?)
    }
}

async fn apply_batch(
    conn: &mut AsyncPgConnection,
    projection: Projection,
    limit: i64,
) -> Result<(BatchOutcome, Vec<Change>, Vec<StoredEvent>), ReadError> {
    lock_applier(conn, projection).await?;
    let (from, generation) = checkpoint(conn, projection).await?;
    let (batch, mut changes, checkpoint) = apply_next(conn, projection, from, limit).await?;
    changes.dedup();
    if !batch.is_empty() {
        // Moving the checkpoint also wakes the other processes' projectors and
        // followers (the notification is delivered at commit).
        event_log::save_checkpoint(conn, projection.name(), checkpoint, Some(PROJECTED_CHANNEL))
            .await?;
    }
    Ok((
        BatchOutcome {
            applied: batch.len(),
            from,
            checkpoint,
            generation,
        },
        changes,
        batch,
    ))
}

/// Takes the projection's applier lock for the rest of the transaction: one applier per
/// projection at a time across every process (taken before any write, so it does not
/// hold back the horizon). A rebuild's swap takes it too, to pause the projector.
pub(crate) async fn lock_applier(
    conn: &mut AsyncPgConnection,
    projection: Projection,
) -> Result<(), ReadError> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('till.projection.' || $1))")
        .bind::<Text, _>(projection.name())
        .prepared()
        .execute(conn)
        .await?;
    Ok(())
}

/// The projection's stored checkpoint and the generation of its tables (the start of
/// the log and 0 before its first batch).
pub(crate) async fn checkpoint(
    conn: &mut AsyncPgConnection,
    projection: Projection,
) -> Result<(LogPoint, i64), ReadError> {
    let stored: Option<(i64, i64, i64)> = projection_checkpoints::table
        .find(projection.name())
        .select((
            projection_checkpoints::tx_id,
            projection_checkpoints::position,
            projection_checkpoints::generation,
        ))
        .first(conn)
        .await
        .optional()?;
    Ok(stored
        .map(|(tx_id, position, generation)| (LogPoint { tx_id, position }, generation))
        .unwrap_or_default())
}

/// Reads up to `limit` events after `from` and applies them to whatever tables the
/// connection's search path resolves (the live ones, or a rebuild's copies). Returns the
/// events, what they changed and the point after them (`from` when there were none).
pub(crate) async fn apply_next(
    conn: &mut AsyncPgConnection,
    projection: Projection,
    from: LogPoint,
    limit: i64,
) -> Result<(Vec<StoredEvent>, Vec<Change>, LogPoint), ReadError> {
    let batch = event_log::read_after(conn, from, limit).await?;
    let mut changes = Vec::new();
    projection.apply_batch(conn, &batch, &mut changes).await?;
    let next = batch.last().map_or(from, StoredEvent::point);
    Ok((batch, changes, next))
}

/// The events in (`from`, `to`], or None when there are more than
/// [`MAX_MISSED_EVENTS`].
async fn read_range(
    conn: &mut AsyncPgConnection,
    from: LogPoint,
    to: LogPoint,
) -> Result<Option<Vec<StoredEvent>>, ReadError> {
    let mut out = Vec::new();
    let mut cursor = from;
    while cursor < to {
        let page = event_log::read_after(conn, cursor, 1000).await?;
        let Some(last) = page.last() else {
            break;
        };
        cursor = last.point();
        out.extend(page.into_iter().filter(|e| e.point() <= to));
        if out.len() > MAX_MISSED_EVENTS {
            return Ok(None);
        }
    }
    Ok(Some(out))
}
