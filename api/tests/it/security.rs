//! Roles and ownership: each protected operation against each kind of caller.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn roles_are_enforced_per_operation() {
    let app = spawn_app().await;
    let (_, customer) = app.customer("role@example.com").await;
    let product = app.product("ROLE-1", 100, 5).await;

    let staff_ops: [(&str, serde_json::Value); 10] = [
        (r#"mutation($c: ID!) { createProduct(input: {sku: "NEW-1", name: "New", categoryId: $c, priceMinor: 100}) { productId } }"#, json!({ "c": category_of(&app).await })),
        ("mutation($p: ID!) { updateProduct(input: {id: $p, name: \"Renamed\"}) { productId } }", json!({ "p": product })),
        ("mutation { shipOrder(id: \"T3JkZXI6MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAw\") { orderId } }", json!({})),
        (r#"mutation { createCategory(input: {slug: "x", name: "X"}) { consistencyToken } }"#, json!({})),
        ("mutation($p: ID!) { restockProduct(productId: $p, quantity: 1) { consistencyToken } }", json!({ "p": product })),
        ("mutation($p: ID!) { adjustInventory(productId: $p, delta: 1, reason: \"count\") { consistencyToken } }", json!({ "p": product })),
        ("mutation($p: ID!) { archiveProduct(id: $p) { consistencyToken } }", json!({ "p": product })),
        ("{ orders(first: 1) { edges { cursor } } }", json!({})),
        ("{ salesReport(from: \"2026-01-01\", to: \"2026-01-31\") { day } }", json!({})),
        ("{ projections { name } topProducts { sku } }", json!({})),
    ];
    for (query, vars) in staff_ops {
        let (_, body) = app.gql(None, query, vars.clone()).await;
        assert_eq!(
            code(&body),
            Some("UNAUTHENTICATED"),
            "anonymous {query}: {body}"
        );
        let (_, body) = app.gql(Some(&customer), query, vars.clone()).await;
        assert_eq!(code(&body), Some("FORBIDDEN"), "customer {query}: {body}");
        let (_, body) = app.gql(Some(&app.staff_token), query, vars).await;
        // Staff pass the guard; shipping a made-up order is then NOT_FOUND.
        assert!(
            matches!(code(&body), None | Some("NOT_FOUND")),
            "staff {query}: {body}"
        );
    }

    // Staff-only fields on a public type.
    let other = app.product("ROLE-2", 100, 5).await;
    let ct = app.head_token().await;
    let (_, body) = app
        .gql_with(
            Some(&customer),
            "query($p: ID!) { product(id: $p) { onHand } }",
            json!({ "p": other }),
            &[("x-consistency-token", &ct)],
        )
        .await;
    assert_eq!(code(&body), Some("FORBIDDEN"), "{body}");

    // Signed-in-only queries.
    let (_, body) = app
        .gql(None, "{ myOrders { edges { cursor } } }", json!({}))
        .await;
    assert_eq!(code(&body), Some("UNAUTHENTICATED"), "{body}");
}

#[tokio::test]
async fn a_customer_cannot_see_or_touch_another_customers_order() {
    let app = spawn_app().await;
    let product = app.product("IDOR-1", 100, 5).await;
    let (ann_id, ann) = app.customer("ann@example.com").await;
    let (_, bob) = app.customer("bob@example.com").await;
    let (_, body) = app
        .gql(
            Some(&ann),
            "mutation($p: ID!) { placeOrder(input: {lines: [{productId: $p, quantity: 1}]}) { consistencyToken order { id customer { email } } } }",
            json!({ "p": product }),
        )
        .await;
    let order = body["data"]["placeOrder"]["order"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Every read below waits for the read models to hold the order: a refusal must not
    // pass because the order is not projected yet.
    let token = body["data"]["placeOrder"]["consistencyToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let seen = [("x-consistency-token", token.as_str())];
    assert_eq!(
        body["data"]["placeOrder"]["order"]["customer"]["email"], "ann@example.com",
        "{body}"
    );

    let (_, body) = app
        .gql_with(
            Some(&bob),
            "query($id: ID!) { order(id: $id) { id } }",
            json!({ "id": order }),
            &seen,
        )
        .await;
    assert_eq!(code(&body), None, "{body}");
    assert_eq!(
        body["data"]["order"],
        serde_json::Value::Null,
        "another's order: {body}"
    );
    let (_, body) = app
        .gql_with(
            Some(&bob),
            "query($id: ID!) { node(id: $id) { id ... on Order { total { amount } } } }",
            json!({ "id": order }),
            &seen,
        )
        .await;
    assert_eq!(body["data"]["node"], serde_json::Value::Null, "{body}");
    let (_, body) = app
        .gql_with(
            Some(&bob),
            "mutation($id: ID!) { cancelOrder(id: $id) { consistencyToken } }",
            json!({ "id": order }),
            &seen,
        )
        .await;
    assert_eq!(code(&body), Some("NOT_FOUND"), "{body}");
    let (_, body) = app
        .gql_with(
            Some(&bob),
            "{ myOrders { edges { node { id } } } }",
            json!({}),
            &seen,
        )
        .await;
    assert_eq!(body["data"]["myOrders"]["edges"], json!([]), "{body}");

    // Nor another customer's account through node(id:).
    let ann_node = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("Customer:{}", ann_id.0))
    };
    let (_, body) = app
        .gql_with(
            Some(&bob),
            "query($id: ID!) { node(id: $id) { id ... on Customer { email } } }",
            json!({ "id": ann_node }),
            &seen,
        )
        .await;
    assert_eq!(body["data"]["node"], serde_json::Value::Null, "{body}");

    // Staff see it, and the owner's email.
    let (_, body) = app
        .gql_with(
            Some(&app.staff_token),
            "query($id: ID!) { node(id: $id) { ... on Order { customer { email } } } }",
            json!({ "id": order }),
            &seen,
        )
        .await;
    assert_eq!(
        body["data"]["node"]["customer"]["email"], "ann@example.com",
        "{body}"
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401() {
    let app = spawn_app().await;
    for header in ["Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "Bearer "] {
        let r = ok(app
            .http
            .post(format!("{}/graphql", app.base))
            .header("authorization", header)
            .json(&json!({ "query": "{ __typename }" }))
            .send()
            .await);
        assert_eq!(r.status().as_u16(), 401, "{header}");
        let body: serde_json::Value = ok(r.json().await);
        assert_eq!(code(&body), Some("UNAUTHENTICATED"));
    }
}

#[tokio::test]
async fn errors_name_the_problem_without_internals() {
    let app = spawn_app().await;
    let product = app.product("ERR-1", 100, 1).await;
    let (_, token) = app.customer("err@example.com").await;
    let (_, body) = app
        .gql(
            Some(&token),
            "mutation($p: ID!) { placeOrder(input: {lines: [{productId: $p, quantity: 2}]}) { consistencyToken } }",
            json!({ "p": product }),
        )
        .await;
    assert_eq!(code(&body), Some("OUT_OF_STOCK"), "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["productId"],
        product.as_str()
    );
    assert_eq!(body["errors"][0]["extensions"]["available"], 1);

    let (_, body) = app
        .gql(
            Some(&token),
            "mutation($p: ID!) { placeOrder(input: {lines: [{productId: $p, quantity: 0}]}) { consistencyToken } }",
            json!({ "p": product }),
        )
        .await;
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");

    let (_, body) = app
        .gql(
            Some(&app.staff_token),
            r#"mutation { createCategory(input: {slug: "Not A Slug", name: "x"}) { consistencyToken } }"#,
            json!({}),
        )
        .await;
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");
    let text = body.to_string();
    assert!(
        !text.contains("SQL") && !text.contains("diesel") && !text.contains("constraint"),
        "{text}"
    );
}

/// Hostile documents get a clear error code and the server keeps serving.
#[tokio::test]
async fn abusive_queries_are_refused_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let deep = format!(
        "{{ {}__typename{} }}",
        "node(id: \"x\") { ... on Category { parent { ".repeat(25),
        " } } ".repeat(25)
    );
    let aliases = format!(
        "{{ {} }}",
        (0..10_000)
            .map(|i| format!("a{i}: __typename"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let cycle = "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }".to_owned();
    let roots = format!(
        "{{ {} }}",
        (0..11)
            .map(|i| format!("c{i}: categories {{ slug }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (what, query) in [
        ("depth 50", deep),
        ("10,000 aliases", aliases),
        ("fragment cycle", cycle),
        ("11 root fields", roots),
    ] {
        let r = ok(app
            .http
            .post(format!("{}/graphql", app.base))
            .header("accept", "application/graphql-response+json")
            .json(&json!({ "query": query }))
            .send()
            .await);
        let status = r.status().as_u16();
        let body: serde_json::Value = ok(r.json().await);
        assert!(
            status == 400 || status == 413,
            "{what}: status {status} {body}"
        );
        assert!(code(&body) == Some("BAD_USER_INPUT"), "{what}: {body}");
    }
    let big = "x".repeat(300 * 1024);
    let r = ok(app
        .http
        .post(format!("{}/graphql", app.base))
        .json(&json!({ "query": format!("{{ __typename }} # {big}") }))
        .send()
        .await);
    assert_eq!(r.status().as_u16(), 413);
    let body: serde_json::Value = ok(r.json().await);
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");

    let (status, body) = app.gql(None, "{ categories { slug } }", json!({})).await;
    assert_eq!((status, code(&body)), (200, None), "still serving: {body}");
}

/// The global id of some category (creates one).
async fn category_of(app: &TestApp) -> String {
    let (_, body) = app
        .gql(
            Some(&app.staff_token),
            r#"mutation { createCategory(input: {slug: "role-cat", name: "Role"}) { categoryId } }"#,
            json!({}),
        )
        .await;
    body["data"]["createCategory"]["categoryId"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Production serves neither GraphiQL nor the SDL unless asked to; a dev-mode server on
/// a database that is not the embedded one answers no introspection, seeds nothing and
/// runs no fake provider unless asked to by name.
#[tokio::test]
async fn dev_conveniences_stay_off_where_they_were_not_asked_for() {
    let prod = spawn_app_with(|cfg| {
        cfg.mode = till_api::config::Mode::Production;
        cfg.introspection = None;
        cfg.explorer = None;
    })
    .await;
    for path in [
        "/graphiql",
        "/schema.graphql",
        "/graphiql/assets/till-graphiql.js",
    ] {
        let r = ok(prod.http.get(format!("{}{path}", prod.base)).send().await);
        assert_eq!(r.status().as_u16(), 404, "{path} served in production");
    }
    let asked = spawn_app_with(|cfg| {
        cfg.mode = till_api::config::Mode::Production;
        cfg.explorer = Some(true);
    })
    .await;
    let r = ok(asked
        .http
        .get(format!("{}/schema.graphql", asked.base))
        .send()
        .await);
    assert_eq!(r.status().as_u16(), 200);

    let dev = spawn_app_with(|cfg| {
        cfg.seed_demo = None;
        cfg.introspection = None;
        cfg.fake_provider = None;
    })
    .await;
    let (_, body) = dev
        .gql(None, "{ __schema { queryType { name } } }", json!({}))
        .await;
    assert!(
        body["data"]["__schema"].is_null(),
        "introspection answered: {body}"
    );
    let r = ok(dev
        .http
        .post(format!("{}/fake-provider/charges", dev.base))
        .header("idempotency-key", "k")
        .json(&json!({ "amount": 100, "currency": "EUR", "source": "tok_ok" }))
        .send()
        .await);
    assert_eq!(r.status().as_u16(), 404, "the fake provider answered");
    let demo = dev
        .count(
            "SELECT count(*) AS n FROM customers WHERE email LIKE '%@till.dev'",
            None,
        )
        .await;
    assert_eq!(
        demo, 0,
        "demo accounts with a published password were seeded"
    );
}

/// GraphiQL's demo tokens: handed out in dev mode with the demo accounts seeded (dev mode
/// listens on loopback only), never in production even with the demo seed, and not
/// without the demo accounts.
#[tokio::test]
async fn demo_tokens_only_in_dev_mode_with_the_demo_accounts() {
    let dev = spawn_app_with(|cfg| cfg.seed_demo = Some(true)).await;
    let r = ok(dev
        .http
        .get(format!("{}/graphiql/demo-tokens", dev.base))
        .send()
        .await);
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let tokens: serde_json::Value = ok(r.json().await);
    let staff = tokens["staff"]
        .as_str()
        .unwrap_or_else(|| panic!("{tokens}"));
    let shopper = tokens["shopper"]
        .as_str()
        .unwrap_or_else(|| panic!("{tokens}"));
    let back_office = "{ orders(first: 1) { edges { cursor } } }";
    let (_, body) = dev.gql(Some(staff), back_office, json!({})).await;
    assert_eq!(code(&body), None, "the staff token is staff: {body}");
    let (_, body) = dev.gql(Some(shopper), back_office, json!({})).await;
    assert_eq!(
        code(&body),
        Some("FORBIDDEN"),
        "the shopper token is a customer's: {body}"
    );

    for (what, app) in [
        (
            "production with the demo seed",
            spawn_app_with(|cfg| {
                cfg.mode = till_api::config::Mode::Production;
                cfg.explorer = Some(true);
                cfg.seed_demo = Some(true);
            })
            .await,
        ),
        ("dev without the demo accounts", spawn_app().await),
    ] {
        let r = ok(app
            .http
            .get(format!("{}/graphiql/demo-tokens", app.base))
            .send()
            .await);
        assert_eq!(r.status().as_u16(), 404, "{what}");
    }
}
