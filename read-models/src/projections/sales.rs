//! Sales per day and per product (booked at placement, reversed when an order is
//! cancelled, expires or fails payment). Everything here is a sum, so a batch folds
//! into one upsert per table.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use diesel::sql_types::{Array, BigInt, Date, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use till_domain::db::prepared::Reuse;
use till_domain::events::{DomainEvent, StoredEvent};
use uuid::Uuid;

use super::{reverses_sale, Change};
use crate::error::ReadError;

#[derive(Default)]
struct Day {
    orders: i64,
    units: i64,
    revenue: i64,
}

struct ProductSum {
    sku: String,
    name: String,
    units: i64,
    revenue: i64,
}

pub(super) async fn apply_batch(
    mut conn: &AsyncPgConnection,
    events: &[StoredEvent],
    changes: &mut Vec<Change>,
) -> Result<(), ReadError> {
    let mut days: BTreeMap<NaiveDate, Day> = BTreeMap::new();
    let mut products: HashMap<Uuid, ProductSum> = HashMap::new();
    for ev in events {
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
            _ => continue,
        };
        let day = days.entry(placed_at.date_naive()).or_default();
        day.orders += sign;
        day.revenue += sign * total;
        for l in lines {
            let units = sign * i64::from(l.quantity);
            day.units += units;
            let p = products.entry(l.product_id).or_insert_with(|| ProductSum {
                sku: l.sku.clone(),
                name: l.name.clone(),
                units: 0,
                revenue: 0,
            });
            p.units += units;
            p.revenue += units.saturating_mul(l.unit_price_minor);
            p.name.clone_from(&l.name);
        }
    }
    if days.is_empty() {
        return Ok(());
    }
    let (day_keys, day_vals): (Vec<NaiveDate>, Vec<Day>) = days.into_iter().unzip();
    diesel::sql_query(
        "INSERT INTO rm_sales_daily AS d (day, orders_count, units, revenue_minor) \
         SELECT * FROM unnest($1::date[], $2::int8[], $3::int8[], $4::int8[]) \
         ON CONFLICT (day) DO UPDATE SET orders_count = d.orders_count + excluded.orders_count, \
           units = d.units + excluded.units, revenue_minor = d.revenue_minor + excluded.revenue_minor",
    )
    .bind::<Array<Date>, _>(day_keys)
    .bind::<Array<BigInt>, _>(day_vals.iter().map(|d| d.orders).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(day_vals.iter().map(|d| d.units).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(day_vals.iter().map(|d| d.revenue).collect::<Vec<_>>())
    .prepared()
    .execute(&mut conn)
    .await?;

    let (ids, sums): (Vec<Uuid>, Vec<ProductSum>) = products.into_iter().unzip();
    diesel::sql_query(
        "INSERT INTO rm_product_sales AS s (product_id, sku, name, units, revenue_minor) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::int8[]) \
         ON CONFLICT (product_id) DO UPDATE SET units = s.units + excluded.units, \
           revenue_minor = s.revenue_minor + excluded.revenue_minor, name = excluded.name",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Text>, _>(sums.iter().map(|p| p.sku.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(sums.iter().map(|p| p.name.as_str()).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(sums.iter().map(|p| p.units).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(sums.iter().map(|p| p.revenue).collect::<Vec<_>>())
    .prepared()
    .execute(&mut conn)
    .await?;
    changes.push(Change::Sales);
    Ok(())
}
