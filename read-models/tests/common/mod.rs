//! Set-up shared by the read-models integration tests.

use std::sync::Arc;

use till_domain::db::testing::TestDb;
use till_read_models::{
    CacheSettings, Progress, Projector, ProjectorSettings, ReadCache, ReadModels,
};

/// Panics with the error's text (tests only).
pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// One process's read side on `db`: a projector and the read models, sharing a cache
/// and a progress.
pub fn read_side(db: &TestDb, settings: ProjectorSettings) -> (Projector, ReadModels) {
    let cache = ReadCache::new(CacheSettings::default());
    let progress = Arc::new(Progress::new());
    let projector = Projector::new(
        db.pool.clone(),
        db.url.clone(),
        cache.clone(),
        progress.clone(),
        settings,
    );
    (projector, ReadModels::new(db.pool.clone(), cache, progress))
}
