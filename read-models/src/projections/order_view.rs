//! The order view.

use diesel::sql_types::{BigInt, Int4, Jsonb, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use till_domain::events::{DomainEvent, StoredEvent};

use super::Change;
use crate::error::ReadError;
use crate::views::StatusChange;

pub(super) async fn apply(
    conn: &mut AsyncPgConnection,
    ev: &StoredEvent,
    changes: &mut Vec<Change>,
) -> Result<(), ReadError> {
    match &ev.event {
        DomainEvent::OrderPlaced {
            order_id,
            customer_id,
            customer_email,
            customer_name,
            lines,
            total_minor,
            currency,
            placed_at,
            version,
        } => {
            let history = serde_json::to_value([StatusChange {
                status: "PENDING_PAYMENT".into(),
                at: *placed_at,
            }])?;
            diesel::sql_query(
                "INSERT INTO rm_order_view (id, customer_id, customer_email, customer_name, status, \
                   total_minor, currency, lines, status_history, version, placed_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 'PENDING_PAYMENT', $5, $6, $7, $8, $9, $10, $10) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind::<SqlUuid, _>(order_id)
            .bind::<SqlUuid, _>(customer_id)
            .bind::<Text, _>(customer_email)
            .bind::<Text, _>(customer_name)
            .bind::<BigInt, _>(total_minor)
            .bind::<Text, _>(currency)
            .bind::<Jsonb, _>(serde_json::to_value(lines)?)
            .bind::<Jsonb, _>(history)
            .bind::<Int4, _>(version)
            .bind::<Timestamptz, _>(placed_at)
            .execute(conn)
            .await?;
            changes.push(Change::Order {
                order: *order_id,
                customer: *customer_id,
            });
        }
        DomainEvent::OrderStatusChanged {
            order_id,
            customer_id,
            to,
            at,
            version,
            ..
        } => {
            let entry = serde_json::to_value([StatusChange {
                status: to.clone(),
                at: *at,
            }])?;
            diesel::sql_query(
                "UPDATE rm_order_view SET status = $2, version = $3, updated_at = $4, \
                   status_history = status_history || $5 \
                 WHERE id = $1 AND version < $3",
            )
            .bind::<SqlUuid, _>(order_id)
            .bind::<Text, _>(to)
            .bind::<Int4, _>(version)
            .bind::<Timestamptz, _>(at)
            .bind::<Jsonb, _>(entry)
            .execute(conn)
            .await?;
            changes.push(Change::Order {
                order: *order_id,
                customer: *customer_id,
            });
        }
        _ => {}
    }
    Ok(())
}
