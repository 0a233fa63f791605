//! Query root.
//!
//! Why over 400 lines: every storefront and back-office query with its filter input,
//! each resolver a few lines over the read models; splitting by audience would put
//! `product` and `orders` of one page in two files.

use async_graphql::{Context, InputObject, Object, Result, ID};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;
use till_read_models::queries::{OrderCursor, OrderFilter, Page, ProductFilter};

use super::error::{self, coded, Code};
use super::ids::{self, Kind};
use std::sync::Arc;

use till_read_models::views::{OrderView, ProductView};

use super::types::catalog::{Category, Product, ProductSortBy, ProductStatus};
use super::types::connection::{
    OrderConnection, OrderEdge, PageInfo, ProductConnection, ProductEdge,
};
use super::types::customer::Customer;
use super::types::money::Money;
use super::types::node::Node;
use super::types::order::{Order, OrderStatus};
use super::types::reports::{DailySales, ProductSales};
use super::types::scalars::{BigInt, Date};
use super::{principal, reads, state, SignedInGuard, StaffGuard};
use crate::auth::Principal;

/// How to find one product: exactly one of its keys (`@oneOf`).
#[derive(Debug, async_graphql::OneofObject)]
pub enum ProductKey {
    /// The product's global id.
    Id(ID),
    /// The product's SKU (surrounding spaces ignored).
    Sku(String),
}

/// Filters of `products`; all given filters must match.
#[derive(Debug, Default, InputObject)]
pub struct ProductFilterInput {
    /// In this category (global id) or any category below it.
    pub category: Option<ID>,
    /// Name contains this text (case-insensitive).
    pub search: Option<String>,
    /// Unit price at least this many minor units.
    pub price_min: Option<i64>,
    /// Unit price at most this many minor units.
    pub price_max: Option<i64>,
    /// Only products that can be ordered now.
    pub in_stock: Option<bool>,
    /// Only this status (staff only; others always see ACTIVE products).
    pub status: Option<ProductStatus>,
}

/// Filters of `orders` (back office).
#[derive(Debug, Default, InputObject)]
pub struct OrderFilterInput {
    /// Only this status.
    pub status: Option<OrderStatus>,
    /// Only this customer's orders (global id).
    pub customer: Option<ID>,
    /// Placed on or after this day (UTC).
    pub placed_from: Option<Date>,
    /// Placed before this day (UTC).
    pub placed_to: Option<Date>,
}

const DEFAULT_PAGE: i32 = 20;

pub(super) fn page_size(ctx: &Context<'_>, first: Option<i32>) -> Result<i64> {
    let max = state(ctx)?.max_page_size;
    let n = i64::from(first.unwrap_or(DEFAULT_PAGE));
    if n < 1 || n > max {
        return Err(coded(
            Code::BadUserInput,
            format!("first: must be between 1 and {max}"),
        ));
    }
    Ok(n)
}

fn encode_cursor<C: Serialize>(c: &C) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap_or_default())
}

fn decode_cursor<C: DeserializeOwned>(after: Option<&str>) -> Result<Option<C>> {
    let Some(raw) = after else { return Ok(None) };
    URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .map(Some)
        .ok_or_else(|| coded(Code::BadUserInput, "after: not a cursor from this list"))
}

/// Encodes a page's cursors: (edges as (cursor, item), page info).
fn page_edges<T, C: Serialize>(page: Page<T, C>) -> (Vec<(String, T)>, PageInfo) {
    let edges: Vec<(String, T)> = page
        .items
        .into_iter()
        .map(|(c, v)| (encode_cursor(&c), v))
        .collect();
    let cursors: Vec<&str> = edges.iter().map(|(c, _)| c.as_str()).collect();
    let info = PageInfo::new(&cursors, page.has_next_page, page.has_previous_page);
    (edges, info)
}

fn product_page<C: Serialize>(page: Page<Arc<ProductView>, C>) -> ProductConnection {
    let (edges, page_info) = page_edges(page);
    ProductConnection {
        edges: edges
            .into_iter()
            .map(|(cursor, v)| ProductEdge {
                cursor,
                node: Product(v),
            })
            .collect(),
        page_info,
    }
}

fn order_page<C: Serialize>(page: Page<Arc<OrderView>, C>) -> OrderConnection {
    let (edges, page_info) = page_edges(page);
    OrderConnection {
        edges: edges
            .into_iter()
            .map(|(cursor, v)| OrderEdge {
                cursor,
                node: Order::from(v),
            })
            .collect(),
        page_info,
    }
}

pub(super) fn is_visible(p: &Principal, status: &str) -> bool {
    p.is_staff() || status == "ACTIVE"
}

