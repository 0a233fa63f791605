//! The one place where domain and read errors become GraphQL errors with a stable
//! `extensions.code`. Internal causes are logged here and never sent to clients.

use async_graphql::ErrorExtensions;
use till_domain::DomainError;
use till_read_models::ReadError;

/// Every `extensions.code` an error of this API carries: clients switch on these, never
/// on messages. The HTTP status is for `POST /graphql` with one operation; a batch, and an
/// error beside data, is 200 with the code in the body. docs/errors.md has the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
#[graphql(name = "ErrorCode")]
pub enum Code {
    /// No credentials where they are needed, or a token that is invalid, expired or of
    /// an ended session. HTTP 401 when the Authorization header itself is refused, else
    /// 200. Sign in again (or exchange the refresh token); do not retry as is.
    Unauthenticated,
    /// Signed in, but the role does not allow it (the back office is for STAFF and
    /// ADMIN), or, in trusted-documents mode, a document not in the manifest. HTTP 200;
    /// 400 for the refused document. Not retryable.
    Forbidden,
    /// No such object, or not yours to see (another customer's order looks the same as
    /// a missing one). HTTP 200. Not retryable.
    NotFound,
    /// Input broke a rule: a malformed id or cursor, a value out of range, a document
    /// over a limit, a malformed request. `extensions.field` names the input field where
    /// known, `extensions.limit` the limit (aliases, rootFields, representations). HTTP
    /// 400 when the HTTP layer refuses the request, or when it fails validation with
    /// `Accept: application/graphql-response+json`; 405 for a mutation over GET; else
    /// 200. Fix the input; not retryable.
    BadUserInput,
    /// An order line asks for more than is available; nothing was reserved.
    /// `extensions`: `productId`, `sku`, `requested`, `available`. HTTP 200. Retry with
    /// a smaller quantity, or after a restock.
    OutOfStock,
    /// The object changed under the request: a state transition that no longer applies
    /// (paying a cancelled order), a stale version, a duplicate unique value. HTTP 200.
    /// Read the object again and decide; a blind retry fails the same way.
    Conflict,
    /// A dependency is down or the server is overloaded (database unreachable, read
    /// models not caught up within the wait, the order queue full, shutting down). HTTP
    /// 503 with `Retry-After` when nothing could be answered, else 200. Retry after the
    /// delay; for mutations, with the same `Idempotency-Key`.
    ServiceUnavailable,
    /// The `Idempotency-Key` was used before for a different request. HTTP 422. Use a
    /// new key for a new request; not retryable.
    IdempotencyKeyReused,
    /// A request with the same `Idempotency-Key` is still running. HTTP 409 with
    /// `Retry-After`. Retry after the delay with the same key: the first result is
    /// replayed.
    IdempotencyInProgress,
    /// The caller's rate-limit bucket cannot pay the request's cost (also repeated
    /// sign-in failures). `extensions.retryAfter` in seconds; `extensions.cost` shows the
    /// bucket. HTTP 429 with `Retry-After`. Retry after the delay.
    Throttled,
    /// A persisted-query hash the server does not know: with Automatic Persisted
    /// Queries, send the document with the hash once; in trusted-documents mode, the
    /// hash is not in the manifest (not retryable). HTTP 400.
    PersistedQueryNotFound,
    /// The operation ran longer than the request timeout and was stopped (a query: no
    /// effects). HTTP 200. Retry later or ask for less.
    Timeout,
    /// A bug on the server; the cause is logged under the response's `X-Request-Id`,
    /// never sent. HTTP 200 (500 if the response itself cannot be written). Retrying a
    /// mutation with the same `Idempotency-Key` is safe.
    Internal,
}

impl Code {
    /// Every code, in the order of the table in docs/errors.md.
    pub const ALL: [Code; 13] = [
        Code::Unauthenticated,
        Code::Forbidden,
        Code::NotFound,
        Code::BadUserInput,
        Code::OutOfStock,
        Code::Conflict,
        Code::ServiceUnavailable,
        Code::IdempotencyKeyReused,
        Code::IdempotencyInProgress,
        Code::Throttled,
        Code::PersistedQueryNotFound,
        Code::Timeout,
        Code::Internal,
    ];
}

impl Code {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::Forbidden => "FORBIDDEN",
            Code::NotFound => "NOT_FOUND",
            Code::BadUserInput => "BAD_USER_INPUT",
            Code::OutOfStock => "OUT_OF_STOCK",
            Code::Conflict => "CONFLICT",
            Code::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Code::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Code::IdempotencyInProgress => "IDEMPOTENCY_IN_PROGRESS",
            Code::Throttled => "THROTTLED",
            Code::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            Code::Timeout => "TIMEOUT",
            Code::Internal => "INTERNAL",
        }
    }
}

/// Builds a client-facing error with a code.
pub fn coded(code: Code, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code.as_str()))
}

/// A whole-request error (no path, no location) with a code: for refusals raised
/// outside a resolver (timeout, rate limit, a missing variable).
pub fn request(code: Code, message: impl Into<String>) -> async_graphql::ServerError {
    let mut e = async_graphql::ServerError::new(message, None);
    e.extensions
        .get_or_insert_with(Default::default)
        .set("code", code.as_str());
    e
}

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
