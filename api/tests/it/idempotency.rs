//! Idempotency-Key on mutations: one effect, identical replays, reuse refused.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};
use till_domain::schema::orders;

use crate::support::*;

const PLACE: &str = "mutation($p: ID!, $q: Int!) { placeOrder(input: {lines: [{productId: $p, quantity: $q}]}) { consistencyToken order { id status total { amountMinor } } } }";

async fn post(app: &TestApp, token: &str, key: &str, vars: Value) -> (u16, Option<String>, Value) {
    let r = ok(app
        .http
        .post(format!("{}/graphql", app.base))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({ "query": PLACE, "variables": vars }))
        .send()
        .await);
    let status = r.status().as_u16();
    let replayed = r
        .headers()
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, replayed, ok(r.json().await))
}

async fn order_count(app: &TestApp) -> i64 {
    let mut conn = ok(app.db.pool.get().await);
    ok(orders::table.count().get_result(&mut conn).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_identical_requests_with_one_key_place_one_order() {
    let app = std::sync::Arc::new(spawn_app().await);
    let product = app.product("IDEM-1", 300, 100).await;
    let (_, token) = app.customer("idem@example.com").await;
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            let token = token.clone();
            let product = product.clone();
            tokio::spawn(async move {
                post(&app, &token, "order-1", json!({ "p": product, "q": 2 })).await
            })
        })
        .collect();
    let mut bodies = Vec::new();
    let mut replays = 0;
    for c in calls {
        let (status, replayed, body) = ok(c.await);
        assert_eq!(status, 200, "{body}");
        assert_eq!(code(&body), None, "{body}");
        if replayed.as_deref() == Some("true") {
            replays += 1;
        }
        bodies.push(body);
    }
    assert_eq!(order_count(&app).await, 1, "exactly one order");
    assert_eq!(replays, 49, "every duplicate is marked as a replay");
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "all responses identical"
    );
    assert_eq!(
        bodies[0]["data"]["placeOrder"]["order"]["status"],
        "PENDING_PAYMENT"
    );
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_refused_and_bad_keys_are_rejected() {
    let app = spawn_app().await;
    let product = app.product("IDEM-2", 300, 100).await;
    let (_, token) = app.customer("idem2@example.com").await;
    let (status, _, _) = post(&app, &token, "k-2", json!({ "p": product, "q": 1 })).await;
    assert_eq!(status, 200);
    let (status, _, body) = post(&app, &token, "k-2", json!({ "p": product, "q": 5 })).await;
    assert_eq!(
        (status, code(&body)),
        (422, Some("IDEMPOTENCY_KEY_REUSED")),
        "{body}"
    );

    // Keys are per principal: another customer may use the same key.
    let (_, other) = app.customer("idem3@example.com").await;
    let (status, replayed, body) = post(&app, &other, "k-2", json!({ "p": product, "q": 5 })).await;
    assert_eq!((status, replayed, code(&body)), (200, None, None), "{body}");

    for bad in ["", "has space", &"x".repeat(256)] {
        let (status, _, body) = post(&app, &token, bad, json!({ "p": product, "q": 1 })).await;
        assert_eq!(
            (status, code(&body)),
            (400, Some("BAD_USER_INPUT")),
            "{bad:?}: {body}"
        );
    }
    assert_eq!(order_count(&app).await, 2);
}

#[tokio::test]
async fn a_failed_command_stores_nothing_so_a_retry_can_succeed() {
    let app = spawn_app().await;
    let product = app.product("IDEM-3", 300, 1).await;
    let (_, token) = app.customer("idem4@example.com").await;
    let (_, _, body) = post(&app, &token, "k-3", json!({ "p": product, "q": 3 })).await;
    assert_eq!(code(&body), Some("OUT_OF_STOCK"), "{body}");

    let (_, body) = app
        .gql(
            Some(&app.staff_token),
            "mutation($p: ID!) { restockProduct(productId: $p, quantity: 5) { consistencyToken } }",
            json!({ "p": product }),
        )
        .await;
    assert_eq!(code(&body), None, "{body}");
    let (status, replayed, body) = post(&app, &token, "k-3", json!({ "p": product, "q": 3 })).await;
    assert_eq!((status, replayed, code(&body)), (200, None, None), "{body}");
    assert_eq!(order_count(&app).await, 1);
}

