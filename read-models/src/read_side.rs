//! One process's read side, assembled in one place: the cache and the projections'
//! progress that the projector feeds and the read models read, over the same sources.
//! The server, the worker, the CLI, the benches and the tests all build it here.

use std::sync::Arc;

use till_domain::db::PgPool;

use crate::cache::{CacheSettings, ReadCache};
use crate::progress::Progress;
use crate::projector::{Projector, ProjectorSettings};
use crate::queries::ReadModels;
use crate::sources::ReadSources;

/// A projector and the read models of one process, sharing a cache and a progress.
pub struct ReadSide {
    /// Applies (or follows) the projections, invalidating the cache.
    pub projector: Projector,
    /// The read queries, through the cache.
    pub reads: ReadModels,
}

impl ReadSide {
    /// A read side on `pool` (the primary at `database_url`), with the default cache and
    /// projector settings, reading from the primary; see [`ReadSideBuilder`].
    pub fn builder(pool: PgPool, database_url: impl Into<String>) -> ReadSideBuilder {
        ReadSideBuilder {
            pool,
            database_url: database_url.into(),
            cache: CacheSettings::default(),
            projector: ProjectorSettings::default(),
            projector_pool: None,
            sources: None,
        }
    }

    /// The cache both halves share.
    pub fn cache(&self) -> &ReadCache {
        self.reads.cache()
    }

    /// The projections' progress both halves share.
    pub fn progress(&self) -> &Arc<Progress> {
        self.reads.progress()
    }
}

/// How a [`ReadSide`] is made.
pub struct ReadSideBuilder {
    pool: PgPool,
    database_url: String,
    cache: CacheSettings,
    projector: ProjectorSettings,
    projector_pool: Option<PgPool>,
    sources: Option<ReadSources>,
}

impl ReadSideBuilder {
    /// The cache's bounds.
    pub fn cache(mut self, settings: CacheSettings) -> Self {
        self.cache = settings;
        self
    }

    /// The projector's settings.
    pub fn projector(mut self, settings: ProjectorSettings) -> Self {
        self.projector = settings;
        self
    }

    /// Connections of the projector's own instead of the pool's.
    pub fn projector_pool(mut self, pool: PgPool) -> Self {
        self.projector_pool = Some(pool);
        self
    }

    /// Where the read models read (replicas with the primary); the projector then
    /// notes the WAL position of each batch, as reads from replicas need.
    pub fn sources(mut self, sources: ReadSources) -> Self {
        self.sources = Some(sources);
        self
    }

    /// The read side.
    pub fn build(self) -> ReadSide {
        let cache = ReadCache::new(self.cache);
        let progress = Arc::new(Progress::new());
        let sources = self
            .sources
            .unwrap_or_else(|| ReadSources::primary_only(self.pool.clone()));
        let projector = Projector::new(
            self.projector_pool.unwrap_or(self.pool),
            self.database_url,
            cache.clone(),
            progress.clone(),
            self.projector,
        )
        .tracking_wal(sources.has_replicas());
        ReadSide {
            projector,
            reads: ReadModels::over(sources, cache, progress),
        }
    }
}
