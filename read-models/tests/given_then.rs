//! Each projection on its own, in the manner of cqrs-es's aggregate tests: given these
//! events, then these rows. The events are made in memory and applied with
//! `Projection::apply_batch` on a migrated database, so each test says exactly what a
//! projection makes of the events it is given, without the write side, the log or the
//! projector around it (those are tested end to end in `projections.rs`).

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]

mod common;

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use till_domain::db::testing::TestDb;
use till_domain::events::{DomainEvent, OrderLineFact, StockLevel, StoredEvent};
use till_read_models::schema::{
    rm_categories, rm_customer_summary, rm_order_view, rm_product_sales, rm_product_view,
    rm_sales_daily,
};
use till_read_models::{Change, Projection};
use uuid::Uuid;

use common::ok;

/// Applies `events` to `projection` in one batch, in the order given; the changes it
/// reports.
async fn given(db: &TestDb, projection: Projection, events: Vec<DomainEvent>) -> Vec<Change> {
    let stored: Vec<StoredEvent> = events
        .into_iter()
        .zip(1..)
        .map(|(event, position)| StoredEvent {
            position,
            tx_id: position,
            event,
            actor: "system:test".into(),
            correlation_id: Uuid::now_v7(),
            occurred_at: Utc::now(),
        })
        .collect();
    let conn = ok(db.pool.get().await);
    let mut changes = Vec::new();
    ok(projection.apply_batch(&conn, &stored, &mut changes).await);
    changes
}

/// `N` fresh ids.
fn ids<const N: usize>() -> [Uuid; N] {
    std::array::from_fn(|_| Uuid::now_v7())
}

/// A category `shirts` with one active product `tee` in it, at 15.00.
fn catalog(shirts: Uuid, tee: Uuid) -> [DomainEvent; 2] {
    [
        DomainEvent::CategoryCreated {
            category_id: shirts,
            slug: "shirts".into(),
            name: "Shirts".into(),
            parent_id: None,
        },
        DomainEvent::ProductCreated {
            product_id: tee,
            sku: "TEE-1".into(),
            name: "Tee".into(),
            description: "Cotton".into(),
            category_id: shirts,
            price_minor: 1500,
            status: "ACTIVE".into(),
            version: 1,
            created_at: Utc::now(),
        },
    ]
}

fn level(on_hand: i32, reserved: i32, version: i64) -> StockLevel {
    StockLevel {
        on_hand,
        reserved,
        version,
    }
}

fn line(product: Uuid, quantity: i32, unit_price_minor: i64) -> OrderLineFact {
    OrderLineFact {
        product_id: product,
        sku: "TEE-1".into(),
        name: "Tee".into(),
        quantity,
        unit_price_minor,
    }
}

fn placed(
    order: Uuid,
    customer: Uuid,
    lines: Vec<OrderLineFact>,
    at: DateTime<Utc>,
) -> DomainEvent {
    DomainEvent::OrderPlaced {
        order_id: order,
        customer_id: customer,
        customer_email: "ann@example.com".into(),
        customer_name: "Ann".into(),
        total_minor: lines
            .iter()
            .map(|l| i64::from(l.quantity) * l.unit_price_minor)
            .sum(),
        lines,
        currency: "EUR".into(),
        placed_at: at,
        version: 1,
    }
}

fn moved(
    order: Uuid,
    customer: Uuid,
    from: &str,
    to: &str,
    lines: Vec<OrderLineFact>,
    placed_at: DateTime<Utc>,
    version: i32,
) -> DomainEvent {
    DomainEvent::OrderStatusChanged {
        order_id: order,
        customer_id: customer,
        from: from.into(),
        to: to.into(),
        total_minor: lines
            .iter()
            .map(|l| i64::from(l.quantity) * l.unit_price_minor)
            .sum(),
        lines,
        placed_at,
        at: placed_at + Duration::seconds(i64::from(version)),
        version,
    }
}

