//! Payments: a request enqueues a capture job in the same transaction; the capture (or
//! the provider's webhook, whichever comes first) settles the order exactly once
//! through the order state machine: PAID moves reserved stock out, a decline sets
//! PAYMENT_FAILED and releases it. Settling an already settled order is a no-op.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;

use super::orders::lock_order;
use super::{begin, finish, CommandContext, Commands, Outcome};
use crate::db::plans;
use crate::error::DomainError;
use crate::event_log::{self, LogPoint};
use crate::events::DomainEvent;
use crate::jobs::{self, NewJob};
use crate::schema::{orders, payments};
use crate::types::{OrderId, OrderStatus};

/// The queue of capture jobs.
pub const PAYMENTS_QUEUE: &str = "payments";

/// What the provider said.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// Money captured.
    Captured {
        /// The provider's charge id.
        charge_id: String,
    },
    /// The payment method was declined.
    Declined {
        /// The provider's reason.
        reason: String,
    },
}

/// What a capture job needs to know about an order.
#[derive(Debug, Clone)]
pub struct PaymentToCapture {
    /// The order.
    pub order_id: OrderId,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// The payment method token.
    pub method_token: String,
    /// The order's status now.
    pub status: OrderStatus,
}

impl Commands {
    /// Requests payment of an unpaid order with a payment method token (its owner or
    /// staff). CONFLICT when a payment is already in progress or the order is not
    /// awaiting payment.
    #[tracing::instrument(name = "command", skip_all, fields(command = "request_payment"))]
    pub async fn request_payment(
        &self,
        ctx: &CommandContext,
        id: OrderId,
        method_token: &str,
        max_attempts: i32,
    ) -> Result<Outcome<OrderId>, DomainError> {
        let token = method_token.trim();
        if token.is_empty() || token.len() > 255 {
            return Err(DomainError::Validation {
                field: "paymentMethodToken",
                message: "must be 1 to 255 characters".into(),
            });
        }
        let meta = ctx.meta();
        let owner = if ctx.is_staff() { None } else { ctx.user_id() };
        self.run(|mut conn| {
            let meta = meta.clone();
            let token = token.to_owned();
            async move {
                plans::transaction(&mut conn, async |conn| {
                    begin(conn, ctx).await?;
                    let head = lock_order(conn, id).await?;
                    if owner.is_some_and(|me| me.0 != head.customer_id) {
                        return Err(DomainError::not_found("order", id));
                    }
                    if head.status != OrderStatus::PendingPayment {
                        return Err(DomainError::InvalidState(format!(
                            "order {id} is {} and cannot be paid",
                            head.status
                        )));
                    }
                    let inserted = diesel::insert_into(payments::table)
                        .values((
                            payments::order_id.eq(id.0),
                            payments::method_token.eq(&token),
                            payments::status.eq("pending"),
                        ))
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?;
                    if inserted == 0 {
                        return Err(DomainError::Conflict(format!(
                            "a payment of order {id} is already in progress"
                        )));
                    }
                    jobs::enqueue(
                        conn,
                        &[NewJob {
                            queue: PAYMENTS_QUEUE,
                            payload: json!({ "orderId": id.0 }),
                            max_attempts,
                        }],
                    )
                    .await?;
                    let at = event_log::append(
                        conn,
                        &meta,
                        &[DomainEvent::PaymentRequested {
                            order_id: id.0,
                            customer_id: head.customer_id,
                            amount_minor: head.total_minor,
                        }],
                    )
                    .await?;
                    finish(conn, ctx, Outcome { value: id, at }).await
                })
                .await
            }
        })
        .await
    }

    /// The payment a capture job is about to charge.
    pub async fn payment_to_capture(&self, id: OrderId) -> Result<PaymentToCapture, DomainError> {
        self.run(|mut conn| async move {
            let row: Option<(String, i64, String, String)> = orders::table
                .inner_join(payments::table)
                .filter(orders::id.eq(id.0))
                .select((
                    orders::status,
                    orders::total_minor,
                    orders::currency,
                    payments::method_token,
                ))
                .first(&mut conn)
                .await
                .optional()?;
            let (status, amount_minor, currency, method_token) =
                row.ok_or_else(|| DomainError::not_found("payment", id))?;
            Ok(PaymentToCapture {
                order_id: id,
                amount_minor,
                currency,
                method_token,
                status: OrderStatus::from_db(&status)?,
            })
        })
        .await
    }

