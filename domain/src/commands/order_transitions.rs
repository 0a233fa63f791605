//! An order's moves after it is placed: cancel, record payment, ship (and, from
//! `payments`, settle), along the state machine of [`OrderStatus::can_become`].

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{CommandContext, Commands, Outcome};
use crate::db::prepared::Reuse;
use crate::error::DomainError;
use crate::events::{DomainEvent, OrderLineFact, StockLevel};
use crate::schema::{inventory, order_lines, order_status_history, orders, products};
use crate::types::{OrderId, OrderStatus};

pub(super) struct OrderHead {
    pub(super) customer_id: Uuid,
    pub(super) status: OrderStatus,
    pub(super) total_minor: i64,
    version: i32,
    placed_at: DateTime<Utc>,
}

/// How the stock of an order's lines moves when it leaves PENDING_PAYMENT.
#[derive(Clone, Copy)]
pub(super) enum StockMove {
    /// Back to available (cancel, expiry, failed payment).
    Release,
    /// Out of the books (payment captured).
    Commit,
    /// No stock change (shipping).
    None,
}

impl Commands {
    /// Cancels an unpaid order and releases its stock. Customers may cancel only their
    /// own orders (others' orders look not found).
    #[tracing::instrument(name = "command", skip_all, fields(command = "cancel_order"))]
    pub async fn cancel_order(
        &self,
        ctx: &CommandContext,
        id: OrderId,
    ) -> Result<Outcome<OrderId>, DomainError> {
        self.transition(ctx, id, OrderStatus::Cancelled, StockMove::Release, false)
            .await
    }

    /// Records a captured payment: PENDING_PAYMENT -> PAID, reserved units leave the books.
    #[tracing::instrument(name = "command", skip_all, fields(command = "mark_paid"))]
    pub async fn mark_paid(
        &self,
        ctx: &CommandContext,
        id: OrderId,
    ) -> Result<Outcome<OrderId>, DomainError> {
        ctx.require_staff()?;
        self.transition(ctx, id, OrderStatus::Paid, StockMove::Commit, true)
            .await
    }

    /// Ships a paid order (staff).
    #[tracing::instrument(name = "command", skip_all, fields(command = "ship_order"))]
    pub async fn ship_order(
        &self,
        ctx: &CommandContext,
        id: OrderId,
    ) -> Result<Outcome<OrderId>, DomainError> {
        ctx.require_staff()?;
        self.transition(ctx, id, OrderStatus::Shipped, StockMove::None, true)
            .await
    }

    /// Moves an order to `to` on a command of a user or of the system (cancel,
    /// expiry, manual payment, shipping). Refused while a payment of the order is in
    /// progress: only its settlement ([`Commands::settle_payment`]) may move the order
    /// then, so a capture never charges an order that was cancelled meanwhile.
    pub(super) async fn transition(
        &self,
        ctx: &CommandContext,
        id: OrderId,
        to: OrderStatus,
        stock: StockMove,
        staff_only: bool,
    ) -> Result<Outcome<OrderId>, DomainError> {
        if staff_only {
            ctx.require_staff()?;
        }
        let owner_filter = if ctx.is_staff() { None } else { ctx.user_id() };
        self.execute(ctx, async |conn| {
            let head = lock_order(conn, id).await?;
            if owner_filter.is_some_and(|me| me.0 != head.customer_id) {
                return Err(DomainError::not_found("order", id));
            }
            if head.status == OrderStatus::PendingPayment && payment_pending(conn, id).await? {
                return Err(DomainError::InvalidState(format!(
                    "order {id} has a payment in progress and cannot become {to} \
                     now; it becomes PAID or PAYMENT_FAILED within moments"
                )));
            }
            Ok((id, apply_transition(conn, id, &head, to, stock).await?))
        })
        .await
    }
}