#[tokio::test]
async fn product_view_given_a_catalog_and_stock_then_rows_with_path_stock_and_popularity() {
    let db = TestDb::new().await;
    let [shirts, tee, order, ann] = ids();
    let at = Utc::now();
    let changes = given(
        &db,
        Projection::ProductView,
        [
            catalog(shirts, tee).as_slice(),
            &[
                DomainEvent::InventoryRestocked {
                    product_id: tee,
                    quantity: 10,
                    stock: level(10, 0, 1),
                },
                placed(order, ann, vec![line(tee, 2, 1500)], at),
                DomainEvent::StockReserved {
                    product_id: tee,
                    order_id: order,
                    quantity: 2,
                    stock: level(10, 2, 2),
                },
            ],
        ]
        .concat(),
    )
    .await;
    assert!(changes.contains(&Change::Categories));
    assert!(changes.contains(&Change::Product(tee)));
    assert!(changes.contains(&Change::Listing));

    let mut conn = ok(db.pool.get().await);
    let category: String = ok(rm_categories::table
        .find(shirts)
        .select(rm_categories::name)
        .first(&mut conn)
        .await);
    assert_eq!(category, "Shirts");
    let (name, price, on_hand, reserved, available, popularity, path): (
        String,
        i64,
        i32,
        i32,
        i32,
        i64,
        serde_json::Value,
    ) = ok(rm_product_view::table
        .find(tee)
        .select((
            rm_product_view::name,
            rm_product_view::price_minor,
            rm_product_view::on_hand,
            rm_product_view::reserved,
            rm_product_view::available,
            rm_product_view::popularity,
            rm_product_view::category_path,
        ))
        .first(&mut conn)
        .await);
    assert_eq!((name.as_str(), price), ("Tee", 1500));
    assert_eq!((on_hand, reserved, available), (10, 2, 8));
    assert_eq!(popularity, 2, "units ordered");
    assert!(path.to_string().contains("Shirts"), "category path: {path}");

    // Then the order is cancelled: its units are available again and no longer count.
    given(
        &db,
        Projection::ProductView,
        vec![
            moved(
                order,
                ann,
                "PENDING_PAYMENT",
                "CANCELLED",
                vec![line(tee, 2, 1500)],
                at,
                2,
            ),
            DomainEvent::StockReleased {
                product_id: tee,
                order_id: order,
                quantity: 2,
                stock: level(10, 0, 3),
            },
        ],
    )
    .await;
    let (available, popularity): (i32, i64) = ok(rm_product_view::table
        .find(tee)
        .select((rm_product_view::available, rm_product_view::popularity))
        .first(&mut conn)
        .await);
    assert_eq!((available, popularity), (10, 0));
}

#[tokio::test]
async fn product_view_given_an_older_stock_level_after_a_newer_one_then_the_newer_stands() {
    let db = TestDb::new().await;
    let [shirts, tee] = ids();
    given(
        &db,
        Projection::ProductView,
        [
            catalog(shirts, tee).as_slice(),
            &[
                DomainEvent::InventoryRestocked {
                    product_id: tee,
                    quantity: 5,
                    stock: level(5, 0, 2),
                },
                // A level from before the one above (its version is lower).
                DomainEvent::InventoryRestocked {
                    product_id: tee,
                    quantity: 3,
                    stock: level(3, 0, 1),
                },
            ],
        ]
        .concat(),
    )
    .await;
    let mut conn = ok(db.pool.get().await);
    let (on_hand, version): (i32, i64) = ok(rm_product_view::table
        .find(tee)
        .select((rm_product_view::on_hand, rm_product_view::inventory_version))
        .first(&mut conn)
        .await);
    assert_eq!((on_hand, version), (5, 2));
}

