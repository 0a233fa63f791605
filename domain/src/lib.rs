//! Till's write side: parse-don't-validate input types, commands that enforce the
//! invariants, domain events appended to the log in the same transaction, and the
//! database plumbing (pool, migrations, embedded PostgreSQL).
//!
//! This crate knows nothing of HTTP or GraphQL.

pub mod channels;
pub mod commands;
pub mod db;
pub mod error;
pub mod event_log;
pub mod events;
pub mod idempotency;
pub mod jobs;
pub mod net;
pub mod passwords;
pub mod private_file;
pub mod replicas;
pub mod schema;
pub mod seed;
pub mod types;
pub mod wakeups;
pub mod webhooks;
pub mod write_side_lookups;

pub use error::DomainError;