/// The server committed the order but died before storing its response: a retry with
/// the same key renders the same result again and places nothing new.
#[tokio::test]
async fn a_retry_after_a_crash_between_commit_and_response_replays_the_committed_result() {
    let app = spawn_app().await;
    let product = app.product("IDEM-4", 300, 10).await;
    let (_, token) = app.customer("idem5@example.com").await;
    let (_, _, first) = post(&app, &token, "k-4", json!({ "p": product, "q": 2 })).await;
    assert_eq!(code(&first), None, "{first}");

    // Simulate the crash: the outcome is there (same transaction as the order), the
    // response is not.
    {
        let mut conn = ok(app.db.pool.get().await);
        let n = ok(diesel::sql_query(
            "UPDATE idempotency_keys SET response = NULL WHERE key = 'k-4' AND outcome IS NOT NULL",
        )
        .execute(&mut conn)
        .await);
        assert_eq!(n, 1);
    }
    let (status, replayed, again) =
        post(&app, &token, "k-4", json!({ "p": product, "q": 2 })).await;
    assert_eq!(
        (status, replayed.as_deref()),
        (200, Some("true")),
        "{again}"
    );
    assert_eq!(
        again["data"], first["data"],
        "the committed result, rendered again"
    );
    assert_eq!(order_count(&app).await, 1, "no second order");
}

/// Keys fingerprint the document a persisted-query hash resolves to: a retry that
/// switches between full text and hash-only is the same request, and two different
/// documents sent hash-only with the same variables are not.
#[tokio::test]
async fn keys_fingerprint_the_document_a_persisted_query_stands_for() {
    const OTHER: &str = "mutation($p: ID!, $q: Int!) { placeOrder(input: {lines: [{productId: $p, quantity: $q}]}) { orderId } }";
    let app = spawn_app().await;
    let product = app.product("IDEM-APQ", 300, 100).await;
    let (_, token) = app.customer("apq@example.com").await;
    let vars = json!({ "p": product, "q": 1 });
    let send = |key: &'static str, body: Value| {
        let (app, token) = (&app, token.clone());
        async move {
            let r = ok(app
                .http
                .post(format!("{}/graphql", app.base))
                .bearer_auth(token)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await);
            let replayed = r.headers().contains_key("idempotent-replayed");
            (r.status().as_u16(), replayed, ok(r.json::<Value>().await))
        }
    };
    let apq = |doc: &str| {
        json!({ "persistedQuery": { "version": 1,
            "sha256Hash": till_api::graphql::execution::documents::sha256_hex(doc) } })
    };
    // Full text with its hash (registers it), then hash-only under the same key.
    let (status, _, first) = send(
        "k1",
        json!({ "query": PLACE, "variables": vars, "extensions": apq(PLACE) }),
    )
    .await;
    assert_eq!((status, code(&first)), (200, None), "{first}");
    let (status, replayed, again) =
        send("k1", json!({ "variables": vars, "extensions": apq(PLACE) })).await;
    assert_eq!((status, replayed), (200, true), "{again}");
    assert_eq!(again, first);

    // Another document, registered under its own key.
    let (status, _, body) = send(
        "k2",
        json!({ "query": OTHER, "variables": vars, "extensions": apq(OTHER) }),
    )
    .await;
    assert_eq!((status, code(&body)), (200, None), "{body}");
    // Hash-only: the first document under k3, then the other one under k3.
    let (status, _, body) =
        send("k3", json!({ "variables": vars, "extensions": apq(PLACE) })).await;
    assert_eq!((status, code(&body)), (200, None), "{body}");
    let (status, replayed, body) =
        send("k3", json!({ "variables": vars, "extensions": apq(OTHER) })).await;
    assert_eq!(
        (status, replayed, code(&body)),
        (422, false, Some("IDEMPOTENCY_KEY_REUSED")),
        "{body}"
    );
    assert_eq!(order_count(&app).await, 3);
}
