//! Reads from streaming read replicas (`TILL_READ_DATABASE_URLS`), against real ones
//! started from the test cluster, one replaying behind on purpose
//! (`recovery_min_apply_delay`): a read with a consistency token sees its write though
//! the replica lags, the cache never keeps a row a lagging replica still has old, and a
//! replica stopped under load costs no failed read and rejoins.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use till_api::config::Secret;
use till_domain::db::testing::{TestDb, TestReplica};

use crate::support::{consistency_token, ok, spawn_app_on, value_of, TestApp};

const RESTOCK: &str = "mutation($p: ID!) { restockProduct(input: {productId: $p, quantity: 1}) { consistencyToken } }";
const STOCK: &str = "query($p: ID!) { product(by: {id: $p}) { available } }";
const PLACE: &str = "mutation($p: ID!) { placeOrder(input: {lines: [{productId: $p, quantity: 1}]}) { orderId consistencyToken } }";
const ORDER: &str =
    "query($o: ID!) { order(id: $o) { id status } myOrders(first: 50) { edges { node { id } } } }";

/// Starts a replica of `db`'s cluster replaying `delay` behind (a base backup: off the
/// async threads).
fn replica_of(db: &TestDb, delay: Duration) -> TestReplica {
    tokio::task::block_in_place(|| db.start_replica(delay))
}

/// A server on `db` reading from `replicas`.
async fn serve(db: TestDb, replicas: &[&TestReplica]) -> TestApp {
    let urls: Vec<String> = replicas.iter().map(|r| r.url()).collect();
    spawn_app_on(db, move |cfg| {
        cfg.replicas.read_database_urls = Some(Secret::new(urls.join(",")));
        cfg.replicas.read_pool_size = 4;
        // A test checks what is read and where, not how fast: token reads wait as long
        // as it takes a slow machine's replica to catch up, and stay with it.
        cfg.replicas.replica_wait_ms = 15_000;
        cfg.replicas.replica_max_lag_ms = 15_000;
        cfg.replicas.replica_poll_ms = 20;
    })
    .await
}

async fn metric(app: &TestApp, series: &str) -> f64 {
    value_of(&app.metrics_text().await, series).unwrap_or(0.0)
}

