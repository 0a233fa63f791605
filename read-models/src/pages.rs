//! What a list read takes and returns: filters, orderings, keyset cursors and pages.
//! Shared by the queries and the cache's page keys, so neither depends on the other
//! for them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::views::ProductView;

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

/// Orderings of `products`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum ProductSort {
    /// Cheapest first.
    Price,
    /// A to Z.
    Name,
    /// Newest first.
    #[default]
    Newest,
    /// Most units sold first.
    Popular,
}

/// Filters of `products`; all given filters must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ProductFilter {
    /// In this category or any below it.
    pub category: Option<Uuid>,
    /// Name contains this text (case-insensitive).
    pub search: Option<String>,
    /// Price at least this, minor units.
    pub price_min: Option<i64>,
    /// Price at most this, minor units.
    pub price_max: Option<i64>,
    /// Only products with available stock.
    pub in_stock: bool,
    /// Only these statuses (the API restricts non-staff to ACTIVE).
    pub statuses: Vec<String>,
}

/// Position after a product in one ordering.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProductCursor {
    /// The ordering the cursor belongs to.
    pub sort: ProductSort,
    /// Sort key of the product (price, popularity or created_at micros as numbers).
    pub n: Option<i64>,
    /// Sort key when it is text (name).
    pub s: Option<String>,
    /// The product id (tie-breaker).
    pub id: Uuid,
}

impl ProductCursor {
    pub(crate) fn after(view: &ProductView, sort: ProductSort) -> Self {
        let (n, s) = match sort {
            ProductSort::Price => (Some(view.price_minor), None),
            ProductSort::Name => (None, Some(view.name.clone())),
            ProductSort::Newest => (Some(view.created_at.timestamp_micros()), None),
            ProductSort::Popular => (Some(view.popularity), None),
        };
        Self {
            sort,
            n,
            s,
            id: view.id,
        }
    }
}

/// Filters of order lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFilter {
    /// Only this customer's orders.
    pub customer: Option<Uuid>,
    /// Only orders in this status.
    pub status: Option<String>,
    /// Placed at or after.
    pub placed_from: Option<DateTime<Utc>>,
    /// Placed before.
    pub placed_to: Option<DateTime<Utc>>,
}

/// Position after an order in newest-first order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderCursor {
    /// placed_at in microseconds.
    pub t: i64,
    /// The order id (tie-breaker).
    pub id: Uuid,
}
