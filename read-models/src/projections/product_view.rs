//! Categories and the product view.

use diesel::sql_types::{Array, BigInt, Int4, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use till_domain::events::{DomainEvent, StockLevel, StoredEvent};
use uuid::Uuid;

use super::{reverses_sale, Change};
use crate::error::ReadError;

pub(super) async fn apply(
    conn: &mut AsyncPgConnection,
    ev: &StoredEvent,
    changes: &mut Vec<Change>,
) -> Result<(), ReadError> {
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
            .execute(conn)
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
            diesel::sql_query(
                "INSERT INTO rm_product_view (id, sku, name, description, price_minor, status, \
                   category_id, category_ids, category_path, version, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, \
                   COALESCE((SELECT path_ids FROM rm_categories WHERE id = $7), ARRAY[$7]), \
                   COALESCE((SELECT path FROM rm_categories WHERE id = $7), '[]'::jsonb), \
                   $8, $9, $9) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind::<SqlUuid, _>(product_id)
            .bind::<Text, _>(sku)
            .bind::<Text, _>(name)
            .bind::<Text, _>(description)
            .bind::<BigInt, _>(price_minor)
            .bind::<Text, _>(status)
            .bind::<SqlUuid, _>(category_id)
            .bind::<Int4, _>(version)
            .bind::<Timestamptz, _>(created_at)
            .execute(conn)
            .await?;
            changes.push(Change::Product(*product_id));
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
            .execute(conn)
            .await?;
            changes.push(Change::Product(*product_id));
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
            .execute(conn)
            .await?;
            changes.push(Change::Product(*product_id));
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
            set_stock(conn, *product_id, stock, ev).await?;
            changes.push(Change::Product(*product_id));
        }
        DomainEvent::OrderPlaced { lines, .. } => {
            let ids: Vec<Uuid> = lines.iter().map(|l| l.product_id).collect();
            let qty: Vec<i32> = lines.iter().map(|l| l.quantity).collect();
            add_popularity(conn, &ids, &qty).await?;
            changes.extend(ids.into_iter().map(Change::Product));
        }
        DomainEvent::OrderStatusChanged { to, lines, .. } if reverses_sale(to) => {
            let ids: Vec<Uuid> = lines.iter().map(|l| l.product_id).collect();
            let qty: Vec<i32> = lines.iter().map(|l| -l.quantity).collect();
            add_popularity(conn, &ids, &qty).await?;
            changes.extend(ids.into_iter().map(Change::Product));
        }
        _ => {}
    }
    Ok(())
}

/// Stock events carry absolute levels and the inventory version, so the newest one
/// wins whatever order they arrive in.
async fn set_stock(
    conn: &mut AsyncPgConnection,
    product_id: Uuid,
    stock: &StockLevel,
    ev: &StoredEvent,
) -> Result<(), ReadError> {
    diesel::sql_query(
        "UPDATE rm_product_view SET on_hand = $2, reserved = $3, available = $2 - $3, \
           inventory_version = $4, updated_at = GREATEST(updated_at, $5) \
         WHERE id = $1 AND inventory_version < $4",
    )
    .bind::<SqlUuid, _>(product_id)
    .bind::<Int4, _>(stock.on_hand)
    .bind::<Int4, _>(stock.reserved)
    .bind::<BigInt, _>(stock.version)
    .bind::<Timestamptz, _>(ev.occurred_at)
    .execute(conn)
    .await?;
    Ok(())
}

async fn add_popularity(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
    qty: &[i32],
) -> Result<(), ReadError> {
    diesel::sql_query(
        "UPDATE rm_product_view p SET popularity = p.popularity + v.q \
         FROM unnest($1::uuid[], $2::int4[]) AS v(id, q) WHERE p.id = v.id",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Int4>, _>(qty)
    .execute(conn)
    .await?;
    Ok(())
}
