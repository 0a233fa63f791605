//! Catalog reads: products (by id, by SKU, filtered and sorted pages) and categories.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::PgArrayExpressionMethods;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::{like_escape, uncached, ReadModels};
use crate::cache::{CacheKind, ProductPageKey};
use crate::error::ReadError;
use crate::pages::{Page, ProductCursor, ProductFilter, ProductSort};
use crate::schema::{rm_categories, rm_product_popularity as pop, rm_product_view as pv};
use crate::sources::Choice;
use crate::views::{CategoryRow, CategoryView, ProductRow, ProductView};

impl ReadModels {
    /// One product by id, from the cache when it is there.
    pub async fn product(&self, id: Uuid) -> Result<Option<Arc<ProductView>>, ReadError> {
        let source = self.source();
        self.cache
            .through(
                CacheKind::Products,
                &self.cache.products,
                id,
                source.at,
                async || {
                    let row: Option<ProductRow> = self
                        .read(source, async |conn| {
                            Ok(pv::table
                                .find(id)
                                .select(ProductRow::as_select())
                                .first(conn)
                                .await
                                .optional()?)
                        })
                        .await?;
                    row.map(ProductView::try_from).transpose()
                },
            )
            .await
    }

    /// One product by SKU.
    pub async fn product_by_sku(&self, sku: &str) -> Result<Option<Arc<ProductView>>, ReadError> {
        let id: Option<Uuid> = self
            .read(self.source(), async |conn| {
                Ok(pv::table
                    .filter(pv::sku.eq(sku))
                    .select(pv::id)
                    .first(conn)
                    .await
                    .optional()?)
            })
            .await?;
        match id {
            Some(id) => self.product(id).await,
            None => Ok(None),
        }
    }

    /// A product view if it is in the cache, without reading the database (so that
    /// lists whose items are all cached need no batched load).
    pub async fn cached_product(&self, id: Uuid) -> Option<Arc<ProductView>> {
        let hit = self.cache.products.get(&id).await;
        if hit.is_some() {
            self.cache.hit(CacheKind::Products);
        }
        hit
    }

