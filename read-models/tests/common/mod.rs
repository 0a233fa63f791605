//! Set-up shared by the read-models integration tests (each test crate uses a part).

#![allow(dead_code)]

use till_domain::db::testing::TestDb;
use till_read_models::{Projector, ProjectorSettings, ReadModels, ReadSide};

/// Panics with the error's text (tests only).
pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// One process's read side on `db`: a projector and the read models, sharing a cache
/// and a progress.
pub fn read_side(db: &TestDb, settings: ProjectorSettings) -> (Projector, ReadModels) {
    let side = ReadSide::builder(db.pool.clone(), db.url.clone())
        .projector(settings)
        .build();
    (side.projector, side.reads)
}
