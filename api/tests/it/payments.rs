//! Payments end to end: `payOrder` enqueues a capture job that calls a provider
//! (wiremock here) over HTTP; transient failures are retried under one idempotency key;
//! a provider that keeps failing leaves a dead letter that staff retry from GraphQL;
//! declines release stock; signed webhooks settle idempotently; unpaid orders expire.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

const PLACE: &str =
    "mutation($p: ID!) { placeOrder(input: {lines: [{productId: $p, quantity: 2}]}) { orderId } }";
const PAY: &str =
    "mutation($o: ID!, $t: String!) { payOrder(orderId: $o, paymentMethodToken: $t) { orderId } }";
const WEBHOOK_SECRET: &str = "whsec_test_0123456789";

/// The provider answers every POST to `route` with `response`.
async fn answers(provider: &MockServer, route: &str, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(route))
        .respond_with(response)
        .mount(provider)
        .await;
}

async fn app_with_provider(provider: &MockServer, attempts: i32) -> TestApp {
    let url = provider.uri();
    spawn_app_with(move |cfg| {
        cfg.jobs.payment_provider_url = Some(url);
        cfg.jobs.payment_max_attempts = attempts;
        cfg.jobs.job_backoff_base_ms = 20;
        cfg.jobs.job_backoff_cap_s = 1;
        cfg.payment_webhook_secret = Some(till_api::config::Secret::new(WEBHOOK_SECRET));
    })
    .await
}

