//! Given/when/then tests of the command rules against a real PostgreSQL database.

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]

use diesel::prelude::*;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use till_domain::commands::{CommandContext, NewCustomer, NewProduct, ProductPatch};
use till_domain::db::testing::TestDb;
use till_domain::schema::{events, inventory};
use till_domain::types::*;
use till_domain::DomainError;

mod support;

use support::{line, World};

#[tokio::test]
async fn placing_an_order_reserves_every_line_and_appends_events() {
    // given
    let w = World::new().await;
    let a = w.product("A-1", 250, 10).await;
    let b = w.product("B-1", 1000, 3).await;
    let ann = w.customer("ann@example.com").await;
    let ctx = CommandContext::user(ann, Role::Customer);
    // when
    let placed = w
        .cmd
        .place_order(&ctx, ann, vec![line(a, 4), line(b, 1), line(a, 1)], &w.eur)
        .await
        .unwrap();
    // then
    assert_eq!(placed.value.total.minor(), 5 * 250 + 1000);
    assert_eq!(placed.value.lines.len(), 2, "repeated products are merged");
    assert_eq!(w.stock(a).await, (10, 5));
    assert_eq!(w.stock(b).await, (3, 1));
    assert_eq!(w.event_count("OrderPlaced").await, 1);
    assert_eq!(w.event_count("StockReserved").await, 2);
    assert_eq!(w.order_status(placed.value.id).await, "PENDING_PAYMENT");
}

#[tokio::test]
async fn an_order_that_cannot_be_filled_reserves_nothing_and_names_the_short_product() {
    let w = World::new().await;
    let a = w.product("A-2", 100, 10).await;
    let b = w.product("B-2", 100, 1).await;
    let ann = w.customer("ann2@example.com").await;
    let ctx = CommandContext::user(ann, Role::Customer);

    let err = w
        .cmd
        .place_order(&ctx, ann, vec![line(a, 5), line(b, 2)], &w.eur)
        .await
        .err();

    match err {
        Some(DomainError::OutOfStock {
            sku,
            requested,
            available,
            ..
        }) => {
            assert_eq!((sku.as_str(), requested, available), ("B-2", 2, 1));
        }
        other => panic!("expected OutOfStock, got {other:?}"),
    }
    assert_eq!(
        w.stock(a).await,
        (10, 0),
        "the first line's reservation rolled back"
    );
    assert_eq!(w.event_count("OrderPlaced").await, 0);
}

#[tokio::test]
async fn cancelling_releases_stock_and_only_the_owner_may_cancel() {
    let w = World::new().await;
    let a = w.product("A-3", 100, 5).await;
    let ann = w.customer("ann3@example.com").await;
    let bob = w.customer("bob3@example.com").await;
    let placed = w.order(ann, vec![line(a, 2)]).await;

    let by_bob = w
        .cmd
        .cancel_order(&CommandContext::user(bob, Role::Customer), placed.value.id)
        .await;
    assert!(
        matches!(by_bob, Err(DomainError::NotFound { .. })),
        "{by_bob:?}"
    );

    w.cmd
        .cancel_order(&CommandContext::user(ann, Role::Customer), placed.value.id)
        .await
        .unwrap();
    assert_eq!(w.stock(a).await, (5, 0));
    assert_eq!(w.order_status(placed.value.id).await, "CANCELLED");

    let again = w
        .cmd
        .cancel_order(&CommandContext::user(ann, Role::Customer), placed.value.id)
        .await;
    assert!(
        matches!(again, Err(DomainError::InvalidState(_))),
        "{again:?}"
    );
}

#[tokio::test]
async fn payment_moves_reserved_stock_out_and_shipping_needs_payment() {
    let w = World::new().await;
    let a = w.product("A-4", 100, 5).await;
    let ann = w.customer("ann4@example.com").await;
    let placed = w.order(ann, vec![line(a, 2)]).await;
    let id = placed.value.id;

    let early = w.cmd.ship_order(&w.staff, id).await;
    assert!(
        matches!(early, Err(DomainError::InvalidState(_))),
        "{early:?}"
    );

    let as_customer = w
        .cmd
        .ship_order(&CommandContext::user(ann, Role::Customer), id)
        .await;
    assert!(
        matches!(as_customer, Err(DomainError::Forbidden(_))),
        "{as_customer:?}"
    );

    w.cmd.mark_paid(&w.staff, id).await.unwrap();
    assert_eq!(w.stock(a).await, (3, 0));
    w.cmd.ship_order(&w.staff, id).await.unwrap();
    assert_eq!(w.order_status(id).await, "SHIPPED");
}

