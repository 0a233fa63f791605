//! Errors of the read side.

use thiserror::Error;
use till_domain::DomainError;

/// Why a read or a projection step failed.
#[derive(Debug, Error)]
pub enum ReadError {
    /// The database could not be reached or timed out.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A pagination cursor or filter could not be used.
    #[error("{0}")]
    BadInput(String),
    /// The read models did not reach the requested point in time.
    #[error("the read models did not catch up within {0:?}")]
    NotCaughtUp(std::time::Duration),
    /// The request conflicts with work in progress (a rebuild already running).
    #[error("{0}")]
    Conflict(String),
    /// Stopped before it finished (shutdown or Ctrl-C); nothing was changed.
    #[error("stopped before it finished")]
    Interrupted,
    /// Unexpected data or a bug; details are for the logs only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<diesel::result::Error> for ReadError {
    fn from(err: diesel::result::Error) -> Self {
        Self::from(DomainError::from(err))
    }
}

impl From<diesel_async::pooled_connection::bb8::RunError> for ReadError {
    fn from(err: diesel_async::pooled_connection::bb8::RunError) -> Self {
        Self::Unavailable(err.to_string())
    }
}

impl From<DomainError> for ReadError {
    fn from(err: DomainError) -> Self {
        match err {
            DomainError::Unavailable(m) => Self::Unavailable(m),
            // Its own text, without DomainError's "internal error: " (this one adds it).
            DomainError::Internal(m) => Self::Internal(m),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<serde_json::Error> for ReadError {
    fn from(err: serde_json::Error) -> Self {
        Self::Internal(format!("stored JSON does not decode: {err}"))
    }
}
