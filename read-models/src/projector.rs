//! The projector: applies the event log to every projection, in log order, each batch
//! in one transaction together with the projection's checkpoint (exactly-once effect).
//! It wakes on NOTIFY from writers, and polls as a fallback.

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

    /// Runs every group of [`ROUNDS`] on its own loop: a group's next batch waits for
    /// its own last one only, not for the slower group's.
    async fn run(&self, wake: watch::Receiver<u64>, shutdown: watch::Receiver<bool>) {
        futures_util::future::join_all(
            ROUNDS
                .iter()
                .map(|group| self.run_group(group, wake.clone(), shutdown.clone())),
        )
        .await;
    }

    async fn run_group(
        &self,
        group: &'static [Projection],
        mut wake: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut retry = Retry::new(group.len());
        let mut horizon = HorizonWait::new(&self.settings);
        loop {
            if *shutdown.borrow() {
                return;
            }
            wake.borrow_and_update();
            let started = tokio::time::Instant::now();
            let idle = match self.step(group, &mut retry).await {
                Step::Applied(n, checkpoint) => {
                    horizon.reset();
                    if i64::try_from(n).unwrap_or(i64::MAX) >= self.settings.batch_size {
                        // A full batch: more may be waiting, go on at once.
                        continue;
                    }
                    // Let the next events gather, the longer the busier.
                    let pause = self.settings.pause_after(n);
                    tokio::select! {
                        _ = tokio::time::sleep_until(started + pause) => {}
                        _ = shutdown.changed() => {}
                    }
                    if wake.has_changed().unwrap_or(true) {
                        continue;
                    }
                    // Nothing committed since the batch began: only events the horizon
                    // hid from it can be waiting (one query instead of an empty batch).
                    match self.waiting_behind_horizon(checkpoint).await {
                        Ok(false) => self.settings.poll_interval,
                        _ => horizon.next(),
                    }
                }
                Step::Idle(checkpoint) => match self.waiting_behind_horizon(checkpoint).await {
                    Ok(true) => horizon.next(),
                    _ => {
                        horizon.reset();
                        self.settings.poll_interval
                    }
                },
                // Retried when its backoff ends, not only when woken.
                Step::Failed(backoff) => backoff,
            };
            tokio::select! {
                // New events committed: the holder of the horizon may have been one of
                // them, look now.
                _ = wake.changed() => horizon.reset(),
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
    }

    /// One turn for `group`: one batch for all its projections together when they stand
    /// at one point, else (after a failure, or while one catches up after a rebuild or
    /// another process's batches) one batch for each on its own, so that a projection
    /// that fails holds back no other. Under a steady flow of events the ones behind
    /// catch up (their batches are full) and they stand together again.
    async fn step(&self, group: &'static [Projection], retry: &mut Retry) -> Step {
        if retry.together_due() {
            match self.run_round(group).await {
                Ok(Some(out)) => {
                    retry.together_ok();
                    return if out.applied > 0 {
                        Step::Applied(out.applied, out.checkpoint)
                    } else {
                        Step::Idle(out.checkpoint)
                    };
                }
                Ok(None) => {}
                Err(e) => {
                    let backoff = retry.together_failed();
                    tracing::warn!(error = %e, ?backoff, "batch of projections together failed; applying each alone");
                }
            }
        }
        let due: Vec<(usize, Projection)> = group
            .iter()
            .copied()
            .enumerate()
            .filter(|(i, _)| retry.due(*i))
            .collect();
        let results =
            futures_util::future::join_all(due.iter().map(|(_, p)| self.run_batch(*p))).await;
        let mut applied = 0;
        let mut lowest: Option<LogPoint> = None;
        for ((i, p), result) in due.into_iter().zip(results) {
            match result {
                Ok(out) => {
                    retry.ok(i);
                    applied = applied.max(out.applied);
                    lowest = Some(lowest.map_or(out.checkpoint, |l| l.min(out.checkpoint)));
                }
                Err(e) => {
                    let backoff = retry.failed(i);
                    tracing::warn!(projection = p.name(), error = %e, ?backoff, "projection batch failed");
                }
            }
        }
        match lowest {
            Some(at) if applied > 0 => Step::Applied(applied, at),
            // One of the group waits out a backoff: look again then, not only when woken.
            Some(_) if retry.any_failing() => Step::Failed(retry.soonest()),
            Some(at) => Step::Idle(at),
            None => Step::Failed(retry.soonest()),
        }
    }

    /// True when committed events exist past `checkpoint` that the horizon still hides
    /// (an older transaction is in flight): worth looking again very soon.
    async fn waiting_behind_horizon(&self, checkpoint: LogPoint) -> Result<bool, ReadError> {
        let mut conn = self.pool.get().await?;
        Ok(event_log::any_after(&mut conn, checkpoint).await?)
    }
}

/// One projection's batch, in a transaction that holds its applier lock.
async fn apply_batch(
    conn: &mut AsyncPgConnection,
    projection: Projection,
    limit: i64,
) -> Result<(BatchOutcome, Vec<Change>, Vec<StoredEvent>), ReadError> {
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

/// Simple-query SQL taking the applier locks of `projections` (the same locks as
/// [`lock_applier`]), in the order given; every caller gives them in
/// [`Projection::ALL`]'s order, so two rounds never wait on each other in a cycle.
fn lock_sql(projections: &[Projection]) -> String {
    let locks: Vec<String> = projections
        .iter()
        .map(|p| {
            format!(
                "pg_advisory_xact_lock(hashtext('till.projection.{}'))",
                p.name()
            )
        })
        .collect();
    format!("SELECT {}", locks.join(", "))
}

/// What a round of all projections applied.
#[derive(Debug, Clone, Copy)]
pub struct RoundOutcome {
    /// Events applied (to every projection).
    pub applied: usize,
    /// Where every projection now stands.
    pub checkpoint: LogPoint,
}

/// A round's work, for publishing after its commit.
struct RoundBatch {
    /// Events other processes applied since this one last looked.
    missed: Vec<StoredEvent>,
    /// Events this round applied.
    batch: Vec<StoredEvent>,
    /// What each projection's part changed, in the group's order.
    changes: Vec<Vec<Change>>,
    /// The generation of each projection's tables, in the same order.
    generations: Vec<i64>,
    /// Where every projection now stands.
    checkpoint: LogPoint,
}

/// The body of a round, under the group's applier locks: reads their checkpoints and
/// the events after `from` (this process's view of where they all stand) together,
/// then sends every projection's statements and the checkpoints' move together. None
/// when the stored checkpoints do not stand at one point, or when the read cannot see
/// past where another process got (more than `limit` events ahead).
async fn apply_round(
    conn: &mut AsyncPgConnection,
    group: &[Projection],
    from: LogPoint,
    limit: i64,
) -> Result<Option<RoundBatch>, ReadError> {
    let shared: &AsyncPgConnection = conn;
    let (stored, mut events) = futures_util::try_join!(checkpoints(shared, group), async {
        Ok(event_log::read_after(shared, from, limit).await?)
    },)?;
    let Some(&(at, _)) = <[_]>::first(&stored) else {
        return Ok(None);
    };
    if stored.iter().any(|(p, _)| *p != at) || at < from {
        return Ok(None);
    }
    if at > from && events.last().is_none_or(|e| e.point() < at) {
        return Ok(None);
    }
    let split = events.partition_point(|e| e.point() <= at);
    let batch = events.split_off(split);
    let missed = events;
    let generations: Vec<i64> = stored.iter().map(|(_, g)| *g).collect();
    let Some(last) = batch.last() else {
        return Ok(Some(RoundBatch {
            missed,
            batch,
            changes: vec![Vec::new(); group.len()],
            generations,
            checkpoint: at,
        }));
    };
    let checkpoint = last.point();
    let mut changes = vec![Vec::new(); group.len()];
    let names: Vec<&str> = group.iter().map(|p| p.name()).collect();
    // Each projection sends its statements one after another; the projections and the
    // checkpoints' move go out side by side. PostgreSQL runs them in the order they
    // arrive, all in this transaction.
    let applies = group
        .iter()
        .copied()
        .zip(changes.iter_mut())
        .map(|(p, mine)| p.apply_batch(shared, &batch, mine));
    let (applied, saved) = futures_util::join!(
        futures_util::future::join_all(applies),
        event_log::save_checkpoints(shared, &names, checkpoint, Some(PROJECTED_CHANNEL)),
    );
    for result in applied {
        result?;
    }
    saved?;
    for mine in &mut changes {
        mine.dedup();
    }
    Ok(Some(RoundBatch {
        missed,
        batch,
        changes,
        generations,
        checkpoint,
    }))
}

/// The groups of projections the runner applies, each in one transaction per batch,
/// side by side, each group at its own pace. The product view has the heaviest
/// statements (every stock change rewrites a row, and popularity follows to its own
/// indexed table), so it runs on its own connection and loop beside the others instead
/// of holding their visibility back; the other three share a transaction.
const ROUNDS: [&[Projection]; 2] = [
    &[Projection::ProductView],
    &[
        Projection::OrderView,
        Projection::CustomerSummary,
        Projection::Sales,
    ],
];

/// How long the runner waits before looking again while committed events stay hidden
/// behind the horizon (a transaction older than them still in flight): the first look
/// comes soon, since most holders are commands that commit within milliseconds, and
/// later ones back off exponentially, so a long holder (a bulk load, an open session)
/// does not have every projector of every replica poll the database every few
/// milliseconds for as long as it lasts. Progress and wake-ups start it over.
#[derive(Debug)]
struct HorizonWait {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl HorizonWait {
    fn new(settings: &ProjectorSettings) -> Self {
        Self {
            first: settings.horizon_retry,
            max: settings.horizon_retry_max.max(settings.horizon_retry),
            next: settings.horizon_retry,
        }
    }

    /// The wait before the next look, doubling the one after it.
    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = (wait * 2).min(self.max);
        wait
    }

    fn reset(&mut self) {
        self.next = self.first;
    }
}

/// What a turn of the runner did.
enum Step {
    /// Applied this many events at most to one projection; the group's projections
    /// that ran stand at this point or past it.
    Applied(usize, LogPoint),
    /// Nothing to apply past this point.
    Idle(LogPoint),
    /// Every batch tried failed; try again after this long.
    Failed(Duration),
}

/// When the runner tries a group again after failures: the batch of the group together,
/// and each projection on its own (so one that keeps failing is retried with backoff
/// while the others go on at their pace).
struct Retry {
    together: Backoff,
    alone: Vec<Backoff>,
}

#[derive(Default, Clone, Copy)]
struct Backoff {
    failures: u32,
    until: Option<tokio::time::Instant>,
}

impl Backoff {
    fn due(&self) -> bool {
        self.until.is_none_or(|t| tokio::time::Instant::now() >= t)
    }

    fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let wait = Duration::from_millis(100u64 << self.failures.min(4));
        self.until = Some(tokio::time::Instant::now() + wait);
        wait
    }
}

impl Retry {
    fn new(projections: usize) -> Self {
        Self {
            together: Backoff::default(),
            alone: vec![Backoff::default(); projections],
        }
    }

    fn together_due(&self) -> bool {
        self.together.due()
    }

    fn together_ok(&mut self) {
        self.together = Backoff::default();
    }

    fn together_failed(&mut self) -> Duration {
        self.together.failed()
    }

    /// Whether the group's `i`-th projection may be tried on its own now.
    fn due(&self, i: usize) -> bool {
        self.alone.get(i).is_none_or(Backoff::due)
    }

    fn ok(&mut self, i: usize) {
        if let Some(b) = self.alone.get_mut(i) {
            *b = Backoff::default();
        }
    }

    fn failed(&mut self, i: usize) -> Duration {
        self.alone
            .get_mut(i)
            .map_or(Duration::from_millis(100), Backoff::failed)
    }

    /// Whether some projection of the group failed its last batch on its own.
    fn any_failing(&self) -> bool {
        self.alone.iter().any(|b| b.failures > 0)
    }

    /// How long until some projection may be tried again.
    fn soonest(&self) -> Duration {
        let now = tokio::time::Instant::now();
        self.alone
            .iter()
            .filter_map(|b| b.until)
            .map(|t| t.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_millis(100))
    }
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

/// The stored checkpoints and table generations of `projections`, in their order (the
/// start of the log and 0 for one that has none yet).
async fn checkpoints(
    mut conn: &AsyncPgConnection,
    projections: &[Projection],
) -> Result<Vec<(LogPoint, i64)>, ReadError> {
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    let stored: Vec<(String, i64, i64, i64)> = projection_checkpoints::table
        .filter(projection_checkpoints::projection.eq_any(&names))
        .select((
            projection_checkpoints::projection,
            projection_checkpoints::tx_id,
            projection_checkpoints::position,
            projection_checkpoints::generation,
        ))
        .load(&mut conn)
        .await?;
    Ok(names
        .iter()
        .map(|name| {
            stored
                .iter()
                .find(|(n, ..)| n == name)
                .map(|&(_, tx_id, position, generation)| (LogPoint { tx_id, position }, generation))
                .unwrap_or_default()
        })
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_behind_a_held_horizon_back_off_up_to_the_cap_and_start_over() {
        let mut wait = HorizonWait::new(&ProjectorSettings {
            horizon_retry: Duration::from_millis(5),
            horizon_retry_max: Duration::from_millis(50),
            ..ProjectorSettings::default()
        });
        let waits: Vec<u128> = (0..7).map(|_| wait.next().as_millis()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 50, 50, 50]);
        wait.reset();
        assert_eq!(wait.next(), Duration::from_millis(5));
    }

    #[test]
    fn the_pause_after_a_batch_grows_with_its_size_up_to_the_pace() {
        let settings = ProjectorSettings {
            pace: Duration::from_millis(25),
            pace_full_at: 50,
            ..ProjectorSettings::default()
        };
        let pauses: Vec<Duration> = [0, 1, 3, 25, 49, 50, 51, 499]
            .into_iter()
            .map(|n| settings.pause_after(n))
            .collect();
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        assert_eq!(
            pauses,
            [
                ms(0),
                us(500),
                us(1500),
                us(12_500),
                us(24_500),
                ms(25),
                ms(25),
                ms(25)
            ]
        );
        let no_share = ProjectorSettings {
            pace_full_at: 0,
            ..settings
        };
        assert_eq!(
            no_share.pause_after(1),
            ms(25),
            "0 means always the whole pace"
        );
    }
}
