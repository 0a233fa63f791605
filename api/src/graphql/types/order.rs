//! Orders.

use std::sync::Arc;

use async_graphql::{Context, Enum, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use till_domain::event_log::LogPoint;
use till_read_models::views::{OrderLineView, OrderView};

use super::catalog::Product;
use super::money::Money;
use crate::graphql::ids::{self, Kind};
use crate::graphql::principal;

/// Lifecycle of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum OrderStatus {
    /// Placed, stock reserved, waiting for payment.
    PendingPayment,
    /// Payment captured.
    Paid,
    /// Handed to the carrier.
    Shipped,
    /// Cancelled before payment; stock released.
    Cancelled,
    /// Payment declined; stock released.
    PaymentFailed,
    /// Not paid in time; stock released.
    Expired,
}

impl OrderStatus {
    /// From the stored text.
    pub fn from_view(s: &str) -> Self {
        match s {
            "PAID" => Self::Paid,
            "SHIPPED" => Self::Shipped,
            "CANCELLED" => Self::Cancelled,
            "PAYMENT_FAILED" => Self::PaymentFailed,
            "EXPIRED" => Self::Expired,
            _ => Self::PendingPayment,
        }
    }

    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "PENDING_PAYMENT",
            Self::Paid => "PAID",
            Self::Shipped => "SHIPPED",
            Self::Cancelled => "CANCELLED",
            Self::PaymentFailed => "PAYMENT_FAILED",
            Self::Expired => "EXPIRED",
        }
    }
}

/// An order with its lines, customer and status history.
pub struct Order {
    view: Arc<OrderView>,
    /// For an order shown from its command's own event (a `placeOrder` payload): the
    /// log point the read models must reach before anything outside the order view (a
    /// line's product) is read, so that it shows the write too.
    after: Option<LogPoint>,
}

impl From<Arc<OrderView>> for Order {
    /// An order as the order view has it.
    fn from(view: Arc<OrderView>) -> Self {
        Self { view, after: None }
    }
}

impl Order {
    /// An order as its command left it (`OrderView::placed`), whose events end at
    /// `at`; its lines' products wait for the read models to reach `at`.
    pub fn written(view: Arc<OrderView>, at: LogPoint) -> Self {
        Self {
            view,
            after: Some(at),
        }
    }
}

/// A customer's order.
#[Object]
impl Order {
    /// Global id.
    pub async fn id(&self) -> ID {
        ids::id(Kind::Order, self.view.id)
    }
    /// Current status.
    async fn status(&self) -> OrderStatus {
        OrderStatus::from_view(&self.view.status)
    }
    /// Sum of the lines.
    async fn total(&self) -> Money {
        Money::new(self.view.total_minor, &self.view.currency)
    }
    /// What was bought, with prices captured at placement.
    async fn lines(&self) -> Vec<OrderLine> {
        self.view
            .lines
            .iter()
            .map(|l| OrderLine {
                line: l.clone(),
                currency: self.view.currency.clone(),
                after: self.after,
            })
            .collect()
    }
    /// Who placed it.
    async fn customer(&self) -> OrderCustomer {
        OrderCustomer {
            uuid: self.view.customer_id,
            email: self.view.customer_email.clone(),
            name: self.view.customer_name.clone(),
        }
    }
    /// Every status the order has been in, oldest first.
    async fn status_history(&self) -> Vec<StatusChange> {
        self.view
            .status_history
            .iter()
            .map(|h| StatusChange {
                status: OrderStatus::from_view(&h.status),
                at: h.at,
            })
            .collect()
    }
    /// Order version (grows with every status change).
    async fn version(&self) -> i32 {
        self.view.version
    }
    /// When it was placed.
    async fn placed_at(&self) -> DateTime<Utc> {
        self.view.placed_at
    }
    /// When it last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.view.updated_at
    }
}

/// One line of an order.
pub struct OrderLine {
    line: OrderLineView,
    currency: String,
    /// See [`Order`]'s field of the same name.
    after: Option<LogPoint>,
}

/// A product and quantity in an order.
#[Object]
impl OrderLine {
    /// The product as it is now (null if it no longer exists in the catalog view).
    async fn product(&self, ctx: &Context<'_>) -> Result<Option<Product>> {
        let reads = match self.after {
            Some(at) => crate::graphql::caught_up(ctx, at).await?,
            None => crate::graphql::reads(ctx)?.clone(),
        };
        // Cached products resolve at once; the loader batches the others into one query
        // (it waits a moment to gather keys and runs the batch on a task of its own),
        // on a source that has replayed what this reader must see.
        if let Some(p) = reads.cached_product(self.line.product_id).await {
            return Ok(Some(Product(p)));
        }
        let loader = ctx.data::<Arc<crate::graphql::ProductLoader>>()?;
        let key = (self.line.product_id, reads.floor());
        Ok(loader.load_one(key).await?.map(Product))
    }
    /// Global id of the product.
    async fn product_id(&self) -> ID {
        ids::id(Kind::Product, self.line.product_id)
    }
    /// SKU at placement.
    async fn sku(&self) -> &str {
        &self.line.sku
    }
    /// Product name at placement.
    async fn name(&self) -> &str {
        &self.line.name
    }
    /// Units.
    async fn quantity(&self) -> i32 {
        self.line.quantity
    }
    /// Unit price captured at placement.
    async fn unit_price(&self) -> Money {
        Money::new(self.line.unit_price_minor, &self.currency)
    }
    /// Unit price times quantity.
    async fn line_total(&self) -> Money {
        Money::new(
            self.line
                .unit_price_minor
                .saturating_mul(i64::from(self.line.quantity)),
            &self.currency,
        )
    }
}

/// The customer as recorded on an order.
pub struct OrderCustomer {
    uuid: uuid::Uuid,
    email: String,
    name: String,
}

/// Who placed an order.
#[Object]
impl OrderCustomer {
    /// Global id of the customer.
    async fn id(&self) -> ID {
        ids::id(Kind::Customer, self.uuid)
    }
    /// Email at placement (the owner and staff only; others see null).
    async fn email(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        let p = principal(ctx)?;
        let visible = p.is_staff() || p.user_id().map(|u| u.0) == Some(self.uuid);
        Ok(visible.then(|| self.email.clone()))
    }
    /// Name at placement.
    async fn name(&self) -> &str {
        &self.name
    }
}

/// An entry of an order's status history.
#[derive(Debug, Clone, SimpleObject)]
pub struct StatusChange {
    /// Status entered.
    pub status: OrderStatus,
    /// When.
    pub at: DateTime<Utc>,
}