/// The object of `kind` with this id, as the caller may see it: null when it does not
/// exist or is not theirs to see (a product not for sale, another customer's order or
/// account). `node` and the federation's entity references both look up through it.
pub(super) async fn find(ctx: &Context<'_>, kind: Kind, uuid: uuid::Uuid) -> Result<Option<Node>> {
    let me = principal(ctx)?;
    Ok(match kind {
        Kind::Product => reads(ctx)?
            .product(uuid)
            .await
            .map_err(error::read)?
            .filter(|p| is_visible(&me, &p.status))
            .map(|p| Node::Product(Product(p))),
        Kind::Category => reads(ctx)?
            .category(uuid)
            .await
            .map_err(error::read)?
            .map(|c| Node::Category(Category::from(c))),
        Kind::Order => reads(ctx)?
            .order(uuid)
            .await
            .map_err(error::read)?
            .filter(|o| me.is_staff() || me.user_id().map(|u| u.0) == Some(o.customer_id))
            .map(|o| Node::Order(Order::from(o))),
        Kind::Customer => {
            if !(me.is_staff() || me.user_id().map(|u| u.0) == Some(uuid)) {
                None
            } else {
                reads(ctx)?
                    .customer_summary(uuid)
                    .await
                    .map_err(error::read)?
                    .map(|c| Node::Customer(Customer(c)))
            }
        }
    })
}

/// All queries: storefront, back office and the job queue, one `Query` type.
#[derive(async_graphql::MergedObject, Default)]
pub struct Query(
    StoreQuery,
    super::jobs::JobsQuery,
    super::projections::ProjectionsQuery,
);

/// Storefront and back-office reads.
#[derive(Default)]
pub struct StoreQuery;

/// Storefront and back-office reads.
#[Object]
impl StoreQuery {
    /// Fetches any object by its global id (null when it does not exist or is not
    /// yours to see).
    async fn node(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A global id, as any object's `id` gives it.")] id: ID,
    ) -> Result<Option<Node>> {
        let Some((kind, uuid)) = ids::decode_any(&id) else {
            return Err(coded(Code::BadUserInput, "id: not a global id"));
        };
        find(ctx, kind, uuid).await
    }

