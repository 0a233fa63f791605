//! Payments: a request enqueues a capture job in the same transaction; the capture (or
//! the provider's webhook, whichever comes first) settles the order exactly once, in
//! one transaction with the payment row: PAID moves reserved stock out, a decline sets
//! PAYMENT_FAILED and releases it. While a payment is pending nothing else moves the
//! order (cancel and expiry are refused), and the database refuses a commit where the
//! payment and the order disagree (`payment_matches_order`). A capture given up for
//! good fails the payment and releases the stock; money captured for an order that can
//! no longer be paid is refunded by a job, never dropped.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::json;

use super::order_transitions::{apply_transition, lock_order, OrderHead, StockMove};
use super::{CommandContext, Commands, Outcome};
use crate::error::DomainError;
use crate::event_log::LogPoint;
use crate::events::DomainEvent;
use crate::jobs::{self, NewJob};
use crate::schema::{orders, payments};
use crate::types::{OrderId, OrderStatus};

/// The queue of capture jobs.
pub const PAYMENTS_QUEUE: &str = "payments";

/// The queue of refund jobs (money captured for an order that could not be paid).
pub const REFUNDS_QUEUE: &str = "refunds";

/// Attempts of a refund job before it becomes a dead letter for staff.
pub const REFUND_MAX_ATTEMPTS: i32 = 20;

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

/// Where a payment stands (the `payments.status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Requested; its capture job runs (the order waits in PENDING_PAYMENT).
    Pending,
    /// Captured: the order is PAID (or SHIPPED).
    Captured,
    /// Declined by the provider: the order is PAYMENT_FAILED.
    Declined,
    /// Given up (a permanent provider error or no attempts left): PAYMENT_FAILED.
    Failed,
    /// Captured for an order that could no longer be paid; its refund job runs.
    Refunding,
    /// That capture was refunded.
    Refunded,
}

impl PaymentStatus {
    /// The column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Captured => "captured",
            Self::Declined => "declined",
            Self::Failed => "failed",
            Self::Refunding => "refunding",
            Self::Refunded => "refunded",
        }
    }

    /// Parses the column's value.
    pub fn from_db(s: &str) -> Result<Self, DomainError> {
        Ok(match s {
            "pending" => Self::Pending,
            "captured" => Self::Captured,
            "declined" => Self::Declined,
            "failed" => Self::Failed,
            "refunding" => Self::Refunding,
            "refunded" => Self::Refunded,
            other => {
                return Err(DomainError::Internal(format!(
                    "unknown payment status {other}"
                )))
            }
        })
    }
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
    /// The payment's status now (only a pending one is charged).
    pub status: PaymentStatus,
}

/// What a refund job needs to know.
#[derive(Debug, Clone)]
pub struct Refund {
    /// The order.
    pub order_id: OrderId,
    /// The provider's charge to refund.
    pub charge_id: String,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
}

struct LockedPayment {
    status: PaymentStatus,
}

/// Locks an order's payment row (after its order row: the one lock order every
/// payment path takes). NOT_FOUND when the order has no payment.
async fn lock_payment(
    conn: &mut AsyncPgConnection,
    id: OrderId,
) -> Result<LockedPayment, DomainError> {
    let status: Option<String> = payments::table
        .find(id.0)
        .select(payments::status)
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let status = status.ok_or_else(|| DomainError::not_found("payment", id))?;
    Ok(LockedPayment {
        status: PaymentStatus::from_db(&status)?,
    })
}

/// Enqueues a job of `queue` about order `id` in the caller's transaction.
async fn enqueue_for(
    conn: &mut AsyncPgConnection,
    queue: &'static str,
    id: OrderId,
    max_attempts: i32,
) -> Result<(), DomainError> {
    jobs::enqueue(
        conn,
        &[NewJob {
            queue,
            payload: json!({ "orderId": id.0 }),
            max_attempts,
        }],
    )
    .await
}

/// Where a pending payment and its order end up together.
struct Settle<'a> {
    order: OrderStatus,
    stock: StockMove,
    payment: PaymentStatus,
    charge_id: Option<&'a str>,
    failure: Option<&'a str>,
}

impl<'a> Settle<'a> {
    /// Captured: PAID, reserved stock leaves the books.
    fn captured(charge_id: &'a str) -> Self {
        Self {
            order: OrderStatus::Paid,
            stock: StockMove::Commit,
            payment: PaymentStatus::Captured,
            charge_id: Some(charge_id),
            failure: None,
        }
    }

