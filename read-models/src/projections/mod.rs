//! Projections: each turns events into rows of its read-model tables. Every apply is
//! idempotent in effect within a batch transaction that also moves the projection's
//! checkpoint, so each event is reflected exactly once.

mod customer_summary;
mod order_view;
mod product_view;
mod sales;

use diesel_async::AsyncPgConnection;
use till_domain::events::StoredEvent;
use till_domain::types::OrderStatus;
use uuid::Uuid;

use crate::error::ReadError;

/// What a batch changed, for cache invalidation and change feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// A product view row.
    Product(Uuid),
    /// Which products are listed, or their order in a list, may have changed (a product
    /// created, updated or archived); stock and popularity changes are not listings.
    Listing,
    /// The category tree.
    Categories,
    /// An order view row (and its customer).
    Order {
        /// The order.
        order: Uuid,
        /// Its customer.
        customer: Uuid,
    },
    /// A customer summary row.
    Customer(Uuid),
    /// The sales tables.
    Sales,
}

/// What applying `events` to `projection` changes, derived from the events alone (no
/// database): a process that did not apply a batch itself (another replica did) uses it
/// to invalidate its cache and feed its subscribers.
pub fn changes_of(projection: Projection, events: &[StoredEvent]) -> Vec<Change> {
    use till_domain::events::DomainEvent as E;
    let mut out = Vec::new();
    for ev in events {
        match (projection, &ev.event) {
            (Projection::ProductView, E::CategoryCreated { .. }) => out.push(Change::Categories),
            (
                Projection::ProductView,
                E::ProductCreated { product_id, .. }
                | E::ProductUpdated { product_id, .. }
                | E::ProductArchived { product_id, .. },
            ) => out.extend([Change::Product(*product_id), Change::Listing]),
            (
                Projection::ProductView,
                E::InventoryRestocked { product_id, .. }
                | E::InventoryAdjusted { product_id, .. }
                | E::StockReserved { product_id, .. }
                | E::StockReleased { product_id, .. }
                | E::StockCommitted { product_id, .. },
            ) => out.push(Change::Product(*product_id)),
            (
                Projection::ProductView,
                E::OrderPlaced { lines, .. } | E::OrderStatusChanged { lines, .. },
            ) => out.extend(lines.iter().map(|l| Change::Product(l.product_id))),
            (
                Projection::OrderView,
                E::OrderPlaced {
                    order_id,
                    customer_id,
                    ..
                }
                | E::OrderStatusChanged {
                    order_id,
                    customer_id,
                    ..
                },
            ) => out.push(Change::Order {
                order: *order_id,
                customer: *customer_id,
            }),
            (
                Projection::CustomerSummary,
                E::CustomerRegistered { customer_id, .. }
                | E::RoleGranted { customer_id, .. }
                | E::OrderPlaced { customer_id, .. }
                | E::OrderStatusChanged { customer_id, .. },
            ) => out.push(Change::Customer(*customer_id)),
            (Projection::Sales, E::OrderPlaced { .. } | E::OrderStatusChanged { .. }) => {
                out.push(Change::Sales)
            }
            _ => {}
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|c| seen.insert(*c));
    out
}

/// Events a projection has applied (by this process or another), in log order.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The projection.
    pub projection: Projection,
    /// The events, now reflected in its tables (shared by the projections that applied
    /// them together).
    pub events: std::sync::Arc<[StoredEvent]>,
}

/// Every projection Till maintains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Projection {
    /// Categories and the product view (`rm_categories`, `rm_product_view`,
    /// `rm_product_popularity`).
    ProductView,
    /// The order view (`rm_order_view`).
    OrderView,
    /// The customer summary (`rm_customer_summary`).
    CustomerSummary,
    /// Sales per day and per product (`rm_sales_daily`, `rm_product_sales`).
    Sales,
}

impl Projection {
    /// All projections.
    pub const ALL: [Projection; 4] = [
        Projection::ProductView,
        Projection::OrderView,
        Projection::CustomerSummary,
        Projection::Sales,
    ];

    /// Its tables (rebuilt and swapped together).
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Self::ProductView => &["rm_categories", "rm_product_view", "rm_product_popularity"],
            Self::OrderView => &["rm_order_view"],
            Self::CustomerSummary => &["rm_customer_summary"],
            Self::Sales => &["rm_sales_daily", "rm_product_sales"],
        }
    }

    /// The checkpoint name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ProductView => "product_view",
            Self::OrderView => "order_view",
            Self::CustomerSummary => "customer_summary",
            Self::Sales => "sales",
        }
    }

    /// Parses a checkpoint name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Applies a batch of events in log order (events a projection does not use are
    /// ignored). Projections fold what commutes (stock levels, counters, sums) into
    /// set-based statements per batch; the effect equals applying one event at a time.
    ///
    /// Takes the connection shared (`&`), so that the statements of several
    /// projections can be sent to one connection together (pipelined) in one
    /// transaction; each projection still sends its own statements one after another.
    pub async fn apply_batch(
        self,
        conn: &AsyncPgConnection,
        events: &[StoredEvent],
        changes: &mut Vec<Change>,
    ) -> Result<(), ReadError> {
        match self {
            Self::ProductView => product_view::apply_batch(conn, events, changes).await,
            Self::OrderView => order_view::apply_batch(conn, events, changes).await,
            Self::CustomerSummary => customer_summary::apply_batch(conn, events, changes).await,
            Self::Sales => sales::apply_batch(conn, events, changes).await,
        }
    }
}

/// True when an order entering `status` gives its sale back (stock released, revenue
/// reversed).
fn reverses_sale(status: &str) -> bool {
    matches!(
        OrderStatus::from_db(status),
        Ok(OrderStatus::Cancelled | OrderStatus::Expired | OrderStatus::PaymentFailed)
    )
}
