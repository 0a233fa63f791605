//! Statements kept prepared on their connection.
//!
//! Diesel never caches raw SQL (`sql_query`), UPDATE statements or anything holding a
//! `sql` literal as prepared statements, because their text may differ from one run to
//! the next in general. Each run then costs an extra round trip (Parse/Describe before
//! Bind/Execute) and a fresh parse in PostgreSQL. The hot statements of commands and
//! projections have a fixed text, so [`Prepared`] tells diesel they are safe to keep:
//! the connection's statement cache holds them by their text and bind types.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::QueryResult;

/// A statement whose SQL text is the same on every run, kept prepared on its
/// connection after the first. Wrap only statements built from fixed text: the cache is
/// keyed by the text, so a text that varies would add one entry per variant.
#[derive(Debug, Clone, Copy)]
pub struct Prepared<Q>(Q);

/// Adds [`Reuse::prepared`] to every PostgreSQL statement.
pub trait Reuse: Sized {
    /// Keeps this statement prepared on its connection (its SQL text must not vary).
    fn prepared(self) -> Prepared<Self> {
        Prepared(self)
    }
}

impl<Q: QueryFragment<Pg>> Reuse for Q {}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Prepared<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> QueryId for Prepared<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}