    /// Several products by id in one query (for batched lookups), cache first.
    pub async fn products_by_ids(
        &self,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, Arc<ProductView>>, ReadError> {
        let source = self.source();
        self.cache
            .through_many(
                CacheKind::Products,
                &self.cache.products,
                ids,
                source.at,
                async |missing| {
                    let rows: Vec<ProductRow> = self
                        .read(source, async |conn| {
                            Ok(pv::table
                                .filter(pv::id.eq_any(&missing))
                                .select(ProductRow::as_select())
                                .load(conn)
                                .await?)
                        })
                        .await?;
                    rows.into_iter().map(ProductView::try_from).collect()
                },
            )
            .await
    }

    /// A keyset page of products. Pages whose membership and order only catalog
    /// changes can alter (no `in_stock`, not by popularity) are cached as ids; their
    /// items come from the product cache.
    pub async fn products(
        &self,
        filter: &ProductFilter,
        sort: ProductSort,
        after: Option<&ProductCursor>,
        first: i64,
    ) -> Result<Page<Arc<ProductView>, ProductCursor>, ReadError> {
        if let Some(c) = after {
            if c.sort != sort {
                return Err(ReadError::BadInput(
                    "the cursor belongs to another sort order".into(),
                ));
            }
        }
        let has_previous_page = after.is_some();
        if filter.in_stock || sort == ProductSort::Popular {
            let rows = self
                .product_rows(self.source(), filter, sort, after, first)
                .await?;
            return Ok(uncached(rows, has_previous_page));
        }
        let key = ProductPageKey {
            filter: filter.clone(),
            sort,
            after: after.cloned(),
            first,
        };
        // Taken before the lookup: a listing change from here on drops what we keep.
        let listing_epoch = self.cache.listing_epoch();
        let cached = self.cache.product_page(&key).await;
        self.through_page(
            cached,
            &self.cache.products,
            has_previous_page,
            async |source| self.product_rows(source, filter, sort, after, first).await,
            async |at, ids| {
                self.cache
                    .put_product_page(key, (listing_epoch, at), ids)
                    .await
            },
            async |wanted| self.products_by_ids(&wanted).await,
        )
        .await
    }

    /// One page of products from the database, with one extra row to tell whether
    /// more follow.
    async fn product_rows(
        &self,
        source: Choice,
        filter: &ProductFilter,
        sort: ProductSort,
        after: Option<&ProductCursor>,
        first: i64,
    ) -> Result<(Vec<(ProductCursor, ProductView)>, bool), ReadError> {
        let rows: Vec<ProductRow> = self
            .read(source, async |conn| {
                product_page_rows(conn, filter, sort, after, first + 1).await
            })
            .await?;
        let has_next_page = rows.len() as i64 > first;
        let items = rows
            .into_iter()
            .take(first as usize)
            .map(|r| {
                let v = ProductView::try_from(r)?;
                Ok((ProductCursor::after(&v, sort), v))
            })
            .collect::<Result<Vec<_>, ReadError>>()?;
        Ok((items, has_next_page))
    }
}

/// A page of products, `limit` rows.
async fn product_page_rows(
    conn: &mut diesel_async::AsyncPgConnection,
    filter: &ProductFilter,
    sort: ProductSort,
    after: Option<&ProductCursor>,
    limit: i64,
) -> Result<Vec<ProductRow>, ReadError> {
    // Every product has a popularity row; the join serves the POPULAR ordering
    // from its own index (see migration 8) and costs a key lookup per row otherwise.
    let mut q = pv::table
        .inner_join(pop::table)
        .select(ProductRow::as_select())
        .into_boxed();
    if let Some(c) = filter.category {
        q = q.filter(pv::category_ids.contains(vec![c]));
    }
    if let Some(term) = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        q = q.filter(pv::name.ilike(like_escape(term)));
    }
    if let Some(min) = filter.price_min {
        q = q.filter(pv::price_minor.ge(min));
    }
    if let Some(max) = filter.price_max {
        q = q.filter(pv::price_minor.le(max));
    }
    if filter.in_stock {
        q = q.filter(pv::available.gt(0));
    }
    if !filter.statuses.is_empty() {
        q = q.filter(pv::status.eq_any(filter.statuses.clone()));
    }
    if let Some(c) = after {
        let bad = || ReadError::BadInput("the cursor is malformed".into());
        q = match sort {
            ProductSort::Price => {
                let v = c.n.ok_or_else(bad)?;
                q.filter(
                    pv::price_minor
                        .gt(v)
                        .or(pv::price_minor.eq(v).and(pv::id.gt(c.id))),
                )
            }
            ProductSort::Name => {
                let v = c.s.clone().ok_or_else(bad)?;
                q.filter(
                    pv::name
                        .gt(v.clone())
                        .or(pv::name.eq(v).and(pv::id.gt(c.id))),
                )
            }
            ProductSort::Newest => {
                let v =
                    c.n.and_then(DateTime::<Utc>::from_timestamp_micros)
                        .ok_or_else(bad)?;
                q.filter(
                    pv::created_at
                        .lt(v)
                        .or(pv::created_at.eq(v).and(pv::id.lt(c.id))),
                )
            }
            ProductSort::Popular => {
                let v = c.n.ok_or_else(bad)?;
                q.filter(
                    pop::popularity
                        .lt(v)
                        .or(pop::popularity.eq(v).and(pop::product_id.lt(c.id))),
                )
            }
        };
    }
    q = match sort {
        ProductSort::Price => q.order((pv::price_minor.asc(), pv::id.asc())),
        ProductSort::Name => q.order((pv::name.asc(), pv::id.asc())),
        ProductSort::Newest => q.order((pv::created_at.desc(), pv::id.desc())),
        ProductSort::Popular => q.order((pop::popularity.desc(), pop::product_id.desc())),
    };
    Ok(q.limit(limit).load(conn).await?)
}

impl ReadModels {
    /// The whole category tree (small; cached until a category changes).
    pub async fn categories(&self) -> Result<Arc<Vec<CategoryView>>, ReadError> {
        if let Some(hit) = self.cache.categories.get(&()).await {
            self.cache.hit(CacheKind::Categories);
            return Ok(hit);
        }
        self.cache.miss(CacheKind::Categories);
        let epoch = self.cache.epoch();
        let source = self.source();
        let rows: Vec<CategoryRow> = self
            .read(source, async |conn| {
                Ok(rm_categories::table
                    .order(rm_categories::slug.asc())
                    .limit(10_000)
                    .select(CategoryRow::as_select())
                    .load(conn)
                    .await?)
            })
            .await?;
        let list = Arc::new(
            rows.into_iter()
                .map(CategoryView::try_from)
                .collect::<Result<Vec<_>, _>>()?,
        );
        self.cache
            .put_categories((epoch, source.at), list.clone())
            .await;
        Ok(list)
    }

    /// One category by id.
    pub async fn category(&self, id: Uuid) -> Result<Option<CategoryView>, ReadError> {
        Ok(self
            .categories()
            .await?
            .iter()
            .find(|c| c.id == id)
            .cloned())
    }
}
