//! Order commands: place (reserving stock for every line, all or nothing), cancel,
//! record payment, ship.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{begin, finish, CommandContext, Commands, Outcome};
use crate::error::DomainError;
use crate::event_log;
use crate::events::{DomainEvent, OrderLineFact, StockLevel};
use crate::schema::{customers, inventory, order_lines, order_status_history, orders, products};
use crate::types::{
    Currency, CustomerId, Money, OrderId, OrderStatus, ProductId, ProductStatus, Quantity,
};

/// Most lines one order may have.
pub const MAX_ORDER_LINES: usize = 50;

/// One requested line of a new order.
#[derive(Debug, Clone, Copy)]
pub struct OrderLineInput {
    /// What to buy.
    pub product: ProductId,
    /// How many.
    pub quantity: Quantity,
}

/// The result of placing an order.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PlacedOrder {
    /// The new order.
    pub id: OrderId,
    /// Its total.
    pub total: Money,
    /// Its lines as recorded.
    pub lines: Vec<OrderLineFact>,
}

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
    /// Places an order for `customer`: reserves stock for every line atomically, or
    /// fails with OUT_OF_STOCK naming the first product that is short. A customer may
    /// only order for themselves.
    #[tracing::instrument(name = "command", skip_all, fields(command = "place_order"))]
    pub async fn place_order(
        &self,
        ctx: &CommandContext,
        customer: CustomerId,
        lines: Vec<OrderLineInput>,
        currency: &Currency,
    ) -> Result<Outcome<PlacedOrder>, DomainError> {
        if !ctx.is_staff() && ctx.user_id() != Some(customer) {
            return Err(DomainError::Forbidden(
                "customers can only place orders for themselves".into(),
            ));
        }
        if lines.is_empty() || lines.len() > MAX_ORDER_LINES {
            return Err(DomainError::Validation {
                field: "lines",
                message: format!("an order has 1 to {MAX_ORDER_LINES} lines"),
            });
        }
        // Merge repeated products, and lock inventory rows in one global order (by id)
        // so concurrent orders cannot deadlock.
        let mut merged: BTreeMap<ProductId, i64> = BTreeMap::new();
        for line in &lines {
            *merged.entry(line.product).or_default() += i64::from(line.quantity.get());
        }
        let merged: Vec<(ProductId, Quantity)> = merged
            .into_iter()
            .map(|(p, q)| Quantity::parse(q).map(|q| (p, q)))
            .collect::<Result<_, _>>()?;
        let meta = ctx.meta();
        let currency = currency.as_str().to_owned();
        self.run(|mut conn| {
            let merged = merged.clone();
            let meta = meta.clone();
            let currency = currency.clone();
            async move {
                conn.transaction(async |conn| {
                    begin(conn, ctx).await?;
                    let out = place(conn, &meta, customer, &merged, &currency).await?;
                    finish(conn, ctx, out).await
                })
                .await
            }
        })
        .await
    }

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
        let meta = ctx.meta();
        let owner_filter = if ctx.is_staff() { None } else { ctx.user_id() };
        self.run(|mut conn| {
            let meta = meta.clone();
            async move {
                conn.transaction(async |conn| {
                    begin(conn, ctx).await?;
                    let head = lock_order(conn, id).await?;
                    if owner_filter.is_some_and(|me| me.0 != head.customer_id) {
                        return Err(DomainError::not_found("order", id));
                    }
                    if to == OrderStatus::Expired && payment_pending(conn, id).await? {
                        return Err(DomainError::InvalidState(format!(
                            "order {id} has a payment in progress"
                        )));
                    }
                    if !allowed(head.status, to) {
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
                        let changed: Option<(i32, i32, i64)> = match stock {
                            StockMove::None => None,
                            StockMove::Release => Some(
                                diesel::update(inventory::table.find(line.product_id))
                                    .set((
                                        inventory::reserved.eq(inventory::reserved - q),
                                        inventory::version.eq(inventory::version + 1),
                                    ))
                                    .returning((
                                        inventory::on_hand,
                                        inventory::reserved,
                                        inventory::version,
                                    ))
                                    .get_result(conn)
                                    .await?,
                            ),
                            StockMove::Commit => Some(
                                diesel::update(inventory::table.find(line.product_id))
                                    .set((
                                        inventory::on_hand.eq(inventory::on_hand - q),
                                        inventory::reserved.eq(inventory::reserved - q),
                                        inventory::version.eq(inventory::version + 1),
                                    ))
                                    .returning((
                                        inventory::on_hand,
                                        inventory::reserved,
                                        inventory::version,
                                    ))
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
                    let at = event_log::append(conn, &meta, &batch).await?;
                    finish(conn, ctx, Outcome { value: id, at }).await
                })
                .await
            }
        })
        .await
    }
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

/// The order state machine.
fn allowed(from: OrderStatus, to: OrderStatus) -> bool {
    use OrderStatus::*;
    matches!(
        (from, to),
        (PendingPayment, Paid | Cancelled | PaymentFailed | Expired) | (Paid, Shipped)
    )
}

async fn place(
    conn: &mut AsyncPgConnection,
    meta: &event_log::EventMeta,
    customer: CustomerId,
    lines: &[(ProductId, Quantity)],
    currency: &str,
) -> Result<Outcome<PlacedOrder>, DomainError> {
    let who: Option<(String, String)> = customers::table
        .find(customer.0)
        .select((customers::email, customers::name))
        .first(conn)
        .await
        .optional()?;
    let (email, name) = who.ok_or_else(|| DomainError::not_found("customer", customer))?;

    let ids: Vec<Uuid> = lines.iter().map(|(p, _)| p.0).collect();
    let found: Vec<(Uuid, String, String, i64, String)> = products::table
        .filter(products::id.eq_any(&ids))
        .select((
            products::id,
            products::sku,
            products::name,
            products::price_minor,
            products::status,
        ))
        .load(conn)
        .await?;
    let by_id: BTreeMap<Uuid, (String, String, i64, String)> = found
        .into_iter()
        .map(|(id, sku, name, price, status)| (id, (sku, name, price, status)))
        .collect();

    let order_id = OrderId::new();
    let mut facts = Vec::with_capacity(lines.len());
    let mut events = Vec::with_capacity(lines.len() + 1);
    let mut total = Money::from_minor(0);
    for (product, qty) in lines {
        let Some((sku, pname, price, status)) = by_id.get(&product.0) else {
            return Err(DomainError::not_found("product", product));
        };
        if status != ProductStatus::Active.as_str() {
            return Err(DomainError::Validation {
                field: "lines",
                message: format!("product {sku} is not for sale"),
            });
        }
        let q = qty.get();
        // The guard in WHERE and the CHECK constraint both refuse to oversell; the
        // row lock taken by UPDATE serialises concurrent buyers of one product.
        let reserved: Option<(i32, i32, i64)> = diesel::update(
            inventory::table
                .find(product.0)
                .filter((inventory::on_hand - inventory::reserved).ge(q)),
        )
        .set((
            inventory::reserved.eq(inventory::reserved + q),
            inventory::version.eq(inventory::version + 1),
        ))
        .returning((inventory::on_hand, inventory::reserved, inventory::version))
        .get_result(conn)
        .await
        .optional()?;
        let Some((on_hand, now_reserved, version)) = reserved else {
            let available: i32 = inventory::table
                .find(product.0)
                .select(inventory::on_hand - inventory::reserved)
                .first(conn)
                .await?;
            return Err(DomainError::OutOfStock {
                product_id: product.0,
                sku: sku.clone(),
                requested: q,
                available,
            });
        };
        let unit = Money::from_minor(*price);
        total = unit
            .times(*qty)
            .and_then(|line_total| total.plus(line_total))
            .ok_or_else(|| DomainError::Validation {
                field: "lines",
                message: "order total is too large".into(),
            })?;
        events.push(DomainEvent::StockReserved {
            product_id: product.0,
            order_id: order_id.0,
            quantity: q,
            stock: StockLevel {
                on_hand,
                reserved: now_reserved,
                version,
            },
        });
        facts.push(OrderLineFact {
            product_id: product.0,
            sku: sku.clone(),
            name: pname.clone(),
            quantity: q,
            unit_price_minor: *price,
        });
    }

    let now = Utc::now();
    diesel::insert_into(orders::table)
        .values((
            orders::id.eq(order_id.0),
            orders::customer_id.eq(customer.0),
            orders::status.eq(OrderStatus::PendingPayment.as_str()),
            orders::total_minor.eq(total.minor()),
            orders::currency.eq(currency),
            orders::version.eq(1),
            orders::placed_at.eq(now),
            orders::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    let line_rows: Vec<_> = facts
        .iter()
        .enumerate()
        .map(|(i, f)| {
            (
                order_lines::order_id.eq(order_id.0),
                order_lines::line_no.eq(i as i16 + 1),
                order_lines::product_id.eq(f.product_id),
                order_lines::quantity.eq(f.quantity),
                order_lines::unit_price_minor.eq(f.unit_price_minor),
            )
        })
        .collect();
    diesel::insert_into(order_lines::table)
        .values(&line_rows)
        .execute(conn)
        .await?;
    diesel::insert_into(order_status_history::table)
        .values((
            order_status_history::order_id.eq(order_id.0),
            order_status_history::seq.eq(1),
            order_status_history::status.eq(OrderStatus::PendingPayment.as_str()),
            order_status_history::changed_at.eq(now),
        ))
        .execute(conn)
        .await?;
    events.push(DomainEvent::OrderPlaced {
        order_id: order_id.0,
        customer_id: customer.0,
        customer_email: email,
        customer_name: name,
        lines: facts.clone(),
        total_minor: total.minor(),
        currency: currency.to_owned(),
        placed_at: now,
        version: 1,
    });
    let at = event_log::append(conn, meta, &events).await?;
    Ok(Outcome {
        value: PlacedOrder {
            id: order_id,
            total,
            lines: facts,
        },
        at,
    })
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

#[cfg(test)]
mod tests {
    use super::allowed;
    use crate::types::OrderStatus::*;

    #[test]
    fn state_machine() {
        assert!(allowed(PendingPayment, Paid));
        assert!(allowed(PendingPayment, Cancelled));
        assert!(allowed(Paid, Shipped));
        assert!(!allowed(Paid, Cancelled));
        assert!(!allowed(Shipped, Paid));
        assert!(!allowed(Cancelled, Paid));
        assert!(!allowed(PendingPayment, Shipped));
    }
}
