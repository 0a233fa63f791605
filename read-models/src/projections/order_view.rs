//! The order view. New orders and status changes are gathered and written with one
//! statement each; a second change to an order already pending in the batch writes
//! what is pending first, so each order's changes apply in order.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Int4, Jsonb, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use till_domain::db::prepared::Reuse;
use till_domain::events::{DomainEvent, StoredEvent};
use uuid::Uuid;

use super::Change;
use crate::error::ReadError;
use crate::views::{OrderView, StatusChange};

struct NewOrder {
    id: Uuid,
    customer_id: Uuid,
    email: String,
    name: String,
    total: i64,
    currency: String,
    lines: serde_json::Value,
    history: serde_json::Value,
    version: i32,
    placed_at: DateTime<Utc>,
}

struct StatusUpdate {
    id: Uuid,
    status: String,
    version: i32,
    at: DateTime<Utc>,
    entry: serde_json::Value,
}

#[derive(Default)]
struct Pending {
    inserts: Vec<NewOrder>,
    updates: Vec<StatusUpdate>,
    updated: HashSet<Uuid>,
}

pub(super) async fn apply_batch(
    conn: &AsyncPgConnection,
    events: &[StoredEvent],
    changes: &mut Vec<Change>,
) -> Result<(), ReadError> {
    let mut pending = Pending::default();
    for ev in events {
        match &ev.event {
            DomainEvent::OrderPlaced { .. } => {
                // The row is the view `OrderView::placed` makes of the event, which a
                // placeOrder payload shows before this batch runs.
                let Some(view) = OrderView::placed(&ev.event)? else {
                    continue;
                };
                changes.push(Change::Order {
                    order: view.id,
                    customer: view.customer_id,
                });
                pending.inserts.push(NewOrder {
                    lines: serde_json::to_value(&view.lines)?,
                    history: serde_json::to_value(&view.status_history)?,
                    id: view.id,
                    customer_id: view.customer_id,
                    email: view.customer_email,
                    name: view.customer_name,
                    total: view.total_minor,
                    currency: view.currency,
                    version: view.version,
                    placed_at: view.placed_at,
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
                if pending.updated.contains(order_id) {
                    flush(conn, &mut pending).await?;
                }
                pending.updated.insert(*order_id);
                pending.updates.push(StatusUpdate {
                    id: *order_id,
                    status: to.clone(),
                    version: *version,
                    at: *at,
                    entry: serde_json::to_value([StatusChange {
                        status: to.clone(),
                        at: *at,
                    }])?,
                });
                changes.push(Change::Order {
                    order: *order_id,
                    customer: *customer_id,
                });
            }
            _ => {}
        }
    }
    flush(conn, &mut pending).await
}

async fn flush(mut conn: &AsyncPgConnection, pending: &mut Pending) -> Result<(), ReadError> {
    let inserts = std::mem::take(&mut pending.inserts);
    if !inserts.is_empty() {
        diesel::sql_query(
            "INSERT INTO rm_order_view (id, customer_id, customer_email, customer_name, status, \
               total_minor, currency, lines, status_history, version, placed_at, updated_at) \
             SELECT id, cust, email, name, 'PENDING_PAYMENT', total, currency, lines, history, \
               version, placed_at, placed_at \
             FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int8[], $6::text[], \
               $7::jsonb[], $8::jsonb[], $9::int4[], $10::timestamptz[]) \
               AS t(id, cust, email, name, total, currency, lines, history, version, placed_at) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind::<Array<SqlUuid>, _>(inserts.iter().map(|o| o.id).collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(inserts.iter().map(|o| o.customer_id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(inserts.iter().map(|o| o.email.as_str()).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(inserts.iter().map(|o| o.name.as_str()).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(inserts.iter().map(|o| o.total).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(
            inserts
                .iter()
                .map(|o| o.currency.as_str())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Jsonb>, _>(inserts.iter().map(|o| &o.lines).collect::<Vec<_>>())
        .bind::<Array<Jsonb>, _>(inserts.iter().map(|o| &o.history).collect::<Vec<_>>())
        .bind::<Array<Int4>, _>(inserts.iter().map(|o| o.version).collect::<Vec<_>>())
        .bind::<Array<Timestamptz>, _>(inserts.iter().map(|o| o.placed_at).collect::<Vec<_>>())
        .prepared()
        .execute(&mut conn)
        .await?;
    }
    let updates = std::mem::take(&mut pending.updates);
    pending.updated.clear();
    if !updates.is_empty() {
        diesel::sql_query(
            "UPDATE rm_order_view o SET status = t.status, version = t.version, updated_at = t.at, \
               status_history = o.status_history || t.entry \
             FROM unnest($1::uuid[], $2::text[], $3::int4[], $4::timestamptz[], $5::jsonb[]) \
               AS t(id, status, version, at, entry) \
             WHERE o.id = t.id AND o.version < t.version",
        )
        .bind::<Array<SqlUuid>, _>(updates.iter().map(|u| u.id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(updates.iter().map(|u| u.status.as_str()).collect::<Vec<_>>())
        .bind::<Array<Int4>, _>(updates.iter().map(|u| u.version).collect::<Vec<_>>())
        .bind::<Array<Timestamptz>, _>(updates.iter().map(|u| u.at).collect::<Vec<_>>())
        .bind::<Array<Jsonb>, _>(updates.iter().map(|u| &u.entry).collect::<Vec<_>>())
        .prepared()
        .execute(&mut conn)
        .await?;
    }
    Ok(())
}
