//! Order reads: by id (cached), and newest-first pages for one customer or for staff.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::{uncached, ReadModels};
use crate::cache::CacheKind;
use crate::error::ReadError;
use crate::pages::{OrderCursor, OrderFilter, Page};
use crate::schema::{rm_customer_summary, rm_order_view as ov};
use crate::sources::Choice;
use crate::views::{CustomerSummary, OrderRow, OrderView};

impl ReadModels {
    /// One order by id, from the cache when it is there.
    pub async fn order(&self, id: Uuid) -> Result<Option<Arc<OrderView>>, ReadError> {
        let source = self.source();
        self.cache
            .through(
                CacheKind::Orders,
                &self.cache.orders,
                id,
                source.at,
                async || {
                    let row: Option<OrderRow> = self
                        .read(source, async |conn| {
                            Ok(ov::table
                                .find(id)
                                .select(OrderRow::as_select())
                                .first(conn)
                                .await
                                .optional()?)
                        })
                        .await?;
                    row.map(OrderView::try_from).transpose()
                },
            )
            .await
    }

    /// Several orders by id in one query, cache first.
    pub async fn orders_by_ids(
        &self,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, Arc<OrderView>>, ReadError> {
        let source = self.source();
        self.cache
            .through_many(
                CacheKind::Orders,
                &self.cache.orders,
                ids,
                source.at,
                async |missing| {
                    let rows: Vec<OrderRow> = self
                        .read(source, async |conn| {
                            Ok(ov::table
                                .filter(ov::id.eq_any(&missing))
                                .select(OrderRow::as_select())
                                .load(conn)
                                .await?)
                        })
                        .await?;
                    rows.into_iter().map(OrderView::try_from).collect()
                },
            )
            .await
    }

    /// A newest-first keyset page of orders. One customer's unfiltered pages (what
    /// `myOrders` asks) are cached as ids; their items come from the order cache.
    pub async fn orders(
        &self,
        filter: &OrderFilter,
        after: Option<&OrderCursor>,
        first: i64,
    ) -> Result<Page<Arc<OrderView>, OrderCursor>, ReadError> {
        let has_previous_page = after.is_some();
        let only_customer = filter.customer.filter(|&c| {
            *filter
                == OrderFilter {
                    customer: Some(c),
                    ..OrderFilter::default()
                }
        });
        let Some(customer) = only_customer else {
            let rows = self.order_rows(self.source(), filter, after, first).await?;
            return Ok(uncached(rows, has_previous_page));
        };
        // Taken before the lookup: an order change from here on drops what we keep.
        let list_epoch = self.cache.order_list_epoch();
        let cached = self.cache.order_page(customer, after, first).await;
        self.through_page(
            cached,
            &self.cache.orders,
            has_previous_page,
            async |source| self.order_rows(source, filter, after, first).await,
            async |at, ids| {
                self.cache
                    .put_order_page(customer, after.cloned(), first, (list_epoch, at), ids)
                    .await
            },
            async |wanted| self.orders_by_ids(&wanted).await,
        )
        .await
    }

    /// One page of orders from the database, with one extra row to tell whether more
    /// follow.
    async fn order_rows(
        &self,
        source: Choice,
        filter: &OrderFilter,
        after: Option<&OrderCursor>,
        first: i64,
    ) -> Result<(Vec<(OrderCursor, OrderView)>, bool), ReadError> {
        let rows: Vec<OrderRow> = self
            .read(source, async |conn| {
                order_page_rows(conn, filter, after, first + 1).await
            })
            .await?;
        let has_next_page = rows.len() as i64 > first;
        let items = rows
            .into_iter()
            .take(first as usize)
            .map(|r| {
                let v = OrderView::try_from(r)?;
                Ok((
                    OrderCursor {
                        t: v.placed_at.timestamp_micros(),
                        id: v.id,
                    },
                    v,
                ))
            })
            .collect::<Result<Vec<_>, ReadError>>()?;
        Ok((items, has_next_page))
    }

    /// A customer's summary.
    pub async fn customer_summary(&self, id: Uuid) -> Result<Option<CustomerSummary>, ReadError> {
        self.read(self.source(), async |conn| {
            Ok(rm_customer_summary::table
                .find(id)
                .select(CustomerSummary::as_select())
                .first(conn)
                .await
                .optional()?)
        })
        .await
    }
}

/// A page of orders, newest first, `limit` rows.
async fn order_page_rows(
    conn: &mut diesel_async::AsyncPgConnection,
    filter: &OrderFilter,
    after: Option<&OrderCursor>,
    limit: i64,
) -> Result<Vec<OrderRow>, ReadError> {
    let mut q = ov::table.into_boxed();
    if let Some(c) = filter.customer {
        q = q.filter(ov::customer_id.eq(c));
    }
    if let Some(s) = &filter.status {
        q = q.filter(ov::status.eq(s.clone()));
    }
    if let Some(from) = filter.placed_from {
        q = q.filter(ov::placed_at.ge(from));
    }
    if let Some(to) = filter.placed_to {
        q = q.filter(ov::placed_at.lt(to));
    }
    if let Some(c) = after {
        let t = DateTime::<Utc>::from_timestamp_micros(c.t)
            .ok_or_else(|| ReadError::BadInput("the cursor is malformed".into()))?;
        q = q.filter(
            ov::placed_at
                .lt(t)
                .or(ov::placed_at.eq(t).and(ov::id.lt(c.id))),
        );
    }
    Ok(q.order((ov::placed_at.desc(), ov::id.desc()))
        .limit(limit)
        .select(OrderRow::as_select())
        .load(conn)
        .await?)
}