#[tokio::test]
async fn updating_with_a_stale_version_is_a_conflict() {
    let w = World::new().await;
    let a = w.product("A-5", 100, 0).await;
    let patch = ProductPatch {
        price: Some(Money::price(120).unwrap()),
        ..ProductPatch::default()
    };
    w.cmd
        .update_product(&w.staff, a, Some(1), patch.clone())
        .await
        .unwrap();
    let stale = w.cmd.update_product(&w.staff, a, Some(1), patch).await;
    assert!(matches!(stale, Err(DomainError::Conflict(_))), "{stale:?}");
}

#[tokio::test]
async fn duplicates_are_conflicts() {
    let w = World::new().await;
    w.product("DUP-1", 100, 0).await;
    let cat = w.category("other").await;
    let again = w
        .cmd
        .create_product(
            &w.staff,
            NewProduct {
                sku: Sku::parse("DUP-1").unwrap(),
                name: Name::parse("name", "x").unwrap(),
                description: Description::default(),
                category: cat,
                price: Money::price(1).unwrap(),
                status: ProductStatus::Active,
                initial_stock: None,
            },
        )
        .await;
    assert!(matches!(again, Err(DomainError::Conflict(_))), "{again:?}");

    w.customer("Case@Example.com").await;
    let email_again = w
        .cmd
        .create_customer(
            &w.staff,
            NewCustomer {
                email: Email::parse("case@example.COM").unwrap(),
                name: Name::parse("name", "x").unwrap(),
                role: Role::Customer,
                password_hash: None,
            },
        )
        .await;
    assert!(
        matches!(email_again, Err(DomainError::Conflict(_))),
        "{email_again:?}"
    );
}

#[tokio::test]
async fn adjustments_cannot_undercut_reservations_and_customers_cannot_restock() {
    let w = World::new().await;
    let a = w.product("A-6", 100, 5).await;
    let ann = w.customer("ann6@example.com").await;
    w.order(ann, vec![line(a, 4)]).await;
    let cut = w
        .cmd
        .adjust_inventory(&w.staff, a, StockDelta::adjustment(-2).unwrap(), "damaged")
        .await;
    assert!(matches!(cut, Err(DomainError::InvalidState(_))), "{cut:?}");
    let by_customer = w
        .cmd
        .restock(
            &CommandContext::user(ann, Role::Customer),
            a,
            StockDelta::restock(5).unwrap(),
        )
        .await;
    assert!(
        matches!(by_customer, Err(DomainError::Forbidden(_))),
        "{by_customer:?}"
    );
    assert_eq!(w.stock(a).await, (5, 4));
}

