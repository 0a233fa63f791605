//! The denormalized shapes the read side serves. Rows are decoded from the `rm_*`
//! tables; JSON columns hold nested lists.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ReadError;
use crate::schema::*;
use till_domain::events::DomainEvent;

/// A view row with its own id (the key of its row cache).
pub trait Identified {
    /// The row's id.
    fn id(&self) -> Uuid;
}

impl Identified for ProductView {
    fn id(&self) -> Uuid {
        self.id
    }
}

impl Identified for OrderView {
    fn id(&self) -> Uuid {
        self.id
    }
}

/// A category as a link in a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryRef {
    /// Category id.
    pub id: Uuid,
    /// Its slug.
    pub slug: String,
    /// Its name.
    pub name: String,
}

/// A category with its path from the root.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = rm_categories)]
pub struct CategoryRow {
    /// Id.
    pub id: Uuid,
    /// Slug.
    pub slug: String,
    /// Name.
    pub name: String,
    /// Parent id.
    pub parent_id: Option<Uuid>,
    /// Root-to-self path as JSON.
    pub path: serde_json::Value,
}

/// A category for readers.
#[derive(Debug, Clone)]
pub struct CategoryView {
    /// Id.
    pub id: Uuid,
    /// Slug.
    pub slug: String,
    /// Name.
    pub name: String,
    /// Parent id.
    pub parent_id: Option<Uuid>,
    /// Root-to-self path.
    pub path: Vec<CategoryRef>,
}

impl TryFrom<CategoryRow> for CategoryView {
    type Error = ReadError;
    fn try_from(r: CategoryRow) -> Result<Self, ReadError> {
        Ok(Self {
            id: r.id,
            slug: r.slug,
            name: r.name,
            parent_id: r.parent_id,
            path: serde_json::from_value(r.path)?,
        })
    }
}

