//! Bulk seeding for large data sets: set-based inserts (`unnest` of arrays, one
//! statement per table per chunk) with their events appended to the same log in the
//! same transaction, so the projector builds the read models as for any other write.

use chrono::{DateTime, Duration, Utc};
use diesel::sql_types::{Array, BigInt, Int2, Int4, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use rand::seq::SliceRandom;
use rand::Rng;
use uuid::Uuid;

use crate::db::PgPool;
use crate::error::DomainError;
use crate::event_log::{self, EventMeta};
use crate::events::{DomainEvent, OrderLineFact, StockLevel};
use crate::wakeups;

/// Units on hand each seeded product starts with.
pub const SEED_STOCK: i32 = 100_000;

/// A seeded product, kept in memory to build orders.
#[derive(Debug, Clone)]
pub struct SeededProduct {
    /// Id.
    pub id: Uuid,
    /// SKU.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Unit price.
    pub price_minor: i64,
}

/// A seeded customer.
#[derive(Debug, Clone)]
pub struct SeededCustomer {
    /// Id.
    pub id: Uuid,
    /// Email.
    pub email: String,
    /// Name.
    pub name: String,
}

/// Appends a chunk's events and wakes running projectors when the chunk commits.
async fn append(conn: &mut AsyncPgConnection, events: &[DomainEvent]) -> Result<(), DomainError> {
    event_log::append(conn, &EventMeta::system("seed"), events).await?;
    wakeups::wake_followers(conn).await?;
    Ok(())
}

/// Inserts categories `from..to` (slugs `seed-<tag>-<i>`); the first fifth are roots,
/// the rest children of a random root. Returns their ids.
pub async fn categories(
    pool: &PgPool,
    tag: &str,
    from: usize,
    to: usize,
    roots: &[Uuid],
) -> Result<Vec<Uuid>, DomainError> {
    let mut ids = Vec::with_capacity(to - from);
    let mut slugs = Vec::new();
    let mut names = Vec::new();
    let mut parents: Vec<Option<Uuid>> = Vec::new();
    {
        let mut rng = rand::thread_rng();
        for i in from..to {
            ids.push(Uuid::now_v7());
            slugs.push(format!("seed-{tag}-{i}"));
            names.push(format!("Category {i}"));
            parents.push(roots.choose(&mut rng).copied());
        }
    }
    let events: Vec<DomainEvent> = (0..ids.len())
        .map(|k| DomainEvent::CategoryCreated {
            category_id: ids[k],
            slug: slugs[k].clone(),
            name: names[k].clone(),
            parent_id: parents[k],
        })
        .collect();
    let mut conn = pool.get().await?;
    conn.transaction(async |conn| {
        diesel::sql_query(
            "INSERT INTO categories (id, slug, name, parent_id) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[])",
        )
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<Text>, _>(&slugs)
        .bind::<Array<Text>, _>(&names)
        .bind::<Array<Nullable<SqlUuid>>, _>(&parents)
        .execute(conn)
        .await?;
        append(conn, &events).await?;
        Ok::<_, DomainError>(())
    })
    .await?;
    Ok(ids)
}

/// Inserts products `from..to` in random categories, each with [`SEED_STOCK`] units.
pub async fn products(
    pool: &PgPool,
    tag: &str,
    from: usize,
    to: usize,
    categories: &[Uuid],
) -> Result<Vec<SeededProduct>, DomainError> {
    let now = Utc::now();
    let mut out = Vec::with_capacity(to - from);
    let mut cats = Vec::with_capacity(to - from);
    {
        let mut rng = rand::thread_rng();
        for i in from..to {
            out.push(SeededProduct {
                id: Uuid::now_v7(),
                sku: format!("S{tag}-{i:07}"),
                name: format!("{} {i}", ADJECTIVES[i % ADJECTIVES.len()]),
                price_minor: rng.gen_range(100..100_000),
            });
            cats.push(
                *categories
                    .choose(&mut rng)
                    .ok_or_else(|| DomainError::Validation {
                        field: "categories",
                        message: "seed products need at least one category".into(),
                    })?,
            );
        }
    }
    let ids: Vec<Uuid> = out.iter().map(|p| p.id).collect();
    let skus: Vec<&str> = out.iter().map(|p| p.sku.as_str()).collect();
    let names: Vec<&str> = out.iter().map(|p| p.name.as_str()).collect();
    let prices: Vec<i64> = out.iter().map(|p| p.price_minor).collect();
    let mut events = Vec::with_capacity(out.len() * 2);
    for (p, cat) in out.iter().zip(&cats) {
        events.push(DomainEvent::ProductCreated {
            product_id: p.id,
            sku: p.sku.clone(),
            name: p.name.clone(),
            description: String::new(),
            category_id: *cat,
            price_minor: p.price_minor,
            status: "ACTIVE".into(),
            version: 1,
            created_at: now,
        });
        events.push(DomainEvent::InventoryRestocked {
            product_id: p.id,
            quantity: SEED_STOCK,
            stock: StockLevel {
                on_hand: SEED_STOCK,
                reserved: 0,
                version: 1,
            },
        });
    }
    let mut conn = pool.get().await?;
    conn.transaction(async |conn| {
        diesel::sql_query(
            "INSERT INTO products (id, sku, name, description, category_id, price_minor, status, version, created_at, updated_at) \
             SELECT id, sku, name, '', cat, price, 'ACTIVE', 1, $5, $5 \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $6::uuid[]) AS t(id, sku, name, price, cat)",
        )
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<Text>, _>(&skus)
        .bind::<Array<Text>, _>(&names)
        .bind::<Array<BigInt>, _>(&prices)
        .bind::<Timestamptz, _>(now)
        .bind::<Array<SqlUuid>, _>(&cats)
        .execute(conn)
        .await?;
        diesel::sql_query(
            "INSERT INTO inventory (product_id, on_hand, reserved, version) \
             SELECT id, $2, 0, 1 FROM unnest($1::uuid[]) AS t(id)",
        )
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Int4, _>(SEED_STOCK)
        .execute(conn)
        .await?;
        append(conn, &events).await?;
        Ok::<_, DomainError>(())
    })
    .await?;
    Ok(out)
}

/// Inserts customers `from..to` (emails `c<i>-<tag>@seed.till.dev`, no password).
pub async fn customers(
    pool: &PgPool,
    tag: &str,
    from: usize,
    to: usize,
) -> Result<Vec<SeededCustomer>, DomainError> {
    let out: Vec<SeededCustomer> = (from..to)
        .map(|i| SeededCustomer {
            id: Uuid::now_v7(),
            email: format!("c{i}-{tag}@seed.till.dev"),
            name: format!("Customer {i}"),
        })
        .collect();
    let ids: Vec<Uuid> = out.iter().map(|c| c.id).collect();
    let emails: Vec<&str> = out.iter().map(|c| c.email.as_str()).collect();
    let names: Vec<&str> = out.iter().map(|c| c.name.as_str()).collect();
    let events: Vec<DomainEvent> = out
        .iter()
        .map(|c| DomainEvent::CustomerRegistered {
            customer_id: c.id,
            email: c.email.clone(),
            name: c.name.clone(),
            role: "CUSTOMER".into(),
        })
        .collect();
    let mut conn = pool.get().await?;
    conn.transaction(async |conn| {
        diesel::sql_query(
            "INSERT INTO customers (id, email, name, role) \
             SELECT id, email, name, 'CUSTOMER' FROM unnest($1::uuid[], $2::text[], $3::text[]) AS t(id, email, name)",
        )
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<Text>, _>(&emails)
        .bind::<Array<Text>, _>(&names)
        .execute(conn)
        .await?;
        append(conn, &events).await?;
        Ok::<_, DomainError>(())
    })
    .await?;
    Ok(out)
}

/// Inserts `count` paid orders placed over the last 90 days by random customers for
/// 1-3 random products each; paid stock leaves `on_hand`.
pub async fn orders(
    pool: &PgPool,
    count: usize,
    customers: &[SeededCustomer],
    products: &[SeededProduct],
    currency: &str,
) -> Result<(), DomainError> {
    if customers.is_empty() || products.is_empty() {
        return Err(DomainError::Validation {
            field: "orders",
            message: "seed orders need customers and products".into(),
        });
    }
    let now = Utc::now();
    let mut order_ids = Vec::with_capacity(count);
    let mut order_customers = Vec::with_capacity(count);
    let mut totals = Vec::with_capacity(count);
    let mut placed: Vec<DateTime<Utc>> = Vec::with_capacity(count);
    let (mut l_order, mut l_no, mut l_product, mut l_qty, mut l_price) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut events = Vec::with_capacity(count * 2 + 16);
    let mut per_product: std::collections::BTreeMap<Uuid, i32> = Default::default();
    {
        let mut rng = rand::thread_rng();
        for _ in 0..count {
            let id = Uuid::now_v7();
            let c = &customers[rng.gen_range(0..customers.len())];
            let at = now - Duration::seconds(rng.gen_range(60..90 * 24 * 3600));
            let mut facts: Vec<OrderLineFact> = Vec::new();
            let n_lines = rng.gen_range(1..=3usize);
            for p in products.choose_multiple(&mut rng, n_lines) {
                let q = rng.gen_range(1..=3);
                facts.push(OrderLineFact {
                    product_id: p.id,
                    sku: p.sku.clone(),
                    name: p.name.clone(),
                    quantity: q,
                    unit_price_minor: p.price_minor,
                });
            }
            let total: i64 = facts
                .iter()
                .map(|f| f.unit_price_minor * i64::from(f.quantity))
                .sum();
            for (n, f) in facts.iter().enumerate() {
                l_order.push(id);
                l_no.push(n as i16 + 1);
                l_product.push(f.product_id);
                l_qty.push(f.quantity);
                l_price.push(f.unit_price_minor);
                *per_product.entry(f.product_id).or_default() += f.quantity;
            }
            events.push(DomainEvent::OrderPlaced {
                order_id: id,
                customer_id: c.id,
                customer_email: c.email.clone(),
                customer_name: c.name.clone(),
                lines: facts.clone(),
                total_minor: total,
                currency: currency.to_owned(),
                placed_at: at,
                version: 1,
            });
            events.push(DomainEvent::OrderStatusChanged {
                order_id: id,
                customer_id: c.id,
                from: "PENDING_PAYMENT".into(),
                to: "PAID".into(),
                lines: facts,
                total_minor: total,
                placed_at: at,
                at: at + Duration::seconds(30),
                version: 2,
            });
            order_ids.push(id);
            order_customers.push(c.id);
            totals.push(total);
            placed.push(at);
        }
    }
    let stock_ids: Vec<Uuid> = per_product.keys().copied().collect();
    let stock_qty: Vec<i32> = per_product.values().copied().collect();
    let mut conn = pool.get().await?;
    conn.transaction(async |conn| {
        diesel::sql_query(
            "INSERT INTO orders (id, customer_id, status, total_minor, currency, version, placed_at, updated_at) \
             SELECT id, cust, 'PAID', total, $5, 2, at, at + interval '30 seconds' \
             FROM unnest($1::uuid[], $2::uuid[], $3::int8[], $4::timestamptz[]) AS t(id, cust, total, at)",
        )
        .bind::<Array<SqlUuid>, _>(&order_ids)
        .bind::<Array<SqlUuid>, _>(&order_customers)
        .bind::<Array<BigInt>, _>(&totals)
        .bind::<Array<Timestamptz>, _>(&placed)
        .bind::<Text, _>(currency)
        .execute(conn)
        .await?;
        diesel::sql_query(
            "INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price_minor) \
             SELECT * FROM unnest($1::uuid[], $2::int2[], $3::uuid[], $4::int4[], $5::int8[])",
        )
        .bind::<Array<SqlUuid>, _>(&l_order)
        .bind::<Array<Int2>, _>(&l_no)
        .bind::<Array<SqlUuid>, _>(&l_product)
        .bind::<Array<Int4>, _>(&l_qty)
        .bind::<Array<BigInt>, _>(&l_price)
        .execute(conn)
        .await?;
        diesel::sql_query(
            "INSERT INTO order_status_history (order_id, seq, status, changed_at) \
             SELECT id, 1, 'PENDING_PAYMENT', at FROM unnest($1::uuid[], $2::timestamptz[]) AS t(id, at) \
             UNION ALL \
             SELECT id, 2, 'PAID', at + interval '30 seconds' FROM unnest($1::uuid[], $2::timestamptz[]) AS t(id, at)",
        )
        .bind::<Array<SqlUuid>, _>(&order_ids)
        .bind::<Array<Timestamptz>, _>(&placed)
        .execute(conn)
        .await?;
        let levels: Vec<StockRow> = diesel::sql_query(
            "UPDATE inventory i SET on_hand = i.on_hand - t.q, version = i.version + 1 \
             FROM unnest($1::uuid[], $2::int4[]) AS t(id, q) WHERE i.product_id = t.id \
             RETURNING i.product_id, i.on_hand, i.reserved, i.version, t.q",
        )
        .bind::<Array<SqlUuid>, _>(&stock_ids)
        .bind::<Array<Int4>, _>(&stock_qty)
        .load(conn)
        .await?;
        let mut all = events;
        all.extend(levels.into_iter().map(|r| DomainEvent::StockCommitted {
            product_id: r.product_id,
            // A bulk movement for many seeded orders at once.
            order_id: Uuid::nil(),
            quantity: r.q,
            stock: StockLevel {
                on_hand: r.on_hand,
                reserved: r.reserved,
                version: r.version,
            },
        }));
        append(conn, &all).await?;
        Ok::<_, DomainError>(())
    })
    .await
}

#[derive(diesel::QueryableByName)]
struct StockRow {
    #[diesel(sql_type = SqlUuid)]
    product_id: Uuid,
    #[diesel(sql_type = Int4)]
    on_hand: i32,
    #[diesel(sql_type = Int4)]
    reserved: i32,
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = Int4)]
    q: i32,
}

const ADJECTIVES: [&str; 12] = [
    "Sturdy Widget",
    "Bright Lamp",
    "Quiet Fan",
    "Soft Hoodie",
    "Bold Tee",
    "Crisp Speaker",
    "Swift Charger",
    "Warm Blanket",
    "Sharp Knife",
    "Smooth Mug",
    "Tiny Drone",
    "Grand Kettle",
];

/// Reclaims the dead rows a bulk load and its projection leave behind (every stock
/// event rewrites a product view row) and refreshes the planner's statistics, so the
/// first queries after a seed get the plans they will have in steady state instead of
/// waiting for autovacuum's next round.
pub async fn vacuum_analyze(pool: &PgPool) -> Result<(), DomainError> {
    let mut conn = pool.get().await?;
    diesel::sql_query("VACUUM (ANALYZE)")
        .execute(&mut conn)
        .await?;
    Ok(())
}