/// 200 buyers race for 50 units: exactly 50 orders succeed, the rest are told
/// OUT_OF_STOCK, and stock ends at zero available.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_orders_never_oversell() {
    let w = World::new().await;
    let a = w.product("HOT-1", 999, 50).await;
    let ann = w.customer("crowd@example.com").await;
    let mut ok = 0;
    let mut out = 0;
    for result in w.race(ann, 200, |_| vec![line(a, 1)]).await {
        match result {
            Ok(()) => ok += 1,
            Err(DomainError::OutOfStock { .. }) => out += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!((ok, out), (50, 150));
    assert_eq!(w.stock(a).await, (50, 50));
    assert_eq!(w.event_count("OrderPlaced").await, 50);
}

/// Orders over the same two products, half of them listing the lines in the opposite
/// order, race each other: nobody deadlocks or oversells, and the stock levels the
/// StockReserved events report (computed from the locked rows) are each level from 1 to
/// the final reservation exactly once, as if the reservations ran one after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_two_line_orders_neither_deadlock_nor_oversell_and_report_every_level() {
    let w = World::new().await;
    let a = w.product("PAIR-A", 100, 60).await;
    let b = w.product("PAIR-B", 100, 1000).await;
    let ann = w.customer("pairs@example.com").await;
    let lines = |i: usize| {
        if i % 2 == 0 {
            vec![line(a, 1), line(b, 2)]
        } else {
            vec![line(b, 2), line(a, 1)]
        }
    };
    let (mut ok, mut out) = (0, 0);
    for result in w.race(ann, 120, lines).await {
        match result {
            Ok(()) => ok += 1,
            Err(DomainError::OutOfStock { sku, .. }) => {
                assert_eq!(sku, "PAIR-A");
                out += 1
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!((ok, out), (60, 60));
    assert_eq!(w.stock(a).await, (60, 60));
    assert_eq!(w.stock(b).await, (1000, 120));
    let mut conn = w.db.pool.get().await.unwrap();
    for (p, step) in [(a, 1), (b, 2)] {
        let mut levels: Vec<i64> = events::table
            .filter(events::event_type.eq("StockReserved"))
            .filter(events::stream_id.eq(p.0))
            .select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "(payload->'stock'->>'reserved')::bigint",
            ))
            .load(&mut conn)
            .await
            .unwrap();
        levels.sort_unstable();
        let expected: Vec<i64> = (1..=60).map(|n| n * step).collect();
        assert_eq!(levels, expected, "reported levels of {p:?}");
    }
}

/// Holds `units` of `p` reserved in a transaction left open on a connection of its own,
/// and waits until a command's statement queues behind its row lock (another session
/// waiting for a lock).
struct Blocker {
    conn: till_domain::db::PooledConn<'static>,
}

impl Blocker {
    async fn reserve(w: &World, p: ProductId, units: i32) -> Self {
        let mut conn = w.db.pool.get_owned().await.unwrap();
        conn.batch_execute(&format!(
            "BEGIN; UPDATE inventory SET reserved = reserved + {units}, version = version + 1 \
             WHERE product_id = '{}'",
            p.0
        ))
        .await
        .unwrap();
        Self { conn }
    }

    /// Waits until a statement queues behind the held row lock; `order` is the
    /// command expected to queue there (it must not finish first). Looks from another
    /// connection: inside the held transaction, `pg_stat_activity` would be read once
    /// and kept.
    async fn wait_for_a_waiter<T: std::fmt::Debug>(
        &self,
        w: &World,
        order: &mut tokio::task::JoinHandle<T>,
    ) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let mut conn = w.db.pool.get().await.unwrap();
            let waiting: i64 = diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .get_result(&mut conn)
            .await
            .unwrap();
            drop(conn);
            if waiting > 0 {
                return;
            }
            if order.is_finished() {
                let result = order.await;
                panic!("the order finished without queueing behind the row: {result:?}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no statement queued behind the held row lock"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    async fn commit(mut self) {
        self.conn.batch_execute("COMMIT").await.unwrap();
    }
}

/// Stock that another order takes between an order's read and its reservation: the
/// order reserves on top of the new level (when it still fits) and its StockReserved
/// event reports the level the reservation left, not the one it read; when it no
/// longer fits, the database refuses the oversell and the order is told OUT_OF_STOCK
/// with the level as it now is, writing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_taken_between_an_orders_read_and_its_reservation_is_counted() {
    let w = World::new().await;
    let a = w.product("RACE-1", 100, 10).await;
    let ann = w.customer("race@example.com").await;
    let ctx = CommandContext::user(ann, Role::Customer);
    let place = |q: i64| {
        let (cmd, ctx, eur) = (w.cmd.clone(), ctx.clone(), w.eur.clone());
        tokio::spawn(async move { cmd.place_order(&ctx, ann, vec![line(a, q)], &eur).await })
    };

    // given 3 of 10 units held by a transaction still open
    let other = Blocker::reserve(&w, a, 3).await;
    // when an order of 2 reads 10 available, then queues behind the held row
    let mut order = place(2);
    other.wait_for_a_waiter(&w, &mut order).await;
    other.commit().await;
    // then it reserves on top of the 3
    let placed = order.await.unwrap().unwrap();
    assert_eq!(w.stock(a).await, (10, 5));
    let mut conn = w.db.pool.get().await.unwrap();
    let reported: (i64, i64, i64) = events::table
        .filter(events::event_type.eq("StockReserved"))
        .filter(events::stream_id.eq(a.0))
        .select(diesel::dsl::sql::<(
            diesel::sql_types::BigInt,
            diesel::sql_types::BigInt,
            diesel::sql_types::BigInt,
        )>(
            "(payload->'stock'->>'onHand')::bigint, (payload->'stock'->>'reserved')::bigint, \
             (payload->'stock'->>'version')::bigint",
        ))
        .first(&mut conn)
        .await
        .unwrap();
    let version: i64 = inventory::table
        .find(a.0)
        .select(inventory::version)
        .first(&mut conn)
        .await
        .unwrap();
    assert_eq!(reported, (10, 5, version), "the level the reservation left");
    drop(conn);
    assert_eq!(placed.value.lines.len(), 1);

    // given 4 of the 5 units left held by a transaction still open
    let other = Blocker::reserve(&w, a, 4).await;
    // when an order of 3 reads 5 available, then queues behind the held row
    let mut order = place(3);
    other.wait_for_a_waiter(&w, &mut order).await;
    other.commit().await;
    // then the oversell is refused and the order told what is left
    match order.await.unwrap() {
        Err(DomainError::OutOfStock {
            sku,
            requested,
            available,
            ..
        }) => assert_eq!((sku.as_str(), requested, available), ("RACE-1", 3, 1)),
        other => panic!("expected OutOfStock, got {other:?}"),
    }
    assert_eq!(w.stock(a).await, (10, 9));
    assert_eq!(w.event_count("OrderPlaced").await, 1, "nothing of it stays");
}

#[tokio::test]
async fn orders_for_unknown_products_or_customers_are_not_found() {
    let w = World::new().await;
    let a = w.product("KNOWN-1", 100, 5).await;
    let ann = w.customer("known@example.com").await;
    let ghost = ProductId(uuid::Uuid::now_v7());
    let nobody = CustomerId(uuid::Uuid::now_v7());
    let ctx = CommandContext::user(ann, Role::Customer);
    for (who, lines, entity) in [
        (ann, vec![line(a, 1), line(ghost, 1)], "product"),
        (ann, vec![line(ghost, 1)], "product"),
        (nobody, vec![line(a, 1)], "customer"),
    ] {
        let ctx = if who == ann {
            ctx.clone()
        } else {
            w.staff.clone()
        };
        match w.cmd.place_order(&ctx, who, lines, &w.eur).await {
            Err(DomainError::NotFound { entity: e, .. }) => assert_eq!(e, entity),
            other => panic!("expected NotFound {entity}, got {other:?}"),
        }
    }
    assert_eq!(w.stock(a).await, (5, 0), "nothing stays reserved");
}

#[tokio::test]
async fn expired_idempotency_keys_are_purged_and_live_ones_kept() {
    let w = World::new().await;
    let mut conn = w.db.pool.get().await.unwrap();
    diesel::sql_query(
        "INSERT INTO idempotency_keys (principal, key, fingerprint, expires_at) VALUES \
         ('user:a', 'old-1', 'f', now() - interval '1 hour'), \
         ('user:a', 'old-2', 'f', now() - interval '1 minute'), \
         ('user:a', 'live', 'f', now() + interval '1 hour')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);
    let purged = till_domain::idempotency::purge_expired(&w.db.pool, 1)
        .await
        .unwrap();
    assert_eq!(purged, 1, "bounded by the limit");
    let purged = till_domain::idempotency::purge_expired(&w.db.pool, 100)
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let live = till_domain::idempotency::lookup(&w.db.pool, "user:a", "live")
        .await
        .unwrap();
    assert!(live.is_some());
    let old = till_domain::idempotency::lookup(&w.db.pool, "user:a", "old-1")
        .await
        .unwrap();
    assert!(old.is_none());
}

#[derive(diesel::QueryableByName)]
struct PlanCounts {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    generic: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    custom: i64,
}

/// placeOrder's two statements are planned once per connection. Left to choose,
/// PostgreSQL planned them again on every run (its generic estimate for the array of
/// product ids is above the custom plans' average), which took longer than running them.
#[tokio::test]
async fn place_order_statements_are_planned_once_per_connection() {
    // (one transaction per order: `order_batches.rs` checks the batches' statements)
    // given one connection, so every order runs the same prepared statements
    let mut w = World::on(TestDb::with_pool_size(1).await);
    w.cmd = w
        .cmd
        .clone()
        .with_order_batching(till_domain::commands::OrderBatching::off());
    let a = w.product("PLAN-A", 100, 100).await;
    let b = w.product("PLAN-B", 200, 100).await;
    let ann = w.customer("plans@example.com").await;
    let ctx = CommandContext::user(ann, Role::Customer);
    // when
    for _ in 0..8 {
        w.cmd
            .place_order(&ctx, ann, vec![line(a, 1), line(b, 1)], &w.eur)
            .await
            .unwrap();
    }
    // then
    let mut conn = w.db.pool.get().await.unwrap();
    let counts: Vec<PlanCounts> = diesel::sql_query(
        "SELECT generic_plans AS generic, custom_plans AS custom FROM pg_prepared_statements \
         WHERE statement LIKE 'SELECT c.email AS customer_email%' \
            OR statement LIKE 'WITH locked AS%'",
    )
    .load(&mut conn)
    .await
    .unwrap();
    assert_eq!(counts.len(), 2, "both statements are kept prepared");
    for c in counts {
        assert_eq!(c.custom, 0, "never planned for its parameters");
        assert_eq!(c.generic, 8, "the one generic plan ran for every order");
    }
}
