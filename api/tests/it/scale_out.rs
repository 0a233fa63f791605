//! Two real `till serve` processes against one database: a write through A is readable
//! through B with its consistency token; a `stockChanged` subscription on B fires for a
//! restock through A; killing A (whichever of the two was projecting) leaves B
//! projecting within seconds, with no event skipped or applied twice.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use till_domain::commands::Commands;
use till_domain::db::testing::TestDb;
use till_domain::types::Role;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{account_on, code, ok, ServerProcess};

async fn start(db: &TestDb, replica: Option<&str>) -> ServerProcess {
    let mut env = vec![("TILL_RATE_LIMIT", "false"), ("TILL_DB_POOL_SIZE", "8")];
    if let Some(url) = replica {
        env.extend([
            ("TILL_READ_DATABASE_URLS", url),
            ("TILL_READ_POOL_SIZE", "4"),
            ("TILL_REPLICA_WAIT_MS", "10000"),
        ]);
    }
    ServerProcess::start(&db.url, &env).await
}

async fn gql(base: &str, token: &str, query: &str, vars: Value, ct: Option<&str>) -> Value {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": vars }));
    if let Some(ct) = ct {
        req = req.header("x-consistency-token", ct);
    }
    match req.send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

const PLACE: &str = "mutation($p: ID!) { placeOrder(input: {lines: [{productId: $p, quantity: 1}]}) { orderId consistencyToken } }";

#[tokio::test]
async fn two_servers_share_writes_subscriptions_and_projection() {
    two_servers(&TestDb::with_pool_size(4).await, None).await;
}

/// The same with both servers reading from a streaming replica that replays 300 ms
/// behind: the token reads through B wait for it, and the takeover keeps every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_reading_from_a_lagging_replica_share_writes_and_projection() {
    let db = TestDb::for_replicas(4).await;
    let replica = {
        let db = &db;
        tokio::task::block_in_place(|| db.start_replica(Duration::from_millis(300)))
    };
    two_servers(&db, Some(&replica.url())).await;
}

