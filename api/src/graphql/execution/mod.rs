//! Running GraphQL operations: the one entry point ([`Engine`]) and every limit and
//! check an operation passes, one file a concern. `http::graphql` (POST and GET) and
//! the WebSocket transport only adapt their requests to it.
//!
//! Where each concern lives:
//! - [`engine`]: which of the three schemas runs an operation (full validation on first
//!   sight; only what depends on the variables for a document validated before; no
//!   extension at all for a query of fixed cost), batches, and the codes every error
//!   gets;
//! - [`limits`]: aliases, root fields and `_entities` representations per document;
//!   depth and complexity are async-graphql's own, set on the schemas from [`Limits`];
//!   the body size and batch length are HTTP framing (`http::graphql`, `TILL_MAX_BODY_BYTES`,
//!   `TILL_MAX_BATCH`);
//! - [`rate_limit`]: the cost-based leaky buckets per principal, `extensions.cost`, and
//!   THROTTLED;
//! - [`observe`]: each operation's span, metrics and time limit (TIMEOUT for queries);
//! - [`guard`]: the schema extension that applies the three above on the schemas that
//!   have it;
//! - [`fixed_cost`]: which documents cost the same whatever their variables (and so run
//!   without the extension once seen).

pub mod documents;
pub mod engine;
pub mod fixed_cost;
pub mod guard;
pub mod limits;
pub mod observe;
pub mod rate_limit;

use std::sync::Arc;
use std::time::Duration;

pub use engine::{Engine, Operations};

/// Limits applied to every operation.
#[derive(Clone)]
pub struct Limits {
    /// Deepest selection nesting.
    pub max_depth: usize,
    /// Highest static complexity.
    pub max_complexity: usize,
    /// Most aliases in one document.
    pub max_aliases: usize,
    /// Most root fields in one operation.
    pub max_root_fields: usize,
    /// Whether introspection is served.
    pub introspection: bool,
    /// Cost-based rate limiting, when on.
    pub rate: Option<Arc<rate_limit::CostLimiter>>,
    /// Longest a query may run.
    pub query_timeout: Option<Duration>,
}

/// How a schema checks the documents it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checks {
    /// Every validation rule, and the guard (limits, charge, operation metrics).
    AllRules,
    /// Only cost, depth and fragment cycles, and the guard: for documents that passed
    /// `AllRules` before and whose cost depends on the variables.
    CostAndDepth,
    /// Only cost, depth and fragment cycles, without the guard: for queries that passed
    /// `AllRules` before and whose cost is fixed. The caller charges, limits the time and
    /// counts them (see [`Engine`]): with any extension installed,
    /// async-graphql runs every field through its hooks, which cost a cached
    /// `product(id:)` a large share of its time (benches/HISTORY.md, load run 12).
    /// Cost and depth are still computed by the fast validation, for the limits.
    CostAndDepthUnguarded,
}
