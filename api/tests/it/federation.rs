//! Apollo Federation v2: with `TILL_FEDERATION` on, a gateway's `_entities` references
//! resolve as the forwarded caller may see them, bounded and priced per reference;
//! with it off (the default) the schema has no federation fields at all.

use serde_json::{json, Value};

use crate::support::*;

const ENTITIES: &str = "query($r: [_Any!]!) { _entities(representations: $r) { \
    __typename \
    ... on Product { id sku name } \
    ... on Order { id status } \
    ... on Customer { id email } \
    ... on Category { id slug } } }";

fn requested_cost(body: &Value) -> u64 {
    body["extensions"]["cost"]["requestedQueryCost"]
        .as_u64()
        .unwrap_or_else(|| panic!("no cost in {body}"))
}

#[tokio::test]
async fn entity_references_resolve_as_the_forwarded_caller_may_see_them() {
    let app = spawn_app_with(|c| c.federation = true).await;
    let product = app.product("FED-1", 1500, 10).await;
    let (ann_id, ann) = app.customer("fed-ann@example.com").await;
    let (_, bob) = app.customer("fed-bob@example.com").await;
    let (status, body) = app
        .gql(
            Some(&ann),
            "mutation($p: ID!) { placeOrder(input: {lines: [{productId: $p, quantity: 1}]}) \
             { orderId consistencyToken } }",
            json!({ "p": product }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let order = body["data"]["placeOrder"]["orderId"].clone();
    let ct = consistency_token(&body, "placeOrder");
    let ann_global = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("Customer:{}", ann_id.0))
    };
    let refs = json!({ "r": [
        { "__typename": "Product", "sku": "FED-1" },
        { "__typename": "Product", "id": product },
        { "__typename": "Order", "id": order },
        { "__typename": "Customer", "id": ann_global },
        { "__typename": "Product", "sku": "NO-SUCH-SKU" },
    ]});

    // the order's customer sees every reference, in the order asked
    let (status, body) = app.gql_after(Some(&ann), &ct, ENTITIES, refs.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    let got = &body["data"]["_entities"];
    assert_eq!(got[0]["sku"], "FED-1", "{body}");
    assert_eq!(got[1]["id"], product, "{body}");
    assert_eq!(got[1]["name"], "Product FED-1", "{body}");
    assert_eq!(
        got[2],
        json!({ "__typename": "Order", "id": order, "status": "PENDING_PAYMENT" })
    );
    assert_eq!(got[3]["email"], "fed-ann@example.com", "{body}");
    assert_eq!(got[4], Value::Null, "an unknown key is null: {body}");

    // another customer, and nobody, get the product but not ann's order or account
    for token in [Some(bob.as_str()), None] {
        let (status, body) = app.gql_after(token, &ct, ENTITIES, refs.clone()).await;
        assert_eq!(status, 200, "{body}");
        let got = &body["data"]["_entities"];
        assert_eq!(got[0]["sku"], "FED-1", "{body}");
        assert_eq!(got[2], Value::Null, "another's order: {body}");
        assert_eq!(got[3], Value::Null, "another's account: {body}");
    }

    // a malformed global id is the caller's error, not an internal one
    let (_, body) = app
        .gql(
            Some(&ann),
            ENTITIES,
            json!({ "r": [{ "__typename": "Order", "id": "not-an-id" }] }),
        )
        .await;
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");
}

#[tokio::test]
async fn entity_references_are_bounded_and_each_is_paid_for() {
    let app = spawn_app_with(|c| c.federation = true).await;
    let refs = |n: usize| json!({ "r": vec![json!({ "__typename": "Product", "sku": "X" }); n] });

    let (_, one) = app.gql(None, ENTITIES, refs(1)).await;
    let (_, ten) = app.gql(None, ENTITIES, refs(10)).await;
    assert!(one["errors"].is_null(), "{one}");
    assert_eq!(
        requested_cost(&ten),
        10 * requested_cost(&one),
        "ten references cost ten times one: {one} {ten}"
    );

    let (status, body) = app.gql(None, ENTITIES, refs(101)).await;
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{status} {body}");
    assert_eq!(body["errors"][0]["extensions"]["limit"], "representations");
    // the same through literals and aliases, which a variable count would miss
    let literal = (0..3)
        .map(|i| {
            format!(
                "e{i}: _entities(representations: [{}]) {{ __typename }}",
                vec!["{__typename: \"Product\", sku: \"X\"}"; 40].join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let (_, body) = app.gql(None, &format!("{{ {literal} }}"), json!({})).await;
    assert_eq!(
        body["errors"][0]["extensions"]["limit"], "representations",
        "{body}"
    );
}

#[tokio::test]
async fn without_the_setting_the_schema_has_no_federation_fields() {
    let app = spawn_app().await;
    let (_, body) = app.gql(None, "{ _service { sdl } }", json!({})).await;
    assert!(!body["errors"].is_null(), "{body}");
    assert!(body["data"].is_null(), "{body}");
    let sdl = ok(ok(app
        .http
        .get(format!("{}/schema.graphql", app.base))
        .send()
        .await)
    .text()
    .await);
    assert!(sdl.contains("type Product"), "{sdl}");
    for federation in ["_entities", "_service", "_Any", "@key"] {
        assert!(
            !sdl.contains(federation),
            "{federation} in the plain schema"
        );
    }
}

#[tokio::test]
async fn the_subgraph_sdl_declares_federation_2_and_the_entity_keys() {
    let app = spawn_app_with(|c| c.federation = true).await;
    let (status, body) = app.gql(None, "{ _service { sdl } }", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let sdl = body["data"]["_service"]["sdl"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    assert!(
        sdl.contains("@link(\n\turl: \"https://specs.apollo.dev/federation/v2"),
        "{sdl}"
    );
    for key in [
        "type Product implements Node @key(fields: \"id\") @key(fields: \"sku\")",
        "type Order implements Node @key(fields: \"id\")",
        "type Customer implements Node @key(fields: \"id\")",
        "type Category implements Node @key(fields: \"id\")",
        "type Query {",
    ] {
        assert!(sdl.contains(key), "{key} missing from {sdl}");
    }
    assert!(!sdl.contains("_entities"), "{sdl}");
    assert!(!sdl.contains("FederatedQuery"), "{sdl}");
    // `till schema --federation` prints the same subgraph, sorted
    let printed = till_api::graphql::federation_sdl();
    for key in ["@key(fields: \"sku\")", "specs.apollo.dev/federation/v2"] {
        assert!(printed.contains(key), "{key} missing from {printed}");
    }
}

/// The complexity limit sees `_entities` priced per reference, not the one reference
/// async-graphql's own check counts.
#[tokio::test]
async fn many_references_can_exceed_the_complexity_limit() {
    let app = spawn_app_with(|c| {
        c.federation = true;
        c.max_complexity = 100;
    })
    .await;
    let refs = |n: usize| json!({ "r": vec![json!({ "__typename": "Product", "sku": "X" }); n] });
    let (_, one) = app.gql(None, ENTITIES, refs(1)).await;
    assert!(one["errors"].is_null(), "{one}");
    let (_, many) = app.gql(None, ENTITIES, refs(60)).await;
    assert_eq!(code(&many), Some("BAD_USER_INPUT"), "{many}");
    assert_eq!(
        many["errors"][0]["extensions"]["limit"], "complexity",
        "{many}"
    );
}