async fn two_servers(db: &TestDb, replica: Option<&str>) {
    let commands = Commands::new(db.pool.clone());
    let (_, staff) = account_on(&commands, "staff@example.com", Role::Staff).await;
    let (_, shopper) = account_on(&commands, "shopper@example.com", Role::Customer).await;
    let a = start(db, replica).await;
    let b = start(db, replica).await;

    let body = gql(
        &a.base,
        &staff,
        r#"mutation { createCategory(input: {slug: "two", name: "Two"}) { categoryId } }"#,
        json!({}),
        None,
    )
    .await;
    let category = body["data"]["createCategory"]["categoryId"].clone();
    let body = gql(
        &a.base,
        &staff,
        r#"mutation($c: ID!) { createProduct(input: {sku: "TWO-1", name: "Two", categoryId: $c, priceMinor: 500, initialStock: 1000}) { productId consistencyToken } }"#,
        json!({ "c": category }),
        None,
    )
    .await;
    let product = body["data"]["createProduct"]["productId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!product.is_empty(), "{body}");

    // Written through A, read through B with the consistency token.
    let body = gql(&a.base, &shopper, PLACE, json!({ "p": product }), None).await;
    let order = body["data"]["placeOrder"]["orderId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let ct = body["data"]["placeOrder"]["consistencyToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let body = gql(
        &b.base,
        &shopper,
        "query($o: ID!) { order(id: $o) { status } }",
        json!({ "o": order }),
        Some(&ct),
    )
    .await;
    assert_eq!(body["data"]["order"]["status"], "PENDING_PAYMENT", "{body}");

    // A subscription on B sees a restock made through A.
    let mut req = ok(format!("ws://127.0.0.1:{}/graphql", b.port).into_client_request());
    req.headers_mut()
        .insert("sec-websocket-protocol", ok("graphql-transport-ws".parse()));
    let (mut ws, _) = ok(tokio_tungstenite::connect_async(req).await);
    ok(ws.send(Message::Text(json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {staff}") } }).to_string())).await);
    let ack = ok(tokio::time::timeout(Duration::from_secs(10), ws.next()).await);
    assert!(format!("{ack:?}").contains("connection_ack"), "{ack:?}");
    ok(ws
        .send(Message::Text(
            json!({ "id": "1", "type": "subscribe", "payload": {
        "query": "subscription($p: ID!) { stockChanged(productId: $p) { sku available } }",
        "variables": { "p": product } } })
            .to_string(),
        ))
        .await);
    // Give the subscription a moment to register before the restock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = gql(
        &a.base,
        &staff,
        "mutation($p: ID!) { restockProduct(productId: $p, quantity: 25) { consistencyToken } }",
        json!({ "p": product }),
        None,
    )
    .await;
    assert_eq!(code(&body), None, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let msg = ok(tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            ws.next(),
        )
        .await);
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            other => panic!("subscription ended: {other:?}"),
        };
        let v: Value = ok(serde_json::from_str(&text));
        if v["type"] == "next" {
            // 1000 + 25 restocked - 1 reserved by the order.
            assert_eq!(
                v["payload"]["data"]["stockChanged"]["available"], 1024,
                "{v}"
            );
            break;
        }
    }

    // Writers on both servers; A is killed in the middle; B takes over projecting.
    let mut writers = Vec::new();
    for (i, base) in [
        a.base.clone(),
        b.base.clone(),
        a.base.clone(),
        b.base.clone(),
    ]
    .into_iter()
    .enumerate()
    {
        let shopper = shopper.clone();
        let product = product.clone();
        writers.push(tokio::spawn(async move {
            let mut placed = 0;
            for _ in 0..25 {
                let body = gql(&base, &shopper, PLACE, json!({ "p": product }), None).await;
                if body["data"]["placeOrder"]["orderId"].is_string() {
                    placed += 1;
                }
                tokio::time::sleep(Duration::from_millis(20 + 5 * i as u64)).await;
            }
            placed
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut a = a;
    a.kill();
    let mut placed = 0;
    for w in writers {
        placed += ok(w.await);
    }
    assert!(placed > 50, "most writes succeed: {placed}");

    // B alone: a new write becomes readable through B within 10 s.
    let killed_at = Instant::now();
    let body = gql(&b.base, &shopper, PLACE, json!({ "p": product }), None).await;
    let ct = body["data"]["placeOrder"]["consistencyToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let order = body["data"]["placeOrder"]["orderId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    loop {
        let body = gql(
            &b.base,
            &shopper,
            "query($o: ID!) { order(id: $o) { status } }",
            json!({ "o": order }),
            Some(&ct),
        )
        .await;
        if body["data"]["order"]["status"] == "PENDING_PAYMENT" {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(10),
            "B did not take over: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Nothing skipped, nothing applied twice: the read models agree with the write side.
    let mut conn = ok(db.pool.get().await);
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName, Debug, PartialEq)]
    struct Check {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        orders: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        viewed: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        counted: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        available_diff: i64,
    }
    let check: Check = ok(diesel::sql_query(
        "SELECT (SELECT count(*) FROM orders) AS orders, \
                (SELECT count(*) FROM rm_order_view) AS viewed, \
                (SELECT coalesce(sum(orders_count), 0)::bigint FROM rm_customer_summary) AS counted, \
                (SELECT count(*) FROM rm_product_view v JOIN inventory i ON i.product_id = v.id \
                  WHERE v.available <> i.on_hand - i.reserved OR v.reserved <> i.reserved) AS available_diff",
    )
    .get_result(&mut conn)
    .await);
    // Every acknowledged order exists; up to one more per writer on A may have committed
    // with its answer lost when A was killed (the client saw an error).
    let orders = check.orders as usize;
    assert!(
        orders >= placed + 2 && orders <= placed + 2 + 2,
        "{check:?}, {placed} acknowledged"
    );
    assert_eq!(
        (check.viewed, check.counted, check.available_diff),
        (check.orders, check.orders, 0),
        "{check:?}"
    );
}
