//! Where a rebuild stands, as `projection_rebuilds` records it for every process (and
//! `projections` / `till projections status` show it).

use super::*;

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
    pub(super) fn as_db(self) -> &'static str {
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
    pub(super) fn as_db(self) -> &'static str {
        match self {
            Self::Copying => "COPYING",
            Self::Indexing => "INDEXING",
            Self::Swapping => "SWAPPING",
            Self::Finished => "FINISHED",
        }
    }

    pub(super) fn from_db(phase: &str) -> Self {
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

impl Rebuild {
    /// Records progress in `projection_rebuilds` (what other processes read) and tells
    /// `on_progress`.
    pub(super) async fn progress(
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
    pub(super) async fn finish(&mut self, state: RebuildState, applied: i64, error: Option<&str>) {
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
