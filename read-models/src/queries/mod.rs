//! Read queries over the projections, with the cache in front of single-row lookups.

mod catalog;
mod orders;
mod reports;

use std::sync::Arc;

use till_domain::db::PgPool;

pub use catalog::{ProductCursor, ProductFilter, ProductSort};
pub use orders::{OrderCursor, OrderFilter};
pub use reports::ProjectionStatus;

use crate::cache::ReadCache;
use crate::progress::Progress;

/// A page of a keyset-paginated list.
#[derive(Debug, Clone)]
pub struct Page<T, C> {
    /// Items with the cursor that points just after each.
    pub items: Vec<(C, T)>,
    /// Whether more items follow the last one.
    pub has_next_page: bool,
    /// Whether items precede the first one (true when paging with a cursor).
    pub has_previous_page: bool,
}

/// Entry point of the read side; cheap to clone.
#[derive(Clone)]
pub struct ReadModels {
    pool: PgPool,
    cache: ReadCache,
    progress: Arc<Progress>,
}

impl ReadModels {
    /// Read models over `pool`, cached in `cache`, with `progress` for read-your-writes.
    pub fn new(pool: PgPool, cache: ReadCache, progress: Arc<Progress>) -> Self {
        Self {
            pool,
            cache,
            progress,
        }
    }

    /// The cache (for metrics).
    pub fn cache(&self) -> &ReadCache {
        &self.cache
    }

    /// Projection progress (for consistency tokens).
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Escapes LIKE wildcards in user text.
fn like_escape(term: &str) -> String {
    let mut out = String::with_capacity(term.len() + 2);
    out.push('%');
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_terms_are_escaped() {
        assert_eq!(super::like_escape("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
