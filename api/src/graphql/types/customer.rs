//! Customer accounts.

use async_graphql::{Context, Enum, Object, Result, ID};
use chrono::{DateTime, Utc};
use till_read_models::views::CustomerSummary;

use super::money::Money;
use super::order::Order;
use crate::graphql::ids::{self, Kind};
use crate::graphql::{error, reads, state};

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum Role {
    /// Shopper.
    Customer,
    /// Back office.
    Staff,
    /// Back office and account administration.
    Admin,
}

impl From<till_domain::types::Role> for Role {
    fn from(r: till_domain::types::Role) -> Self {
        match r {
            till_domain::types::Role::Customer => Self::Customer,
            till_domain::types::Role::Staff => Self::Staff,
            till_domain::types::Role::Admin => Self::Admin,
        }
    }
}

impl From<Role> for till_domain::types::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Customer => Self::Customer,
            Role::Staff => Self::Staff,
            Role::Admin => Self::Admin,
        }
    }
}

/// A customer account with its order summary.
pub struct Customer(pub CustomerSummary);

/// An account (customer, staff or admin).
#[Object]
impl Customer {
    /// Global id.
    pub async fn id(&self) -> ID {
        ids::id(Kind::Customer, self.0.customer_id)
    }
    /// Email address.
    async fn email(&self) -> &str {
        &self.0.email
    }
    /// Display name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Role.
    async fn role(&self) -> Role {
        till_domain::types::Role::from_db(&self.0.role)
            .map(Role::from)
            .unwrap_or(Role::Customer)
    }
    /// Orders placed.
    async fn orders_count(&self) -> i64 {
        self.0.orders_count
    }
    /// Sum of order totals, net of cancelled, expired and failed orders.
    async fn lifetime_spend(&self, ctx: &Context<'_>) -> Result<Money> {
        Ok(Money::new(
            self.0.lifetime_spend_minor,
            state(ctx)?.currency.as_str(),
        ))
    }
    /// When the newest order was placed.
    async fn last_order_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_order_at
    }
    /// The newest order.
    async fn last_order(&self, ctx: &Context<'_>) -> Result<Option<Order>> {
        let Some(id) = self.0.last_order_id else {
            return Ok(None);
        };
        Ok(reads(ctx)?
            .order(id)
            .await
            .map_err(error::read)?
            .map(Order::from))
    }
}
