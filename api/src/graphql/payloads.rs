//! What mutations answer with: the payloads of every mutation (commerce, accounts, jobs,
//! projections)
//! (a `consistencyToken`, the changed entity's id, and the entity as the read models
//! have it once they reach the token), and [`perform`], which runs a command or
//! replays an idempotent outcome.

use async_graphql::{Context, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use till_domain::commands::{Outcome, Session};
use till_domain::event_log::LogPoint;
use till_domain::types::CustomerId;
use till_read_models::views::OrderView;
use uuid::Uuid;

use super::error;
use super::ids::{self, Kind};
use super::types::catalog::{Category, Product};
use super::types::customer::{Customer, Role};
use super::types::jobs::WebhookSubscription;
use super::types::order::Order;
use super::types::projections::ProjectionStatus;
use super::{caught_up, reads, state, Replay};

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

/// Result of `updateWebhookSubscription`.
#[derive(SimpleObject)]
pub struct WebhookSubscriptionPayload {
    /// The subscription after the change.
    pub subscription: WebhookSubscription,
}

/// Result of `retryDeadLetter` / `discardDeadLetter`.
#[derive(SimpleObject)]
pub struct DeadLetterPayload {
    /// The dead letter acted on.
    pub id: ID,
    /// Its queue.
    pub queue: Option<String>,
}

/// Result of `registerWebhook`.
#[derive(SimpleObject)]
pub struct RegisterWebhookPayload {
    /// The subscription.
    pub subscription: WebhookSubscription,
    /// The signing secret, shown only here: verify `Till-Signature` with it.
    pub secret: String,
}

/// Result of `startProjectionRebuild`.
#[derive(SimpleObject)]
pub struct ProjectionRebuildPayload {
    /// The projection with its rebuild running (follow it in `projections`).
    pub projection: ProjectionStatus,
}

/// A signed-in session.
pub struct AuthPayload {
    pub(super) access_token: String,
    pub(super) expires_in: i64,
    pub(super) session: Session,
    pub(super) at: Option<LogPoint>,
}

/// A signed-in session: send `accessToken` as `Authorization: Bearer <token>`; before
/// it expires, exchange `refreshToken` with the `refreshToken` mutation.
#[Object]
impl AuthPayload {
    /// Bearer token for the `Authorization` header.
    async fn access_token(&self) -> &str {
        &self.access_token
    }
    /// Always `Bearer`.
    async fn token_type(&self) -> &str {
        "Bearer"
    }
    /// Seconds until the access token expires.
    async fn expires_in(&self) -> i64 {
        self.expires_in
    }
    /// One-time token for the `refreshToken` mutation; each use returns a new one and
    /// using an old one again ends the session everywhere.
    async fn refresh_token(&self) -> &str {
        &self.session.refresh.token
    }
    /// When the refresh token stops working.
    async fn refresh_token_expires_at(&self) -> DateTime<Utc> {
        self.session.refresh.expires_at
    }
    /// The signed-in account (global id).
    async fn customer_id(&self) -> ID {
        ids::id(Kind::Customer, self.session.customer_id.0)
    }
    /// Its role.
    async fn role(&self) -> Role {
        self.session.role.into()
    }
    /// For `register`: send as `X-Consistency-Token` to read the new account.
    async fn consistency_token(&self) -> Option<String> {
        self.at.map(|a| a.to_token())
    }
    /// The account (after `register`, once the read model has it).
    async fn customer(&self, ctx: &Context<'_>) -> Result<Option<Customer>> {
        let reads = match self.at {
            Some(at) => caught_up(ctx, at).await?,
            None => reads(ctx)?.clone(),
        };
        Ok(reads
            .customer_summary(self.session.customer_id.0)
            .await
            .map_err(error::read)?
            .map(Customer))
    }
}

/// Result of `logout`.
pub struct LogoutPayload {
    pub(super) revoked: bool,
}

/// Result of `logout`.
#[Object]
impl LogoutPayload {
    /// True when a live session was ended (false for an unknown or already ended one).
    async fn revoked(&self) -> bool {
        self.revoked
    }
}

/// Result of `grantRole`.
pub struct CustomerPayload {
    pub(super) at: LogPoint,
    pub(super) id: CustomerId,
}

/// Result of an account change.
#[Object]
impl CustomerPayload {
    /// Send as `X-Consistency-Token` to read your own write.
    async fn consistency_token(&self) -> String {
        self.at.to_token()
    }
    /// Global id of the account.
    async fn customer_id(&self) -> ID {
        ids::id(Kind::Customer, self.id.0)
    }
    /// The account after the change.
    async fn customer(&self, ctx: &Context<'_>) -> Result<Option<Customer>> {
        Ok(caught_up(ctx, self.at)
            .await?
            .customer_summary(self.id.0)
            .await
            .map_err(error::read)?
            .map(Customer))
    }
}
