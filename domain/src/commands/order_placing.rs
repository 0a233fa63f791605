//! Placing an order: reserves stock for every line at once (all or nothing), in one
//! statement after one read; orders of the same products may coalesce
//! (`order_batches`).

use std::collections::BTreeMap;

use chrono::{SubsecRound, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{begin, finish, CommandContext, Commands, Outcome};
use crate::db::prepared::Reuse;
use crate::db::transactions;
use crate::error::DomainError;
use crate::event_log;
use crate::events::{DomainEvent, OrderLineFact, StockLevel};
use crate::schema::customers;
use crate::types::{Currency, CustomerId, Money, OrderId, ProductId, ProductStatus, Quantity};

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
    /// The `OrderPlaced` event the command appended, from which a payload can show the
    /// order as the order view will have it without waiting for the projector. Not kept
    /// with an idempotent outcome: a replay reads the order as it is now.
    #[serde(skip)]
    pub event: Option<DomainEvent>,
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
        match self.batcher.as_deref() {
            Some(batcher) => {
                batcher
                    .submit(self, ctx, customer, merged, currency.as_str().to_owned())
                    .await
            }
            None => {
                self.place_alone(ctx, customer, &merged, currency.as_str())
                    .await
            }
        }
    }

    /// Places one checked order (`merged`: a line per product, in product order) in a
    /// transaction of its own.
    pub(super) async fn place_alone(
        &self,
        ctx: &CommandContext,
        customer: CustomerId,
        merged: &[(ProductId, Quantity)],
        currency: &str,
    ) -> Result<Outcome<PlacedOrder>, DomainError> {
        let meta = ctx.meta();
        let ids: Vec<Uuid> = merged.iter().map(|(p, _)| p.0).collect();
        self.run(|mut conn| {
            let meta = meta.clone();
            let ids = ids.clone();
            async move {
                // First without locking the stock: the read takes no row lock and no
                // transaction id, and the reservation locks each row only while its one
                // statement runs (see `place`). When another order took the stock in
                // between (the database refused the oversell), once more with the rows
                // locked from the read on, which sees the level it will change.
                let mut lock = Lock::AtWrite;
                loop {
                    match place_once(
                        &mut conn, ctx, &meta, customer, merged, &ids, currency, lock,
                    )
                    .await
                    {
                        Err(DomainError::StockChanged) if lock == Lock::AtWrite => {
                            lock = Lock::AtRead;
                        }
                        other => return other,
                    }
                }
            }
        })
        .await
    }
}

/// When an order's inventory rows are locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// By the reservation's own statement, just before it changes them.
    AtWrite,
    /// By the read (`FOR UPDATE`), until the transaction ends.
    AtRead,
}

/// One transaction of [`Commands::place_order`]: reads the buyer and the products,
/// checks the order against them, and writes it.
#[allow(clippy::too_many_arguments)]
async fn place_once(
    conn: &mut AsyncPgConnection,
    ctx: &CommandContext,
    meta: &event_log::EventMeta,
    customer: CustomerId,
    merged: &[(ProductId, Quantity)],
    ids: &[Uuid],
    currency: &str,
    lock: Lock,
) -> Result<Outcome<PlacedOrder>, DomainError> {
    // BEGIN, the key's claim and the read in one round trip.
    let found = transactions::begin_with(conn, async |shared| {
        begin(shared, ctx).await?;
        read_lines(shared, customer, ids, lock).await
    })
    .await?;
    let planned = match plan(conn, customer, merged, found).await {
        Ok(planned) => planned,
        Err(e) => return transactions::end(conn, Err(e)).await,
    };
    // The last statement and COMMIT in one round trip.
    if ctx.idempotency.is_none() {
        return transactions::commit_after(conn, async |shared| {
            place(shared, meta, customer, currency, planned).await
        })
        .await;
    }
    let out = match place(conn, meta, customer, currency, planned).await {
        Ok(out) => out,
        Err(e) => return transactions::end(conn, Err(e)).await,
    };
    transactions::commit_after(conn, async |shared| finish(shared, ctx, out).await).await
}

/// One requested product as found (with its stock locked for this transaction when
/// read with [`Lock::AtRead`]).
#[derive(QueryableByName)]
struct Found {
    #[diesel(sql_type = Text)]
    customer_email: String,
    #[diesel(sql_type = Text)]
    customer_name: String,
    #[diesel(embed)]
    product: ProductRow,
}

/// A product with its inventory row, as an order reads it (locked or not).
#[derive(QueryableByName)]
pub(super) struct ProductRow {
    #[diesel(sql_type = SqlUuid)]
    pub(super) id: Uuid,
    #[diesel(sql_type = Text)]
    pub(super) sku: String,
    #[diesel(sql_type = Text)]
    pub(super) name: String,
    #[diesel(sql_type = BigInt)]
    pub(super) price_minor: i64,
    #[diesel(sql_type = Text)]
    pub(super) status: String,
    #[diesel(sql_type = Integer)]
    pub(super) on_hand: i32,
    #[diesel(sql_type = Integer)]
    pub(super) reserved: i32,
    #[diesel(sql_type = BigInt)]
    pub(super) version: i64,
}

