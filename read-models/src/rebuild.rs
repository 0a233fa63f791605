//! Rebuilding a projection from the event log without downtime: build aside, then swap.
//!
//! A rebuild runs on a connection of its own whose `search_path` puts a shadow schema
//! (`till_rebuild_<projection>`) first. The shadow holds empty copies of the
//! projection's tables (columns, defaults, checks, keys, storage options and triggers of
//! the live ones), so the projection's own statements, unchanged, write there while the
//! live tables keep serving reads and the projector keeps them current:
//!
//! 1. copy: replay the log from its start into the shadow in batches, publishing
//!    progress (`projection_rebuilds`) after each;
//! 2. index: create the secondary indexes once the rows are in (faster than keeping
//!    them up to date row by row), `CONCURRENTLY` so that no transaction id is held
//!    for the length of a build (which would hold back every projector), ANALYZE, and
//!    replay what arrived meanwhile;
//! 3. swap: in one transaction holding the projection's applier lock (the projector
//!    waits), apply the events that arrived meanwhile, move the live tables out to
//!    `till_retired_<projection>`, move the shadow tables in under the same names (their
//!    constraints and indexes keep the live names), point the checkpoint at the last
//!    event the shadow applied and bump the projection's `generation`, so every process
//!    drops what it cached from the old tables; then drop the old tables.
//!
//! One rebuild per projection at a time across all processes (a session advisory lock);
//! a rebuild that fails or is stopped leaves the live tables as they were and its row
//! says why. Reads never wait longer than the swap's DDL (bounded by `lock_timeout`;
//! the swap is retried when readers hold the tables longer).

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use till_domain::db::prepared::Reuse;
use till_domain::db::transactions;
use till_domain::event_log::{self, LogPoint};
use tokio::sync::watch;

use crate::error::ReadError;
use crate::projections::Projection;
use crate::projector::{apply_next, checkpoint, lock_applier, PROJECTED_CHANNEL};

/// The first key of the session advisory lock a rebuild holds (the second is the
/// projection's name hashed), so other processes can see a rebuild is alive in
/// `pg_locks`.
const REBUILD_LOCK_CLASS: i32 = 0x7111;

/// Tuning of a rebuild.
#[derive(Debug, Clone)]
pub struct RebuildSettings {
    /// Most events applied in one shadow transaction.
    pub batch_size: i64,
    /// How long the swap waits for readers to let go of the live tables before it
    /// gives up and tries again (readers queue behind a waiting swap, so keep it short).
    pub lock_timeout: Duration,
    /// Swap attempts before the rebuild fails.
    pub swap_attempts: u32,
    /// Longest single statement (index builds on large tables take a while).
    pub statement_timeout: Duration,
    /// `idle_in_transaction_session_timeout` of the rebuild's connection: a rebuild
    /// stuck between the statements of a batch or of the swap must not hold the
    /// projectors' horizon (or the swap's locks) for long. Its long statements (an index
    /// build) are active, not idle, and are bounded by `statement_timeout` instead.
    pub idle_in_transaction_timeout: Duration,
}

impl Default for RebuildSettings {
    fn default() -> Self {
        Self {
            batch_size: 5000,
            lock_timeout: Duration::from_secs(2),
            swap_attempts: 10,
            statement_timeout: Duration::from_secs(30 * 60),
            idle_in_transaction_timeout: Duration::from_secs(60),
        }
    }
}

/// Where a rebuild stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildState {
    /// Copying, indexing or swapping.
    Running,
    /// Swapped in.
    Done,
    /// Failed, stopped, or its process went away; the live tables are unchanged.
    Failed,
}

impl RebuildState {
    fn as_db(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Done => "DONE",
            Self::Failed => "FAILED",
        }
    }
}

/// What a rebuild is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildPhase {
    /// Replaying the log into the shadow tables.
    Copying,
    /// Building the shadow tables' secondary indexes.
    Indexing,
    /// Applying the last events and swapping the tables in.
    Swapping,
    /// Finished (done or failed).
    Finished,
}

