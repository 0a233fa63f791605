//! Back-office reports.

use async_graphql::SimpleObject;
use chrono::{DateTime, NaiveDate, Utc};

use super::money::Money;

/// Booked sales of one day (UTC), net of cancelled, expired and failed orders.
#[derive(Debug, Clone, SimpleObject)]
pub struct DailySales {
    /// The day.
    pub day: NaiveDate,
    /// Orders placed.
    pub orders: i64,
    /// Units sold.
    pub units: i64,
    /// Revenue.
    pub revenue: Money,
}

/// Sales of one product over all time.
#[derive(Debug, Clone, SimpleObject)]
pub struct ProductSales {
    /// Global id of the product.
    pub product_id: async_graphql::ID,
    /// SKU.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Units sold.
    pub units: i64,
    /// Revenue.
    pub revenue: Money,
}

/// Where one projection stands.
#[derive(Debug, Clone, SimpleObject)]
pub struct ProjectionStatus {
    /// Projection name.
    pub name: String,
    /// Last applied log position.
    pub position: i64,
    /// Events in the log not yet applied.
    pub lag_events: i64,
    /// When it last applied a batch.
    pub updated_at: Option<DateTime<Utc>>,
}
