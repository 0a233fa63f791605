//! Automatic Persisted Queries and trusted-documents mode over HTTP.

use serde_json::{json, Value};

use crate::support::*;

const DOC: &str = "{ categories { slug } }";

fn hash(doc: &str) -> String {
    till_api::graphql::execution::documents::sha256_hex(doc)
}

async fn post(app: &TestApp, body: Value) -> (u16, Value) {
    let resp = ok(app
        .http
        .post(format!("{}/graphql", app.base))
        .json(&body)
        .send()
        .await);
    let status = resp.status().as_u16();
    (status, ok(resp.json().await))
}

fn apq(h: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": h } })
}

#[tokio::test]
async fn automatic_persisted_queries_register_once_then_run_by_hash() {
    let app = spawn_app().await;
    let h = hash(DOC);
    let (_, body) = post(&app, json!({ "extensions": apq(&h) })).await;
    assert_eq!(code(&body), Some("PERSISTED_QUERY_NOT_FOUND"), "{body}");
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
    let (status, body) = post(&app, json!({ "query": DOC, "extensions": apq(&h) })).await;
    assert_eq!((status, code(&body)), (200, None), "{body}");
    let (status, body) = post(&app, json!({ "extensions": apq(&h) })).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["categories"].is_array(), "{body}");
    // By GET too (with the CSRF header), the way CDNs cache persisted queries.
    let resp = ok(app
        .http
        .get(format!("{}/graphql", app.base))
        .header("graphql-require-preflight", "1")
        .query(&[("extensions", apq(&h).to_string())])
        .send()
        .await);
    assert_eq!(resp.status().as_u16(), 200);
    // A hash that is not the document's is refused (no cache poisoning).
    let (_, body) = post(
        &app,
        json!({ "query": "{ __typename }", "extensions": apq(&h) }),
    )
    .await;
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");
}

#[tokio::test]
async fn a_persisted_mutation_is_still_refused_over_get() {
    let app = spawn_app().await;
    let m = "mutation { logout(refreshToken: \"x\") { revoked } }";
    let h = hash(m);
    let (status, _) = post(&app, json!({ "query": m, "extensions": apq(&h) })).await;
    assert_eq!(status, 200);
    let resp = ok(app
        .http
        .get(format!("{}/graphql", app.base))
        .header("graphql-require-preflight", "1")
        .query(&[("extensions", apq(&h).to_string())])
        .send()
        .await);
    assert_eq!(resp.status().as_u16(), 405);
}

