//! One mutation style: every mutation takes `input:` and returns a payload; the flat
//! arguments of the older ones still work for a release, deprecated, and a call gives
//! one form or the other.

use serde_json::{json, Value};

use crate::support::*;

/// Every mutation that is not itself deprecated takes an `input` argument, any other
/// argument is deprecated, and it returns a `...Payload`.
#[test]
fn every_mutation_takes_input_and_returns_a_payload() {
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
    let sdl = till_api::graphql::sdl();
    let doc = async_graphql::parser::parse_schema(&sdl).unwrap();
    let deprecated = |directives: &[async_graphql::Positioned<
        async_graphql::parser::types::ConstDirective,
    >]| { directives.iter().any(|d| d.node.name.node == "deprecated") };
    let mut wrong = Vec::new();
    for def in &doc.definitions {
        let TypeSystemDefinition::Type(ty) = def else {
            continue;
        };
        if ty.node.name.node != "Mutation" {
            continue;
        }
        let TypeKind::Object(o) = &ty.node.kind else {
            continue;
        };
        for f in &o.fields {
            let f = &f.node;
            if deprecated(&f.directives) {
                continue;
            }
            let name = f.name.node.as_str();
            if !f.arguments.iter().any(|a| a.node.name.node == "input") {
                wrong.push(format!("{name}: no input"));
            }
            for a in &f.arguments {
                if a.node.name.node != "input" && !deprecated(&a.node.directives) {
                    wrong.push(format!("{name}({}) is not deprecated", a.node.name.node));
                }
            }
            if !f
                .ty
                .node
                .to_string()
                .trim_end_matches('!')
                .ends_with("Payload")
            {
                wrong.push(format!("{name} returns {}", f.ty.node));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:?}");
}

fn ok_data<'a>(body: &'a Value, field: &str) -> &'a Value {
    assert!(body["errors"].is_null(), "{field}: {body}");
    &body["data"][field]
}

#[tokio::test]
async fn mutations_run_with_input_and_refuse_both_forms() {
    let app = spawn_app().await;
    let product = app.product("STYLE-1", 1000, 10).await;
    let (_, password_token) = app.customer("style@example.com").await;
    let staff = app.staff_token.clone();
    let admin = app.admin().await;

    // sign up, in, refresh and out with `input`
    let (_, body) = app
        .gql(
            None,
            "mutation { register(input: {email: \"style-2@example.com\", password: \"a long enough passphrase\", name: \"S\"}) { refreshToken } }",
            json!({}),
        )
        .await;
    ok_data(&body, "register");
    let (_, body) = app
        .gql(
            None,
            "mutation($i: LoginInput!) { login(input: $i) { accessToken refreshToken } }",
            json!({ "i": { "email": "style-2@example.com", "password": "a long enough passphrase" } }),
        )
        .await;
    let login = ok_data(&body, "login").clone();
    let (_, body) = app
        .gql(
            None,
            "mutation($i: RefreshTokenInput!) { refreshToken(input: $i) { accessToken refreshToken } }",
            json!({ "i": { "refreshToken": login["refreshToken"] } }),
        )
        .await;
    let refreshed = ok_data(&body, "refreshToken").clone();
    let shopper = refreshed["accessToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // stock and orders
    let (_, body) = app
        .gql(
            Some(&staff),
            "mutation($p: ID!) { restockProduct(input: {productId: $p, quantity: 5}) { consistencyToken } }",
            json!({ "p": product }),
        )
        .await;
    ok_data(&body, "restockProduct");
    let (_, body) = app
        .gql(
            Some(&staff),
            "mutation($p: ID!) { adjustInventory(input: {productId: $p, delta: -1, reason: \"count\"}) { consistencyToken } }",
            json!({ "p": product }),
        )
        .await;
    ok_data(&body, "adjustInventory");
    let place = |token: String| {
        let app = &app;
        let product = product.clone();
        async move {
            let (_, body) = app
                .gql(
                    Some(&token),
                    "mutation($p: ID!) { placeOrder(input: {lines: [{productId: $p, quantity: 1}]}) { orderId } }",
                    json!({ "p": product }),
                )
                .await;
            ok_data(&body, "placeOrder")["orderId"].clone()
        }
    };
    let first = place(shopper.clone()).await;
    let (_, body) = app
        .gql(
            Some(&shopper),
            "mutation($o: ID!) { cancelOrder(input: {id: $o}) { order { status } } }",
            json!({ "o": first }),
        )
        .await;
    ok_data(&body, "cancelOrder");
    let second = place(password_token.clone()).await;
    let (_, body) = app
        .gql(
            Some(&password_token),
            "mutation($i: PayOrderInput!) { payOrder(input: $i) { orderId } }",
            json!({ "i": { "orderId": second, "paymentMethodToken": "tok_ok" } }),
        )
        .await;
    ok_data(&body, "payOrder");

    // both forms at once, or neither, are refused
    for (query, vars) in [
        (
            "mutation($o: ID!) { cancelOrder(id: $o, input: {id: $o}) { orderId } }",
            json!({ "o": first }),
        ),
        ("mutation { cancelOrder { orderId } }", json!({})),
        (
            "mutation($p: ID!) { restockProduct(productId: $p) { consistencyToken } }",
            json!({ "p": product }),
        ),
    ] {
        let (_, body) = app.gql(Some(&staff), query, vars).await;
        assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{query}: {body}");
    }
    // the deprecated flat form still answers
    let (_, body) = app
        .gql(
            Some(&staff),
            "mutation($p: ID!) { archiveProduct(id: $p) { consistencyToken } }",
            json!({ "p": product }),
        )
        .await;
    ok_data(&body, "archiveProduct");

    // webhooks with enum event types, and their payload-returning update
    let (_, body) = app
        .gql(
            Some(&admin),
            "mutation { registerWebhook(input: {url: \"https://hooks.example.com/till\", eventTypes: [ORDER_PLACED, ORDER_STATUS_CHANGED]}) { subscription { id eventTypes } } }",
            json!({}),
        )
        .await;
    let sub = ok_data(&body, "registerWebhook")["subscription"].clone();
    assert_eq!(
        sub["eventTypes"],
        json!(["OrderPlaced", "OrderStatusChanged"])
    );
    let (_, body) = app
        .gql(
            Some(&admin),
            "mutation($s: ID!) { updateWebhookSubscription(input: {subscriptionId: $s, active: false}) { subscription { active } } }",
            json!({ "s": sub["id"] }),
        )
        .await;
    assert_eq!(
        ok_data(&body, "updateWebhookSubscription")["subscription"]["active"],
        false
    );

    // roles, and signing out
    let (id, _) = app.customer("style-3@example.com").await;
    let customer = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("Customer:{}", id.0))
    };
    let (_, body) = app
        .gql(
            Some(&admin),
            "mutation($c: ID!) { grantRole(input: {customerId: $c, role: STAFF}) { consistencyToken } }",
            json!({ "c": customer }),
        )
        .await;
    ok_data(&body, "grantRole");
    let (_, body) = app
        .gql(
            None,
            "mutation($i: RefreshTokenInput!) { logout(input: $i) { revoked } }",
            json!({ "i": { "refreshToken": refreshed["refreshToken"] } }),
        )
        .await;
    assert_eq!(ok_data(&body, "logout")["revoked"], true, "{body}");
}
