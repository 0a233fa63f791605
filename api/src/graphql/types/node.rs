//! The Relay `Node` interface.

use async_graphql::{Interface, ID};

use super::catalog::{Category, Product};
use super::customer::Customer;
use super::order::Order;

/// An object with a global id, fetchable with `node(id:)`.
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID", desc = "Global id."))]
pub enum Node {
    /// A product.
    Product(Product),
    /// A category.
    Category(Category),
    /// An order.
    Order(Order),
    /// A customer account.
    Customer(Customer),
}
