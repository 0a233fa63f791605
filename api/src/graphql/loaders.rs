//! DataLoaders: one batched lookup per key type, one per process (see `build`).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use till_read_models::views::ProductView;
use till_read_models::{Lsn, ReadModels};
use uuid::Uuid;

use super::error;

/// Loads product views by id in one query per batch. Each key carries the WAL
/// position its reader must see ([`ReadModels::floor`]): a batch reads from a source
/// that has replayed the highest of them.
pub struct ProductLoader(pub ReadModels);

impl Loader<(Uuid, Lsn)> for ProductLoader {
    type Value = Arc<ProductView>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[(Uuid, Lsn)],
    ) -> Result<HashMap<(Uuid, Lsn), Self::Value>, Self::Error> {
        let floor = keys.iter().map(|(_, floor)| *floor).max().unwrap_or(0);
        let ids: Vec<Uuid> = keys.iter().map(|(id, _)| *id).collect();
        let found = self
            .0
            .at(floor)
            .products_by_ids(&ids)
            .await
            .map_err(error::read)?;
        Ok(keys
            .iter()
            .filter_map(|key| found.get(&key.0).map(|v| (*key, v.clone())))
            .collect())
    }
}
