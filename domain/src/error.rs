//! The domain's error policy: every failure a command can have, as data. The GraphQL
//! edge maps each variant to one `extensions.code`; internal causes are logged there
//! and never sent to clients.

use thiserror::Error;

/// Why a command or a read failed.
#[derive(Debug, Error)]
pub enum DomainError {
    /// Input broke a rule (field names the input field).
    #[error("{field}: {message}")]
    Validation {
        /// The input field at fault.
        field: &'static str,
        /// What is wrong, in plain words.
        message: String,
    },
    /// The entity does not exist (or the caller may not know it exists).
    #[error("{entity} {id} was not found")]
    NotFound {
        /// What kind of thing was looked up.
        entity: &'static str,
        /// The id or key that was looked up.
        id: String,
    },
    /// A uniqueness rule or an optimistic-concurrency check failed.
    #[error("{0}")]
    Conflict(String),
    /// An order line asked for more than is available.
    #[error("product {sku} is out of stock: requested {requested}, available {available}")]
    OutOfStock {
        /// The product that is short.
        product_id: uuid::Uuid,
        /// Its SKU, so people can read the message.
        sku: String,
        /// Units asked for.
        requested: i32,
        /// Units available when the order was placed.
        available: i32,
    },
    /// A write would have taken available stock below zero and the database refused it:
    /// the stock changed since it was read (placeOrder reads it again and answers
    /// OUT_OF_STOCK or places the order; anywhere else it reaches the client as CONFLICT).
    #[error("the stock changed meanwhile; try again")]
    StockChanged,
    /// The entity is in a state that does not allow this command.
    #[error("{0}")]
    InvalidState(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Credentials (password, refresh token) were wrong, expired or revoked. The message
    /// is safe to show and never says which part was wrong.
    #[error("{0}")]
    Unauthenticated(String),
    /// The database could not be reached or timed out; the request may be retried.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Too much work is waiting (the order queue is full, or an order waited past its
    /// bound): nothing was done, and the request may be retried in a moment. The
    /// message is safe to show.
    #[error("{0}")]
    Busy(String),
    /// The request's idempotency key was already used (the claim says how).
    #[error("the idempotency key was already used")]
    IdempotencyConflict,
    /// A serialization failure or deadlock: retrying the whole transaction may succeed.
    #[error("transient database conflict: {0}")]
    Transient(String),
    /// A bug or an unexpected database answer; details are for the logs only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl DomainError {
    /// Shorthand for a [`DomainError::NotFound`].
    pub fn not_found(entity: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            entity,
            id: id.to_string(),
        }
    }

    /// True when retrying the whole transaction may succeed (serialization failure or
    /// deadlock).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

impl From<diesel::result::Error> for DomainError {
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        match err {
            E::NotFound => Self::Internal("row not found where one was expected".into()),
            E::DatabaseError(K::SerializationFailure, info) => {
                Self::Transient(info.message().to_owned())
            }
            E::DatabaseError(K::CheckViolation, ref info)
                if info.constraint_name() == Some(STOCK_CONSTRAINT) =>
            {
                Self::StockChanged
            }
            E::DatabaseError(K::UnableToSendCommand | K::ClosedConnection, info) => {
                Self::Unavailable(info.message().to_owned())
            }
            // diesel has no kind for these two; PostgreSQL's messages are stable.
            E::DatabaseError(_, ref info) if info.message().starts_with("deadlock detected") => {
                Self::Transient(info.message().to_owned())
            }
            E::DatabaseError(_, ref info) if is_unavailable(info.message()) => {
                Self::Unavailable(info.message().to_owned())
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

/// The inventory CHECK constraint that keeps available stock from going below zero.
const STOCK_CONSTRAINT: &str = "inventory_available_not_negative";

/// PostgreSQL's messages for a server that is going away, starting, recovering or
/// cancelling work (SQLSTATE class 57 and statement timeouts): the request may be
/// retried, nothing is wrong with it. diesel reports no SQLSTATE, and these texts are
/// stable.
const UNAVAILABLE_MESSAGES: [&str; 9] = [
    "connection closed",
    "server closed the connection unexpectedly",
    "canceling statement due to statement timeout",
    "terminating connection due to administrator command",
    "terminating connection due to crash of another server process",
    "terminating connection due to idle",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
];

fn is_unavailable(message: &str) -> bool {
    UNAVAILABLE_MESSAGES.iter().any(|m| message.starts_with(m))
}

impl From<diesel_async::pooled_connection::bb8::RunError> for DomainError {
    fn from(err: diesel_async::pooled_connection::bb8::RunError) -> Self {
        Self::Unavailable(err.to_string())
    }
}

/// The name of the constraint a database error reports, if any.
pub fn violated_constraint(err: &diesel::result::Error) -> Option<&str> {
    match err {
        diesel::result::Error::DatabaseError(_, info) => info.constraint_name(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_shutdown_and_timeouts_are_unavailable_not_internal() {
        assert!(is_unavailable(
            "terminating connection due to administrator command"
        ));
        assert!(is_unavailable("the database system is shutting down"));
        assert!(is_unavailable(
            "canceling statement due to statement timeout"
        ));
        assert!(!is_unavailable(
            "duplicate key value violates unique constraint"
        ));
    }
}
