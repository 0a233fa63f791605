//! Back-office reports.

use async_graphql::SimpleObject;

use super::money::Money;
use super::scalars::{BigInt, Date};

/// Booked sales of one day (UTC), net of cancelled, expired and failed orders.
#[derive(Debug, Clone, SimpleObject)]
pub struct DailySales {
    /// The day.
    pub day: Date,
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
    #[graphql(deprecation = "a 32-bit Int; use `unitsSold`")]
    pub units: i64,
    /// Units sold over all time.
    pub units_sold: BigInt,
    /// Revenue.
    pub revenue: Money,
}