impl RebuildPhase {
    fn as_db(self) -> &'static str {
        match self {
            Self::Copying => "COPYING",
            Self::Indexing => "INDEXING",
            Self::Swapping => "SWAPPING",
            Self::Finished => "FINISHED",
        }
    }

    fn from_db(phase: &str) -> Self {
        match phase {
            "COPYING" => Self::Copying,
            "INDEXING" => Self::Indexing,
            "SWAPPING" => Self::Swapping,
            _ => Self::Finished,
        }
    }
}

/// The last rebuild of a projection, as recorded in `projection_rebuilds`.
#[derive(Debug, Clone)]
pub struct RebuildStatus {
    /// The projection.
    pub projection: Projection,
    /// Running, done or failed (a running row whose process is gone reads as failed).
    pub state: RebuildState,
    /// What it is doing.
    pub phase: RebuildPhase,
    /// Events in the log when it started (grows if it applies more).
    pub events_total: i64,
    /// Events replayed so far.
    pub events_applied: i64,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it last reported.
    pub updated_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Progress reported after each batch.
#[derive(Debug, Clone, Copy)]
pub struct RebuildProgress {
    /// What the rebuild is doing.
    pub phase: RebuildPhase,
    /// Events replayed so far.
    pub applied: i64,
    /// Events to replay (the log's size at the start, or more).
    pub total: i64,
}

/// What a finished rebuild did.
#[derive(Debug, Clone, Copy)]
pub struct RebuildReport {
    /// Events replayed into the new tables.
    pub events: i64,
    /// The checkpoint the new tables start from.
    pub checkpoint: LogPoint,
    /// Whole duration.
    pub elapsed: Duration,
    /// Time spent replaying (copy phase plus the swap's catch-up).
    pub replay: Duration,
}

/// One table of the projection: where it lives and where its shadow is built.
struct Table {
    name: &'static str,
    /// `schema.table` of the live table, quoted as PostgreSQL prints it.
    live: String,
    /// The live table's schema (unquoted).
    live_schema: String,
    /// `schema.table` of the shadow table, quoted.
    shadow: String,
}

/// A rebuild that holds its projection's rebuild lock; [`Rebuild::run`] does the work.
pub struct Rebuild {
    conn: AsyncPgConnection,
    projection: Projection,
    settings: RebuildSettings,
    total: i64,
}

impl Rebuild {
    /// Takes the projection's rebuild lock and records the rebuild as running. Fails
    /// with [`ReadError::Conflict`] when another rebuild of it runs anywhere.
    pub async fn start(
        database_url: &str,
        projection: Projection,
        settings: RebuildSettings,
    ) -> Result<Self, ReadError> {
        let mut conn = till_domain::db::connect(database_url)
            .await
            .map_err(|e| ReadError::Unavailable(e.to_string()))?;
        conn.batch_execute(&till_domain::db::session_settings(
            settings.statement_timeout,
            settings.idle_in_transaction_timeout,
        ))
        .await?;
        #[derive(QueryableByName)]
        struct Locked {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            locked: bool,
        }
        let locked = diesel::sql_query(
            "SELECT pg_try_advisory_lock($1, hashtext('till.rebuild.' || $2)) AS locked",
        )
        .bind::<Integer, _>(REBUILD_LOCK_CLASS)
        .bind::<Text, _>(projection.name())
        .get_result::<Locked>(&mut conn)
        .await?
        .locked;
        if !locked {
            return Err(ReadError::Conflict(format!(
                "a rebuild of {} is already running",
                projection.name()
            )));
        }
        let total = event_log::count_after(&mut conn, LogPoint::default(), i64::MAX).await?;
        diesel::sql_query(
            "INSERT INTO projection_rebuilds AS r (projection, state, phase, events_total, \
               events_applied, started_at, updated_at, finished_at, error) \
             VALUES ($1, 'RUNNING', 'COPYING', $2, 0, now(), now(), NULL, NULL) \
             ON CONFLICT (projection) DO UPDATE SET state = 'RUNNING', phase = 'COPYING', \
               events_total = $2, events_applied = 0, started_at = now(), updated_at = now(), \
               finished_at = NULL, error = NULL",
        )
        .bind::<Text, _>(projection.name())
        .bind::<BigInt, _>(total)
        .execute(&mut conn)
        .await?;
        Ok(Self {
            conn,
            projection,
            settings,
            total,
        })
    }

