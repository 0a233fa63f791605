//! Payments and the log's order against a real PostgreSQL database: a payment and its
//! order never disagree (the database refuses the commit), nothing else moves an order
//! whose capture is in flight, a capture given up releases the stock, money captured
//! for an order that can no longer be paid is refunded, and a keyed command that waited
//! for another sorts after it in the log.

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use till_domain::commands::{CommandContext, PaymentStatus, Settlement, PAYMENTS_QUEUE};
use till_domain::idempotency::IdempotencyClaim;
use till_domain::jobs;
use till_domain::schema::{events, payments};
use till_domain::types::*;
use till_domain::DomainError;

mod support;

use support::{line, World};

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// An order of 2 units of a product with 5 in stock, with its payment requested.
async fn paying(w: &World, sku: &str) -> (ProductId, CustomerId, OrderId) {
    let p = w.product(sku, 700, 5).await;
    let ann = w
        .customer(&format!("{}@example.com", sku.to_lowercase()))
        .await;
    let ctx = CommandContext::user(ann, Role::Customer);
    let order = ok(w.cmd.place_order(&ctx, ann, vec![line(p, 2)], &w.eur).await)
        .value
        .id;
    ok(w.cmd.request_payment(&ctx, order, "tok_ok", 3).await);
    (p, ann, order)
}

async fn payment(w: &World, order: OrderId) -> (String, Option<String>) {
    let mut conn = ok(w.db.pool.get().await);
    ok(payments::table
        .find(order.0)
        .select((payments::status, payments::charge_id))
        .first(&mut conn)
        .await)
}

