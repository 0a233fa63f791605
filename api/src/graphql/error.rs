//! The one place where domain and read errors become GraphQL errors with a stable
//! `extensions.code`. Internal causes are logged here and never sent to clients.

use async_graphql::ErrorExtensions;
use till_domain::DomainError;
use till_read_models::ReadError;

pub use super::codes::{coded, request, Code};

/// Maps a domain error.
pub fn domain(err: DomainError) -> async_graphql::Error {
    match err {
        DomainError::Validation { field, message } => {
            coded(Code::BadUserInput, format!("{field}: {message}"))
                .extend_with(|_, e| e.set("field", field))
        }
        DomainError::NotFound { entity, id } => {
            coded(Code::NotFound, format!("{entity} {id} was not found"))
        }
        DomainError::Conflict(m) | DomainError::InvalidState(m) => coded(Code::Conflict, m),
        e @ DomainError::StockChanged => coded(Code::Conflict, e.to_string()),
        DomainError::OutOfStock {
            product_id,
            sku,
            requested,
            available,
        } => coded(
            Code::OutOfStock,
            format!("product {sku} is out of stock: requested {requested}, available {available}"),
        )
        .extend_with(|_, e| {
            e.set(
                "productId",
                super::ids::encode(super::ids::Kind::Product, product_id),
            );
            e.set("sku", sku.clone());
            e.set("requested", requested);
            e.set("available", available);
        }),
        DomainError::Forbidden(m) => coded(Code::Forbidden, m),
        DomainError::Unauthenticated(m) => coded(Code::Unauthenticated, m),
        // The HTTP layer turns this into a replay or IDEMPOTENCY_KEY_REUSED.
        DomainError::IdempotencyConflict => coded(
            Code::IdempotencyInProgress,
            "a request with this Idempotency-Key already ran",
        ),
        DomainError::Unavailable(cause) | DomainError::Transient(cause) => {
            tracing::warn!(%cause, "database unavailable");
            unavailable()
        }
        DomainError::Busy(m) => coded(Code::ServiceUnavailable, m),
        DomainError::Internal(cause) => internal(&cause),
    }
}

/// Maps a read-side error.
pub fn read(err: ReadError) -> async_graphql::Error {
    match err {
        ReadError::BadInput(m) => coded(Code::BadUserInput, m),
        ReadError::Unavailable(cause) => {
            tracing::warn!(%cause, "database unavailable");
            unavailable()
        }
        ReadError::NotCaughtUp(wait) => coded(
            Code::ServiceUnavailable,
            format!(
                "the read models did not catch up within {} ms; retry shortly",
                wait.as_millis()
            ),
        ),
        ReadError::Conflict(m) => coded(Code::Conflict, m),
        ReadError::Interrupted => coded(
            Code::ServiceUnavailable,
            "the server is shutting down; retry on another replica",
        ),
        ReadError::Internal(cause) => internal(&cause),
    }
}

fn unavailable() -> async_graphql::Error {
    coded(
        Code::ServiceUnavailable,
        "the service is temporarily unavailable; retry shortly",
    )
}

fn internal(cause: &str) -> async_graphql::Error {
    tracing::error!(%cause, "internal error");
    coded(Code::Internal, "internal error")
}

/// A required sign-in.
pub fn unauthenticated() -> async_graphql::Error {
    coded(Code::Unauthenticated, "sign in to do this")
}

/// A missing role.
pub fn forbidden() -> async_graphql::Error {
    coded(Code::Forbidden, "this needs a STAFF or ADMIN role")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire form, the SDL's `ErrorCode` values and the table in docs/errors.md name
    /// the same codes in the same order.
    #[test]
    fn the_codes_the_schema_and_the_error_table_agree() {
        use async_graphql::resolver_utils::EnumType;
        let wire: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        let sdl: Vec<&str> = Code::items().iter().map(|i| i.name).collect();
        assert_eq!(wire, sdl, "as_str and the GraphQL enum disagree");
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/errors.md");
        let table = std::fs::read_to_string(&path).unwrap_or_default();
        let documented: Vec<&str> = table
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(code, _)| code))
            .collect();
        assert_eq!(
            documented, wire,
            "docs/errors.md's table lists other codes than Code::ALL"
        );
        let sdl = crate::graphql::sdl();
        for code in wire {
            assert!(
                sdl.contains(&format!("\t{code}\n")),
                "{code} not in the SDL"
            );
        }
    }

    fn code_of(e: &async_graphql::Error) -> Option<String> {
        let v = serde_json::to_value(e.extensions.as_ref()?.get("code")?).ok()?;
        v.as_str().map(str::to_owned)
    }

    #[test]
    fn every_domain_error_has_its_code_and_no_internals() {
        let cases = [
            (
                DomainError::Validation {
                    field: "sku",
                    message: "bad".into(),
                },
                "BAD_USER_INPUT",
            ),
            (DomainError::not_found("order", "x"), "NOT_FOUND"),
            (DomainError::Conflict("c".into()), "CONFLICT"),
            (DomainError::InvalidState("s".into()), "CONFLICT"),
            (DomainError::StockChanged, "CONFLICT"),
            (
                DomainError::OutOfStock {
                    product_id: uuid::Uuid::nil(),
                    sku: "A".into(),
                    requested: 2,
                    available: 1,
                },
                "OUT_OF_STOCK",
            ),
            (DomainError::Forbidden("f".into()), "FORBIDDEN"),
            (DomainError::Unauthenticated("u".into()), "UNAUTHENTICATED"),
            (
                DomainError::Unavailable("connection refused 10.0.0.1".into()),
                "SERVICE_UNAVAILABLE",
            ),
            (
                DomainError::Transient("deadlock".into()),
                "SERVICE_UNAVAILABLE",
            ),
            (
                DomainError::Busy("too many orders wait".into()),
                "SERVICE_UNAVAILABLE",
            ),
            (
                DomainError::Internal("syntax error at or near SELECT".into()),
                "INTERNAL",
            ),
        ];
        for (err, want) in cases {
            let e = domain(err);
            assert_eq!(code_of(&e).as_deref(), Some(want));
            assert!(
                !e.message.contains("SELECT") && !e.message.contains("10.0.0.1"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn read_errors_have_codes() {
        assert_eq!(
            code_of(&read(ReadError::BadInput("x".into()))).as_deref(),
            Some("BAD_USER_INPUT")
        );
        assert_eq!(
            code_of(&read(ReadError::Internal("x".into()))).as_deref(),
            Some("INTERNAL")
        );
        assert_eq!(
            code_of(&read(ReadError::NotCaughtUp(
                std::time::Duration::from_secs(1)
            )))
            .as_deref(),
            Some("SERVICE_UNAVAILABLE")
        );
    }
}