    /// Events in the log when the rebuild started.
    pub fn total(&self) -> i64 {
        self.total
    }

    /// Builds the projection aside and swaps it in, calling `on_progress` after every
    /// batch. Stops (failing, live tables unchanged) when `stop` turns true.
    pub async fn run(
        mut self,
        on_progress: &mut (dyn FnMut(RebuildProgress) + Send),
        stop: &watch::Receiver<bool>,
    ) -> Result<RebuildReport, ReadError> {
        let started = std::time::Instant::now();
        let outcome = self.build_and_swap(on_progress, stop, started).await;
        match &outcome {
            Ok(report) => {
                tracing::info!(
                    projection = self.projection.name(),
                    events = report.events,
                    elapsed_ms = report.elapsed.as_millis() as u64,
                    "projection rebuilt and swapped in"
                );
                self.finish(RebuildState::Done, report.events, None).await;
            }
            Err(e) => {
                tracing::warn!(projection = self.projection.name(), error = %e, "projection rebuild failed");
                self.finish(RebuildState::Failed, -1, Some(&e.to_string()))
                    .await;
            }
        }
        // The shadow (after a failure) and the retired tables (after a swap) go; a
        // table still in use is left for the next rebuild to drop.
        if let Err(e) = self.drop_schemas().await {
            tracing::warn!(projection = self.projection.name(), error = %e, "could not drop the rebuild's schemas yet");
        }
        outcome
    }

