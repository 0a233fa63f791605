//! Subscriptions (graphql-transport-ws, and the legacy graphql-ws protocol, on
//! `/graphql`). Each is fed by the process's feed of applied events: a change is pushed
//! once the read model (and this replica's cache) reflects it, whichever replica wrote
//! it, because every process learns other processes' batches from the log.

use std::sync::Arc;

use async_graphql::{Context, Result, Subscription, ID};
use futures_util::stream::{self, Stream};
use till_domain::events::DomainEvent;
use till_read_models::sources::PRIMARY;
use till_read_models::{Applied, Projection};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::error::{self, coded, Code};
use super::ids::{self, Kind};
use super::types::catalog::Product;
use super::types::order::Order;
use super::{principal, state, ApiState};
use crate::auth::Principal;

/// Live updates.
#[derive(Default)]
pub struct Subscription;

/// What a subscriber waits for in the feed.
#[derive(Clone, Copy)]
enum Watch {
    Order(Uuid),
    Stock(Uuid),
}

impl Watch {
    fn matches(self, applied: &Applied) -> bool {
        match self {
            Watch::Order(id) => {
                applied.projection == Projection::OrderView
                    && applied.events.iter().any(|e| {
                        matches!(&e.event, DomainEvent::OrderStatusChanged { order_id, .. } if *order_id == id)
                    })
            }
            Watch::Stock(id) => {
                applied.projection == Projection::ProductView
                    && applied.events.iter().any(|e| match &e.event {
                        DomainEvent::InventoryRestocked { product_id, .. }
                        | DomainEvent::InventoryAdjusted { product_id, .. }
                        | DomainEvent::StockReserved { product_id, .. }
                        | DomainEvent::StockReleased { product_id, .. }
                        | DomainEvent::StockCommitted { product_id, .. } => *product_id == id,
                        _ => false,
                    })
            }
        }
    }
}

/// Yields `fetch()` each time the feed carries a matching batch. A subscriber that
/// falls behind the feed gets the current state once instead of every missed step.
fn follow<T, F, Fut>(
    feed: broadcast::Receiver<Arc<Applied>>,
    watch: Watch,
    fetch: F,
) -> impl Stream<Item = T>
where
    T: Send + 'static,
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Option<T>> + Send,
{
    stream::unfold((feed, fetch), move |(mut feed, fetch)| async move {
        loop {
            let hit = match feed.recv().await {
                Ok(applied) => watch.matches(&applied),
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            if hit {
                if let Some(item) = fetch().await {
                    return Some((item, (feed, fetch)));
                }
            }
        }
    })
}

#[Subscription]
impl Subscription {
    /// The order each time its status changes (its owner or staff; NOT_FOUND for
    /// anyone else).
    async fn order_status_changed(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The order (global id).")] order_id: ID,
    ) -> Result<impl Stream<Item = Order>> {
        let me = principal(ctx)?;
        if me == Principal::Anonymous {
            return Err(error::unauthenticated());
        }
        let id = ids::decode(Kind::Order, &order_id, "orderId")?;
        let st: Arc<ApiState> = state(ctx)?.clone();
        let feed = st.reads.progress().feed();
        // From the primary: the feed announces a change once the primary has it, and
        // a replica may not have replayed it yet.
        let reads = st.reads.at(PRIMARY);
        let mut order = reads.order(id).await.map_err(error::read)?;
        if order.is_none() {
            // Subscribing right after placing the order: give the projector its moment.
            let _ = st.reads.wait_for_head(st.consistency_wait).await;
            order = reads.order(id).await.map_err(error::read)?;
        }
        match order {
            Some(o) if me.is_staff() || me.user_id().map(|u| u.0) == Some(o.customer_id) => {}
            _ => {
                return Err(coded(
                    Code::NotFound,
                    format!("order {} was not found", order_id.as_str()),
                ))
            }
        }
        Ok(follow(feed, Watch::Order(id), move || {
            let reads = reads.clone();
            async move { reads.order(id).await.ok().flatten().map(Order::from) }
        }))
    }

    /// The product each time its stock changes (restock, adjustment, orders placed,
    /// cancelled or paid). Products that are not on sale are staff only.
    async fn stock_changed(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product (global id).")] product_id: ID,
    ) -> Result<impl Stream<Item = Product>> {
        let me = principal(ctx)?;
        let id = ids::decode(Kind::Product, &product_id, "productId")?;
        let st: Arc<ApiState> = state(ctx)?.clone();
        let feed = st.reads.progress().feed();
        // From the primary: the feed announces a change once the primary has it, and
        // a replica may not have replayed it yet.
        let reads = st.reads.at(PRIMARY);
        let mut product = reads.product(id).await.map_err(error::read)?;
        if product.is_none() {
            // Subscribing right after creating the product: give the projector its moment.
            let _ = st.reads.wait_for_head(st.consistency_wait).await;
            product = reads.product(id).await.map_err(error::read)?;
        }
        match product {
            Some(p) if me.is_staff() || p.status == "ACTIVE" => {}
            _ => {
                return Err(coded(
                    Code::NotFound,
                    format!("product {} was not found", product_id.as_str()),
                ))
            }
        }
        Ok(follow(feed, Watch::Stock(id), move || {
            let reads = reads.clone();
            async move { reads.product(id).await.ok().flatten().map(Product) }
        }))
    }
}
