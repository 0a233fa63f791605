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

mod shadow_tables;
mod status;

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
use shadow_tables::*;
pub use status::*;

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

/// PostgreSQL's `lock_timeout` cancellation (diesel reports no SQLSTATE; the text is
/// stable).
fn is_lock_timeout(err: &ReadError) -> bool {
    matches!(err, ReadError::Internal(m) if m.contains("canceling statement due to lock timeout"))
}