    async fn build_and_swap(
        &mut self,
        on_progress: &mut (dyn FnMut(RebuildProgress) + Send),
        stop: &watch::Receiver<bool>,
        started: std::time::Instant,
    ) -> Result<RebuildReport, ReadError> {
        let tables = self.tables().await?;
        self.drop_schemas().await?;
        self.prepare_shadow(&tables).await?;
        // The projection's statements now resolve its tables in the shadow first.
        diesel::sql_query(
            "SELECT set_config('search_path', quote_ident($1) || ', ' || \
             current_setting('search_path'), false)",
        )
        .bind::<Text, _>(self.shadow_schema())
        .execute(&mut self.conn)
        .await?;

        let mut cursor = LogPoint::default();
        let mut applied: i64 = 0;
        self.replay_near_head(
            RebuildPhase::Copying,
            &mut cursor,
            &mut applied,
            on_progress,
            stop,
        )
        .await?;
        let mut replay = started.elapsed();

        self.progress(RebuildPhase::Indexing, applied, on_progress)
            .await?;
        for ddl in self.index_statements(&tables).await? {
            if *stop.borrow() {
                return Err(ReadError::Interrupted);
            }
            diesel::sql_query(ddl).execute(&mut self.conn).await?;
        }
        for t in &tables {
            diesel::sql_query(format!("ANALYZE {}", t.shadow))
                .execute(&mut self.conn)
                .await?;
        }
        // What arrived while indexing (large tables take a while) goes in before the
        // swap pauses the projector, so the swap only applies the last few events.
        self.replay_near_head(
            RebuildPhase::Indexing,
            &mut cursor,
            &mut applied,
            on_progress,
            stop,
        )
        .await?;

        self.progress(RebuildPhase::Swapping, applied, on_progress)
            .await?;
        let mut attempt = 0;
        let (tail, checkpoint, tail_time) = loop {
            if *stop.borrow() {
                return Err(ReadError::Interrupted);
            }
            attempt += 1;
            match self.swap(&tables, cursor).await {
                Ok(done) => break done,
                Err(e) if is_lock_timeout(&e) && attempt < self.settings.swap_attempts => {
                    let holders = self.lock_holders(&tables).await.unwrap_or_default();
                    tracing::warn!(
                        projection = self.projection.name(),
                        attempt,
                        holders = holders.join("; "),
                        "other sessions held the live tables or the applier lock; trying the swap again"
                    );
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(e) => return Err(e),
            }
        };
        applied += tail;
        replay += tail_time;
        self.total = self.total.max(applied);
        on_progress(RebuildProgress {
            phase: RebuildPhase::Finished,
            applied,
            total: self.total,
        });
        Ok(RebuildReport {
            events: applied,
            checkpoint,
            elapsed: started.elapsed(),
            replay,
        })
    }

    /// Replays batches after `cursor` into the shadow, reporting each, until one comes
    /// back short (close to the head: the swap applies the rest with the projector
    /// paused).
    async fn replay_near_head(
        &mut self,
        phase: RebuildPhase,
        cursor: &mut LogPoint,
        applied: &mut i64,
        on_progress: &mut (dyn FnMut(RebuildProgress) + Send),
        stop: &watch::Receiver<bool>,
    ) -> Result<(), ReadError> {
        loop {
            if *stop.borrow() {
                return Err(ReadError::Interrupted);
            }
            let (n, next) = self.apply_one_batch(*cursor).await?;
            *cursor = next;
            *applied += n;
            self.progress(phase, *applied, on_progress).await?;
            if n < self.settings.batch_size {
                return Ok(());
            }
        }
    }

    fn shadow_schema(&self) -> String {
        format!("till_rebuild_{}", self.projection.name())
    }

    fn retired_schema(&self) -> String {
        format!("till_retired_{}", self.projection.name())
    }

    /// Where each of the projection's tables lives now (resolved with the connection's
    /// own search path, as the projector's connections resolve them).
    async fn tables(&mut self) -> Result<Vec<Table>, ReadError> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = Nullable<Text>)]
            schema: Option<String>,
            #[diesel(sql_type = Text)]
            live: String,
            #[diesel(sql_type = Text)]
            shadow: String,
        }
        let mut out = Vec::new();
        for name in self.projection.tables() {
            let row = diesel::sql_query(
                "SELECT n.nspname AS schema, \
                   format('%I.%I', n.nspname, $1) AS live, \
                   format('%I.%I', $2, $1) AS shadow \
                 FROM (SELECT 1) AS one \
                 LEFT JOIN pg_class c ON c.oid = to_regclass(quote_ident($1)) \
                 LEFT JOIN pg_namespace n ON n.oid = c.relnamespace",
            )
            .bind::<Text, _>(*name)
            .bind::<Text, _>(self.shadow_schema())
            .get_result::<Row>(&mut self.conn)
            .await?;
            let Some(schema) = row.schema else {
                return Err(ReadError::Internal(format!(
                    "table {name} not found (are the migrations applied?)"
                )));
            };
            if schema == self.shadow_schema() {
                return Err(ReadError::Internal(format!(
                    "table {name} resolves to the rebuild's own schema"
                )));
            }
            out.push(Table {
                name,
                live: row.live,
                live_schema: schema,
                shadow: row.shadow,
            });
        }
        Ok(out)
    }

    async fn drop_schemas(&mut self) -> Result<(), ReadError> {
        for schema in [self.shadow_schema(), self.retired_schema()] {
            diesel::sql_query(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&mut self.conn)
                .await?;
        }
        Ok(())
    }

    /// Creates the shadow tables: the live tables' columns, defaults, checks, keys,
    /// storage options and triggers; the secondary indexes come after the copy.
    async fn prepare_shadow(&mut self, tables: &[Table]) -> Result<(), ReadError> {
        for schema in [self.shadow_schema(), self.retired_schema()] {
            diesel::sql_query(format!("CREATE SCHEMA {schema}"))
                .execute(&mut self.conn)
                .await?;
        }
        let mut statements = Vec::new();
        for t in tables {
            statements.push(format!(
                "CREATE TABLE {} (LIKE {} INCLUDING ALL EXCLUDING INDEXES)",
                t.shadow, t.live
            ));
            statements.extend(
                definitions(
                    &mut self.conn,
                    "SELECT format('ALTER TABLE %s ADD CONSTRAINT %I %s', $2, conname, \
                       pg_get_constraintdef(oid)) AS ddl \
                     FROM pg_constraint WHERE conrelid = $1::regclass \
                       AND contype IN ('p', 'u', 'x') ORDER BY conname",
                    t,
                )
                .await?,
            );
            statements.extend(
                definitions(
                    &mut self.conn,
                    "SELECT format('ALTER TABLE %s SET (%s)', $2, \
                       array_to_string(reloptions, ', ')) AS ddl \
                     FROM pg_class WHERE oid = $1::regclass AND reloptions IS NOT NULL",
                    t,
                )
                .await?,
            );
            statements.extend(
                definitions(
                    &mut self.conn,
                    "SELECT replace(pg_get_triggerdef(oid), ' ON ' || $1 || ' ', \
                       ' ON ' || $2 || ' ') AS ddl \
                     FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal \
                     ORDER BY tgname",
                    t,
                )
                .await?
                .into_iter()
                .map(|ddl| checked(ddl, t))
                .collect::<Result<Vec<_>, _>>()?,
            );
        }
        for ddl in statements {
            diesel::sql_query(ddl).execute(&mut self.conn).await?;
        }
        Ok(())
    }

    /// The live tables' secondary indexes (those not behind a constraint), for the
    /// shadow tables, under the same names, built `CONCURRENTLY` (so the build holds
    /// no transaction id, see [`concurrently`]).
    async fn index_statements(&mut self, tables: &[Table]) -> Result<Vec<String>, ReadError> {
        let mut out = Vec::new();
        for t in tables {
            for ddl in definitions(
                &mut self.conn,
                "SELECT replace(pg_get_indexdef(i.indexrelid), ' ON ' || $1 || ' ', \
                   ' ON ' || $2 || ' ') AS ddl \
                 FROM pg_index i WHERE i.indrelid = $1::regclass AND NOT EXISTS \
                   (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) \
                 ORDER BY i.indexrelid",
                t,
            )
            .await?
            {
                out.push(concurrently(&checked(ddl, t)?)?);
            }
        }
        Ok(out)
    }

    /// Replays one batch after `cursor` into the shadow; returns how many events and the
    /// new cursor.
    async fn apply_one_batch(&mut self, cursor: LogPoint) -> Result<(i64, LogPoint), ReadError> {
        let projection = self.projection;
        let limit = self.settings.batch_size;
        transactions::derived_transaction(&mut self.conn, async |conn| {
            replay(conn, projection, cursor, limit).await
        })
        .await
    }

    /// Applies what arrived since `cursor` and swaps the shadow tables in, in one
    /// transaction that holds the projection's applier lock. Returns the events applied
    /// here, the new checkpoint and the time the catch-up took.
    async fn swap(
        &mut self,
        tables: &[Table],
        cursor: LogPoint,
    ) -> Result<(i64, LogPoint, Duration), ReadError> {
        let projection = self.projection;
        let limit = self.settings.batch_size;
        let lock_timeout = self.settings.lock_timeout.as_millis();
        let retired = self.retired_schema();
        transactions::transaction(&mut self.conn, async |conn| {
            diesel::sql_query(format!("SET LOCAL lock_timeout = {lock_timeout}"))
                .execute(&mut *conn)
                .await?;
            // The projector's applier lock: no live batch runs until this commits.
            lock_applier(conn, projection).await?;
            let catch_up = std::time::Instant::now();
            let mut cursor = cursor;
            let mut applied = 0;
            loop {
                let (n, next) = replay(conn, projection, cursor, limit).await?;
                applied += n;
                cursor = next;
                if n == 0 {
                    break;
                }
            }
            let catch_up = catch_up.elapsed();
            let (live, _) = checkpoint(conn, projection).await?;
            if cursor < live {
                return Err(ReadError::Internal(format!(
                    "the rebuilt {} stopped at {cursor:?}, behind the live checkpoint {live:?}",
                    projection.name()
                )));
            }
            for t in tables {
                let (live, rebuilt) = (shape(conn, &t.live).await?, shape(conn, &t.shadow).await?);
                if live != rebuilt {
                    tracing::warn!(table = t.name, %live, %rebuilt, "live table changed during the rebuild");
                    return Err(ReadError::Conflict(format!(
                        "{} changed during the rebuild (a migration?); rebuild again",
                        t.name
                    )));
                }
            }
            for t in tables {
                diesel::sql_query(format!("ALTER TABLE {} SET SCHEMA {retired}", t.live))
                    .execute(&mut *conn)
                    .await?;
                diesel::sql_query(format!(
                    "ALTER TABLE {} SET SCHEMA {}",
                    t.shadow,
                    quote(&t.live_schema)
                ))
                .execute(&mut *conn)
                .await?;
            }
            event_log::save_checkpoint(conn, projection.name(), cursor, Some(PROJECTED_CHANNEL))
                .await?;
            diesel::sql_query(
                "UPDATE projection_checkpoints SET generation = generation + 1 \
                 WHERE projection = $1",
            )
            .bind::<Text, _>(projection.name())
            .execute(&mut *conn)
            .await?;
            Ok::<_, ReadError>((applied, cursor, catch_up))
        })
        .await
    }

    /// Sessions holding locks on the live tables or the projection's applier lock (for
    /// the log when a swap times out).
    async fn lock_holders(&mut self, tables: &[Table]) -> Result<Vec<String>, ReadError> {
        let live: Vec<String> = tables.iter().map(|t| t.live.clone()).collect();
        let rows: Vec<Text1> = diesel::sql_query(
            "SELECT format('pid %s %s %s (%s)', a.pid, l.mode, \
               coalesce(l.relation::regclass::text, 'advisory'), \
               coalesce(a.state, '') || ': ' || left(coalesce(a.query, ''), 120)) AS t \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.pid <> pg_backend_pid() AND l.granted AND ( \
               l.relation = ANY(SELECT to_regclass(x) FROM unnest($1::text[]) AS x) \
               OR (l.locktype = 'advisory' AND l.objsubid = 1 \
                   AND l.objid::bigint = (hashtext('till.projection.' || $2)::bigint & 4294967295)))",
        )
        .bind::<diesel::sql_types::Array<Text>, _>(live)
        .bind::<Text, _>(self.projection.name())
        .load(&mut self.conn)
        .await?;
        Ok(rows.into_iter().map(|r| r.t).collect())
    }

    /// Records progress in `projection_rebuilds` (what other processes read) and tells
    /// `on_progress`.
    async fn progress(
        &mut self,
        phase: RebuildPhase,
        applied: i64,
        on_progress: &mut (dyn FnMut(RebuildProgress) + Send),
    ) -> Result<(), ReadError> {
        self.total = self.total.max(applied);
        diesel::sql_query(
            "UPDATE projection_rebuilds SET phase = $2, events_applied = $3, \
               events_total = greatest(events_total, $3), updated_at = now() \
             WHERE projection = $1",
        )
        .bind::<Text, _>(self.projection.name())
        .bind::<Text, _>(phase.as_db())
        .bind::<BigInt, _>(applied)
        .prepared()
        .execute(&mut self.conn)
        .await?;
        on_progress(RebuildProgress {
            phase,
            applied,
            total: self.total,
        });
        Ok(())
    }

    /// Records the outcome (best effort: the row of a rebuild whose connection broke
    /// reads as failed anyway, since its lock is gone).
    async fn finish(&mut self, state: RebuildState, applied: i64, error: Option<&str>) {
        let result = diesel::sql_query(
            "UPDATE projection_rebuilds SET state = $2, phase = 'FINISHED', \
               events_applied = CASE WHEN $3 < 0 THEN events_applied ELSE $3 END, \
               events_total = greatest(events_total, $3), updated_at = now(), \
               finished_at = now(), error = $4 \
             WHERE projection = $1",
        )
        .bind::<Text, _>(self.projection.name())
        .bind::<Text, _>(state.as_db())
        .bind::<BigInt, _>(applied)
        .bind::<Nullable<Text>, _>(error)
        .execute(&mut self.conn)
        .await;
        if let Err(e) = result {
            tracing::warn!(projection = self.projection.name(), error = %e, "could not record the rebuild's outcome");
        }
    }
}

