//! Sales per day and per product (booked at placement, reversed when an order is
//! cancelled, expires or fails payment).

use diesel::sql_types::{Array, BigInt, Date, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use till_domain::events::{DomainEvent, OrderLineFact, StoredEvent};
use uuid::Uuid;

use super::{reverses_sale, Change};
use crate::error::ReadError;

pub(super) async fn apply(
    conn: &mut AsyncPgConnection,
    ev: &StoredEvent,
    changes: &mut Vec<Change>,
) -> Result<(), ReadError> {
    let (lines, total, placed_at, sign) = match &ev.event {
        DomainEvent::OrderPlaced {
            lines,
            total_minor,
            placed_at,
            ..
        } => (lines, *total_minor, *placed_at, 1i64),
        DomainEvent::OrderStatusChanged {
            to,
            lines,
            total_minor,
            placed_at,
            ..
        } if reverses_sale(to) => (lines, *total_minor, *placed_at, -1i64),
        _ => return Ok(()),
    };
    let units: i64 = lines.iter().map(|l| i64::from(l.quantity)).sum();
    diesel::sql_query(
        "INSERT INTO rm_sales_daily AS d (day, orders_count, units, revenue_minor) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (day) DO UPDATE SET orders_count = d.orders_count + $2, \
           units = d.units + $3, revenue_minor = d.revenue_minor + $4",
    )
    .bind::<Date, _>(placed_at.date_naive())
    .bind::<BigInt, _>(sign)
    .bind::<BigInt, _>(sign * units)
    .bind::<BigInt, _>(sign * total)
    .execute(conn)
    .await?;

    let ids: Vec<Uuid> = lines.iter().map(|l| l.product_id).collect();
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    let names: Vec<&str> = lines.iter().map(|l| l.name.as_str()).collect();
    let qty: Vec<i64> = lines.iter().map(|l| sign * i64::from(l.quantity)).collect();
    let revenue: Vec<i64> = lines.iter().map(|l| sign * line_total(l)).collect();
    diesel::sql_query(
        "INSERT INTO rm_product_sales AS s (product_id, sku, name, units, revenue_minor) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::int8[]) \
         ON CONFLICT (product_id) DO UPDATE SET units = s.units + excluded.units, \
           revenue_minor = s.revenue_minor + excluded.revenue_minor, name = excluded.name",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Text>, _>(skus)
    .bind::<Array<Text>, _>(names)
    .bind::<Array<BigInt>, _>(qty)
    .bind::<Array<BigInt>, _>(revenue)
    .execute(conn)
    .await?;
    changes.push(Change::Sales);
    Ok(())
}

fn line_total(line: &OrderLineFact) -> i64 {
    line.unit_price_minor
        .saturating_mul(i64::from(line.quantity))
}