/// The text of [`READ_LINES`], for [`READ_LINES_LOCKED`] to extend.
macro_rules! read_lines_sql {
    () => {
        "SELECT c.email AS customer_email, c.name AS customer_name, p.id, p.sku, p.name, \
           p.price_minor, p.status, i.on_hand, i.reserved, i.version \
         FROM customers c CROSS JOIN products p JOIN inventory i ON i.product_id = p.id \
         WHERE c.id = $1 AND p.id = ANY($2) \
         ORDER BY p.id"
    };
}

/// The buyer and the products of an order with their stock, in product order.
const READ_LINES: &str = read_lines_sql!();

/// [`READ_LINES`], locking the inventory rows in product order (so concurrent orders
/// cannot deadlock, and the levels read are the ones this transaction will change).
const READ_LINES_LOCKED: &str = concat!(read_lines_sql!(), " FOR UPDATE OF i");

/// Reads the buyer and the products of an order, locking their inventory rows when
/// `lock` says so. Takes the connection shared, so that it goes out with the
/// transaction's BEGIN.
async fn read_lines(
    mut conn: &AsyncPgConnection,
    customer: CustomerId,
    ids: &[Uuid],
    lock: Lock,
) -> Result<Vec<Found>, DomainError> {
    let sql = match lock {
        Lock::AtWrite => READ_LINES,
        Lock::AtRead => READ_LINES_LOCKED,
    };
    Ok(diesel::sql_query(sql)
        .bind::<SqlUuid, _>(customer.0)
        .bind::<Array<SqlUuid>, _>(ids)
        .prepared()
        .load(&mut conn)
        .await?)
}

/// An order checked against what [`read_lines`] read, ready to be written.
struct Planned {
    order_id: OrderId,
    ids: Vec<Uuid>,
    quantities: Vec<i32>,
    prices: Vec<i64>,
    facts: Vec<OrderLineFact>,
    /// The stock reservations (the order's own event is added when it is written).
    events: Vec<DomainEvent>,
    customer_email: String,
    customer_name: String,
    total: Money,
}

/// Checks an order against `found` (what [`read_lines`] read): every product
/// exists and is for sale, and has the stock (else OUT_OF_STOCK naming it).
async fn plan(
    conn: &mut AsyncPgConnection,
    customer: CustomerId,
    lines: &[(ProductId, Quantity)],
    found: Vec<Found>,
) -> Result<Planned, DomainError> {
    let [first, ..] = found.as_slice() else {
        let exists: Option<Uuid> = customers::table
            .find(customer.0)
            .select(customers::id)
            .first(conn)
            .await
            .optional()?;
        return Err(match (exists, lines.first()) {
            (Some(_), Some((product, _))) => DomainError::not_found("product", product),
            _ => DomainError::not_found("customer", customer),
        });
    };
    let (customer_email, customer_name) =
        (first.customer_email.clone(), first.customer_name.clone());
    let by_id: BTreeMap<Uuid, &ProductRow> = found
        .iter()
        .map(|row| (row.product.id, &row.product))
        .collect();

    let order_id = OrderId::new();
    let mut facts = Vec::with_capacity(lines.len());
    let mut events = Vec::with_capacity(lines.len() + 1);
    let mut quantities = Vec::with_capacity(lines.len());
    let mut prices = Vec::with_capacity(lines.len());
    let mut total = Money::from_minor(0);
    for (product, qty) in lines {
        let Some(row) = by_id.get(&product.0) else {
            return Err(DomainError::not_found("product", product));
        };
        if row.status != ProductStatus::Active.as_str() {
            return Err(DomainError::Validation {
                field: "lines",
                message: format!("product {} is not for sale", row.sku),
            });
        }
        let q = qty.get();
        let available = row.on_hand - row.reserved;
        if available < q {
            return Err(DomainError::OutOfStock {
                product_id: product.0,
                sku: row.sku.clone(),
                requested: q,
                available,
            });
        }
        let unit = Money::from_minor(row.price_minor);
        total = unit
            .times(*qty)
            .and_then(|line_total| total.plus(line_total))
            .ok_or_else(|| DomainError::Validation {
                field: "lines",
                message: "order total is too large".into(),
            })?;
        // The levels as read; the write stores the ones its reservation made
        // (`STOCK_RESERVED_PAYLOAD`), which differ when other orders came between.
        events.push(DomainEvent::StockReserved {
            product_id: product.0,
            order_id: order_id.0,
            quantity: q,
            stock: StockLevel {
                on_hand: row.on_hand,
                reserved: row.reserved + q,
                version: row.version + 1,
            },
        });
        facts.push(OrderLineFact {
            product_id: product.0,
            sku: row.sku.clone(),
            name: row.name.clone(),
            quantity: q,
            unit_price_minor: row.price_minor,
        });
        quantities.push(q);
        prices.push(row.price_minor);
    }
    Ok(Planned {
        order_id,
        ids: lines.iter().map(|(p, _)| p.0).collect(),
        quantities,
        prices,
        facts,
        events,
        customer_email,
        customer_name,
        total,
    })
}