#[tokio::test]
async fn order_view_given_a_placed_then_paid_order_then_its_status_and_history() {
    let db = TestDb::new().await;
    let [order, ann, tee] = ids();
    let at = Utc::now();
    let lines = vec![line(tee, 2, 1500)];
    let changes = given(
        &db,
        Projection::OrderView,
        vec![
            placed(order, ann, lines.clone(), at),
            moved(order, ann, "PENDING_PAYMENT", "PAID", lines, at, 2),
        ],
    )
    .await;
    assert!(changes.contains(&Change::Order {
        order,
        customer: ann
    }));
    let mut conn = ok(db.pool.get().await);
    let (status, total, version, history, row_lines): (
        String,
        i64,
        i32,
        serde_json::Value,
        serde_json::Value,
    ) = ok(rm_order_view::table
        .find(order)
        .select((
            rm_order_view::status,
            rm_order_view::total_minor,
            rm_order_view::version,
            rm_order_view::status_history,
            rm_order_view::lines,
        ))
        .first(&mut conn)
        .await);
    assert_eq!((status.as_str(), total, version), ("PAID", 3000, 2));
    let statuses: Vec<&str> = history
        .as_array()
        .map(|h| h.iter().filter_map(|e| e["status"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(statuses, ["PENDING_PAYMENT", "PAID"]);
    assert_eq!(row_lines.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn customer_summary_given_orders_and_a_cancellation_then_counts_spend_and_last_order() {
    let db = TestDb::new().await;
    let [ann, first, second, tee] = ids();
    let at = Utc::now();
    let later = at + Duration::minutes(5);
    let changes = given(
        &db,
        Projection::CustomerSummary,
        vec![
            DomainEvent::CustomerRegistered {
                customer_id: ann,
                email: "ann@example.com".into(),
                name: "Ann".into(),
                role: "CUSTOMER".into(),
            },
            placed(first, ann, vec![line(tee, 2, 1500)], at),
            placed(second, ann, vec![line(tee, 1, 1000)], later),
            moved(
                second,
                ann,
                "PENDING_PAYMENT",
                "CANCELLED",
                vec![line(tee, 1, 1000)],
                later,
                2,
            ),
        ],
    )
    .await;
    assert!(changes.contains(&Change::Customer(ann)));
    let mut conn = ok(db.pool.get().await);
    let (orders, spend, last): (i64, i64, Option<Uuid>) = ok(rm_customer_summary::table
        .find(ann)
        .select((
            rm_customer_summary::orders_count,
            rm_customer_summary::lifetime_spend_minor,
            rm_customer_summary::last_order_id,
        ))
        .first(&mut conn)
        .await);
    assert_eq!(orders, 2, "orders placed, cancelled ones included");
    assert_eq!(spend, 3000, "the cancelled order's total is given back");
    assert_eq!(last, Some(second));
}

#[tokio::test]
async fn sales_given_orders_and_an_expiry_then_days_and_products_net_of_it() {
    let db = TestDb::new().await;
    let [ann, kept, expired, tee] = ids();
    let at = Utc::now();
    let changes = given(
        &db,
        Projection::Sales,
        vec![
            placed(kept, ann, vec![line(tee, 2, 1500)], at),
            placed(expired, ann, vec![line(tee, 1, 1500)], at),
            moved(
                expired,
                ann,
                "PENDING_PAYMENT",
                "EXPIRED",
                vec![line(tee, 1, 1500)],
                at,
                2,
            ),
        ],
    )
    .await;
    assert_eq!(changes, [Change::Sales]);
    let mut conn = ok(db.pool.get().await);
    let (orders, units, revenue): (i64, i64, i64) = ok(rm_sales_daily::table
        .find(at.date_naive())
        .select((
            rm_sales_daily::orders_count,
            rm_sales_daily::units,
            rm_sales_daily::revenue_minor,
        ))
        .first(&mut conn)
        .await);
    assert_eq!((orders, units, revenue), (1, 2, 3000));
    let (units, revenue): (i64, i64) = ok(rm_product_sales::table
        .find(tee)
        .select((rm_product_sales::units, rm_product_sales::revenue_minor))
        .first(&mut conn)
        .await);
    assert_eq!((units, revenue), (2, 3000));
}