#[tokio::test]
async fn trusted_documents_mode_runs_only_the_manifest() {
    let dir = std::env::temp_dir().join(format!("till-trusted-{}", uuid::Uuid::new_v4()));
    ok(std::fs::create_dir_all(&dir));
    let manifest = dir.join("manifest.json");
    ok(std::fs::write(
        &manifest,
        json!({ hash(DOC): DOC }).to_string(),
    ));
    let path = manifest.clone();
    let app = spawn_app_with(move |cfg| cfg.trusted_documents = Some(path)).await;

    let (status, body) = post(&app, json!({ "extensions": apq(&hash(DOC)) })).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = post(&app, json!({ "query": DOC })).await;
    assert_eq!(status, 200, "the full text of a listed document runs too");
    let (status, body) = post(
        &app,
        json!({ "query": "{ products(first: 1) { edges { cursor } } }" }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), Some("FORBIDDEN"), "{body}");
    let other = "{ __typename }";
    let (_, body) = post(
        &app,
        json!({ "query": other, "extensions": apq(&hash(other)) }),
    )
    .await;
    assert_eq!(
        code(&body),
        Some("FORBIDDEN"),
        "registering is not possible: {body}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Everything but the rate-limit report, which differs from one request to the next.
fn without_cost(mut body: Value) -> Value {
    if let Some(ext) = body.get_mut("extensions").and_then(Value::as_object_mut) {
        ext.remove("cost");
        if ext.is_empty() {
            body.as_object_mut().map(|b| b.remove("extensions"));
        }
    }
    body
}

fn available(body: &Value) -> i64 {
    body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"]
        .as_i64()
        .unwrap_or_else(|| panic!("no cost report: {body}"))
}

/// A server whose anonymous bucket restores one point a second, so what a request was
/// charged shows in the bucket.
async fn charging_app() -> TestApp {
    spawn_app_with(|cfg| {
        cfg.rate.rate_anonymous_max = 100_000;
        cfg.rate.rate_anonymous_restore = 1;
    })
    .await
}

#[tokio::test]
async fn a_query_seen_before_answers_bad_variables_as_on_first_sight() {
    let app = charging_app().await;
    let query = "query P($id: ID!, $first: Int) { product(id: $id) { id name } \
                 products(first: $first) { edges { node { id sku name } } } }";
    // The same document with one more space: another cache entry, same error positions.
    let fresh = format!("{query} ");
    let good =
        json!({ "id": "UHJvZHVjdDowMWEyMjFlOC0zZWFlLTcyZWMtOGJjZS03MDYyZTcwZjYzZDg", "first": 20 });
    let (status, body) = app.gql(None, query, good.clone()).await;
    assert_eq!((status, code(&body)), (200, None), "{body}");
    let mut left = available(&body);

    let bad_variables = [
        json!({ "id": { "not": "an id" }, "first": 20 }),
        json!({ "id": "UHJvZHVjdDowMWEyMjFlOC0zZWFlLTcyZWMtOGJjZS03MDYyZTcwZjYzZDg", "first": "twenty" }),
        json!({ "first": 20 }),
    ];
    for variables in bad_variables {
        // First sight of `fresh` (full validation) against `query`, validated before.
        let (first_status, first) = app.gql(None, &fresh, variables.clone()).await;
        assert!(first["errors"][0]["message"].is_string(), "{first}");
        let (status, body) = app.gql(None, query, variables.clone()).await;
        assert_eq!(
            (status, without_cost(body.clone())),
            (first_status, without_cost(first.clone())),
            "{variables}"
        );
        // Each of the two requests is charged at most once, even when the second ran
        // twice (the bucket gains a point a second meanwhile).
        let cost = body["extensions"]["cost"]["requestedQueryCost"]
            .as_i64()
            .unwrap_or(0);
        let now = available(&body);
        let spent = left - now;
        left = now;
        assert!(
            spent <= 2 * cost.max(1) + 2,
            "spent {spent} for two requests costing {cost}: {first} {body}"
        );
    }

    // A required variable left out is a request error, whether or not the document was
    // seen before (async-graphql alone made it an error on the field that reads it).
    for doc in [query, fresh.as_str()] {
        let (status, body) = app.gql(None, doc, json!({ "first": 20 })).await;
        assert_eq!(
            (status, code(&body)),
            (400, Some("BAD_USER_INPUT")),
            "{body}"
        );
        assert!(body.get("data").is_none(), "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("`$id`") && m.contains("`ID!`")),
            "{body}"
        );
    }

    // Limits that depend on the variables still apply to a document seen before.
    let (status, body) = app
        .gql(None, query, json!({ "id": good["id"], "first": 100_000 }))
        .await;
    assert_eq!(
        (status, code(&body)),
        (400, Some("BAD_USER_INPUT")),
        "{body}"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("too complex")),
        "{body}"
    );
}

#[tokio::test]
async fn a_query_seen_before_is_answered_charged_and_counted_as_on_first_sight() {
    // Seen before, a query runs on a schema that validates only what depends on the
    // variables (here `Engine::priced`, its cost being fixed): its answer, charge and
    // metrics are as on first sight.
    let app = charging_app().await;
    let product = app.product("SEEN-1", 1234, 5).await;
    let written = app.head_token().await;
    let query = "query Seen($id: ID!) { product(id: $id) { id sku name \
                 price { amount currency } available categoryPath { name } } }";
    let (first_status, first) = app
        .gql_after(None, &written, query, json!({ "id": product }))
        .await;
    assert_eq!(first["data"]["product"]["sku"], "SEEN-1", "{first}");
    assert_eq!(first["data"]["product"]["available"], 5, "{first}");
    for _ in 0..3 {
        let before = available(&first);
        let (status, body) = app.gql(None, query, json!({ "id": product })).await;
        assert_eq!(
            (status, without_cost(body.clone())),
            (first_status, without_cost(first.clone()))
        );
        let cost = body["extensions"]["cost"]["requestedQueryCost"]
            .as_i64()
            .unwrap_or(0);
        assert!(cost > 0, "{body}");
        assert_eq!(cost, cost_of(&first), "{body}");
        assert!(available(&body) < before, "charged: {body}");
    }
    let text = app.metrics_text().await;
    assert_eq!(
        value_of(
            &text,
            "till_graphql_operations_total{operation=\"Seen\",type=\"query\",outcome=\"ok\"}"
        ),
        Some(4.0),
        "{text}"
    );
}

fn cost_of(body: &Value) -> i64 {
    body["extensions"]["cost"]["requestedQueryCost"]
        .as_i64()
        .unwrap_or_else(|| panic!("no cost report: {body}"))
}

#[tokio::test]
async fn a_fixed_cost_query_seen_before_pays_its_first_price_and_answers_alike() {
    // `product(id:)` costs the same whatever `$id` is: seen before, the query runs on the
    // schema without the guard, charged the cost its first run computed.
    let app = charging_app().await;
    let product = app.product("FIXED-1", 990, 3).await;
    let written = app.head_token().await;
    let query = "query Fixed($id: ID!) { product(id: $id) { id sku name available } }";
    let (first_status, first) = app
        .gql_after(None, &written, query, json!({ "id": product }))
        .await;
    assert_eq!(first["data"]["product"]["sku"], "FIXED-1", "{first}");
    let (status, again) = app.gql(None, query, json!({ "id": product })).await;
    assert_eq!(
        (status, without_cost(again.clone())),
        (first_status, without_cost(first.clone()))
    );
    assert_eq!(cost_of(&again), cost_of(&first), "{first} {again}");
    assert!(available(&again) < available(&first), "charged: {again}");

    // A bad value for `$id` answers as it does on a document's first sight; the request
    // is charged and counted once although it ran twice.
    let fresh = format!("{query} ");
    let bad = json!({ "id": { "not": "an id" } });
    let (fresh_status, fresh_body) = app.gql(None, &fresh, bad.clone()).await;
    assert!(
        fresh_body["errors"][0]["message"].is_string(),
        "{fresh_body}"
    );
    let before = available(&fresh_body);
    let (status, body) = app.gql(None, query, bad).await;
    assert_eq!(
        (status, without_cost(body.clone())),
        (fresh_status, without_cost(fresh_body.clone()))
    );
    let spent = before - available(&body);
    assert!(
        spent <= cost_of(&first) + 1,
        "charged once: spent {spent}, cost {}: {body}",
        cost_of(&first)
    );
    let text = app.metrics_text().await;
    let count = |outcome: &str| {
        value_of(
            &text,
            &format!(
                "till_graphql_operations_total{{operation=\"Fixed\",type=\"query\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(count("ok"), Some(2.0), "{text}");
    // A first sight refused by validation never executes, so it is not counted; the
    // request seen before is counted once, by the run that was thrown away.
    assert_eq!(count("error"), Some(1.0), "{text}");
}

#[tokio::test]
async fn a_query_whose_cost_depends_on_its_variables_is_priced_by_them_every_time() {
    let app = charging_app().await;
    let query = "query Page($n: Int) { products(first: $n) { edges { node { id } } } }";
    let (_, small) = app.gql(None, query, json!({ "n": 1 })).await;
    let (_, again) = app.gql(None, query, json!({ "n": 1 })).await;
    let (_, large) = app.gql(None, query, json!({ "n": 30 })).await;
    assert_eq!(cost_of(&again), cost_of(&small), "{small} {again}");
    assert!(
        cost_of(&large) > cost_of(&small),
        "a larger page costs more when seen before: {small} {large}"
    );
}

#[tokio::test]
async fn a_name_for_an_unnamed_operation_is_refused_alike_and_not_counted() {
    let app = charging_app().await;
    let query = "{ categories { slug } }";
    let body = json!({ "query": query, "operationName": "Invented" });
    let first = post(&app, body.clone()).await;
    assert!(
        first.1["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Unknown operation")),
        "{first:?}"
    );
    // The document passes full validation without the name, so it is seen before.
    let (status, plain) = app.gql(None, query, json!({})).await;
    assert_eq!(status, 200, "{plain}");
    let (status, again) = post(&app, body).await;
    assert_eq!(
        (status, without_cost(again.clone())),
        (first.0, without_cost(first.1.clone()))
    );
    let text = app.metrics_text().await;
    assert!(!text.contains("operation=\"Invented\""), "{text}");
}
