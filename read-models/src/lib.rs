//! Till's read side: projections of the event log into denormalized tables, the
//! projector that applies them (exactly once, in log order, never skipping an event),
//! read queries, and the moka cache the projector invalidates.
//!
//! Depends on the domain crate only for its event types and database plumbing; never
//! writes write-side tables.

pub mod cache;
pub mod error;
pub mod pages;
pub mod progress;
pub mod projections;
pub mod projector;
pub mod queries;
pub mod read_side;
pub mod rebuild;
pub mod schema;
pub mod sources;
pub mod views;

pub use cache::{CacheKind, CacheSettings, CacheSnapshot, ReadCache};
pub use error::ReadError;
pub use progress::Progress;
pub use projections::{changes_of, Applied, Change, Projection};
pub use projector::{
    Projector, ProjectorSettings, RoundOutcome, DEFAULT_PACE_FULL_AT, DEFAULT_PACE_MS,
};
pub use queries::ReadModels;
pub use read_side::{ReadSide, ReadSideBuilder};
pub use rebuild::{
    Rebuild, RebuildPhase, RebuildProgress, RebuildSettings, RebuildState, RebuildStatus,
};
pub use sources::{Lsn, ReadSources, ReplicaSettings, ReplicaStatus};