/// The statuses an order's events moved it to, in the log's order.
async fn log_statuses(w: &World, order: OrderId) -> Vec<String> {
    let mut conn = ok(w.db.pool.get().await);
    let rows: Vec<serde_json::Value> = ok(events::table
        .filter(events::stream_id.eq(order.0))
        .filter(events::event_type.eq("OrderStatusChanged"))
        .order((events::tx_id.asc(), events::position.asc()))
        .select(events::payload)
        .load(&mut conn)
        .await);
    rows.iter()
        .map(|p| p["to"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn the_database_refuses_a_commit_where_a_payment_and_its_order_disagree() {
    let w = World::new().await;
    let (_, _, order) = paying(&w, "DIS-1").await;
    let mut conn = ok(w.db.pool.get().await);
    for status in ["PAID", "CANCELLED", "EXPIRED"] {
        let moved = conn
            .batch_execute(&format!(
                "UPDATE orders SET status = '{status}' WHERE id = '{}'",
                order.0
            ))
            .await;
        let err = moved.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("while the order is"),
            "{status} with a pending payment committed: {err:?}"
        );
    }
    // The two together commit, whichever is written first.
    ok(conn
        .batch_execute(&format!(
            "BEGIN; UPDATE payments SET status = 'captured', charge_id = 'ch' WHERE order_id = '{0}'; \
             UPDATE orders SET status = 'PAID' WHERE id = '{0}'; COMMIT",
            order.0
        ))
        .await);
    let captured_but_cancelled = conn
        .batch_execute(&format!(
            "UPDATE orders SET status = 'CANCELLED' WHERE id = '{}'",
            order.0
        ))
        .await;
    assert!(
        captured_but_cancelled.is_err(),
        "captured money on a cancelled order"
    );
}

#[tokio::test]
async fn nothing_but_its_settlement_moves_an_order_whose_capture_is_in_flight() {
    let w = World::new().await;
    let (p, ann, order) = paying(&w, "FLY-1").await;
    let cancel = w
        .cmd
        .cancel_order(&CommandContext::user(ann, Role::Customer), order)
        .await;
    match cancel {
        Err(DomainError::InvalidState(m)) => assert!(m.contains("payment in progress"), "{m}"),
        other => panic!("a cancel during the capture: {other:?}"),
    }
    let by_staff = w.cmd.mark_paid(&w.staff, order).await;
    assert!(
        matches!(by_staff, Err(DomainError::InvalidState(_))),
        "{by_staff:?}"
    );
    assert_eq!(
        ok(w.cmd.expire_unpaid_orders(Duration::ZERO, 10).await),
        0,
        "expiry leaves it"
    );
    assert_eq!(w.stock(p).await, (5, 2), "still reserved");

    // The capture settles it, in one transaction with the payment row.
    let settled = ok(w
        .cmd
        .settle_payment(
            order,
            Settlement::Captured {
                charge_id: "ch_1".into(),
            },
        )
        .await);
    assert!(settled.is_some());
    assert_eq!(w.order_status(order).await, "PAID");
    assert_eq!(
        payment(&w, order).await,
        ("captured".into(), Some("ch_1".into()))
    );
    assert_eq!(w.stock(p).await, (3, 0));
    // The same settlement again (the webhook after the job) changes nothing.
    let again = ok(w
        .cmd
        .settle_payment(
            order,
            Settlement::Captured {
                charge_id: "ch_1".into(),
            },
        )
        .await);
    assert!(again.is_none());
    assert_eq!(log_statuses(&w, order).await, ["PAID"]);
}

#[tokio::test]
async fn a_capture_given_up_fails_the_payment_releases_the_stock_and_cannot_be_redriven() {
    let w = World::new().await;
    let (p, _, order) = paying(&w, "DIE-1").await;
    // Its job dies for good.
    let job = ok(jobs::claim(&w.db.pool, PAYMENTS_QUEUE, 1, Duration::from_secs(30), "w").await)
        .remove(0);
    assert!(ok(w.cmd.give_up_payment(order, "provider refused (400)").await).is_some());
    ok(jobs::fail(
        &w.db.pool,
        &job,
        "w",
        "provider refused (400)",
        true,
        jobs::Backoff {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(1),
        },
    )
    .await);

    assert_eq!(w.order_status(order).await, "PAYMENT_FAILED");
    assert_eq!(payment(&w, order).await.0, "failed");
    assert_eq!(w.stock(p).await, (5, 0), "the stock is released");
    assert!(
        ok(w.cmd.give_up_payment(order, "again").await).is_none(),
        "giving up twice is a no-op"
    );
    // Staff redriving the dead letter are told why not.
    match w.cmd.retry_dead_letter(job.id).await {
        Err(DomainError::InvalidState(m)) => assert!(m.contains("given up"), "{m}"),
        other => panic!("a redrive of a given-up capture: {other:?}"),
    }
    assert_eq!(
        ok(jobs::dead_letters(&w.db.pool, Some(PAYMENTS_QUEUE), None, 10).await).len(),
        1,
        "the dead letter stays for staff to discard"
    );
}

#[tokio::test]
async fn money_captured_for_an_order_that_can_no_longer_be_paid_is_refunded_once() {
    let w = World::new().await;
    let (p, _, order) = paying(&w, "LATE-1").await;
    // The provider's decline webhook arrives first...
    ok(w.cmd
        .settle_payment(
            order,
            Settlement::Declined {
                reason: "card_declined".into(),
            },
        )
        .await);
    assert_eq!(w.stock(p).await, (5, 0));
    // ...then the capture that was in flight succeeds.
    let late = ok(w
        .cmd
        .settle_payment(
            order,
            Settlement::Captured {
                charge_id: "ch_late".into(),
            },
        )
        .await);
    assert!(late.is_some(), "the late capture is recorded");
    assert_eq!(w.order_status(order).await, "PAYMENT_FAILED");
    assert_eq!(
        payment(&w, order).await,
        ("refunding".into(), Some("ch_late".into()))
    );
    assert_eq!(w.event_count("PaymentRefundRequested").await, 1);
    let refund = ok(w.cmd.payment_to_refund(order).await);
    assert_eq!(
        refund.map(|r| (r.charge_id, r.amount_minor)),
        Some(("ch_late".to_owned(), 1400))
    );
    let queued = ok(jobs::claim(&w.db.pool, "refunds", 5, Duration::from_secs(30), "w").await);
    assert_eq!(queued.len(), 1, "one refund job");
    // The capture confirmed twice still refunds once.
    assert!(ok(w
        .cmd
        .settle_payment(
            order,
            Settlement::Captured {
                charge_id: "ch_late".into(),
            },
        )
        .await)
    .is_none());
    assert!(ok(w.cmd.record_refund(order, "re_1").await).is_some());
    assert!(ok(w.cmd.record_refund(order, "re_1").await).is_none());
    assert_eq!(payment(&w, order).await.0, "refunded");
    assert!(ok(w.cmd.payment_to_refund(order).await).is_none());
    assert_eq!(w.event_count("PaymentRefunded").await, 1);
    assert_eq!(
        PaymentStatus::from_db("refunded").ok(),
        Some(PaymentStatus::Refunded)
    );
}

/// How many sessions of this database wait for a lock.
async fn lock_waiters(w: &World) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = ok(w.db.pool.get().await);
    ok(diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .get_result::<N>(&mut conn)
    .await)
    .n
}

async fn wait_for_waiters(w: &World, n: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lock_waiters(w).await < n {
        assert!(std::time::Instant::now() < deadline, "never {n} waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A keyed `shipOrder` that starts while the order is locked and goes on after the
/// payment it depends on committed: its events sort after the PAID ones, so the
/// projections see PAID, then SHIPPED.
#[tokio::test]
async fn a_keyed_command_sorts_after_the_transaction_it_waited_for() {
    let w = World::new().await;
    let p = w.product("CAUSAL-1", 100, 5).await;
    let ann = w.customer("causal@example.com").await;
    let order = ok(w
        .cmd
        .place_order(
            &CommandContext::user(ann, Role::Customer),
            ann,
            vec![line(p, 1)],
            &w.eur,
        )
        .await)
    .value
    .id;
    // Something holds the order's row.
    let mut holder = ok(w.db.pool.get().await);
    ok(holder
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM orders WHERE id = '{}' FOR UPDATE",
            order.0
        ))
        .await);
    // The payment queues for the row first, then the keyed shipping.
    let pay = {
        let (cmd, staff) = (w.cmd.clone(), w.staff.clone());
        tokio::spawn(async move { cmd.mark_paid(&staff, order).await })
    };
    wait_for_waiters(&w, 1).await;
    let mut keyed = w.staff.clone();
    keyed.idempotency = Some(IdempotencyClaim::new(
        "user:staff".into(),
        "ship-1".into(),
        "fp".into(),
        Duration::from_secs(3600),
    ));
    let ship = {
        let cmd = w.cmd.clone();
        tokio::spawn(async move { cmd.ship_order(&keyed, order).await })
    };
    wait_for_waiters(&w, 2).await;
    ok(holder.batch_execute("ROLLBACK").await);
    ok(ok(pay.await));
    ok(ok(ship.await));

    assert_eq!(w.order_status(order).await, "SHIPPED");
    assert_eq!(log_statuses(&w, order).await, ["PAID", "SHIPPED"]);
}

#[tokio::test]
async fn an_expired_key_not_yet_purged_counts_as_absent() {
    let w = World::new().await;
    let mut conn = ok(w.db.pool.get().await);
    ok(conn
        .batch_execute(
            "INSERT INTO idempotency_keys (principal, key, fingerprint, outcome, expires_at) \
             VALUES ('user:a', 'k', 'old', '{}', now() - interval '1 minute')",
        )
        .await);
    let mut ctx = w.staff.clone();
    ctx.idempotency = Some(IdempotencyClaim::new(
        "user:a".into(),
        "k".into(),
        "new".into(),
        Duration::from_secs(3600),
    ));
    let made = w
        .cmd
        .create_category(
            &ctx,
            till_domain::commands::NewCategory {
                slug: ok(Slug::parse("fresh")),
                name: ok(Name::parse("name", "Fresh")),
                parent: None,
            },
        )
        .await;
    assert!(
        made.is_ok(),
        "an expired key blocked a new request: {made:?}"
    );
    let stored = ok(till_domain::idempotency::lookup(&w.db.pool, "user:a", "k").await);
    assert_eq!(stored.map(|s| s.fingerprint), Some("new".to_owned()));
}
