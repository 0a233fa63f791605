//! GraphQL over HTTP: methods, media types and status codes.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn the_protocol_rules_hold() {
    let app = spawn_app().await;
    let url = format!("{}/graphql", app.base);

    // GET without a preflight-forcing header is refused (CSRF prevention).
    let r = ok(app
        .http
        .get(&url)
        .query(&[("query", "{ categories { slug } }")])
        .send()
        .await);
    assert_eq!(r.status().as_u16(), 400);
    let body: serde_json::Value = ok(r.json().await);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("GraphQL-Require-Preflight")),
        "{body}"
    );

    // GET query works; GET mutation is refused with 405 and Allow: POST.
    let r = ok(app
        .http
        .get(&url)
        .header("graphql-require-preflight", "1")
        .query(&[("query", "{ categories { slug } }")])
        .send()
        .await);
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json; charset=utf-8"),
        "Accept: */* gets application/json"
    );
    let r = ok(app
        .http
        .get(&url)
        .header("apollo-require-preflight", "true")
        .query(&[(
            "query",
            "mutation { cancelOrder(id: \"x\") { consistencyToken } }",
        )])
        .send()
        .await);
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(
        r.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );

    // Malformed JSON body: 400.
    let r = ok(app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/graphql-response+json")
        .body("{not json")
        .send()
        .await);
    assert_eq!(r.status().as_u16(), 400);

    // Unsupported content type: 415; unacceptable Accept: 406.
    let r = ok(app
        .http
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await);
    assert_eq!(r.status().as_u16(), 415);
    let r = ok(app
        .http
        .post(&url)
        .header("accept", "text/html")
        .json(&json!({ "query": "{ categories { slug } }" }))
        .send()
        .await);
    assert_eq!(r.status().as_u16(), 406);

    // A validation error with graphql-response+json: 400, no data.
    let (status, body) = app.gql(None, "{ nope }", json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.get("data").is_none() || body["data"].is_null(),
        "{body}"
    );

    // The same with application/json: 200.
    let r = ok(app
        .http
        .post(&url)
        .header("accept", "application/json")
        .json(&json!({ "query": "{ nope }" }))
        .send()
        .await);
    assert_eq!(r.status().as_u16(), 200);

    // Batches work up to the limit.
    let r = ok(app
        .http
        .post(&url)
        .json(&json!([{ "query": "{ categories { slug } }" }, { "query": "{ __typename }" }]))
        .send()
        .await);
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = ok(r.json().await);
    assert_eq!(body[1]["data"]["__typename"], "Query", "{body}");
    let too_many: Vec<_> = (0..11)
        .map(|_| json!({ "query": "{ __typename }" }))
        .collect();
    let r = ok(app.http.post(&url).json(&too_many).send().await);
    assert_eq!(r.status().as_u16(), 400);

    // A bad consistency token: 400 BAD_USER_INPUT.
    let (status, body) = app
        .gql_with(
            None,
            "{ __typename }",
            json!({}),
            &[("x-consistency-token", "nonsense")],
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (400, Some("BAD_USER_INPUT")),
        "{body}"
    );
}

#[tokio::test]
async fn probes_and_sdl_answer() {
    let app = spawn_app().await;
    let r = ok(app.http.get(format!("{}/healthz", app.base)).send().await);
    assert_eq!(r.status().as_u16(), 200);
    let r = ok(app.http.get(format!("{}/readyz", app.base)).send().await);
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = ok(r.json().await);
    assert_eq!(body, json!({ "status": "ready" }));
    let r = ok(app
        .http
        .get(format!("{}/schema.graphql", app.base))
        .send()
        .await);
    let sdl = ok(r.text().await);
    assert!(sdl.contains("type Query"), "{sdl}");
    let r = ok(app.http.get(format!("{}/graphiql", app.base)).send().await);
    assert_eq!(r.status().as_u16(), 200);
    // every vendored asset the page links is served, byte for byte
    let page = ok(r.text().await);
    let vendor = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("graphiql/vendor");
    for name in [
        "react.production.min.js",
        "react-dom.production.min.js",
        "graphiql.min.js",
        "graphiql.min.css",
    ] {
        let at = page
            .find(&format!("/graphiql/assets/{name}?v="))
            .unwrap_or_else(|| panic!("{name} not linked from {page}"));
        let url: String = page[at..].chars().take_while(|c| *c != '"').collect();
        let r = ok(app.http.get(format!("{}{url}", app.base)).send().await);
        assert_eq!(r.status().as_u16(), 200, "{url}");
        let served = ok(r.bytes().await);
        assert!(
            served == ok(std::fs::read(vendor.join(name))),
            "{url} is not the vendored file"
        );
    }
}

