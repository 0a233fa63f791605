//! Placing orders over HTTP: read-your-writes with the consistency token, and no
//! oversell under 200 concurrent buyers.

use serde_json::json;

use crate::support::*;

const PLACE: &str = "mutation($p: ID!, $q: Int!) { placeOrder(input: {lines: [{productId: $p, quantity: $q}]}) { consistencyToken } }";

#[tokio::test]
async fn an_order_placed_over_http_is_readable_with_its_consistency_token() {
    let app = spawn_app().await;
    let product = app.product("RYW-1", 1250, 10).await;
    let (_, token) = app.customer("ryw@example.com").await;

    let (status, body) = app
        .gql(Some(&token), PLACE, json!({ "p": product, "q": 3 }))
        .await;
    assert_eq!(status, 200, "{body}");
    let ct = consistency_token(&body, "placeOrder");

    let started = std::time::Instant::now();
    let (status, body) = app
        .gql_after(
            Some(&token),
            &ct,
            "{ myOrders(first: 5) { edges { node { status total { amountMinor } lines { sku quantity product { available } } } } } }",
            json!({}),
        )
        .await;
    println!("read-your-writes query answered in {:?}", started.elapsed());
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["myOrders"]["edges"],
        json!([{ "node": {
            "status": "PENDING_PAYMENT",
            "total": { "amountMinor": 3750 },
            "lines": [{ "sku": "RYW-1", "quantity": 3, "product": { "available": 7 } }]
        }}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_buyers_for_fifty_units_never_oversell() {
    let app = spawn_app().await;
    let product = app.product("FLASH-1", 999, 50).await;
    let (_, token) = app.customer("crowd@example.com").await;
    let app = std::sync::Arc::new(app);

    let buyers: Vec<_> = (0..200)
        .map(|_| {
            let app = app.clone();
            let token = token.clone();
            let product = product.clone();
            tokio::spawn(async move {
                app.gql(Some(&token), PLACE, json!({ "p": product, "q": 1 }))
                    .await
            })
        })
        .collect();
    let mut sold = 0;
    let mut refused = 0;
    let mut tokens = Vec::new();
    for b in buyers {
        let (status, body) = ok(b.await);
        assert_eq!(status, 200, "{body}");
        match code(&body) {
            None => {
                sold += 1;
                tokens.push(
                    body["data"]["placeOrder"]["consistencyToken"]
                        .as_str()
                        .map(str::to_owned),
                );
            }
            Some("OUT_OF_STOCK") => {
                refused += 1;
                assert_eq!(body["errors"][0]["extensions"]["sku"], "FLASH-1");
            }
            Some(other) => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((sold, refused), (50, 150));

    // The product view agrees once it has applied the last sale.
    let last = tokens
        .into_iter()
        .flatten()
        .max_by_key(|t| {
            t.split_once('.')
                .map(|(a, b)| (a.parse::<i64>().unwrap_or(0), b.parse::<i64>().unwrap_or(0)))
        })
        .unwrap_or_else(|| panic!("no tokens"));
    let (status, body) = app
        .gql_with(
            Some(&app.staff_token),
            "query($id: ID!) { product(id: $id) { available onHand reserved popularity } }",
            json!({ "id": product }),
            &[("x-consistency-token", &last)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["product"],
        json!({ "available": 0, "onHand": 50, "reserved": 50, "popularity": 50 })
    );
}

#[tokio::test]
async fn cancelling_through_the_api_releases_stock() {
    let app = spawn_app().await;
    let product = app.product("CXL-1", 500, 4).await;
    let (_, token) = app.customer("cxl@example.com").await;
    let (_, body) = app
        .gql(
            Some(&token),
            "mutation($p: ID!) { placeOrder(input: {lines: [{productId: $p, quantity: 4}]}) { order { id status } } }",
            json!({ "p": product }),
        )
        .await;
    let order_id = body["data"]["placeOrder"]["order"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        body["data"]["placeOrder"]["order"]["status"], "PENDING_PAYMENT",
        "{body}"
    );

    let (_, body) = app
        .gql(
            Some(&token),
            "mutation($id: ID!) { cancelOrder(id: $id) { order { status statusHistory { status } lines { product { available } } } } }",
            json!({ "id": order_id }),
        )
        .await;
    assert_eq!(
        body["data"]["cancelOrder"]["order"],
        json!({
            "status": "CANCELLED",
            "statusHistory": [{ "status": "PENDING_PAYMENT" }, { "status": "CANCELLED" }],
            "lines": [{ "product": { "available": 4 } }]
        }),
        "{body}"
    );

    let (_, body) = app
        .gql(
            Some(&app.staff_token),
            "mutation($id: ID!) { shipOrder(id: $id) { consistencyToken } }",
            json!({ "id": order_id }),
        )
        .await;
    assert_eq!(code(&body), Some("CONFLICT"), "{body}");
}

#[tokio::test]
async fn back_office_mutations_round_trip() {
    let app = spawn_app().await;
    let staff = Some(app.staff_token.as_str());
    let (_, body) = app
        .gql(staff, r#"mutation { createCategory(input: {slug: "gear", name: "Gear"}) { category { id slug path { slug } } } }"#, json!({}))
        .await;
    let cat = body["data"]["createCategory"]["category"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!cat.is_empty(), "{body}");
    let (_, body) = app
        .gql(
            staff,
            "mutation($c: ID!) { createProduct(input: {sku: \"GEAR-1\", name: \"Rope\", categoryId: $c, priceMinor: 2500, initialStock: 5}) { product { id version available category { slug } } } }",
            json!({ "c": cat }),
        )
        .await;
    let p = &body["data"]["createProduct"]["product"];
    assert_eq!(
        (p["version"].as_i64(), p["available"].as_i64()),
        (Some(1), Some(5)),
        "{body}"
    );
    let pid = p["id"].as_str().unwrap_or_default().to_owned();

    let update = "mutation($id: ID!, $v: Int) { updateProduct(input: {id: $id, expectedVersion: $v, priceMinor: 2700}) { product { price { amount } version } } }";
    let (_, body) = app.gql(staff, update, json!({ "id": pid, "v": 1 })).await;
    assert_eq!(
        body["data"]["updateProduct"]["product"],
        json!({ "price": { "amount": "27.00" }, "version": 2 }),
        "{body}"
    );
    let (_, body) = app.gql(staff, update, json!({ "id": pid, "v": 1 })).await;
    assert_eq!(code(&body), Some("CONFLICT"), "{body}");

    let (_, body) = app
        .gql(staff, "mutation($id: ID!) { restockProduct(productId: $id, quantity: 10) { product { available } } }", json!({ "id": pid }))
        .await;
    assert_eq!(
        body["data"]["restockProduct"]["product"]["available"], 15,
        "{body}"
    );
    let (_, body) = app
        .gql(
            staff,
            "mutation($id: ID!) { adjustInventory(productId: $id, delta: -3, reason: \"damaged\") { product { available onHand } } }",
            json!({ "id": pid }),
        )
        .await;
    assert_eq!(
        body["data"]["adjustInventory"]["product"],
        json!({ "available": 12, "onHand": 12 }),
        "{body}"
    );
    let (_, body) = app
        .gql(
            staff,
            "mutation($id: ID!) { archiveProduct(id: $id) { product { status } } }",
            json!({ "id": pid }),
        )
        .await;
    assert_eq!(
        body["data"]["archiveProduct"]["product"]["status"], "ARCHIVED",
        "{body}"
    );

    // Archived products are hidden from shoppers.
    let (_, body) = app
        .gql(
            None,
            "query($id: ID!) { product(id: $id) { sku } }",
            json!({ "id": pid }),
        )
        .await;
    assert_eq!(body["data"]["product"], serde_json::Value::Null, "{body}");
}

/// An order's lines resolve their products from the cache when it has them and through
/// the batched loader when not; one response mixes both and both are right.
#[tokio::test]
async fn order_lines_resolve_cached_and_uncached_products_alike() {
    let app = spawn_app().await;
    let cached = app.product("LINE-CACHED", 500, 10).await;
    let cold = app.product("LINE-COLD", 700, 10).await;
    let (_, token) = app.customer("lines@example.com").await;
    let (status, body) = app
        .gql(
            Some(&token),
            "mutation($a: ID!, $b: ID!) { placeOrder(input: {lines: [{productId: $a, quantity: 1}, {productId: $b, quantity: 2}]}) { consistencyToken } }",
            json!({ "a": cached, "b": cold }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ct = consistency_token(&body, "placeOrder");
    // one of the two products is read (and so cached) first
    let (status, body) = app
        .gql_after(
            Some(&token),
            &ct,
            "query($id: ID!) { product(id: $id) { sku } }",
            json!({ "id": cached }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = app
        .gql_after(
            Some(&token),
            &ct,
            "{ myOrders(first: 1) { edges { node { lines { sku product { sku available } } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut lines = body["data"]["myOrders"]["edges"][0]["node"]["lines"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no lines: {body}"));
    lines.sort_by_key(|l| l["sku"].as_str().map(str::to_owned));
    assert_eq!(
        lines,
        vec![
            json!({ "sku": "LINE-CACHED", "product": { "sku": "LINE-CACHED", "available": 9 } }),
            json!({ "sku": "LINE-COLD", "product": { "sku": "LINE-COLD", "available": 8 } }),
        ]
    );
}

/// Every field of `Order`, with the lines' products as they are now.
const ORDER_FIELDS: &str = "id status version placedAt updatedAt total { amountMinor currency } \
    customer { id email name } statusHistory { status at } \
    lines { productId sku name quantity unitPrice { amountMinor } lineTotal { amountMinor } \
            product { id sku available } }";

/// A `placeOrder` payload shows the new order from the command's own event, without
/// waiting for the projector; it must be exactly what a read with the payload's token
/// returns next, field for field (the read model's rounding of times, its JSON for
/// lines and history, repeated products merged), and a line's product must show the
/// order's own reservation. Also for an order placed by staff for a customer, and for
/// an idempotent replay (which reads the order as it is now).
#[tokio::test]
async fn a_placed_orders_payload_is_what_the_next_read_with_its_token_returns() {
    let app = spawn_app().await;
    let a = app.product("WRITTEN-A", 1250, 100).await;
    let b = app.product("WRITTEN-B", 399, 100).await;
    let (customer, token) = app.customer("written@example.com").await;
    let staff = app.admin().await;
    let place = format!(
        "mutation($lines: [OrderLineInput!]!, $c: ID) {{ placeOrder(input: {{lines: $lines, customerId: $c}}) \
         {{ orderId consistencyToken order {{ {ORDER_FIELDS} }} }} }}"
    );
    let read = format!("query($id: ID!) {{ order(id: $id) {{ {ORDER_FIELDS} }} }}");
    // The account's global id, made here: `me` reads a read model that may not have the
    // new account yet.
    let customer_gid = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("Customer:{}", customer.0))
    };
    let mut reserved_a = 0;
    for i in 0..6_i64 {
        // Two lines, the second time with product A twice (merged into one line).
        let lines = if i % 2 == 0 {
            json!([{ "productId": a, "quantity": 1 + i }, { "productId": b, "quantity": 2 }])
        } else {
            json!([{ "productId": a, "quantity": 1 }, { "productId": a, "quantity": i }])
        };
        reserved_a += 1 + i;
        let by_staff = i == 3;
        let (who, c) = if by_staff {
            (staff.as_str(), json!(customer_gid))
        } else {
            (token.as_str(), json!(null))
        };
        let key = format!("written-{i}");
        // Sent twice with its Idempotency-Key: the second answer is the stored outcome.
        let headers = [("idempotency-key", key.as_str())];
        let send = || {
            app.gql_with(
                Some(who),
                &place,
                json!({ "lines": lines, "c": c }),
                &headers,
            )
        };
        let (status, written) = send().await;
        assert_eq!(status, 200, "{written}");
        assert!(written.get("errors").is_none(), "{written}");
        let payload = &written["data"]["placeOrder"];
        assert_eq!(payload["order"]["id"], payload["orderId"]);
        let ct = consistency_token(&written, "placeOrder");
        let (status, body) = app
            .gql_after(Some(who), &ct, &read, json!({ "id": payload["orderId"] }))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            payload["order"], body["data"]["order"],
            "order {i}: the payload differs from the read with its token"
        );
        let line_a = payload["order"]["lines"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["sku"] == "WRITTEN-A"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            line_a["product"]["available"],
            json!(100 - reserved_a),
            "order {i}: the line's product does not show the order's reservation"
        );

        // The same request again with its key: the stored outcome, rendered with the
        // order as it is now (the same, nothing changed it).
        let (status, again) = send().await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["data"]["placeOrder"], written["data"]["placeOrder"]);
    }
}
