//! DataLoaders: one batched lookup per key type, one per process (see `build`).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use till_read_models::views::ProductView;
use till_read_models::ReadModels;
use uuid::Uuid;

use super::error;

/// Loads product views by id in one query per batch.
pub struct ProductLoader(pub ReadModels);

impl Loader<Uuid> for ProductLoader {
    type Value = Arc<ProductView>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        self.0.products_by_ids(keys).await.map_err(error::read)
    }
}