/// The stored payload of the events [`place`] appends: a `StockReserved` event's
/// `stock` is the level its row's reservation left (serde's [`StockLevel`] shape), the
/// rest as given.
const STOCK_RESERVED_PAYLOAD: &str = "CASE WHEN t.event_type = 'StockReserved' \
       THEN jsonb_set(t.payload, '{stock}', (SELECT jsonb_build_object('onHand', r.on_hand, \
         'reserved', r.reserved, 'version', r.version) FROM reserved r WHERE r.product_id = t.stream_id)) \
       ELSE t.payload END";

/// Writes a [`plan`]ned order in one statement: reserves the stock and writes the
/// order, its lines, its history and its events. The inventory rows are locked in
/// product order (concurrent orders cannot deadlock) and each reservation adds to the
/// level current at that moment. The inventory CHECK constraint refuses an oversell
/// (`DomainError::StockChanged`) when other orders took the stock since the plan's read.
async fn place(
    conn: &AsyncPgConnection,
    meta: &event_log::EventMeta,
    customer: CustomerId,
    currency: &str,
    planned: Planned,
) -> Result<Outcome<PlacedOrder>, DomainError> {
    let Planned {
        order_id,
        ids,
        quantities,
        prices,
        facts,
        mut events,
        customer_email,
        customer_name,
        total,
    } = planned;
    // At the database's precision (microseconds), so that the event, the order's rows
    // and every view made from either carry the same instant.
    let now = Utc::now().trunc_subsecs(6);
    let placed = DomainEvent::OrderPlaced {
        order_id: order_id.0,
        customer_id: customer.0,
        customer_email,
        customer_name,
        lines: facts.clone(),
        total_minor: total.minor(),
        currency: currency.to_owned(),
        placed_at: now,
        version: 1,
    };
    events.push(placed.clone());
    let writes = event_log::Writes::none()
        .cte(
            "locked",
            "SELECT i.product_id, t.q FROM inventory i \
             JOIN unnest($1::uuid[], $2::int4[]) AS t(id, q) ON i.product_id = t.id \
             ORDER BY i.product_id FOR UPDATE OF i",
        )
        .cte(
            "reserved",
            "UPDATE inventory i SET reserved = i.reserved + l.q, version = i.version + 1 \
             FROM locked l WHERE i.product_id = l.product_id \
             RETURNING i.product_id, i.on_hand, i.reserved, i.version",
        )
        .cte(
            "placed",
            "INSERT INTO orders (id, customer_id, status, total_minor, currency, version, \
               placed_at, updated_at) \
             VALUES ($4, $5, 'PENDING_PAYMENT', $6, $7, 1, $8, $8)",
        )
        .cte(
            "lines",
            "INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price_minor) \
             SELECT $4, t.n::int2, t.id, t.q, t.price \
             FROM unnest($1::uuid[], $2::int4[], $3::int8[]) WITH ORDINALITY AS t(id, q, price, n)",
        )
        .cte(
            "history",
            "INSERT INTO order_status_history (order_id, seq, status, changed_at) \
             VALUES ($4, 1, 'PENDING_PAYMENT', $8)",
        )
        .bind::<Array<SqlUuid>, _>(ids)
        .bind::<Array<Integer>, _>(quantities)
        .bind::<Array<BigInt>, _>(prices)
        .bind::<SqlUuid, _>(order_id.0)
        .bind::<SqlUuid, _>(customer.0)
        .bind::<BigInt, _>(total.minor())
        .bind::<Text, _>(currency.to_owned())
        .bind::<Timestamptz, _>(now)
        .payload(STOCK_RESERVED_PAYLOAD);
    let at = event_log::append_with(conn, meta, &events, writes).await?;
    Ok(Outcome {
        value: PlacedOrder {
            id: order_id,
            total,
            lines: facts,
            event: Some(placed),
        },
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::STOCK_RESERVED_PAYLOAD;
    use crate::events::StockLevel;

    /// The SQL that stores a reservation's level builds the keys serde reads back.
    #[test]
    fn the_stored_stock_level_has_serdes_keys() {
        let level = StockLevel {
            on_hand: 1,
            reserved: 1,
            version: 1,
        };
        let Ok(serde_json::Value::Object(map)) = serde_json::to_value(level) else {
            panic!("a StockLevel serializes to an object");
        };
        assert_eq!(map.len(), 3);
        for key in map.keys() {
            assert!(
                STOCK_RESERVED_PAYLOAD.contains(&format!("'{key}'")),
                "{key} is built"
            );
        }
    }
}