/// The last rebuild of every projection that has had one. A row still marked running
/// whose process no longer holds the rebuild lock reads as failed.
pub async fn last_rebuilds(conn: &mut AsyncPgConnection) -> Result<Vec<RebuildStatus>, ReadError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        projection: String,
        #[diesel(sql_type = Text)]
        state: String,
        #[diesel(sql_type = Text)]
        phase: String,
        #[diesel(sql_type = BigInt)]
        events_total: i64,
        #[diesel(sql_type = BigInt)]
        events_applied: i64,
        #[diesel(sql_type = diesel::sql_types::Timestamptz)]
        started_at: DateTime<Utc>,
        #[diesel(sql_type = diesel::sql_types::Timestamptz)]
        updated_at: DateTime<Utc>,
        #[diesel(sql_type = Nullable<diesel::sql_types::Timestamptz>)]
        finished_at: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<Text>)]
        error: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        alive: bool,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT r.projection, r.state, r.phase, r.events_total, r.events_applied, \
           r.started_at, r.updated_at, r.finished_at, r.error, \
           EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND l.objsubid = 2 AND l.classid::bigint = $1 \
             AND l.objid::bigint = (hashtext('till.rebuild.' || r.projection)::bigint & 4294967295) \
           ) AS alive \
         FROM projection_rebuilds r ORDER BY r.projection",
    )
    .bind::<BigInt, _>(i64::from(REBUILD_LOCK_CLASS))
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let projection = Projection::from_name(&r.projection)?;
            let (state, error) = match r.state.as_str() {
                "RUNNING" if r.alive => (RebuildState::Running, r.error),
                "RUNNING" => (
                    RebuildState::Failed,
                    Some("interrupted: the process running it went away".to_owned()),
                ),
                "DONE" => (RebuildState::Done, r.error),
                _ => (RebuildState::Failed, r.error),
            };
            Some(RebuildStatus {
                projection,
                state,
                phase: if state == RebuildState::Running {
                    RebuildPhase::from_db(&r.phase)
                } else {
                    RebuildPhase::Finished
                },
                events_total: r.events_total,
                events_applied: r.events_applied,
                started_at: r.started_at,
                updated_at: r.updated_at,
                finished_at: r.finished_at,
                error,
            })
        })
        .collect())
}

