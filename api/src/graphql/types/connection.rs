//! Relay cursor connections (keyset pages).

use async_graphql::SimpleObject;

use super::catalog::Product;
use super::order::Order;

/// Where a page sits in its list.
#[derive(Debug, Clone, SimpleObject)]
pub struct PageInfo {
    /// Whether items follow this page (fetch them with `after: endCursor`).
    pub has_next_page: bool,
    /// Whether items precede this page (true when the page was fetched with `after`).
    pub has_previous_page: bool,
    /// Cursor of the first item of the page.
    pub start_cursor: Option<String>,
    /// Cursor of the last item of the page.
    pub end_cursor: Option<String>,
}

impl PageInfo {
    /// Page info from the edges' cursors.
    pub fn new(cursors: &[&str], has_next_page: bool, has_previous_page: bool) -> Self {
        Self {
            has_next_page,
            has_previous_page,
            start_cursor: cursors.first().map(|c| (*c).to_owned()),
            end_cursor: cursors.last().map(|c| (*c).to_owned()),
        }
    }
}

/// A page of products.
#[derive(SimpleObject)]
pub struct ProductConnection {
    /// The products with their cursors.
    pub edges: Vec<ProductEdge>,
    /// Where this page sits.
    pub page_info: PageInfo,
}

/// A product in a page.
#[derive(SimpleObject)]
pub struct ProductEdge {
    /// Opaque position of this product; pass as `after` to continue after it.
    pub cursor: String,
    /// The product.
    pub node: Product,
}

/// A page of orders.
#[derive(SimpleObject)]
pub struct OrderConnection {
    /// The orders with their cursors.
    pub edges: Vec<OrderEdge>,
    /// Where this page sits.
    pub page_info: PageInfo,
}

/// An order in a page.
#[derive(SimpleObject)]
pub struct OrderEdge {
    /// Opaque position of this order; pass as `after` to continue after it.
    pub cursor: String,
    /// The order.
    pub node: Order,
}