/// A product row as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = rm_product_view)]
pub struct ProductRow {
    /// Id.
    pub id: Uuid,
    /// SKU.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Unit price, minor units.
    pub price_minor: i64,
    /// DRAFT / ACTIVE / ARCHIVED.
    pub status: String,
    /// Category id.
    pub category_id: Uuid,
    /// Root-to-category path as JSON.
    pub category_path: serde_json::Value,
    /// Units on hand.
    pub on_hand: i32,
    /// Units reserved.
    pub reserved: i32,
    /// Units available.
    pub available: i32,
    /// Units sold (placed orders, net of cancellations).
    pub popularity: i64,
    /// Product version.
    pub version: i32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// The product view: product, category path, stock and popularity.
#[derive(Debug, Clone)]
pub struct ProductView {
    /// Id.
    pub id: Uuid,
    /// SKU.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Unit price, minor units.
    pub price_minor: i64,
    /// DRAFT / ACTIVE / ARCHIVED.
    pub status: String,
    /// Category id.
    pub category_id: Uuid,
    /// Root-to-category path.
    pub category_path: Vec<CategoryRef>,
    /// Units on hand.
    pub on_hand: i32,
    /// Units reserved for unpaid orders.
    pub reserved: i32,
    /// Units that can be ordered now.
    pub available: i32,
    /// Units sold (placed orders, net of cancellations).
    pub popularity: i64,
    /// Product version (for optimistic concurrency).
    pub version: i32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl ProductView {
    /// Approximate heap size, for the cache's weigher.
    pub fn weight(&self) -> u32 {
        let strings = self.sku.len() + self.name.len() + self.description.len() + self.status.len();
        let path: usize = self
            .category_path
            .iter()
            .map(|c| c.slug.len() + c.name.len() + 64)
            .sum();
        u32::try_from(std::mem::size_of::<Self>() + strings + path).unwrap_or(u32::MAX)
    }
}

impl TryFrom<ProductRow> for ProductView {
    type Error = ReadError;
    fn try_from(r: ProductRow) -> Result<Self, ReadError> {
        Ok(Self {
            id: r.id,
            sku: r.sku,
            name: r.name,
            description: r.description,
            price_minor: r.price_minor,
            status: r.status,
            category_id: r.category_id,
            category_path: serde_json::from_value(r.category_path)?,
            on_hand: r.on_hand,
            reserved: r.reserved,
            available: r.available,
            popularity: r.popularity,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// One line of an order as readers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLineView {
    /// Product id.
    pub product_id: Uuid,
    /// SKU at placement.
    pub sku: String,
    /// Product name at placement.
    pub name: String,
    /// Units.
    pub quantity: i32,
    /// Unit price at placement, minor units.
    pub unit_price_minor: i64,
}

/// One entry of an order's status history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    /// Status entered.
    pub status: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// An order row as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = rm_order_view)]
pub struct OrderRow {
    /// Id.
    pub id: Uuid,
    /// Customer id.
    pub customer_id: Uuid,
    /// Customer email.
    pub customer_email: String,
    /// Customer name.
    pub customer_name: String,
    /// Status.
    pub status: String,
    /// Total, minor units.
    pub total_minor: i64,
    /// Currency.
    pub currency: String,
    /// Lines as JSON.
    pub lines: serde_json::Value,
    /// Status history as JSON.
    pub status_history: serde_json::Value,
    /// Order version.
    pub version: i32,
    /// Placed.
    pub placed_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// The order view: order, lines with product names, customer and status history.
#[derive(Debug, Clone)]
pub struct OrderView {
    /// Id.
    pub id: Uuid,
    /// Customer id.
    pub customer_id: Uuid,
    /// Customer email.
    pub customer_email: String,
    /// Customer name.
    pub customer_name: String,
    /// Status.
    pub status: String,
    /// Total, minor units.
    pub total_minor: i64,
    /// Currency.
    pub currency: String,
    /// Lines.
    pub lines: Vec<OrderLineView>,
    /// Status history, oldest first.
    pub status_history: Vec<StatusChange>,
    /// Order version.
    pub version: i32,
    /// Placed.
    pub placed_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl OrderView {
    /// Approximate heap size, for the cache's weigher.
    pub fn weight(&self) -> u32 {
        let lines: usize = self
            .lines
            .iter()
            .map(|l| l.sku.len() + l.name.len() + 64)
            .sum();
        let strings = self.customer_email.len() + self.customer_name.len() + self.status.len();
        let history = self.status_history.len() * 48;
        u32::try_from(std::mem::size_of::<Self>() + lines + strings + history).unwrap_or(u32::MAX)
    }
}

impl OrderView {
    /// The view of a new order from its `OrderPlaced` event (None for any other event):
    /// the order-view projection inserts exactly this row (`projections/order_view.rs`),
    /// so it is what a read of the order returns once the projection has applied the
    /// event, until the order changes. A test compares the two for real orders.
    pub fn placed(event: &DomainEvent) -> Result<Option<Self>, ReadError> {
        let DomainEvent::OrderPlaced {
            order_id,
            customer_id,
            customer_email,
            customer_name,
            lines,
            total_minor,
            currency,
            placed_at,
            version,
        } = event
        else {
            return Ok(None);
        };
        Ok(Some(Self {
            id: *order_id,
            customer_id: *customer_id,
            customer_email: customer_email.clone(),
            customer_name: customer_name.clone(),
            status: "PENDING_PAYMENT".into(),
            total_minor: *total_minor,
            currency: currency.clone(),
            lines: serde_json::from_value(serde_json::to_value(lines)?)?,
            status_history: vec![StatusChange {
                status: "PENDING_PAYMENT".into(),
                at: *placed_at,
            }],
            version: *version,
            placed_at: *placed_at,
            updated_at: *placed_at,
        }))
    }
}

impl TryFrom<OrderRow> for OrderView {
    type Error = ReadError;
    fn try_from(r: OrderRow) -> Result<Self, ReadError> {
        Ok(Self {
            id: r.id,
            customer_id: r.customer_id,
            customer_email: r.customer_email,
            customer_name: r.customer_name,
            status: r.status,
            total_minor: r.total_minor,
            currency: r.currency,
            lines: serde_json::from_value(r.lines)?,
            status_history: serde_json::from_value(r.status_history)?,
            version: r.version,
            placed_at: r.placed_at,
            updated_at: r.updated_at,
        })
    }
}

/// Orders count, lifetime spend and last order of one customer.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = rm_customer_summary)]
pub struct CustomerSummary {
    /// Customer id.
    pub customer_id: Uuid,
    /// Email.
    pub email: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Orders placed.
    pub orders_count: i64,
    /// Sum of order totals, net of cancelled, expired and failed orders.
    pub lifetime_spend_minor: i64,
    /// Newest order.
    pub last_order_id: Option<Uuid>,
    /// When the newest order was placed.
    pub last_order_at: Option<DateTime<Utc>>,
}

/// Booked sales of one day (UTC), net of orders that were cancelled, expired or failed.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = rm_sales_daily)]
pub struct DailySales {
    /// The day.
    pub day: NaiveDate,
    /// Orders placed that day (net).
    pub orders_count: i64,
    /// Units.
    pub units: i64,
    /// Revenue, minor units.
    pub revenue_minor: i64,
}

/// Units and revenue of one product over all time.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = rm_product_sales)]
pub struct ProductSales {
    /// Product id.
    pub product_id: Uuid,
    /// SKU.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Units sold (net).
    pub units: i64,
    /// Revenue, minor units (net).
    pub revenue_minor: i64,
}
