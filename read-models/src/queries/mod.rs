//! Read queries over the projections, with the cache in front of single-row lookups.

mod catalog;
mod orders;
mod reports;

use std::collections::HashMap;
use std::sync::Arc;

use moka::future::Cache;
use till_domain::db::PgPool;
use uuid::Uuid;

pub use crate::pages::{OrderCursor, OrderFilter, Page, ProductCursor, ProductFilter, ProductSort};
pub use reports::ProjectionStatus;

use crate::cache::{IdPage, ReadCache};
use crate::error::ReadError;
use crate::progress::Progress;
use crate::sources::{Choice, Lsn, Read, ReadSources, PRIMARY};
use crate::views::Identified;
use till_domain::event_log::LogPoint;

/// Entry point of the read side; cheap to clone.
///
/// Queries run on a source ([`ReadSources`]) that has replayed this value's floor: 0
/// (any replica in rotation) unless [`ReadModels::at`] or [`ReadModels::following`]
/// raised it for a reader who must see a given write.
#[derive(Clone)]
pub struct ReadModels {
    sources: ReadSources,
    cache: ReadCache,
    progress: Arc<Progress>,
    floor: Lsn,
}

impl std::fmt::Debug for ReadModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModels")
            .field("floor", &self.floor)
            .finish_non_exhaustive()
    }
}

impl ReadModels {
    /// Read models over `pool` alone, cached in `cache`, with `progress` for
    /// read-your-writes.
    pub fn new(pool: PgPool, cache: ReadCache, progress: Arc<Progress>) -> Self {
        Self::over(ReadSources::primary_only(pool), cache, progress)
    }

    /// Read models over `sources` (the primary and any read replicas).
    pub fn over(sources: ReadSources, cache: ReadCache, progress: Arc<Progress>) -> Self {
        Self {
            sources,
            cache,
            progress,
            floor: 0,
        }
    }

    /// The same read models for a reader who must see everything the primary had
    /// committed at WAL position `floor` ([`PRIMARY`]: the primary alone serves it).
    pub fn at(&self, floor: Lsn) -> Self {
        Self {
            floor: floor.max(self.floor),
            ..self.clone()
        }
    }

    /// The WAL position this reader must see.
    pub fn floor(&self) -> Lsn {
        self.floor
    }

    /// Waits (at most `timeout`) until the read models include `point`, and returns
    /// them for a reader who must see it: on a read replica only once it has replayed
    /// the projector's commit that covers `point`, else on the primary. Does not wait
    /// for a replica (see [`ReadModels::caught_up_replica`]).
    pub async fn following(
        &self,
        point: LogPoint,
        timeout: std::time::Duration,
    ) -> Result<Self, ReadError> {
        self.progress.wait_for(point, timeout).await?;
        Ok(self.at(self.progress.wal_covering()))
    }

    /// Waits, holding no connection and at most the replicas' wait, until a replica
    /// in rotation has replayed this reader's floor; false when none did (the primary
    /// serves the reads) or none is configured.
    pub async fn caught_up_replica(&self) -> bool {
        self.floor != 0 && self.floor != PRIMARY && self.sources.wait_for(self.floor).await
    }

    /// The sources reads run on.
    pub fn sources(&self) -> &ReadSources {
        &self.sources
    }

    /// Where this reader's next query runs.
    fn source(&self) -> Choice {
        self.sources.pick(self.floor)
    }

    /// Runs `read` on `choice` ([`ReadSources::run`]).
    async fn read<T: Send>(&self, choice: Choice, read: impl Read<T>) -> Result<T, ReadError> {
        self.sources.run(choice, read).await
    }

    /// The cache (for metrics).
    pub fn cache(&self) -> &ReadCache {
        &self.cache
    }

    /// Projection progress (for consistency tokens).
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// The primary's pool.
    pub fn pool(&self) -> &PgPool {
        self.sources.primary()
    }
}

impl ReadModels {
    /// Waits, at most `timeout`, until every projection has reached the log's current
    /// head: for a caller who may have just written something the read models do not
    /// show yet (and has no consistency token to pass).
    pub async fn wait_for_head(&self, timeout: std::time::Duration) -> Result<(), ReadError> {
        let head = {
            let mut conn = self.pool().get().await?;
            till_domain::event_log::head(&mut conn).await?
        };
        self.progress.wait_for(head, timeout).await
    }

    /// A list page through the page cache: a `cached` page gets its items from the row
    /// cache (`by_ids`); otherwise the page is `load`ed from a source, its rows go into
    /// `rows`, and `keep` stores it as ids with the position the source had replayed
    /// (unless a change raced with the read or came after that position, see the
    /// cache).
    async fn through_page<C, V>(
        &self,
        cached: Option<Arc<IdPage<C>>>,
        rows: &Cache<Uuid, Arc<V>>,
        has_previous_page: bool,
        load: impl AsyncFnOnce(Choice) -> Result<(Vec<(C, V)>, bool), ReadError>,
        keep: impl AsyncFnOnce(Lsn, Arc<IdPage<C>>),
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
        let source = self.source();
        let (items, has_next_page) = load(source).await?;
        let (ids, page) = self
            .cache
            .keep_page_rows(
                rows,
                (epoch, source.at),
                items,
                has_next_page,
                has_previous_page,
            )
            .await;
        keep(source.at, ids).await;
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
