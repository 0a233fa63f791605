//! The PostgreSQL NOTIFY channels Till uses, in one place: who sends each, who listens,
//! and what its payload says. A leaf module, so that the modules that send
//! ([`crate::wakeups`], [`crate::event_log`], [`crate::jobs`], the account commands) and
//! the one that listens ([`crate::db::listen`]) all depend on it and not on each other.

/// The channel the projectors LISTEN on; commands NOTIFY it after their events commit
/// ([`crate::wakeups`]).
pub const EVENTS_CHANNEL: &str = "till_events";

/// The channel a projector NOTIFYs after committing a batch, so projectors and
/// followers in other processes invalidate their caches at once.
pub const PROJECTED_CHANNEL: &str = "till_projected";

/// The channel job workers LISTEN on; the payload is the queue name.
pub const JOBS_CHANNEL: &str = "till_jobs";

/// The channel account commands notify when a session ends or a role changes; the
/// payload says which (`s:<family id>`, `a:<account id>`).
pub const AUTH_CHANNEL: &str = "till_auth";

/// Every channel Till notifies: new events, moved projection checkpoints, new jobs,
/// ended sessions and changed roles.
pub const CHANNELS: [&str; 4] = [
    EVENTS_CHANNEL,
    PROJECTED_CHANNEL,
    JOBS_CHANNEL,
    AUTH_CHANNEL,
];
