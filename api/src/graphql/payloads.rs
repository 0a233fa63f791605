//! What mutations answer with: the payloads of the commerce and back-office mutations
//! (a `consistencyToken`, the changed entity's id, and the entity as the read models
//! have it once they reach the token), and [`perform`], which runs a command or
//! replays an idempotent outcome.

use async_graphql::{Context, Object, Result, ID};
use serde::de::DeserializeOwned;
use till_domain::commands::Outcome;
use till_domain::event_log::LogPoint;
use till_read_models::views::OrderView;
use uuid::Uuid;

use super::error;
use super::ids::{self, Kind};
use super::types::catalog::{Category, Product};
use super::types::order::Order;
use super::{caught_up, state, Replay};

/// Result of a category mutation.
pub struct CategoryPayload {
    pub(super) at: LogPoint,
    pub(super) id: Uuid,
}

/// Result of a category mutation.
#[Object]
impl CategoryPayload {
    /// Send as `X-Consistency-Token` to read your own write.
    async fn consistency_token(&self) -> String {
        self.at.to_token()
    }
    /// Global id of the category (available at once, without waiting for the read model).
    async fn category_id(&self) -> ID {
        ids::id(Kind::Category, self.id)
    }
    /// The category after the change.
    async fn category(&self, ctx: &Context<'_>) -> Result<Option<Category>> {
        let reads = caught_up(ctx, self.at).await?;
        Ok(reads
            .category(self.id)
            .await
            .map_err(error::read)?
            .map(Category::from))
    }
}

/// Result of a product or inventory mutation.
pub struct ProductPayload {
    pub(super) at: LogPoint,
    pub(super) id: Uuid,
}

/// Result of a product or inventory mutation.
#[Object]
impl ProductPayload {
    /// Send as `X-Consistency-Token` to read your own write.
    async fn consistency_token(&self) -> String {
        self.at.to_token()
    }
    /// Global id of the product (available at once, without waiting for the read model).
    async fn product_id(&self) -> ID {
        ids::id(Kind::Product, self.id)
    }
    /// The product after the change.
    async fn product(&self, ctx: &Context<'_>) -> Result<Option<Product>> {
        let reads = caught_up(ctx, self.at).await?;
        Ok(reads
            .product(self.id)
            .await
            .map_err(error::read)?
            .map(Product))
    }
}

/// Result of an order mutation.
pub struct OrderPayload {
    pub(super) at: LogPoint,
    pub(super) id: Uuid,
    /// The order as the command's own event makes it (`placeOrder`; None when the
    /// outcome is an idempotent replay, which reads the order as it is now).
    pub(super) written: Option<std::sync::Arc<OrderView>>,
}

impl OrderPayload {
    /// The payload of a command on order `id` whose events end at `at`.
    pub(super) fn new(at: LogPoint, id: Uuid) -> Self {
        Self {
            at,
            id,
            written: None,
        }
    }
}

/// Result of an order mutation.
#[Object]
impl OrderPayload {
    /// Send as `X-Consistency-Token` to read your own write.
    async fn consistency_token(&self) -> String {
        self.at.to_token()
    }
    /// Global id of the order (available at once, without waiting for the read model).
    async fn order_id(&self) -> ID {
        ids::id(Kind::Order, self.id)
    }
    /// The order after the change.
    async fn order(&self, ctx: &Context<'_>) -> Result<Option<Order>> {
        if let Some(view) = &self.written {
            return Ok(Some(Order::written(view.clone(), self.at)));
        }
        let reads = caught_up(ctx, self.at).await?;
        Ok(reads
            .order(self.id)
            .await
            .map_err(error::read)?
            .map(Order::from))
    }
}

/// Runs a command, or, when a stored idempotent result is being rendered again,
/// returns the outcome it recorded without running anything.
pub(super) async fn perform<T, F>(ctx: &Context<'_>, command: F) -> Result<Outcome<T>>
where
    T: DeserializeOwned,
    F: std::future::Future<Output = std::result::Result<Outcome<T>, till_domain::DomainError>>,
{
    if let Some(Replay(stored)) = ctx.data_opt::<Replay>() {
        let at = stored["at"].as_str().and_then(LogPoint::from_token);
        let value = serde_json::from_value::<T>(stored["value"].clone()).ok();
        return match (at, value) {
            (Some(at), Some(value)) => Ok(Outcome { value, at }),
            _ => Err(error::domain(till_domain::DomainError::Internal(
                "a stored idempotent outcome does not decode".into(),
            ))),
        };
    }
    let out = command.await.map_err(error::domain)?;
    if let Ok(st) = state(ctx) {
        st.commits.committed(out.at.tx_id);
    }
    Ok(out)
}

pub(super) fn parse<T>(r: std::result::Result<T, till_domain::DomainError>) -> Result<T> {
    r.map_err(error::domain)
}