/// Moves a locked order (`head`, from [`lock_order`]) to `to` inside the caller's
/// transaction: checks the state machine, moves the stock of its lines, writes the
/// status and its history; returns the events to append.
pub(super) async fn apply_transition(
    conn: &mut AsyncPgConnection,
    id: OrderId,
    head: &OrderHead,
    to: OrderStatus,
    stock: StockMove,
) -> Result<Vec<DomainEvent>, DomainError> {
    if !head.status.can_become(to) {
        return Err(DomainError::InvalidState(format!(
            "order {id} is {} and cannot become {to}",
            head.status
        )));
    }
    let lines = load_lines(conn, id).await?;
    let mut batch = Vec::with_capacity(lines.len() + 1);
    let mut sorted = lines.clone();
    sorted.sort_by_key(|l| l.product_id);
    for line in &sorted {
        let q = line.quantity;
        // Units leaving the books with the reservation: all of them when paid.
        let shipped_out = match stock {
            StockMove::None => None,
            StockMove::Release => Some(0),
            StockMove::Commit => Some(q),
        };
        let changed: Option<(i32, i32, i64)> = match shipped_out {
            None => None,
            Some(out) => Some(
                diesel::update(inventory::table.find(line.product_id))
                    .set((
                        inventory::on_hand.eq(inventory::on_hand - out),
                        inventory::reserved.eq(inventory::reserved - q),
                        inventory::version.eq(inventory::version + 1),
                    ))
                    .returning((inventory::on_hand, inventory::reserved, inventory::version))
                    .prepared()
                    .get_result(conn)
                    .await?,
            ),
        };
        if let Some((on_hand, reserved, version)) = changed {
            let level = StockLevel {
                on_hand,
                reserved,
                version,
            };
            batch.push(match stock {
                StockMove::Commit => DomainEvent::StockCommitted {
                    product_id: line.product_id,
                    order_id: id.0,
                    quantity: q,
                    stock: level,
                },
                _ => DomainEvent::StockReleased {
                    product_id: line.product_id,
                    order_id: id.0,
                    quantity: q,
                    stock: level,
                },
            });
        }
    }
    let now = Utc::now();
    let version = head.version + 1;
    diesel::update(orders::table.find(id.0))
        .set((
            orders::status.eq(to.as_str()),
            orders::version.eq(version),
            orders::updated_at.eq(now),
        ))
        .prepared()
        .execute(conn)
        .await?;
    diesel::insert_into(order_status_history::table)
        .values((
            order_status_history::order_id.eq(id.0),
            order_status_history::seq.eq(version),
            order_status_history::status.eq(to.as_str()),
            order_status_history::changed_at.eq(now),
        ))
        .execute(conn)
        .await?;
    batch.push(DomainEvent::OrderStatusChanged {
        order_id: id.0,
        customer_id: head.customer_id,
        from: head.status.as_str().to_owned(),
        to: to.as_str().to_owned(),
        lines,
        total_minor: head.total_minor,
        placed_at: head.placed_at,
        at: now,
        version,
    });
    Ok(batch)
}

async fn payment_pending(conn: &mut AsyncPgConnection, id: OrderId) -> Result<bool, DomainError> {
    use crate::schema::payments;
    Ok(diesel::select(diesel::dsl::exists(
        payments::table
            .filter(payments::order_id.eq(id.0))
            .filter(payments::status.eq("pending")),
    ))
    .get_result(conn)
    .await?)
}

pub(super) async fn lock_order(
    conn: &mut AsyncPgConnection,
    id: OrderId,
) -> Result<OrderHead, DomainError> {
    let row: Option<(Uuid, String, i64, i32, DateTime<Utc>)> = orders::table
        .find(id.0)
        .select((
            orders::customer_id,
            orders::status,
            orders::total_minor,
            orders::version,
            orders::placed_at,
        ))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let (customer_id, status, total_minor, version, placed_at) =
        row.ok_or_else(|| DomainError::not_found("order", id))?;
    Ok(OrderHead {
        customer_id,
        status: OrderStatus::from_db(&status)?,
        total_minor,
        version,
        placed_at,
    })
}

async fn load_lines(
    conn: &mut AsyncPgConnection,
    id: OrderId,
) -> Result<Vec<OrderLineFact>, DomainError> {
    let rows: Vec<(Uuid, String, String, i32, i64)> = order_lines::table
        .inner_join(products::table)
        .filter(order_lines::order_id.eq(id.0))
        .order(order_lines::line_no.asc())
        .select((
            order_lines::product_id,
            products::sku,
            products::name,
            order_lines::quantity,
            order_lines::unit_price_minor,
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(product_id, sku, name, quantity, unit_price_minor)| OrderLineFact {
                product_id,
                sku,
                name,
                quantity,
                unit_price_minor,
            },
        )
        .collect())
}
