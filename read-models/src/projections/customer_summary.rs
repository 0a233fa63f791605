//! The customer summary: orders count, lifetime spend, last order.

use diesel::sql_types::{BigInt, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use till_domain::events::{DomainEvent, StoredEvent};

use super::{reverses_sale, Change};
use crate::error::ReadError;

pub(super) async fn apply(
    conn: &mut AsyncPgConnection,
    ev: &StoredEvent,
    changes: &mut Vec<Change>,
) -> Result<(), ReadError> {
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
            .execute(conn)
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
            diesel::sql_query(
                "INSERT INTO rm_customer_summary AS s (customer_id, email, name, orders_count, \
                   lifetime_spend_minor, last_order_id, last_order_at) \
                 VALUES ($1, $2, $3, 1, $4, $5, $6) \
                 ON CONFLICT (customer_id) DO UPDATE SET \
                   orders_count = s.orders_count + 1, \
                   lifetime_spend_minor = s.lifetime_spend_minor + $4, \
                   last_order_id = CASE WHEN s.last_order_at IS NULL OR s.last_order_at <= $6 \
                                   THEN $5 ELSE s.last_order_id END, \
                   last_order_at = GREATEST(s.last_order_at, $6)",
            )
            .bind::<SqlUuid, _>(customer_id)
            .bind::<Text, _>(customer_email)
            .bind::<Text, _>(customer_name)
            .bind::<BigInt, _>(total_minor)
            .bind::<SqlUuid, _>(order_id)
            .bind::<Timestamptz, _>(placed_at)
            .execute(conn)
            .await?;
            changes.push(Change::Customer(*customer_id));
        }
        DomainEvent::OrderStatusChanged {
            customer_id,
            to,
            total_minor,
            ..
        } if reverses_sale(to) => {
            diesel::sql_query(
                "UPDATE rm_customer_summary SET lifetime_spend_minor = lifetime_spend_minor - $2 \
                 WHERE customer_id = $1",
            )
            .bind::<SqlUuid, _>(customer_id)
            .bind::<BigInt, _>(total_minor)
            .execute(conn)
            .await?;
            changes.push(Change::Customer(*customer_id));
        }
        _ => {}
    }
    Ok(())
}
