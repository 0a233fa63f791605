//! Projections in the schema: each one's position and lag, and its last rebuild.

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, Utc};
use till_read_models::queries::ProjectionStatus as Status;
use till_read_models::RebuildStatus;

use super::scalars::BigInt;

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
