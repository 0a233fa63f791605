//! Outbound webhooks: a subscriber that fails twice then accepts gets the event three
//! times under one event id, signed with its secret; the delivery history says so.
//! Subscribers are registered by administrators only, must be https in production and
//! cannot be internal addresses, neither as written nor as resolved when connecting.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

#[tokio::test]
async fn deliveries_are_signed_retried_and_recorded() {
    let subscriber = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .mount(&subscriber)
        .await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&subscriber)
        .await;
    let app = spawn_app_with(|cfg| {
        cfg.jobs.job_backoff_base_ms = 20;
        cfg.jobs.job_backoff_cap_s = 1;
        // The subscriber listens on 127.0.0.1.
        cfg.jobs.webhook_allow_private = true;
    })
    .await;
    let admin = app.admin().await;
    let register = "mutation($u: String!, $t: [String!]!) { registerWebhook(url: $u, eventTypes: $t) { secret subscription { id active eventTypes } } }";

    for (url, types) in [
        ("ftp://example.com/x", json!(["*"])),
        ("https://example.com/x", json!(["NoSuchEvent"])),
    ] {
        let (_, body) = app
            .gql(Some(&admin), register, json!({ "u": url, "t": types }))
            .await;
        assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");
    }
    let (_, body) = app
        .gql(
            Some(&admin),
            register,
            json!({ "u": format!("{}/hook", subscriber.uri()), "t": ["InventoryRestocked"] }),
        )
        .await;
    let secret = body["data"]["registerWebhook"]["secret"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let sub = body["data"]["registerWebhook"]["subscription"]["id"].clone();
    assert!(secret.starts_with("whsec_"), "{body}");
    // Customers cannot register webhooks.
    let (_, customer) = app.customer("nosy@example.com").await;
    let (_, body) = app
        .gql(
            Some(&customer),
            register,
            json!({ "u": "https://example.com/x", "t": ["*"] }),
        )
        .await;
    assert_eq!(code(&body), Some("FORBIDDEN"), "{body}");

    let product = app.product("HOOK-1", 100, 0).await;
    let (_, body) = app
        .gql(
            Some(&admin),
            "mutation($p: ID!) { restockProduct(productId: $p, quantity: 7) { productId } }",
            json!({ "p": product }),
        )
        .await;
    assert_eq!(code(&body), None, "{body}");

    let started = Instant::now();
    let requests = loop {
        let r = subscriber.received_requests().await.unwrap_or_default();
        if r.len() >= 3 {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "only {} deliveries",
            r.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ids: Vec<&str> = requests
        .iter()
        .filter_map(|r| r.headers.get("till-event-id").and_then(|v| v.to_str().ok()))
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one event id across retries: {ids:?}"
    );
    let last = &requests[2];
    let sig = last
        .headers
        .get("till-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    assert!(
        till_api::webhook_signatures::verify(secret.as_bytes(), sig, &last.body, now, 300).is_ok(),
        "{sig}"
    );
    assert!(till_api::webhook_signatures::verify(b"wrong", sig, &last.body, now, 300).is_err());
    let event: Value = serde_json::from_slice(&last.body).unwrap_or_default();
    assert_eq!(event["type"], "InventoryRestocked", "{event}");
    assert_eq!(event["data"]["quantity"], 7, "{event}");

    let history = "query($s: ID!) { webhookDeliveries(subscriptionId: $s) { edges { node { eventType status attempts responseStatus } } } }";
    let started = Instant::now();
    loop {
        let (_, body) = app.gql(Some(&admin), history, json!({ "s": sub })).await;
        let edges = body["data"]["webhookDeliveries"]["edges"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // Only the subscribed type was delivered (product creation was not).
        assert!(edges.len() <= 1, "{body}");
        if edges
            .first()
            .is_some_and(|e| e["node"]["status"] == "DELIVERED")
        {
            assert_eq!(
                edges[0]["node"],
                json!({ "eventType": "InventoryRestocked", "status": "DELIVERED", "attempts": 3, "responseStatus": 204 })
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Shutdown does not wait for a backlog of events to be fanned out: the fan-out looks
/// at the stop signal between batches, and what is left is fanned out after a restart.
#[tokio::test]
async fn fan_out_stops_between_batches_when_asked() {
    let subscriber = MockServer::start().await;
    // No job worker: the deliveries stay queued, only the fan-out runs.
    let app = spawn_app_with(|cfg| {
        cfg.jobs.jobs = false;
        cfg.jobs.webhook_allow_private = true;
    })
    .await;
    let register =
        "mutation($u: String!) { registerWebhook(url: $u, eventTypes: [\"*\"]) { secret } }";
    let (_, body) = app
        .gql(
            Some(&app.admin().await),
            register,
            json!({ "u": format!("{}/hook", subscriber.uri()) }),
        )
        .await;
    assert!(
        body["data"]["registerWebhook"]["secret"].is_string(),
        "{body}"
    );
    // The first fan-out starts from the log's head.
    ok(till_domain::webhooks::fan_out(&app.data.pool, 2, 3).await);
    for sku in ["FAN-1", "FAN-2", "FAN-3"] {
        app.product(sku, 100, 5).await;
    }
    let behind = "SELECT count(*) AS n FROM events e JOIN projection_checkpoints c \
                  ON c.projection = 'webhooks' WHERE (e.tx_id, e.position) > (c.tx_id, c.position)";
    let backlog = app.count(behind, None).await;
    assert!(backlog > 2, "{backlog}");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    ok(stop_tx.send(true));
    let (_wake_tx, wake_rx) = tokio::sync::watch::channel(0u64);
    let run =
        till_api::jobs::webhook_delivery::fan_out(app.data.pool.clone(), wake_rx, 3, 2, stop_rx);
    assert!(
        tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .is_ok(),
        "the fan-out did not stop"
    );
    assert_eq!(
        app.count(behind, None).await,
        backlog,
        "asked to stop, the fan-out went through the backlog"
    );
}

const REGISTER: &str = "mutation($u: String!, $t: [String!]!) { registerWebhook(url: $u, eventTypes: $t) { secret subscription { id } } }";

/// `registerWebhook` of `url` for every event type, as the holder of `token`.
async fn register_all(app: &TestApp, token: &str, url: &str) -> Value {
    app.gql(Some(token), REGISTER, json!({ "u": url, "t": ["*"] }))
        .await
        .1
}

/// Subscriber URLs naming an internal address literally are refused when registered,
/// in every spelling the URL parser accepts. No job runs here, so nothing is ever sent
/// to those addresses, whatever the code under test does.
#[tokio::test]
async fn internal_addresses_are_refused_at_registration() {
    let app = spawn_app_with(|cfg| cfg.jobs.jobs = false).await;
    let admin = app.admin().await;
    for url in [
        "http://127.0.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://10.0.0.1/",
        "http://0.0.0.0:8080/hook",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://127.1/",
    ] {
        let body = register_all(&app, &admin, url).await;
        assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{url}: {body}");
    }
    // A host name is resolved when a delivery connects, not here.
    let body = register_all(&app, &admin, "https://hooks.example.com/till").await;
    assert_eq!(code(&body), None, "{body}");
}

/// Only administrators choose where Till sends data: STAFF may read the subscribers and
/// their deliveries, not add or resume one.
#[tokio::test]
async fn staff_cannot_register_or_resume_webhooks() {
    let app = spawn_app_with(|cfg| cfg.jobs.jobs = false).await;
    let admin = app.admin().await;
    let body = register_all(&app, &app.staff_token, "https://hooks.example.com/till").await;
    assert_eq!(code(&body), Some("FORBIDDEN"), "{body}");
    let body = register_all(&app, &admin, "https://hooks.example.com/till").await;
    assert_eq!(code(&body), None, "{body}");
    let sub = body["data"]["registerWebhook"]["subscription"]["id"].clone();
    let set = "mutation($s: ID!, $a: Boolean!) { setWebhookActive(subscriptionId: $s, active: $a) { active } }";
    let (_, body) = app
        .gql(Some(&app.staff_token), set, json!({ "s": sub, "a": false }))
        .await;
    assert_eq!(code(&body), Some("FORBIDDEN"), "{body}");
    let (_, body) = app
        .gql(Some(&admin), set, json!({ "s": sub, "a": false }))
        .await;
    assert_eq!(body["data"]["setWebhookActive"]["active"], false, "{body}");
    let (_, body) = app
        .gql(
            Some(&app.staff_token),
            "{ webhookSubscriptions { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&body), None, "{body}");
}

/// In production a subscriber URL must be https.
#[tokio::test]
async fn production_mode_refuses_plain_http_subscribers() {
    let app = spawn_app_with(|cfg| {
        cfg.mode = till_api::config::Mode::Production;
        cfg.jobs.jobs = false;
    })
    .await;
    let admin = app.admin().await;
    let body = register_all(&app, &admin, "http://hooks.example.com/till").await;
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");
    let body = register_all(&app, &admin, "https://hooks.example.com/till").await;
    assert_eq!(code(&body), None, "{body}");
}

/// Waits until the subscriber's only delivery has been tried and is no longer pending;
/// returns it.
async fn settled_delivery(app: &TestApp, token: &str, sub: &Value) -> Value {
    let history = "query($s: ID!) { webhookDeliveries(subscriptionId: $s) { edges { node { status attempts responseStatus error } } } }";
    let started = Instant::now();
    loop {
        let (_, body) = app.gql(Some(token), history, json!({ "s": sub })).await;
        let node = &body["data"]["webhookDeliveries"]["edges"][0]["node"];
        if node["attempts"].as_i64().unwrap_or(0) >= 1 && node["status"] != "PENDING" {
            return node.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A host name that resolves to an internal address (here `localhost`, where a
/// subscriber really listens) passes registration but is refused when the delivery
/// connects, after resolution, so DNS rebinding gains nothing. Staff read a fixed
/// phrase, in the delivery and in the dead letter, never the network error's text.
#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_when_delivering() {
    let subscriber = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&subscriber)
        .await;
    let port = subscriber.address().port();
    let app = spawn_app_with(|cfg| {
        cfg.jobs.webhook_max_attempts = 1;
        cfg.jobs.job_backoff_base_ms = 20;
    })
    .await;
    let admin = app.admin().await;
    let (_, body) = app
        .gql(
            Some(&admin),
            REGISTER,
            json!({ "u": format!("http://localhost:{port}/hook"), "t": ["InventoryRestocked"] }),
        )
        .await;
    assert_eq!(code(&body), None, "{body}");
    let sub = body["data"]["registerWebhook"]["subscription"]["id"].clone();
    let product = app.product("SSRF-1", 100, 0).await;
    let (_, body) = app
        .gql(
            Some(&admin),
            "mutation($p: ID!) { restockProduct(productId: $p, quantity: 1) { productId } }",
            json!({ "p": product }),
        )
        .await;
    assert_eq!(code(&body), None, "{body}");

    let delivery = settled_delivery(&app, &admin, &sub).await;
    assert_eq!(
        delivery,
        json!({ "status": "FAILED", "attempts": 1, "responseStatus": null,
                "error": "refused: the address is not public" })
    );
    assert_eq!(
        subscriber
            .received_requests()
            .await
            .unwrap_or_default()
            .len(),
        0
    );
    let (_, body) = app
        .gql(
            Some(&admin),
            "{ deadLetters(filter: {queue: WEBHOOKS}) { edges { node { error } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["data"]["deadLetters"]["edges"],
        json!([{ "node": { "error": "refused: the address is not public" } }]),
        "{body}"
    );
}
