//! Read queries over the projections, with the cache in front of single-row lookups.

mod catalog;
mod orders;
mod reports;

use std::collections::HashMap;
use std::sync::Arc;

use moka::future::Cache;
use till_domain::db::PgPool;
use uuid::Uuid;

pub use catalog::{ProductCursor, ProductFilter, ProductSort};
pub use orders::{OrderCursor, OrderFilter};
pub use reports::ProjectionStatus;

use crate::cache::{IdPage, ReadCache};
use crate::error::ReadError;
use crate::progress::Progress;
use crate::views::Identified;

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

impl ReadModels {
    /// Waits, at most `timeout`, until every projection has reached the log's current
    /// head: for a caller who may have just written something the read models do not
    /// show yet (and has no consistency token to pass).
    pub async fn wait_for_head(&self, timeout: std::time::Duration) -> Result<(), ReadError> {
        let head = {
            let mut conn = self.pool.get().await?;
            till_domain::event_log::head(&mut conn).await?
        };
        self.progress.wait_for(head, timeout).await
    }

    /// A list page through the page cache: a `cached` page gets its items from the row
    /// cache (`by_ids`); otherwise the page is `load`ed, its rows go into `rows`, and
    /// `keep` stores it as ids (unless a change raced with the read, see the cache).
    async fn through_page<C, V>(
        &self,
        cached: Option<Arc<IdPage<C>>>,
        rows: &Cache<Uuid, Arc<V>>,
        has_previous_page: bool,
        load: impl AsyncFnOnce() -> Result<(Vec<(C, V)>, bool), ReadError>,
        keep: impl AsyncFnOnce(Arc<IdPage<C>>),
        by_ids: impl AsyncFnOnce(Vec<Uuid>) -> Result<HashMap<Uuid, Arc<V>>, ReadError>,
    ) -> Result<Page<Arc<V>, C>, ReadError>
    where
        C: Clone,
        V: Identified + Send + Sync + 'static,
    {
        if let Some(ids) = cached {
            let wanted = ids.items.iter().map(|(_, id)| *id).collect();
            return Ok(ids.hydrate(by_ids(wanted).await?, has_previous_page));
        }
        let epoch = self.cache.epoch();
        let (items, has_next_page) = load().await?;
        let (ids, page) = self
            .cache
            .keep_page_rows(rows, epoch, items, has_next_page, has_previous_page)
            .await;
        keep(ids).await;
        Ok(page)
    }
}

/// A page read straight from the database, not cached.
fn uncached<C, V>(
    (items, has_next_page): (Vec<(C, V)>, bool),
    has_previous_page: bool,
) -> Page<Arc<V>, C> {
    Page {
        items: items.into_iter().map(|(c, v)| (c, Arc::new(v))).collect(),
        has_next_page,
        has_previous_page,
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