/// Applies up to `limit` events after `cursor` to the rebuild's copies; returns how
/// many and the new cursor.
async fn replay(
    conn: &mut AsyncPgConnection,
    projection: Projection,
    cursor: LogPoint,
    limit: i64,
) -> Result<(i64, LogPoint), ReadError> {
    let (batch, _, next) = apply_next(conn, projection, cursor, limit).await?;
    Ok((i64::try_from(batch.len()).unwrap_or(i64::MAX), next))
}

#[derive(QueryableByName)]
struct Text1 {
    #[diesel(sql_type = Text)]
    t: String,
}

/// What a table looks like, minus its name and schema: columns with their types, then
/// indexes, constraints and triggers with their definitions, then storage options.
/// The swap compares the live tables with the rebuilt ones: a migration that changed the
/// live table during the rebuild must not be undone by the swap.
async fn shape(conn: &mut AsyncPgConnection, table: &str) -> Result<String, ReadError> {
    #[derive(QueryableByName)]
    struct Shape {
        #[diesel(sql_type = Nullable<Text>)]
        shape: Option<String>,
    }
    Ok(diesel::sql_query(
        "SELECT concat_ws(E'\\n', \
           (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) \
              || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END \
              || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), ''), ', ' \
              ORDER BY a.attnum) \
            FROM pg_attribute a \
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
            WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped), \
           (SELECT string_agg(def, E'\\n' ORDER BY def) FROM ( \
              SELECT regexp_replace(pg_get_indexdef(indexrelid), ' ON \\S+ ', ' ON _ ') AS def \
              FROM pg_index WHERE indrelid = $1::regclass \
              UNION ALL SELECT conname || ' ' || pg_get_constraintdef(oid) \
              FROM pg_constraint WHERE conrelid = $1::regclass \
              UNION ALL SELECT regexp_replace(pg_get_triggerdef(oid), ' ON \\S+ ', ' ON _ ') \
              FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal) AS defs), \
           (SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = $1::regclass) \
         ) AS shape",
    )
    .bind::<Text, _>(table)
    .get_result::<Shape>(conn)
    .await?
    .shape
    .unwrap_or_default())
}

