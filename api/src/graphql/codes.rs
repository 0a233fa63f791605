//! The error codes of the API (`extensions.code`, the `ErrorCode` enum in the SDL) and
//! the two ways to raise an error with one. Errors from the domain and the read side
//! are mapped to these in [`super::error`].

use async_graphql::ErrorExtensions;

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