#[tokio::test]
async fn pages_follow_the_cursor_without_overlap() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.product(&format!("PAGE-{i}"), 100 * (i + 1), 1).await;
    }
    let q = "query($after: String) { products(first: 2, after: $after, sortBy: PRICE) { edges { node { sku } } pageInfo { hasNextPage endCursor } } }";
    let mut seen = Vec::new();
    let mut after = serde_json::Value::Null;
    let ct = app.head_token().await;
    loop {
        let (status, body) = app
            .gql_with(
                None,
                q,
                json!({ "after": after }),
                &[("x-consistency-token", &ct)],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let page = &body["data"]["products"];
        for e in page["edges"].as_array().cloned().unwrap_or_default() {
            seen.push(e["node"]["sku"].as_str().unwrap_or_default().to_owned());
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, vec!["PAGE-0", "PAGE-1", "PAGE-2", "PAGE-3", "PAGE-4"]);

    let (_, body) = app
        .gql(
            None,
            "{ products(first: 1000) { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");
    let (_, body) = app
        .gql(
            None,
            "{ products(after: \"garbage\") { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");
}

/// With the database unreachable, whole-request failures are 503 SERVICE_UNAVAILABLE
/// (fast, bounded by the pool's acquire timeout), readiness is 503 and liveness 200.
#[tokio::test]
async fn a_database_outage_answers_503_and_the_process_stays_live() {
    use clap::Parser;
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        cfg: till_api::config::ServeConfig,
    }
    let mut cfg = Defaults::parse_from(["till"]).cfg;
    cfg.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.jwt_secret = Some(till_api::config::Secret::new(SECRET));
    cfg.mode = till_api::config::Mode::Production;
    cfg.jobs.payment_provider_url = Some("http://127.0.0.1:9".into());
    cfg.db.db_acquire_timeout_ms = 300;
    cfg.http_workers = 1;
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
    let port = ok(dead).port();
    let app = ok(till_api::app::Application::build(
        cfg,
        till_api::app::Database {
            url: format!("postgres://postgres@127.0.0.1:{port}/till"),
            embedded: None,
            replicas: Vec::new(),
        },
    )
    .await);
    let (port, _data, _handle) = app.spawn();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let r = ok(http
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": "{ products(first: 1) { edges { cursor } } }" }))
        .send()
        .await);
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: serde_json::Value = ok(r.json().await);
    assert_eq!(code(&body), Some("SERVICE_UNAVAILABLE"), "{body}");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "no internals: {body}"
    );

    let r = ok(http.get(format!("{base}/readyz")).send().await);
    assert_eq!(r.status().as_u16(), 503);
    let r = ok(http.get(format!("{base}/healthz")).send().await);
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn security_headers_and_cors_follow_the_allow_list() {
    let app =
        spawn_app_with(|cfg| cfg.cors_origins = vec!["https://shop.example.com".into()]).await;
    let url = format!("{}/graphql", app.base);
    let r = ok(app
        .http
        .post(&url)
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await);
    let h = r.headers();
    assert_eq!(
        h.get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    assert_eq!(
        h.get("x-frame-options").and_then(|v| v.to_str().ok()),
        Some("DENY")
    );
    assert!(h.get("content-security-policy").is_some());
    let request_id = h
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        uuid::Uuid::parse_str(request_id).is_ok(),
        "X-Request-Id: {request_id:?}"
    );

    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, authorization",
            )
            .send()
    };
    let allowed = ok(preflight("https://shop.example.com").await);
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://shop.example.com")
    );
    let denied = ok(preflight("https://evil.example.net").await);
    assert!(denied
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

/// `product(by:)` takes exactly one key (`@oneOf`); the deprecated `id` and `sku`
/// arguments still answer for a release; any two keys at once are refused.
#[tokio::test]
async fn a_product_is_looked_up_by_exactly_one_key() {
    let app = spawn_app().await;
    let (id, ct) = app.visible_product("ONEOF-1", 900, 3).await;
    let lookup = |q: &'static str, v: serde_json::Value| {
        let (app, ct) = (&app, ct.clone());
        async move { app.gql_after(None, &ct, q, v).await.1 }
    };
    for (query, vars) in [
        (
            "query($k: ProductKey!) { product(by: $k) { sku } }",
            json!({ "k": { "sku": "ONEOF-1" } }),
        ),
        (
            "query($k: ProductKey!) { product(by: $k) { sku } }",
            json!({ "k": { "id": id } }),
        ),
        ("{ product(by: { sku: \" ONEOF-1 \" }) { sku } }", json!({})),
        (
            "query($id: ID) { product(id: $id) { sku } }",
            json!({ "id": id }),
        ),
        ("{ product(sku: \"ONEOF-1\") { sku } }", json!({})),
    ] {
        let body = lookup(query, vars).await;
        assert_eq!(body["data"]["product"]["sku"], "ONEOF-1", "{query}: {body}");
    }
    for (query, vars) in [
        (
            "query($k: ProductKey!) { product(by: $k) { sku } }",
            json!({ "k": { "sku": "ONEOF-1", "id": id } }),
        ),
        (
            "query($k: ProductKey!) { product(by: $k) { sku } }",
            json!({ "k": {} }),
        ),
        (
            "{ product(by: { sku: \"ONEOF-1\" }, sku: \"ONEOF-1\") { sku } }",
            json!({}),
        ),
        ("{ product { sku } }", json!({})),
    ] {
        let body = lookup(query, vars).await;
        assert!(body["data"]["product"].is_null(), "{query}: {body}");
        assert!(!body["errors"].is_null(), "{query}: {body}");
    }
}