async fn place(app: &TestApp, token: &str, product: &str) -> String {
    let (_, body) = app.gql(Some(token), PLACE, json!({ "p": product })).await;
    body["data"]["placeOrder"]["orderId"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

/// Polls the order (as staff) until it has `status` or 20 s pass.
async fn wait_status(app: &TestApp, order: &str, status: &str) -> Value {
    let started = Instant::now();
    loop {
        let ct = app.head_token().await;
        let (_, body) = app
            .gql_with(
                Some(&app.staff_token),
                "query($o: ID!) { order(id: $o) { status lines { product { available } } } }",
                json!({ "o": order }),
                &[("x-consistency-token", &ct)],
            )
            .await;
        if body["data"]["order"]["status"] == status {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "order never became {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn order_uuid(global: &str) -> String {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(global)
        .unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .trim_start_matches("Order:")
        .to_owned()
}

#[tokio::test]
async fn a_transient_failure_is_retried_as_one_logical_charge() {
    let provider = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/charges"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&provider)
        .await;
    answers(
        &provider,
        "/charges",
        ResponseTemplate::new(200).set_body_json(json!({ "id": "ch_1", "status": "succeeded" })),
    )
    .await;
    let app = app_with_provider(&provider, 5).await;
    let product = app.product("PAY-1", 1500, 10).await;
    let (_, token) = app.customer("payer@example.com").await;
    let order = place(&app, &token, &product).await;

    let (_, body) = app
        .gql(Some(&token), PAY, json!({ "o": order, "t": "tok_ok" }))
        .await;
    assert_eq!(code(&body), None, "{body}");
    let body = wait_status(&app, &order, "PAID").await;
    assert_eq!(body["data"]["order"]["lines"][0]["product"]["available"], 8);

    let requests = provider.received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 3, "two failures, one success");
    let keys: Vec<String> = requests
        .iter()
        .map(|r| {
            r.headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(keys.iter().all(|k| *k == order_uuid(&order)), "{keys:?}");
    let sent: Value = serde_json::from_slice(&requests[0].body).unwrap_or_default();
    assert_eq!(
        (sent["amount"].as_i64(), sent["source"].as_str()),
        (Some(3000), Some("tok_ok"))
    );

    // Paying again is a clear CONFLICT.
    let (_, body) = app
        .gql(Some(&token), PAY, json!({ "o": order, "t": "tok_ok" }))
        .await;
    assert_eq!(code(&body), Some("CONFLICT"), "{body}");
}

const DEAD_LETTERS: &str = "query($q: String) { deadLetters(queue: $q) { edges { node { id queue attempts error payloadSummary } } } }";

/// Waits (as staff) for the first dead letter of `queue`.
async fn dead_letter(app: &TestApp, queue: &str) -> Value {
    let started = Instant::now();
    loop {
        let (_, body) = app
            .gql(Some(&app.staff_token), DEAD_LETTERS, json!({ "q": queue }))
            .await;
        let edges = body["data"]["deadLetters"]["edges"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(e) = edges.first() {
            return e["node"].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no dead letter: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const RETRY: &str = "mutation($id: ID!) { retryDeadLetter(id: $id) { id queue } }";

/// A capture that fails for good (attempts exhausted, or refused outright) fails the
/// payment and releases the stock at once; the dead letter stays for staff, and a
/// redrive of it is refused with the reason.
#[tokio::test]
async fn a_capture_that_fails_for_good_releases_the_stock_and_is_not_redriven() {
    for (status, attempts, sku) in [(500, 3, "PAY-2"), (400, 5, "PAY-2B")] {
        let provider = MockServer::start().await;
        answers(&provider, "/charges", ResponseTemplate::new(status)).await;
        let app = app_with_provider(&provider, attempts).await;
        let product = app.product(sku, 1000, 5).await;
        let (_, token) = app.customer("unlucky@example.com").await;
        let order = place(&app, &token, &product).await;
        let (_, body) = app
            .gql(Some(&token), PAY, json!({ "o": order, "t": "tok_ok" }))
            .await;
        assert_eq!(code(&body), None, "{body}");

        let body = wait_status(&app, &order, "PAYMENT_FAILED").await;
        assert_eq!(
            body["data"]["order"]["lines"][0]["product"]["available"], 5,
            "the stock is released: {body}"
        );
        let dead = dead_letter(&app, "payments").await;
        let tries = if status == 500 { attempts } else { 1 };
        assert_eq!(dead["attempts"], tries, "{dead}");
        assert!(
            dead["error"]
                .as_str()
                .is_some_and(|e| e.contains(&status.to_string())),
            "{dead}"
        );
        assert!(dead["payloadSummary"]
            .as_str()
            .is_some_and(|p| p.contains(&order_uuid(&order))));
        assert_eq!(
            provider.received_requests().await.map(|r| r.len()),
            Some(tries as usize)
        );
        // Customers cannot see or retry dead letters.
        let (_, body) = app.gql(Some(&token), DEAD_LETTERS, json!({})).await;
        assert_eq!(code(&body), Some("FORBIDDEN"));

        // The provider is fixed, but the order no longer holds stock: a redrive is
        // refused and says why.
        provider.reset().await;
        answers(
            &provider,
            "/charges",
            ResponseTemplate::new(200).set_body_json(json!({ "id": "ch_2" })),
        )
        .await;
        let (_, body) = app
            .gql(Some(&app.staff_token), RETRY, json!({ "id": dead["id"] }))
            .await;
        assert_eq!(code(&body), Some("CONFLICT"), "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("given up")),
            "{body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            provider.received_requests().await.map(|r| r.len()),
            Some(0),
            "nothing charged"
        );
        // Paying again is refused: the order is over.
        let (_, body) = app
            .gql(Some(&token), PAY, json!({ "o": order, "t": "tok_ok" }))
            .await;
        assert_eq!(code(&body), Some("CONFLICT"), "{body}");
    }
}

const CANCEL: &str = "mutation($o: ID!) { cancelOrder(id: $o) { orderId } }";

/// The reproduction: against a provider that takes half a second per charge,
/// orders paid and then cancelled 0.2 s later. The cancel is refused while the capture
/// runs, every order ends PAID, and every charge belongs to a PAID order.
#[tokio::test]
async fn a_cancel_during_a_capture_is_refused_and_no_charge_is_lost() {
    // The built-in fake provider, slowed down by its tok_slow token.
    let app = spawn_app_with(|cfg| {
        cfg.jobs.job_backoff_base_ms = 20;
    })
    .await;
    let product = app.product("RACE-1", 1000, 20).await;
    let (_, token) = app.customer("racer@example.com").await;
    let mut orders = Vec::new();
    for _ in 0..5 {
        let order = place(&app, &token, &product).await;
        let (_, body) = app
            .gql(Some(&token), PAY, json!({ "o": order, "t": "tok_slow" }))
            .await;
        assert_eq!(code(&body), None, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, body) = app.gql(Some(&token), CANCEL, json!({ "o": order })).await;
        assert_eq!(code(&body), Some("CONFLICT"), "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("payment in progress")),
            "{body}"
        );
        orders.push(order);
    }
    for order in &orders {
        wait_status(&app, order, "PAID").await;
    }
    let captured = app
        .count(
            "SELECT count(*) AS n FROM payments p JOIN orders o ON o.id = p.order_id \
             WHERE p.status = 'captured' AND p.charge_id IS NOT NULL AND o.status = 'PAID'",
            None,
        )
        .await;
    assert_eq!(captured, 5);

    // The same against a real HTTP provider (wiremock) that answers after 600 ms.
    let provider = MockServer::start().await;
    answers(
        &provider,
        "/charges",
        ResponseTemplate::new(200)
            .set_body_json(json!({ "id": "ch_slow" }))
            .set_delay(Duration::from_millis(600)),
    )
    .await;
    let app = app_with_provider(&provider, 5).await;
    let product = app.product("RACE-2", 1000, 5).await;
    let (_, token) = app.customer("racer2@example.com").await;
    let order = place(&app, &token, &product).await;
    app.gql(Some(&token), PAY, json!({ "o": order, "t": "tok_ok" }))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, body) = app.gql(Some(&token), CANCEL, json!({ "o": order })).await;
    assert_eq!(code(&body), Some("CONFLICT"), "{body}");
    let body = wait_status(&app, &order, "PAID").await;
    assert_eq!(body["data"]["order"]["lines"][0]["product"]["available"], 3);
    assert_eq!(provider.received_requests().await.map(|r| r.len()), Some(1));
}

/// A capture that succeeds after the provider's decline webhook settled the order is
/// recorded and refunded through the provider (one refund, under a refund key); a
/// refund the provider refuses is a dead letter that staff retry.
#[tokio::test]
async fn a_capture_that_lands_after_the_order_failed_is_refunded() {
    let provider = MockServer::start().await;
    answers(
        &provider,
        "/charges",
        ResponseTemplate::new(200)
            .set_body_json(json!({ "id": "ch_late" }))
            .set_delay(Duration::from_millis(800)),
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/refunds"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(json!({ "error": { "code": "busy" } })),
        )
        .up_to_n_times(1)
        .mount(&provider)
        .await;
    answers(
        &provider,
        "/refunds",
        ResponseTemplate::new(200).set_body_json(json!({ "id": "re_1" })),
    )
    .await;
    let app = app_with_provider(&provider, 5).await;
    let product = app.product("LATE-1", 1500, 5).await;
    let (_, token) = app.customer("late@example.com").await;
    let order = place(&app, &token, &product).await;
    app.gql(Some(&token), PAY, json!({ "o": order, "t": "tok_ok" }))
        .await;
    // Once the capture is in flight, the provider's webhook says it failed.
    let started = Instant::now();
    while provider
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty()
    {
        assert!(started.elapsed() < Duration::from_secs(20), "no capture");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let event = json!({ "id": "evt_fail", "type": "charge.failed",
        "data": { "orderId": order_uuid(&order), "reason": "card_declined" } });
    let (raw, sig) = signed(&event, now);
    let r = ok(app
        .http
        .post(format!("{}/webhooks/payments", app.base))
        .header("content-type", "application/json")
        .header("till-signature", sig)
        .body(raw)
        .send()
        .await);
    assert_eq!(r.status().as_u16(), 200);
    wait_status(&app, &order, "PAYMENT_FAILED").await;

    // The capture lands; its refund is refused once, then retried by staff.
    let dead = dead_letter(&app, "refunds").await;
    assert!(
        dead["error"].as_str().is_some_and(|e| e.contains("400")),
        "{dead}"
    );
    let (_, body) = app
        .gql(Some(&app.staff_token), RETRY, json!({ "id": dead["id"] }))
        .await;
    assert_eq!(
        body["data"]["retryDeadLetter"]["queue"], "refunds",
        "{body}"
    );
    let started = Instant::now();
    while app
        .count(
            "SELECT count(*) AS n FROM payments WHERE status = 'refunded' AND refund_id = 're_1'",
            None,
        )
        .await
        != 1
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never refunded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refunds: Vec<_> = provider
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == "/refunds")
        .collect();
    assert_eq!(refunds.len(), 2, "refused once, then made");
    let key = format!("refund-{}", order_uuid(&order));
    for r in &refunds {
        assert_eq!(
            r.headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok()),
            Some(key.as_str())
        );
        let sent: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        assert_eq!(
            (sent["charge"].as_str(), sent["amount"].as_i64()),
            (Some("ch_late"), Some(3000))
        );
    }
    let (_, body) = app
        .gql(
            Some(&token),
            "query($p: ID!) { product(id: $p) { available } }",
            json!({ "p": product }),
        )
        .await;
    assert_eq!(
        body["data"]["product"]["available"], 5,
        "released once: {body}"
    );
}

#[tokio::test]
async fn a_decline_fails_the_payment_and_releases_the_stock() {
    let provider = MockServer::start().await;
    answers(
        &provider,
        "/charges",
        ResponseTemplate::new(402).set_body_json(json!({ "error": { "code": "card_declined" } })),
    )
    .await;
    let app = app_with_provider(&provider, 5).await;
    let product = app.product("PAY-3", 1000, 5).await;
    let (_, token) = app.customer("declined@example.com").await;
    let order = place(&app, &token, &product).await;
    app.gql(
        Some(&token),
        PAY,
        json!({ "o": order, "t": "tok_declined" }),
    )
    .await;
    let body = wait_status(&app, &order, "PAYMENT_FAILED").await;
    assert_eq!(
        body["data"]["order"]["lines"][0]["product"]["available"], 5,
        "{body}"
    );
    assert_eq!(
        provider.received_requests().await.map(|r| r.len()),
        Some(1),
        "declines are not retried"
    );
}

#[tokio::test]
async fn the_built_in_fake_provider_serves_the_demo_flow() {
    // No provider URL: dev mode captures against till's own /fake-provider.
    let app = spawn_app_with(|cfg| {
        cfg.jobs.job_backoff_base_ms = 20;
    })
    .await;
    let product = app.product("PAY-4", 1000, 10).await;
    let (_, token) = app.customer("demo@example.com").await;
    for (tok, want) in [
        ("tok_ok", "PAID"),
        ("tok_slow", "PAID"),
        ("tok_flaky", "PAID"),
        ("tok_declined", "PAYMENT_FAILED"),
    ] {
        let order = place(&app, &token, &product).await;
        let (_, body) = app
            .gql(Some(&token), PAY, json!({ "o": order, "t": tok }))
            .await;
        assert_eq!(code(&body), None, "{body}");
        wait_status(&app, &order, want).await;
    }
}

fn signed(body: &Value, at: i64) -> (String, String) {
    let raw = body.to_string();
    let sig = till_api::webhook_signatures::sign(WEBHOOK_SECRET.as_bytes(), at, raw.as_bytes());
    (raw, format!("t={at},v1={sig}"))
}

#[tokio::test]
async fn signed_webhooks_settle_once_and_forgeries_are_refused() {
    // A provider that never answers the capture: the webhook settles the order.
    let provider = MockServer::start().await;
    answers(&provider, "/charges", ResponseTemplate::new(503)).await;
    let app = app_with_provider(&provider, 50).await;
    let product = app.product("PAY-5", 1000, 5).await;
    let (_, token) = app.customer("hook@example.com").await;
    let order = place(&app, &token, &product).await;
    app.gql(Some(&token), PAY, json!({ "o": order, "t": "tok_ok" }))
        .await;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let event = json!({ "id": "evt_1", "type": "charge.succeeded",
        "data": { "orderId": order_uuid(&order), "chargeId": "ch_hook" } });
    let post = |raw: String, sig: String| {
        app.http
            .post(format!("{}/webhooks/payments", app.base))
            .header("content-type", "application/json")
            .header("till-signature", sig)
            .body(raw)
            .send()
    };
    // Forged, tampered and stale deliveries are refused.
    let (raw, _) = signed(&event, now);
    let r = ok(post(raw.clone(), format!("t={now},v1={}", "00".repeat(32))).await);
    assert_eq!(r.status().as_u16(), 400);
    let (_, sig) = signed(&event, now);
    let r = ok(post(raw.replace("ch_hook", "ch_evil"), sig).await);
    assert_eq!(r.status().as_u16(), 400);
    let (raw_old, sig_old) = signed(&event, now - 3600);
    let r = ok(post(raw_old, sig_old).await);
    assert_eq!(r.status().as_u16(), 400);

    let (raw, sig) = signed(&event, now);
    let r = ok(post(raw.clone(), sig.clone()).await);
    assert_eq!(r.status().as_u16(), 200);
    wait_status(&app, &order, "PAID").await;
    let r = ok(post(raw, sig).await);
    let body: Value = ok(r.json().await);
    assert_eq!(body["duplicate"], true, "{body}");
    // A second event id for the same charge is a no-op too: still one PAID transition.
    let again = json!({ "id": "evt_2", "type": "charge.succeeded",
        "data": { "orderId": order_uuid(&order), "chargeId": "ch_hook" } });
    let (raw, sig) = signed(&again, now);
    assert_eq!(ok(post(raw, sig).await).status().as_u16(), 200);
    let paid = app
        .count(
            "SELECT count(*) AS n FROM events WHERE event_type = 'OrderStatusChanged' AND payload->>'to' = 'PAID'",
            None,
        )
        .await;
    assert_eq!(paid, 1);
}

#[tokio::test]
async fn unpaid_orders_expire_once_even_with_two_sweepers() {
    let app = spawn_app().await;
    let product = app.product("EXP-1", 1000, 10).await;
    let (_, token) = app.customer("late@example.com").await;
    let a = place(&app, &token, &product).await;
    let b = place(&app, &token, &product).await;
    let paying = place(&app, &token, &product).await;
    let (_, body) = app
        .gql(Some(&token), PAY, json!({ "o": paying, "t": "tok_flaky" }))
        .await;
    assert_eq!(code(&body), None, "{body}");
    let commands = &app.data.api.commands;
    // Two replicas sweep at once: every due order expires exactly once.
    let (x, y) = tokio::join!(
        commands.expire_unpaid_orders(Duration::ZERO, 100),
        commands.expire_unpaid_orders(Duration::ZERO, 100)
    );
    let expired = ok(x) + ok(y);
    assert!(expired >= 2, "{expired}");
    for o in [&a, &b] {
        let body = wait_status(&app, o, "EXPIRED").await;
        assert_eq!(body["data"]["order"]["status"], "EXPIRED");
    }
    // The order with a payment in progress was left alone and gets paid.
    wait_status(&app, &paying, "PAID").await;
    let (_, body) = app
        .gql(
            Some(&token),
            "query($p: ID!) { product(id: $p) { available } }",
            json!({ "p": product }),
        )
        .await;
    assert_eq!(body["data"]["product"]["available"], 8, "{body}");
}

/// Shutdown does not wait for a whole backlog of due orders: the sweep stops after the
/// chunk in flight, and the rest stays due for the next sweep.
#[tokio::test]
async fn the_expiry_sweep_stops_between_chunks_when_asked() {
    let app = spawn_app().await;
    let product = app.product("EXP-2", 1000, 20).await;
    let (_, token) = app.customer("many@example.com").await;
    for _ in 0..7 {
        place(&app, &token, &product).await;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Asked to stop before the sweep's first chunk ends.
    ok(stop_tx.send(true));
    let sweep = till_api::jobs::expiry::run(
        app.data.api.commands.clone(),
        Duration::ZERO,
        Duration::from_secs(3600),
        3,
        stop_rx,
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(30), sweep)
            .await
            .is_ok(),
        "the sweep did not stop"
    );
    let pending = app
        .count(
            "SELECT count(*) AS n FROM orders WHERE status = 'PENDING_PAYMENT'",
            None,
        )
        .await;
    assert_eq!(pending, 4, "one chunk of 3 expired, then the sweep stopped");
}