/// Runs a catalog query over one table (`$1` the live table, `$2` its shadow) that
/// returns DDL, with an empty search path so every name in the definitions comes out
/// schema-qualified (and the text replacements below are exact).
async fn definitions(
    conn: &mut AsyncPgConnection,
    query: &str,
    table: &Table,
) -> Result<Vec<String>, ReadError> {
    #[derive(QueryableByName)]
    struct Ddl {
        #[diesel(sql_type = Text)]
        ddl: String,
    }
    let rows: Vec<Ddl> = transactions::transaction(conn, async |conn| {
        diesel::sql_query("SET LOCAL search_path = ''")
            .execute(&mut *conn)
            .await?;
        diesel::sql_query(query)
            .bind::<Text, _>(&table.live)
            .bind::<Text, _>(&table.shadow)
            .load::<Ddl>(conn)
            .await
    })
    .await?;
    Ok(rows.into_iter().map(|r| r.ddl).collect())
}

/// A definition copied from the live table must now name the shadow table.
fn checked(ddl: String, table: &Table) -> Result<String, ReadError> {
    if ddl.contains(&format!(" ON {} ", table.shadow)) {
        Ok(ddl)
    } else {
        Err(ReadError::Internal(format!(
            "cannot copy a definition of {} to the shadow table: {ddl}",
            table.live
        )))
    }
}

