//! Outbound webhooks: a subscriber that fails twice then accepts gets the event three
//! times under one event id, signed with its secret; the delivery history says so.

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
    })
    .await;
    let staff = app.staff_token.clone();
    let register = "mutation($u: String!, $t: [String!]!) { registerWebhook(url: $u, eventTypes: $t) { secret subscription { id active eventTypes } } }";

    for (url, types) in [
        ("ftp://example.com/x", json!(["*"])),
        ("https://example.com/x", json!(["NoSuchEvent"])),
    ] {
        let (_, body) = app
            .gql(Some(&staff), register, json!({ "u": url, "t": types }))
            .await;
        assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");
    }
    let (_, body) = app
        .gql(
            Some(&staff),
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
            Some(&staff),
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
        till_api::http::webhooks::verify(secret.as_bytes(), sig, &last.body, now, 300).is_ok(),
        "{sig}"
    );
    assert!(till_api::http::webhooks::verify(b"wrong", sig, &last.body, now, 300).is_err());
    let event: Value = serde_json::from_slice(&last.body).unwrap_or_default();
    assert_eq!(event["type"], "InventoryRestocked", "{event}");
    assert_eq!(event["data"]["quantity"], 7, "{event}");

    let history = "query($s: ID!) { webhookDeliveries(subscriptionId: $s) { edges { node { eventType status attempts responseStatus } } } }";
    let started = Instant::now();
    loop {
        let (_, body) = app.gql(Some(&staff), history, json!({ "s": sub })).await;
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
    let app = spawn_app_with(|cfg| cfg.jobs.jobs = false).await;
    let register =
        "mutation($u: String!) { registerWebhook(url: $u, eventTypes: [\"*\"]) { secret } }";
    let (_, body) = app
        .gql(
            Some(&app.staff_token),
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
    let run = till_api::jobs::webhooks::fan_out(app.data.pool.clone(), wake_rx, 3, 2, stop_rx);
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