/// 64-bit values travel as `BigInt` strings beside their deprecated 32-bit `Int` forms.
#[tokio::test]
async fn sixty_four_bit_values_are_strings() {
    let app = spawn_app().await;
    let (id, ct) = app.visible_product("BIG-1", 900, 3).await;
    let (_, body) = app
        .gql_after(
            Some(&app.staff_token),
            &ct,
            "query($id: ID!) { product(by: {id: $id}) { price { minorUnits amountMinor } unitsSold } \
             projections { name logPosition position eventsBehind } }",
            json!({ "id": id }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let product = &body["data"]["product"];
    assert_eq!(product["price"]["minorUnits"], "900", "{body}");
    assert_eq!(product["price"]["amountMinor"], 900, "{body}");
    assert_eq!(product["unitsSold"], "0", "{body}");
    let projections = body["data"]["projections"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    assert!(!projections.is_empty(), "{body}");
    for p in projections {
        let position = p["position"].as_i64().unwrap_or_else(|| panic!("{p}"));
        assert_eq!(p["logPosition"], position.to_string(), "{p}");
        assert!(p["eventsBehind"].is_string(), "{p}");
    }
}

/// Days are `Date` (`YYYY-MM-DD`) both ways: in `salesReport`'s arguments and rows, and in
/// the orders filter.
#[tokio::test]
async fn days_are_dates() {
    let app = spawn_app().await;
    let product = app.product("DAY-1", 700, 5).await;
    let (_, shopper) = app.customer("days@example.com").await;
    let (_, placed) = app
        .gql(
            Some(&shopper),
            "mutation($p: ID!) { placeOrder(input: {lines: [{productId: $p, quantity: 2}]}) { consistencyToken } }",
            json!({ "p": product }),
        )
        .await;
    let ct = consistency_token(&placed, "placeOrder");
    let today = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let (_, body) = app
        .gql_after(
            Some(&app.staff_token),
            &ct,
            "query($d: Date!) { salesReport(from: $d, to: $d) { day orders units revenue { minorUnits } } \
             orders(first: 5, filter: {placedFrom: $d}) { edges { node { total { minorUnits } } } } }",
            json!({ "d": today }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(
        body["data"]["salesReport"],
        json!([{ "day": today, "orders": 1, "units": 2, "revenue": { "minorUnits": "1400" } }]),
        "{body}"
    );
    assert_eq!(
        body["data"]["orders"]["edges"][0]["node"]["total"]["minorUnits"],
        "1400"
    );
    let (_, body) = app
        .gql(
            Some(&app.staff_token),
            "{ salesReport(from: \"06.12.2026\", to: \"2026-12-06\") { day } }",
            json!({}),
        )
        .await;
    assert!(!body["errors"].is_null(), "a day not in YYYY-MM-DD: {body}");
}