/// Waits until replica `n` is in rotation (30 s at most).
async fn in_rotation(app: &TestApp, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let series = format!("till_replica_in_rotation{{replica=\"{n}\"}}");
    while metric(app, &series).await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "replica {n} never came into rotation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn available(body: &Value) -> i64 {
    body["data"]["product"]["available"]
        .as_i64()
        .unwrap_or_else(|| panic!("no stock in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_with_a_token_see_their_write_through_a_replica_that_lags() {
    let db = TestDb::for_replicas(30).await;
    let replica = replica_of(&db, Duration::from_millis(300));
    let app = serve(db, &[&replica]).await;
    let (product, ct) = app.visible_product("RYW-1", 500, 1_000).await;
    let (_, shopper) = app.customer("ryw@example.com").await;
    in_rotation(&app, 0).await;
    let (_, body) = app
        .gql_after(None, &ct, STOCK, json!({ "p": product }))
        .await;
    let mut expected = available(&body);
    let before = metric(&app, "till_read_queries_total{source=\"replica-0\"}").await;

    const ROUNDS: usize = 12;
    for round in 0..ROUNDS {
        // A restock, then at once its product with the token: never the old stock.
        let (_, body) = app
            .gql(Some(&app.staff_token), RESTOCK, json!({ "p": product }))
            .await;
        let ct = consistency_token(&body, "restockProduct");
        expected += 1;
        let (status, body) = app
            .gql_after(None, &ct, STOCK, json!({ "p": product }))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            available(&body),
            expected,
            "round {round}: the read missed its restock"
        );

        // An order, then at once the order and the buyer's list with the token.
        let (_, body) = app
            .gql(Some(&shopper), PLACE, json!({ "p": product }))
            .await;
        let order = body["data"]["placeOrder"]["orderId"].clone();
        let ct = consistency_token(&body, "placeOrder");
        expected -= 1;
        let (_, body) = app
            .gql_after(Some(&shopper), &ct, ORDER, json!({ "o": order }))
            .await;
        assert_eq!(
            body["data"]["order"]["id"], order,
            "round {round}: the order is missing: {body}"
        );
        let listed = body["data"]["myOrders"]["edges"]
            .as_array()
            .is_some_and(|edges| edges.iter().any(|e| e["node"]["id"] == order));
        assert!(listed, "round {round}: myOrders misses the order: {body}");
    }

    // The reads were the replica's: each token read above missed the cache (its write
    // had just invalidated the entry) and none fell back to the primary.
    let served = metric(&app, "till_read_queries_total{source=\"replica-0\"}").await - before;
    assert!(
        served >= (ROUNDS * 3) as f64,
        "only {served} reads ran on the replica"
    );
    let fallbacks = metric(&app, "till_replica_fallbacks_total{reason=\"lagging\"}").await;
    assert_eq!(fallbacks, 0.0, "token reads fell back to the primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_never_keeps_a_row_a_lagging_replica_still_has_old() {
    let db = TestDb::for_replicas(30).await;
    let replica = replica_of(&db, Duration::from_millis(1_500));
    let app = serve(db, &[&replica]).await;
    let (product, ct) = app.visible_product("COHERENT-1", 500, 100).await;
    in_rotation(&app, 0).await;
    let (_, body) = app
        .gql_after(None, &ct, STOCK, json!({ "p": product }))
        .await;
    let old = available(&body);

    // The restock invalidates the cached product once the projector applies it, while
    // the replica keeps the old row for another 1.5 s: reads without a token in that
    // time may answer the old stock (they promise nothing), but must not put it back
    // in the cache.
    let (_, body) = app
        .gql(Some(&app.staff_token), RESTOCK, json!({ "p": product }))
        .await;
    let ct = consistency_token(&body, "restockProduct");
    let mut saw_old_after_invalidation = 0;
    let until = Instant::now() + Duration::from_millis(1_200);
    while Instant::now() < until {
        let (_, body) = app.gql(None, STOCK, json!({ "p": product })).await;
        if available(&body) == old {
            saw_old_after_invalidation += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        saw_old_after_invalidation > 0,
        "the replica never served the old row"
    );

    // After the token's wait, nothing answers the old stock: not the token read, and
    // not the reads without a token after it (from the cache or the caught-up replica).
    let (_, body) = app
        .gql_after(None, &ct, STOCK, json!({ "p": product }))
        .await;
    assert_eq!(available(&body), old + 1, "the token read got the old row");
    for _ in 0..50 {
        let (_, body) = app.gql(None, STOCK, json!({ "p": product })).await;
        assert_eq!(
            available(&body),
            old + 1,
            "the cache kept the lagging replica's old row"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_under_load_costs_no_read_and_rejoins() {
    let db = TestDb::for_replicas(30).await;
    let mut first = replica_of(&db, Duration::ZERO);
    let second = replica_of(&db, Duration::ZERO);
    let app = Arc::new(serve(db, &[&first, &second]).await);
    let (_, ct) = app.visible_product("STOP-1", 500, 100).await;
    in_rotation(&app, 0).await;
    in_rotation(&app, 1).await;
    let _ = app
        .gql_after(None, &ct, "{ categories { id } }", json!({}))
        .await;

    // Readers of uncached pages (in-stock products), each read runs on a source.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..6)
        .map(|_| {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut answered, mut failed) = (0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (status, body) = app
                        .gql(
                            None,
                            "{ products(first: 5, filter: {inStock: true}) { edges { node { id } } } }",
                            json!({}),
                        )
                        .await;
                    if status == 200 && body["errors"].is_null() {
                        answered += 1;
                    } else {
                        failed.push(format!("{status} {body}"));
                    }
                }
                (answered, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    tokio::task::block_in_place(|| first.stop());
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let down = metric(&app, "till_replica_in_rotation{replica=\"0\"}").await;
    tokio::task::block_in_place(|| first.start_again());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut answered, mut failed) = (0, Vec::new());
    for r in readers {
        let (a, f) = ok(r.await);
        answered += a;
        failed.extend(f);
    }
    assert!(answered > 0);
    assert!(
        failed.is_empty(),
        "{} of {} reads failed: {:?}",
        failed.len(),
        answered + failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert_eq!(down, 0.0, "the stopped replica stayed in rotation");

    // It comes back, and serves reads again.
    in_rotation(&app, 0).await;
    let before = metric(&app, "till_read_queries_total{source=\"replica-0\"}").await;
    for _ in 0..20 {
        let _ = app
            .gql(
                None,
                "{ products(first: 5, filter: {inStock: true}) { edges { node { id } } } }",
                json!({}),
            )
            .await;
    }
    let after = metric(&app, "till_read_queries_total{source=\"replica-0\"}").await;
    assert!(after > before, "the restarted replica serves no reads");
    drop(second);
}