    /// Declined or given up: PAYMENT_FAILED, reserved stock released.
    fn failed(payment: PaymentStatus, reason: &'a str) -> Self {
        Self {
            order: OrderStatus::PaymentFailed,
            stock: StockMove::Release,
            payment,
            charge_id: None,
            failure: Some(reason),
        }
    }
}

/// Settles a pending payment and moves its locked order (`head`) in the caller's
/// transaction: the order's transition with its stock and events, then the payment row.
async fn settle(
    conn: &mut AsyncPgConnection,
    id: OrderId,
    head: &OrderHead,
    to: Settle<'_>,
) -> Result<Vec<DomainEvent>, DomainError> {
    let events = apply_transition(conn, id, head, to.order, to.stock).await?;
    diesel::update(payments::table.find(id.0))
        .set((
            payments::status.eq(to.payment.as_str()),
            payments::charge_id.eq(to.charge_id),
            payments::failure.eq(to.failure),
            payments::settled_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(events)
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
        let owner = if ctx.is_staff() { None } else { ctx.user_id() };
        self.execute(ctx, async |conn| {
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
                    payments::status.eq(PaymentStatus::Pending.as_str()),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if inserted == 0 {
                return Err(DomainError::Conflict(format!(
                    "a payment of order {id} is already in progress"
                )));
            }
            enqueue_for(conn, PAYMENTS_QUEUE, id, max_attempts).await?;
            Ok((
                id,
                vec![DomainEvent::PaymentRequested {
                    order_id: id.0,
                    customer_id: head.customer_id,
                    amount_minor: head.total_minor,
                }],
            ))
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
                    payments::status,
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
                status: PaymentStatus::from_db(&status)?,
            })
        })
        .await
    }

    /// Settles an order's payment with what the provider said, in one transaction
    /// with the order's transition (the database refuses a commit where the two
    /// disagree). Idempotent: a settlement the payment already has is a no-op
    /// (`None`). Money captured for an order that can no longer be paid (its capture
    /// was given up, or a decline arrived first) is recorded and refunded through
    /// the provider by a job on [`REFUNDS_QUEUE`], never dropped.
    #[tracing::instrument(name = "command", skip_all, fields(command = "settle_payment"))]
    pub async fn settle_payment(
        &self,
        id: OrderId,
        settlement: Settlement,
    ) -> Result<Option<LogPoint>, DomainError> {
        let max_attempts = REFUND_MAX_ATTEMPTS;
        let ctx = CommandContext::system("payments");
        self.execute_if_any(&ctx, async |conn| {
            let head = lock_order(conn, id).await?;
            let payment = lock_payment(conn, id).await?;
            let events = match (payment.status, &settlement) {
                (PaymentStatus::Pending, Settlement::Captured { charge_id }) => {
                    settle(conn, id, &head, Settle::captured(charge_id)).await?
                }
                (PaymentStatus::Pending, Settlement::Declined { reason }) => {
                    let to = Settle::failed(PaymentStatus::Declined, reason);
                    settle(conn, id, &head, to).await?
                }
                (
                    PaymentStatus::Declined | PaymentStatus::Failed,
                    Settlement::Captured { charge_id },
                ) => {
                    tracing::warn!(
                        order = %id,
                        was = payment.status.as_str(),
                        "money captured for an order that can no longer be paid; refunding"
                    );
                    diesel::update(payments::table.find(id.0))
                        .set((
                            payments::status.eq(PaymentStatus::Refunding.as_str()),
                            payments::charge_id.eq(charge_id),
                        ))
                        .execute(conn)
                        .await?;
                    enqueue_for(conn, REFUNDS_QUEUE, id, max_attempts).await?;
                    vec![DomainEvent::PaymentRefundRequested {
                        order_id: id.0,
                        customer_id: head.customer_id,
                        charge_id: charge_id.clone(),
                        amount_minor: head.total_minor,
                    }]
                }
                (PaymentStatus::Captured, Settlement::Declined { reason }) => {
                    tracing::warn!(order = %id, %reason, "a decline after the capture; ignored");
                    Vec::new()
                }
                // Already settled this way (or being refunded): nothing to do.
                _ => Vec::new(),
            };
            Ok(((), events))
        })
        .await
    }

    /// Gives up a capture for good (the provider refused it permanently, or its
    /// attempts ran out): in one transaction the payment becomes `failed` and the
    /// order PAYMENT_FAILED with its stock released. A no-op (`None`) when the payment
    /// is no longer pending. Should the provider confirm a charge later (its webhook),
    /// the settlement refunds it.
    #[tracing::instrument(name = "command", skip_all, fields(command = "give_up_payment"))]
    pub async fn give_up_payment(
        &self,
        id: OrderId,
        reason: &str,
    ) -> Result<Option<LogPoint>, DomainError> {
        let reason: String = reason.chars().take(500).collect();
        let ctx = CommandContext::system("payments");
        self.execute_if_any(&ctx, async |conn| {
            let head = lock_order(conn, id).await?;
            let payment = lock_payment(conn, id).await?;
            if payment.status != PaymentStatus::Pending {
                return Ok(((), Vec::new()));
            }
            let to = Settle::failed(PaymentStatus::Failed, &reason);
            Ok(((), settle(conn, id, &head, to).await?))
        })
        .await
    }

    /// The refund a refund job is about to make (`None` when there is nothing left
    /// to refund: refunded already).
    pub async fn payment_to_refund(&self, id: OrderId) -> Result<Option<Refund>, DomainError> {
        self.run(|mut conn| async move {
            let row: Option<(String, Option<String>, i64, String)> = orders::table
                .inner_join(payments::table)
                .filter(orders::id.eq(id.0))
                .select((
                    payments::status,
                    payments::charge_id,
                    orders::total_minor,
                    orders::currency,
                ))
                .first(&mut conn)
                .await
                .optional()?;
            let (status, charge_id, amount_minor, currency) =
                row.ok_or_else(|| DomainError::not_found("payment", id))?;
            match (PaymentStatus::from_db(&status)?, charge_id) {
                (PaymentStatus::Refunding, Some(charge_id)) => Ok(Some(Refund {
                    order_id: id,
                    charge_id,
                    amount_minor,
                    currency,
                })),
                (PaymentStatus::Refunded, _) => Ok(None),
                (other, _) => Err(DomainError::InvalidState(format!(
                    "the payment of order {id} is {} and has nothing to refund",
                    other.as_str()
                ))),
            }
        })
        .await
    }

    /// Records the provider's refund: `refunding` -> `refunded`, with its event. A
    /// no-op when it is recorded already.
    #[tracing::instrument(name = "command", skip_all, fields(command = "record_refund"))]
    pub async fn record_refund(
        &self,
        id: OrderId,
        refund_id: &str,
    ) -> Result<Option<LogPoint>, DomainError> {
        let ctx = CommandContext::system("payments");
        self.execute_if_any(&ctx, async |conn| {
            let head = lock_order(conn, id).await?;
            let payment = lock_payment(conn, id).await?;
            if payment.status != PaymentStatus::Refunding {
                return Ok(((), Vec::new()));
            }
            diesel::update(payments::table.find(id.0))
                .set((
                    payments::status.eq(PaymentStatus::Refunded.as_str()),
                    payments::refund_id.eq(refund_id),
                    payments::refunded_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?;
            Ok((
                (),
                vec![DomainEvent::PaymentRefunded {
                    order_id: id.0,
                    customer_id: head.customer_id,
                    refund_id: refund_id.to_owned(),
                    amount_minor: head.total_minor,
                }],
            ))
        })
        .await
    }

    /// Puts a dead letter back on its queue (back office). A capture whose payment is
    /// no longer pending (it was given up: the order is PAYMENT_FAILED and its stock
    /// released) is refused with the reason, since charging it now would take money
    /// for an order that no longer holds stock.
    pub async fn retry_dead_letter(&self, job: i64) -> Result<String, DomainError> {
        let pool = self.pool().clone();
        let payload = jobs::dead_letter_payload(&pool, job).await?;
        if payload.0 == PAYMENTS_QUEUE {
            if let Some(order) = payload.1["orderId"]
                .as_str()
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
            {
                let now = self.payment_to_capture(OrderId(order)).await?;
                if now.status != PaymentStatus::Pending {
                    return Err(DomainError::InvalidState(format!(
                        "the capture of order {order} was given up: its payment is {} and \
                         the order no longer holds stock; discard this dead letter \
                         (the customer can order again)",
                        now.status.as_str()
                    )));
                }
            }
        }
        jobs::retry_dead(&pool, job).await
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
                    StockMove::Release,
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
