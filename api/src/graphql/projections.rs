//! Projections in the back office: `projections` (checkpoint, lag and last rebuild of
//! each) and `rebuildProjection` (ADMIN), which rebuilds one from the whole event log
//! without downtime and reports its progress in `projections`.

use async_graphql::{Context, Enum, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use till_read_models::queries::ProjectionStatus as Status;
use till_read_models::{Projection, RebuildStatus};

use super::error::{self, coded, Code};
use super::types::scalars::BigInt;
use super::{state, AdminGuard, StaffGuard};

/// A projection (read model) of the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "till_read_models::Projection")]
pub enum ProjectionName {
    /// Categories and the product view (`product`, `products`, `categories`).
    ProductView,
    /// The order view (`order`, `myOrders`, `orders`).
    OrderView,
    /// Customer summaries (`me`).
    CustomerSummary,
    /// Sales per day and per product (`salesReport`, `topProducts`).
    Sales,
}

/// Where one projection stands.
#[derive(Debug, Clone, SimpleObject)]
pub struct ProjectionStatus {
    /// Projection name (`product_view`, `order_view`, `customer_summary`, `sales`).
    pub name: String,
    /// Last applied log position.
    #[graphql(deprecation = "a 32-bit Int; use `logPosition`")]
    pub position: i64,
    /// Last applied log position (64 bits).
    pub log_position: BigInt,
    /// Events in the log not yet applied.
    #[graphql(deprecation = "a 32-bit Int; use `eventsBehind`")]
    pub lag_events: i64,
    /// Events in the log not yet applied (64 bits).
    pub events_behind: BigInt,
    /// When it last applied a batch.
    pub updated_at: Option<DateTime<Utc>>,
    /// Its last rebuild (running or finished), if it ever had one.
    pub rebuild: Option<ProjectionRebuild>,
}

/// State of a rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "till_read_models::RebuildState")]
pub enum ProjectionRebuildState {
    /// Building aside or swapping in.
    Running,
    /// The rebuilt tables replaced the live ones.
    Done,
    /// Failed, stopped, or its process went away; the live tables were left as they
    /// were.
    Failed,
}

/// What a running rebuild is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "till_read_models::RebuildPhase")]
pub enum ProjectionRebuildPhase {
    /// Replaying the event log into tables built aside.
    Copying,
    /// Building the new tables' indexes.
    Indexing,
    /// Applying the last events and swapping the new tables in.
    Swapping,
    /// Done or failed.
    Finished,
}

/// A projection rebuild and its progress.
#[derive(Debug, Clone, SimpleObject)]
pub struct ProjectionRebuild {
    /// Running, done or failed.
    pub state: ProjectionRebuildState,
    /// What it is doing.
    pub phase: ProjectionRebuildPhase,
    /// Events replayed so far.
    #[graphql(deprecation = "a 32-bit Int; use `eventsReplayed`")]
    pub events_applied: i64,
    /// Events replayed so far (64 bits).
    pub events_replayed: BigInt,
    /// Events to replay (the log's size when it started; grows if it replays more).
    #[graphql(deprecation = "a 32-bit Int; use `eventsToReplay`")]
    pub events_total: i64,
    /// Events to replay (64 bits; the log's size when it started, grows if it replays
    /// more).
    pub events_to_replay: BigInt,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it last reported progress.
    pub updated_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed (details of internal errors are in the server's logs).
    pub error: Option<String>,
}

impl From<RebuildStatus> for ProjectionRebuild {
    fn from(r: RebuildStatus) -> Self {
        Self {
            state: r.state.into(),
            phase: r.phase.into(),
            events_applied: r.events_applied.max(0),
            events_replayed: BigInt(r.events_applied.max(0)),
            events_total: r.events_total.max(0),
            events_to_replay: BigInt(r.events_total.max(0)),
            started_at: r.started_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
            // Database and internal failures may quote SQL: never sent to clients.
            error: r.error.map(|e| {
                if e.starts_with("internal error") || e.starts_with("database unavailable") {
                    "internal error; details are in the logs of the process that ran it".into()
                } else {
                    e
                }
            }),
        }
    }
}

impl From<Status> for ProjectionStatus {
    fn from(s: Status) -> Self {
        Self {
            name: s.name.to_owned(),
            position: s.position,
            log_position: BigInt(s.position),
            lag_events: s.lag_events,
            events_behind: BigInt(s.lag_events),
            updated_at: s.updated_at,
            rebuild: s.rebuild.map(Into::into),
        }
    }
}

/// Projection reads of the back office.
#[derive(Default)]
pub struct ProjectionsQuery;

/// Projection reads of the back office.
#[Object]
impl ProjectionsQuery {
    /// Checkpoint, lag and last rebuild of each projection (back office).
    #[graphql(guard = "StaffGuard")]
    async fn projections(&self, ctx: &Context<'_>) -> Result<Vec<ProjectionStatus>> {
        let rows = state(ctx)?
            .reads
            .projection_status()
            .await
            .map_err(error::read)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
}

/// Projection maintenance of the back office.
#[derive(Default)]
pub struct ProjectionsMutation;

/// Projection maintenance of the back office.
/// Input of `startProjectionRebuild`.
#[derive(Debug, InputObject)]
pub struct StartProjectionRebuildInput {
    /// The projection to rebuild.
    pub projection: ProjectionName,
}

/// Result of `startProjectionRebuild`.
#[derive(SimpleObject)]
pub struct ProjectionRebuildPayload {
    /// The projection with its rebuild running (follow it in `projections`).
    pub projection: ProjectionStatus,
}

#[Object]
impl ProjectionsMutation {
    /// Rebuilds a projection from the whole event log without downtime (ADMIN only):
    /// new tables are built aside while the live ones keep serving and following the
    /// log, then swapped in; every replica drops what it cached. Returns at once with
    /// the rebuild running; follow it in `projections { rebuild { ... } }`. CONFLICT when
    /// a rebuild of it is already running.
    #[graphql(guard = "AdminGuard", complexity = 50)]
    async fn start_projection_rebuild(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The projection to rebuild.")] input: StartProjectionRebuildInput,
    ) -> Result<ProjectionRebuildPayload> {
        let projection = self.rebuild_projection(ctx, input.projection).await?;
        Ok(ProjectionRebuildPayload { projection })
    }

    /// Rebuilds a projection (ADMIN only); see `startProjectionRebuild`.
    #[graphql(
        guard = "AdminGuard",
        complexity = 50,
        deprecation = "use `startProjectionRebuild`, which returns a payload; this goes in the next release"
    )]
    async fn rebuild_projection(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The projection to rebuild.")] projection: ProjectionName,
    ) -> Result<ProjectionStatus> {
        let st = state(ctx)?;
        let projection = Projection::from(projection);
        st.rebuilds.start(projection).await.map_err(error::read)?;
        st.reads
            .projection_status()
            .await
            .map_err(error::read)?
            .into_iter()
            .find(|s| s.name == projection.name())
            .map(Into::into)
            .ok_or_else(|| coded(Code::Internal, "the projection's status is missing"))
    }
}
