//! Categories and the product view.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Int4, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use till_domain::db::prepared::Reuse;
use till_domain::events::{DomainEvent, StockLevel, StoredEvent};
use uuid::Uuid;

use super::{reverses_sale, Change};
use crate::error::ReadError;

/// Stock levels (newest version per product) and popularity deltas gathered over a
/// batch, written in one statement at its end. Both commute with the catalog events
/// applied in between: stock updates are version-guarded and popularity is a sum.
/// New products are gathered too and inserted in one statement, flushed before any
/// other catalog event so the log order between catalog events holds.
#[derive(Default)]
struct Folded {
    stock: HashMap<Uuid, (StockLevel, DateTime<Utc>)>,
    popularity: HashMap<Uuid, i64>,
    created: NewProducts,
}

/// Columns of products created in a batch, in log order.
#[derive(Default)]
struct NewProducts {
    id: Vec<Uuid>,
    sku: Vec<String>,
    name: Vec<String>,
    description: Vec<String>,
    price: Vec<i64>,
    status: Vec<String>,
    category: Vec<Uuid>,
    version: Vec<i32>,
    created_at: Vec<DateTime<Utc>>,
}

impl NewProducts {
    /// Inserts the gathered products (one statement) and empties the list.
    async fn flush(&mut self, mut conn: &AsyncPgConnection) -> Result<(), ReadError> {
        if self.id.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(self);
        diesel::sql_query(
            "INSERT INTO rm_product_view (id, sku, name, description, price_minor, status, \
               category_id, category_ids, category_path, version, created_at, updated_at) \
             SELECT t.id, t.sku, t.name, t.description, t.price, t.status, t.cat, \
               COALESCE(c.path_ids, ARRAY[t.cat]), COALESCE(c.path, '[]'::jsonb), \
               t.version, t.created_at, t.created_at \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], \
                         $7::uuid[], $8::int4[], $9::timestamptz[]) \
               AS t(id, sku, name, description, price, status, cat, version, created_at) \
             LEFT JOIN rm_categories c ON c.id = t.cat \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind::<Array<SqlUuid>, _>(rows.id)
        .bind::<Array<Text>, _>(rows.sku)
        .bind::<Array<Text>, _>(rows.name)
        .bind::<Array<Text>, _>(rows.description)
        .bind::<Array<BigInt>, _>(rows.price)
        .bind::<Array<Text>, _>(rows.status)
        .bind::<Array<SqlUuid>, _>(rows.category)
        .bind::<Array<Int4>, _>(rows.version)
        .bind::<Array<Timestamptz>, _>(rows.created_at)
        .prepared()
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}

pub(super) async fn apply_batch(
    conn: &AsyncPgConnection,
    events: &[StoredEvent],
    changes: &mut Vec<Change>,
) -> Result<(), ReadError> {
    let mut folded = Folded::default();
    for ev in events {
        apply(conn, ev, changes, &mut folded).await?;
    }
    folded.created.flush(conn).await?;
    set_stock_and_popularity(conn, folded.stock, folded.popularity).await
}

async fn apply(
    mut conn: &AsyncPgConnection,
    ev: &StoredEvent,
    changes: &mut Vec<Change>,
    folded: &mut Folded,
) -> Result<(), ReadError> {
    if matches!(
        ev.event,
        DomainEvent::CategoryCreated { .. }
            | DomainEvent::ProductUpdated { .. }
            | DomainEvent::ProductArchived { .. }
    ) {
        folded.created.flush(conn).await?;
    }
    match &ev.event {
        DomainEvent::CategoryCreated {
            category_id,
            slug,
            name,
            parent_id,
        } => {
            let me = serde_json::json!([{ "id": category_id, "slug": slug, "name": name }]);
            diesel::sql_query(
                "INSERT INTO rm_categories (id, slug, name, parent_id, path, path_ids) \
                 VALUES ($1, $2, $3, $4, \
                   COALESCE((SELECT path FROM rm_categories WHERE id = $4), '[]'::jsonb) || $5, \
                   COALESCE((SELECT path_ids FROM rm_categories WHERE id = $4), '{}'::uuid[]) || $1) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind::<SqlUuid, _>(category_id)
            .bind::<Text, _>(slug)
            .bind::<Text, _>(name)
            .bind::<Nullable<SqlUuid>, _>(parent_id)
            .bind::<Jsonb, _>(me)
            .prepared()
            .execute(&mut conn)
            .await?;
            changes.push(Change::Categories);
        }
        DomainEvent::ProductCreated {
            product_id,
            sku,
            name,
            description,
            category_id,
            price_minor,
            status,
            version,
            created_at,
        } => {
            let new = &mut folded.created;
            new.id.push(*product_id);
            new.sku.push(sku.clone());
            new.name.push(name.clone());
            new.description.push(description.clone());
            new.price.push(*price_minor);
            new.status.push(status.clone());
            new.category.push(*category_id);
            new.version.push(*version);
            new.created_at.push(*created_at);
            changes.push(Change::Product(*product_id));
            changes.push(Change::Listing);
        }
        DomainEvent::ProductUpdated {
            product_id,
            name,
            description,
            category_id,
            price_minor,
            status,
            version,
            ..
        } => {
            diesel::sql_query(
                "UPDATE rm_product_view SET name = $2, description = $3, price_minor = $4, \
                   status = $5, category_id = $6, \
                   category_ids = COALESCE((SELECT path_ids FROM rm_categories WHERE id = $6), ARRAY[$6]), \
                   category_path = COALESCE((SELECT path FROM rm_categories WHERE id = $6), '[]'::jsonb), \
                   version = $7, updated_at = $8 \
                 WHERE id = $1 AND version < $7",
            )
            .bind::<SqlUuid, _>(product_id)
            .bind::<Text, _>(name)
            .bind::<Text, _>(description)
            .bind::<BigInt, _>(price_minor)
            .bind::<Text, _>(status)
            .bind::<SqlUuid, _>(category_id)
            .bind::<Int4, _>(version)
            .bind::<Timestamptz, _>(ev.occurred_at)
            .prepared()
            .execute(&mut conn)
            .await?;
            changes.push(Change::Product(*product_id));
            changes.push(Change::Listing);
        }
        DomainEvent::ProductArchived {
            product_id,
            version,
        } => {
            diesel::sql_query(
                "UPDATE rm_product_view SET status = 'ARCHIVED', version = $2, updated_at = $3 \
                 WHERE id = $1 AND version < $2",
            )
            .bind::<SqlUuid, _>(product_id)
            .bind::<Int4, _>(version)
            .bind::<Timestamptz, _>(ev.occurred_at)
            .prepared()
            .execute(&mut conn)
            .await?;
            changes.push(Change::Product(*product_id));
            changes.push(Change::Listing);
        }
        DomainEvent::InventoryRestocked {
            product_id, stock, ..
        }
        | DomainEvent::InventoryAdjusted {
            product_id, stock, ..
        }
        | DomainEvent::StockReserved {
            product_id, stock, ..
        }
        | DomainEvent::StockReleased {
            product_id, stock, ..
        }
        | DomainEvent::StockCommitted {
            product_id, stock, ..
        } => {
            let newer = folded
                .stock
                .get(product_id)
                .is_none_or(|(seen, _)| seen.version < stock.version);
            if newer {
                folded.stock.insert(*product_id, (*stock, ev.occurred_at));
            }
            changes.push(Change::Product(*product_id));
        }
        DomainEvent::OrderPlaced { lines, .. } => {
            for l in lines {
                *folded.popularity.entry(l.product_id).or_default() += i64::from(l.quantity);
                changes.push(Change::Product(l.product_id));
            }
        }
        DomainEvent::OrderStatusChanged { to, lines, .. } if reverses_sale(to) => {
            for l in lines {
                *folded.popularity.entry(l.product_id).or_default() -= i64::from(l.quantity);
                changes.push(Change::Product(l.product_id));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Writes a batch's stock levels and popularity deltas in one statement, so each
/// touched product gets one new row version per batch (on the same page: no column of
/// the view that changes here is indexed; a trigger carries popularity changes to the
/// POPULAR ordering's own table, see migration 8). Stock events carry absolute
/// levels and the inventory version, so the newest one wins whatever order they arrive
/// in (a level not newer than the row's is ignored); popularity is a sum.
async fn set_stock_and_popularity(
    mut conn: &AsyncPgConnection,
    mut stock: HashMap<Uuid, (StockLevel, DateTime<Utc>)>,
    popularity: HashMap<Uuid, i64>,
) -> Result<(), ReadError> {
    let mut ids: Vec<Uuid> = stock.keys().copied().collect();
    ids.extend(
        popularity
            .iter()
            .filter(|(id, q)| **q != 0 && !stock.contains_key(*id))
            .map(|(id, _)| *id),
    );
    if ids.is_empty() {
        return Ok(());
    }
    let n = ids.len();
    let (mut on_hand, mut reserved, mut versions, mut at, mut qty) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for id in &ids {
        let level = stock.remove(id);
        on_hand.push(level.map(|(l, _)| l.on_hand));
        reserved.push(level.map(|(l, _)| l.reserved));
        versions.push(level.map(|(l, _)| l.version));
        at.push(level.map(|(_, when)| when));
        qty.push(popularity.get(id).copied().unwrap_or(0));
    }
    diesel::sql_query(
        "UPDATE rm_product_view p SET \
           on_hand = CASE WHEN t.version > p.inventory_version THEN t.on_hand ELSE p.on_hand END, \
           reserved = CASE WHEN t.version > p.inventory_version THEN t.reserved ELSE p.reserved END, \
           available = CASE WHEN t.version > p.inventory_version \
             THEN t.on_hand - t.reserved ELSE p.available END, \
           inventory_version = GREATEST(p.inventory_version, t.version), \
           updated_at = CASE WHEN t.version > p.inventory_version \
             THEN GREATEST(p.updated_at, t.at) ELSE p.updated_at END, \
           popularity = p.popularity + t.q \
         FROM unnest($1::uuid[], $2::int4[], $3::int4[], $4::int8[], $5::timestamptz[], $6::int8[]) \
           AS t(id, on_hand, reserved, version, at, q) \
         WHERE p.id = t.id AND (t.version > p.inventory_version OR t.q <> 0)",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Nullable<Int4>>, _>(on_hand)
    .bind::<Array<Nullable<Int4>>, _>(reserved)
    .bind::<Array<Nullable<BigInt>>, _>(versions)
    .bind::<Array<Nullable<Timestamptz>>, _>(at)
    .bind::<Array<BigInt>, _>(qty)
    .prepared()
    .execute(&mut conn)
    .await?;
    Ok(())
}
