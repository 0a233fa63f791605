//! The customer summary: orders count, lifetime spend, last order. Order counts and
//! spend are sums, so a batch folds into one upsert; registrations are applied as they
//! come.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use till_domain::db::prepared::Reuse;
use till_domain::events::{DomainEvent, StoredEvent};
use uuid::Uuid;

use super::{reverses_sale, Change};
use crate::error::ReadError;

#[derive(Default)]
struct Delta {
    email: String,
    name: String,
    orders: i64,
    spend: i64,
    last: Option<(DateTime<Utc>, Uuid)>,
}

pub(super) async fn apply_batch(
    mut conn: &AsyncPgConnection,
    events: &[StoredEvent],
    changes: &mut Vec<Change>,
) -> Result<(), ReadError> {
    let mut deltas: HashMap<Uuid, Delta> = HashMap::new();
    for ev in events {
        match &ev.event {
            DomainEvent::CustomerRegistered {
                customer_id,
                email,
                name,
                role,
            } => {
                diesel::sql_query(
                    "INSERT INTO rm_customer_summary (customer_id, email, name, role) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (customer_id) DO UPDATE SET email = $2, name = $3, role = $4",
                )
                .bind::<SqlUuid, _>(customer_id)
                .bind::<Text, _>(email)
                .bind::<Text, _>(name)
                .bind::<Text, _>(role)
                .prepared()
                .execute(&mut conn)
                .await?;
                changes.push(Change::Customer(*customer_id));
            }
            DomainEvent::RoleGranted {
                customer_id, role, ..
            } => {
                diesel::sql_query(
                    "UPDATE rm_customer_summary SET role = $2 WHERE customer_id = $1",
                )
                .bind::<SqlUuid, _>(customer_id)
                .bind::<Text, _>(role)
                .prepared()
                .execute(&mut conn)
                .await?;
                changes.push(Change::Customer(*customer_id));
            }
            DomainEvent::OrderPlaced {
                order_id,
                customer_id,
                customer_email,
                customer_name,
                total_minor,
                placed_at,
                ..
            } => {
                let d = deltas.entry(*customer_id).or_default();
                d.email.clone_from(customer_email);
                d.name.clone_from(customer_name);
                d.orders += 1;
                d.spend += total_minor;
                if d.last.is_none_or(|(at, _)| at <= *placed_at) {
                    d.last = Some((*placed_at, *order_id));
                }
                changes.push(Change::Customer(*customer_id));
            }
            DomainEvent::OrderStatusChanged {
                customer_id,
                to,
                total_minor,
                ..
            } if reverses_sale(to) => {
                deltas.entry(*customer_id).or_default().spend -= total_minor;
                changes.push(Change::Customer(*customer_id));
            }
            _ => {}
        }
    }
    if deltas.is_empty() {
        return Ok(());
    }
    let (ids, ds): (Vec<Uuid>, Vec<Delta>) = deltas.into_iter().unzip();
    diesel::sql_query(
        "INSERT INTO rm_customer_summary AS s (customer_id, email, name, orders_count, \
           lifetime_spend_minor, last_order_id, last_order_at) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::int8[], \
           $6::uuid[], $7::timestamptz[]) \
         ON CONFLICT (customer_id) DO UPDATE SET \
           orders_count = s.orders_count + excluded.orders_count, \
           lifetime_spend_minor = s.lifetime_spend_minor + excluded.lifetime_spend_minor, \
           last_order_id = CASE WHEN excluded.last_order_at IS NOT NULL \
             AND (s.last_order_at IS NULL OR s.last_order_at <= excluded.last_order_at) \
             THEN excluded.last_order_id ELSE s.last_order_id END, \
           last_order_at = GREATEST(s.last_order_at, excluded.last_order_at)",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Text>, _>(ds.iter().map(|d| d.email.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(ds.iter().map(|d| d.name.as_str()).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(ds.iter().map(|d| d.orders).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(ds.iter().map(|d| d.spend).collect::<Vec<_>>())
    .bind::<Array<Nullable<SqlUuid>>, _>(ds.iter().map(|d| d.last.map(|l| l.1)).collect::<Vec<_>>())
    .bind::<Array<Nullable<Timestamptz>>, _>(
        ds.iter().map(|d| d.last.map(|l| l.0)).collect::<Vec<_>>(),
    )
    .prepared()
    .execute(&mut conn)
    .await?;
    Ok(())
}