    /// Settles an order's payment. Idempotent: settling an order that already left
    /// PENDING_PAYMENT the same way returns `None`.
    #[tracing::instrument(name = "command", skip_all, fields(command = "settle_payment"))]
    pub async fn settle_payment(
        &self,
        id: OrderId,
        settlement: Settlement,
    ) -> Result<Option<LogPoint>, DomainError> {
        let ctx = CommandContext::system("payments");
        let (to, stock, payment_status, charge, failure) = match &settlement {
            Settlement::Captured { charge_id } => (
                OrderStatus::Paid,
                super::orders::StockMove::Commit,
                "captured",
                Some(charge_id.clone()),
                None,
            ),
            Settlement::Declined { reason } => (
                OrderStatus::PaymentFailed,
                super::orders::StockMove::Release,
                "declined",
                None,
                Some(reason.clone()),
            ),
        };
        let at = match self.transition(&ctx, id, to, stock, true).await {
            Ok(out) => Some(out.at),
            Err(DomainError::InvalidState(m)) => {
                let now = self.order_status(id).await?;
                if now == to || (to == OrderStatus::Paid && now == OrderStatus::Shipped) {
                    None
                } else {
                    return Err(DomainError::InvalidState(m));
                }
            }
            Err(e) => return Err(e),
        };
        self.run(|mut conn| {
            let charge = charge.clone();
            let failure = failure.clone();
            async move {
                diesel::update(payments::table.find(id.0))
                    .set((
                        payments::status.eq(payment_status),
                        payments::charge_id.eq(charge),
                        payments::failure.eq(failure),
                        payments::settled_at.eq(diesel::dsl::now),
                    ))
                    .execute(&mut conn)
                    .await?;
                Ok(())
            }
        })
        .await?;
        Ok(at)
    }

    async fn order_status(&self, id: OrderId) -> Result<OrderStatus, DomainError> {
        self.run(|mut conn| async move {
            let s: Option<String> = orders::table
                .find(id.0)
                .select(orders::status)
                .first(&mut conn)
                .await
                .optional()?;
            OrderStatus::from_db(&s.ok_or_else(|| DomainError::not_found("order", id))?)
        })
        .await
    }

    /// Expires up to `limit` unpaid orders placed more than `after` ago (without a
    /// payment in progress), releasing their stock. Safe on several replicas at once:
    /// each order changes state under its row lock, so only one expiry wins.
    #[tracing::instrument(name = "command", skip_all, fields(command = "expire_unpaid_orders"))]
    pub async fn expire_unpaid_orders(
        &self,
        after: std::time::Duration,
        limit: i64,
    ) -> Result<usize, DomainError> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(after).unwrap_or(chrono::Duration::minutes(30));
        let due: Vec<uuid::Uuid> = self
            .run(|mut conn| async move {
                Ok(orders::table
                    .filter(orders::status.eq(OrderStatus::PendingPayment.as_str()))
                    .filter(orders::placed_at.lt(cutoff))
                    .filter(diesel::dsl::not(diesel::dsl::exists(
                        payments::table
                            .filter(payments::order_id.eq(orders::id))
                            .filter(payments::status.eq("pending")),
                    )))
                    .order(orders::placed_at.asc())
                    .limit(limit)
                    .select(orders::id)
                    .load(&mut conn)
                    .await?)
            })
            .await?;
        let ctx = CommandContext::system("expiry");
        let mut expired = 0;
        for id in due {
            match self
                .transition(
                    &ctx,
                    OrderId(id),
                    OrderStatus::Expired,
                    super::orders::StockMove::Release,
                    true,
                )
                .await
            {
                Ok(_) => expired += 1,
                // Paid, cancelled or expired by someone else meanwhile.
                Err(DomainError::InvalidState(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }
}

impl Commands {
    /// True when this provider event was handled before.
    pub async fn webhook_seen(&self, provider: &str, event_id: &str) -> Result<bool, DomainError> {
        use crate::schema::inbound_webhook_events as w;
        self.run(|mut conn| async move {
            Ok(diesel::select(diesel::dsl::exists(
                w::table
                    .filter(w::provider.eq(provider))
                    .filter(w::event_id.eq(event_id)),
            ))
            .get_result(&mut conn)
            .await?)
        })
        .await
    }

    /// Records a handled provider event (after its effect, which is idempotent, so a
    /// crash in between only means the provider's retry is applied as a no-op).
    pub async fn record_webhook(&self, provider: &str, event_id: &str) -> Result<(), DomainError> {
        use crate::schema::inbound_webhook_events as w;
        self.run(|mut conn| async move {
            diesel::insert_into(w::table)
                .values((w::provider.eq(provider), w::event_id.eq(event_id)))
                .on_conflict_do_nothing()
                .execute(&mut conn)
                .await?;
            Ok(())
        })
        .await
    }
}