/// `CREATE [UNIQUE] INDEX ...` as `CREATE [UNIQUE] INDEX CONCURRENTLY ...`.
///
/// A plain `CREATE INDEX` is one transaction that takes its id at the start (it writes
/// the catalog) and keeps it until the build ends; projectors read only below the oldest
/// id in flight, so the whole build held every projection back, for seconds on a large
/// table. A concurrent build writes the catalog in short transactions of its own and
/// builds without an id. It waits for transactions older than its snapshots (short ones
/// here: nobody else writes the shadow table) and cannot run inside a transaction block,
/// which the rebuild's connection is not in between batches.
fn concurrently(ddl: &str) -> Result<String, ReadError> {
    for prefix in ["CREATE INDEX ", "CREATE UNIQUE INDEX "] {
        if let Some(rest) = ddl.strip_prefix(prefix) {
            return Ok(format!("{prefix}CONCURRENTLY {rest}"));
        }
    }
    Err(ReadError::Internal(format!(
        "cannot build this index concurrently: {ddl}"
    )))
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// PostgreSQL's `lock_timeout` cancellation (diesel reports no SQLSTATE; the text is
/// stable).
fn is_lock_timeout(err: &ReadError) -> bool {
    matches!(err, ReadError::Internal(m) if m.contains("canceling statement due to lock timeout"))
}

#[cfg(test)]
mod tests {
    use super::concurrently;

    #[test]
    fn index_builds_are_made_concurrent() {
        let built = |ddl: &str| concurrently(ddl).unwrap();
        assert_eq!(
            built("CREATE INDEX a_idx ON s.t USING btree (x)"),
            "CREATE INDEX CONCURRENTLY a_idx ON s.t USING btree (x)"
        );
        assert_eq!(
            built("CREATE UNIQUE INDEX a_key ON s.t USING btree (x)"),
            "CREATE UNIQUE INDEX CONCURRENTLY a_key ON s.t USING btree (x)"
        );
        assert!(concurrently("ALTER TABLE s.t ADD x int").is_err());
    }

    /// A rebuild writes its copies because the projections name their tables without a
    /// schema (the rebuild's search path puts the copies first): a qualified name would
    /// write the live table while it is being rebuilt.
    #[test]
    fn projections_name_their_tables_without_a_schema() {
        let sources = [
            ("mod.rs", include_str!("projections/mod.rs")),
            (
                "product_view.rs",
                include_str!("projections/product_view.rs"),
            ),
            ("order_view.rs", include_str!("projections/order_view.rs")),
            (
                "customer_summary.rs",
                include_str!("projections/customer_summary.rs"),
            ),
            ("sales.rs", include_str!("projections/sales.rs")),
        ];
        for (file, text) in sources {
            for (n, line) in text.lines().enumerate() {
                let qualified = line.match_indices(".rm_").any(|(i, _)| {
                    line[..i]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '"')
                });
                assert!(
                    !qualified,
                    "projections/{file}:{}: a schema-qualified read-model table",
                    n + 1
                );
            }
        }
    }
}