    /// One product, by global id or by SKU: `product(by: {sku: "TEE-LTD-01"})`. Null when
    /// there is none (or it is not for sale, for customers).
    async fn product(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which product: exactly one of its global id or its SKU.")] by: Option<
            ProductKey,
        >,
        #[graphql(
            desc = "The product's global id.",
            deprecation = "use `by: {id: ...}`; `by` becomes required in the next release"
        )]
        id: Option<ID>,
        #[graphql(
            desc = "The product's SKU.",
            deprecation = "use `by: {sku: ...}`; `by` becomes required in the next release"
        )]
        sku: Option<String>,
    ) -> Result<Option<Product>> {
        let key = match (by, id, sku) {
            (Some(key), None, None) => key,
            (None, Some(id), None) => ProductKey::Id(id),
            (None, None, Some(sku)) => ProductKey::Sku(sku),
            _ => {
                return Err(coded(
                    Code::BadUserInput,
                    "give exactly one of by, id or sku",
                ))
            }
        };
        let view = match key {
            ProductKey::Id(id) => {
                let uuid = ids::decode(Kind::Product, &id, "id")?;
                reads(ctx)?.product(uuid).await.map_err(error::read)?
            }
            ProductKey::Sku(sku) => reads(ctx)?
                .product_by_sku(sku.trim())
                .await
                .map_err(error::read)?,
        };
        let me = principal(ctx)?;
        Ok(view.filter(|p| is_visible(&me, &p.status)).map(Product))
    }

    /// A page of products, filtered and sorted (keyset pagination: pass `endCursor` as
    /// `after` for the next page).
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 1 to the configured maximum (default 20).")] first: Option<
            i32,
        >,
        #[graphql(desc = "Cursor after which the page starts.")] after: Option<String>,
        #[graphql(desc = "Only products matching every given filter.")] filter: Option<
            ProductFilterInput,
        >,
        #[graphql(desc = "Ordering (default NEWEST).")] sort_by: Option<ProductSortBy>,
    ) -> Result<ProductConnection> {
        let n = page_size(ctx, first)?;
        let f = filter.unwrap_or_default();
        let me = principal(ctx)?;
        let statuses = match (me.is_staff(), f.status) {
            (true, Some(s)) => vec![till_domain::types::ProductStatus::from(s)
                .as_str()
                .to_owned()],
            (true, None) => vec![],
            (false, Some(ProductStatus::Active) | None) => vec!["ACTIVE".to_owned()],
            (false, Some(_)) => return Err(error::forbidden()),
        };
        if let (Some(min), Some(max)) = (f.price_min, f.price_max) {
            if min > max {
                return Err(coded(
                    Code::BadUserInput,
                    "filter: priceMin is above priceMax",
                ));
            }
        }
        let search = f
            .search
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if search.as_ref().is_some_and(|s| s.chars().count() > 100) {
            return Err(coded(
                Code::BadUserInput,
                "filter.search: at most 100 characters",
            ));
        }
        let filter = ProductFilter {
            category: f
                .category
                .as_ref()
                .map(|c| ids::decode(Kind::Category, c, "filter.category"))
                .transpose()?,
            search,
            price_min: f.price_min,
            price_max: f.price_max,
            in_stock: f.in_stock.unwrap_or(false),
            statuses,
        };
        let sort = sort_by.unwrap_or_default().into();
        let cursor = decode_cursor(after.as_deref())?;
        let page = reads(ctx)?
            .products(&filter, sort, cursor.as_ref(), n)
            .await
            .map_err(error::read)?;
        Ok(product_page(page))
    }

    /// Every category, ordered by slug.
    async fn categories(&self, ctx: &Context<'_>) -> Result<Vec<Category>> {
        let list = reads(ctx)?.categories().await.map_err(error::read)?;
        Ok(list.iter().cloned().map(Category::from).collect())
    }

    /// The signed-in account (null until the read model has it).
    #[graphql(guard = "SignedInGuard")]
    async fn me(&self, ctx: &Context<'_>) -> Result<Option<Customer>> {
        let Some(id) = principal(ctx)?.user_id() else {
            return Err(error::unauthenticated());
        };
        Ok(reads(ctx)?
            .customer_summary(id.0)
            .await
            .map_err(error::read)?
            .map(Customer))
    }

    /// The signed-in customer's orders, newest first.
    #[graphql(
        guard = "SignedInGuard",
        complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1"
    )]
    async fn my_orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor after which the page starts.")] after: Option<String>,
    ) -> Result<OrderConnection> {
        let Some(me) = principal(ctx)?.user_id() else {
            return Err(error::unauthenticated());
        };
        let n = page_size(ctx, first)?;
        let cursor: Option<OrderCursor> = decode_cursor(after.as_deref())?;
        let filter = OrderFilter {
            customer: Some(me.0),
            ..OrderFilter::default()
        };
        let page = reads(ctx)?
            .orders(&filter, cursor.as_ref(), n)
            .await
            .map_err(error::read)?;
        Ok(order_page(page))
    }

    /// One order by global id: null when there is none or it is not yours (its
    /// customer and staff see it), as `node` and `product` answer.
    #[graphql(guard = "SignedInGuard")]
    async fn order(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The order (global id).")] id: ID,
    ) -> Result<Option<Order>> {
        let uuid = ids::decode(Kind::Order, &id, "id")?;
        Ok(match find(ctx, Kind::Order, uuid).await? {
            Some(Node::Order(o)) => Some(o),
            _ => None,
        })
    }

    /// All orders, newest first (back office).
    #[graphql(
        guard = "StaffGuard",
        complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1"
    )]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor after which the page starts.")] after: Option<String>,
        #[graphql(desc = "Only orders matching every given filter.")] filter: Option<
            OrderFilterInput,
        >,
    ) -> Result<OrderConnection> {
        let n = page_size(ctx, first)?;
        let f = filter.unwrap_or_default();
        let cursor: Option<OrderCursor> = decode_cursor(after.as_deref())?;
        let day_start = |d: Date| d.0.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        let filter = OrderFilter {
            customer: f
                .customer
                .as_ref()
                .map(|c| ids::decode(Kind::Customer, c, "filter.customer"))
                .transpose()?,
            status: f.status.map(|s| s.as_str().to_owned()),
            placed_from: f.placed_from.and_then(day_start),
            placed_to: f.placed_to.and_then(day_start),
        };
        let page = reads(ctx)?
            .orders(&filter, cursor.as_ref(), n)
            .await
            .map_err(error::read)?;
        Ok(order_page(page))
    }

    /// Booked sales per day between two UTC days, inclusive (back office).
    #[graphql(guard = "StaffGuard")]
    async fn sales_report(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "First day, inclusive (UTC).")] from: Date,
        #[graphql(desc = "Last day, inclusive (UTC); at most 3,660 days after `from`.")] to: Date,
    ) -> Result<Vec<DailySales>> {
        let st = state(ctx)?;
        let rows = reads(ctx)?
            .sales_report(from.0, to.0)
            .await
            .map_err(error::read)?;
        Ok(rows
            .into_iter()
            .map(|r| DailySales {
                day: Date(r.day),
                orders: r.orders_count,
                units: r.units,
                revenue: Money::new(r.revenue_minor, st.currency.as_str()),
            })
            .collect())
    }

    /// Best-selling products by units (back office).
    #[graphql(guard = "StaffGuard")]
    async fn top_products(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "How many (1-100, default 10).")] first: Option<i32>,
    ) -> Result<Vec<ProductSales>> {
        let n = first.unwrap_or(10);
        if !(1..=100).contains(&n) {
            return Err(coded(
                Code::BadUserInput,
                "first: must be between 1 and 100",
            ));
        }
        let st = state(ctx)?;
        let rows = reads(ctx)?
            .top_products(i64::from(n))
            .await
            .map_err(error::read)?;
        Ok(rows
            .into_iter()
            .map(|r| ProductSales {
                product_id: ids::id(Kind::Product, r.product_id),
                sku: r.sku,
                name: r.name,
                units: r.units,
                units_sold: BigInt(r.units),
                revenue: Money::new(r.revenue_minor, st.currency.as_str()),
            })
            .collect())
    }
}
