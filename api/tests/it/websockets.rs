//! WebSocket sessions: only subscriptions run on a socket, under the document policy
//! and the cost budget; sockets are capped per address, per account and in
//! subscriptions; a socket closes (4401) when its token expires, its session ends or
//! its account's role changes.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const RESTOCK: &str =
    "mutation($p: ID!) { restockProduct(productId: $p, quantity: 1) { consistencyToken } }";
const STOCK: &str = "subscription($p: ID!) { stockChanged(productId: $p) { sku available } }";

/// Opens a graphql-transport-ws socket; `Err(status)` when the upgrade is refused.
async fn open(app: &TestApp) -> Result<Ws, u16> {
    let url = app.base.replacen("http://", "ws://", 1) + "/graphql";
    let mut req = ok(url.into_client_request());
    req.headers_mut()
        .insert("sec-websocket-protocol", ok("graphql-transport-ws".parse()));
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ok(ws.send(Message::Text(v.to_string())).await);
}

/// The next frame: a JSON message, or the close frame's code.
async fn next(ws: &mut Ws, within: Duration) -> Result<Value, Option<u16>> {
    loop {
        match ok(tokio::time::timeout(within, ws.next()).await) {
            Some(Ok(Message::Text(t))) => return Ok(ok(serde_json::from_str(&t))),
            Some(Ok(Message::Close(frame))) => {
                return Err(frame.map(|f: CloseFrame| u16::from(f.code)))
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

/// Opens a socket and initializes it with `token`.
async fn connected(app: &TestApp, token: Option<&str>) -> Ws {
    let mut ws = open(app)
        .await
        .unwrap_or_else(|s| panic!("upgrade refused: {s}"));
    let payload = match token {
        Some(t) => json!({ "Authorization": format!("Bearer {t}") }),
        None => json!({}),
    };
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": payload }),
    )
    .await;
    let ack = next(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(
        ack.as_ref().ok().map(|v| v["type"].clone()),
        Some(json!("connection_ack")),
        "{ack:?}"
    );
    ws
}

/// Waits for the socket to close; its close code.
async fn closed(ws: &mut Ws, within: Duration) -> Option<u16> {
    let deadline = Instant::now() + within;
    loop {
        match next(ws, deadline.saturating_duration_since(Instant::now())).await {
            Ok(_) => continue,
            Err(code) => return code,
        }
    }
}

#[tokio::test]
async fn only_subscriptions_run_on_a_socket() {
    let app = spawn_app().await;
    let product = app.product("WS-1", 1000, 5).await;
    let mut ws = connected(&app, Some(&app.staff_token)).await;
    send(&mut ws, json!({ "id": "m", "type": "subscribe", "payload": {
        "query": "mutation { createCategory(input: {slug: \"ws\", name: \"WS\"}) { categoryId } }" } })).await;
    let answer = ok(next(&mut ws, Duration::from_secs(10))
        .await
        .map_err(|c| format!("{c:?}")));
    assert_eq!(
        (answer["id"].as_str(), answer["type"].as_str()),
        (Some("m"), Some("error")),
        "{answer}"
    );
    assert_eq!(
        answer["payload"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{answer}"
    );
    send(&mut ws, json!({ "id": "q", "type": "subscribe", "payload": { "query": "{ categories { slug } }" } })).await;
    let answer = ok(next(&mut ws, Duration::from_secs(10))
        .await
        .map_err(|c| format!("{c:?}")));
    assert_eq!(answer["type"], "error", "{answer}");
    let made = app
        .count(
            "SELECT count(*) AS n FROM categories WHERE slug = 'ws'",
            None,
        )
        .await;
    assert_eq!(made, 0, "the mutation did not run");
    // A subscription still does.
    send(&mut ws, json!({ "id": "s", "type": "subscribe", "payload": { "query": STOCK, "variables": { "p": product } } })).await;
    let got = first_change(&app, &mut ws, &product, "s").await;
    assert_eq!(
        got["payload"]["data"]["stockChanged"]["sku"], "WS-1",
        "{got}"
    );
}

#[tokio::test]
async fn sockets_and_subscriptions_are_capped() {
    let app = spawn_app_with(|cfg| {
        cfg.ws_max_per_ip = 3;
        cfg.ws_max_per_account = 2;
        cfg.ws_max_subscriptions = 2;
    })
    .await;
    let product = app.product("WS-2", 1000, 5).await;
    let (_, token) = app.customer("caps@example.com").await;
    let mut a = connected(&app, Some(&token)).await;
    let _b = connected(&app, Some(&token)).await;
    // A third socket of the same account is closed at its init.
    let mut c = open(&app).await.unwrap_or_else(|s| panic!("{s}"));
    send(&mut c, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } })).await;
    assert_eq!(closed(&mut c, Duration::from_secs(10)).await, Some(4429));
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The address's third socket is still allowed (the refused one was given back);
    // its fourth is refused at the upgrade.
    let _d = connected(&app, None).await;
    assert_eq!(open(&app).await.err(), Some(429));

    for id in ["1", "2"] {
        send(&mut a, json!({ "id": id, "type": "subscribe", "payload": { "query": STOCK, "variables": { "p": product } } })).await;
    }
    send(&mut a, json!({ "id": "3", "type": "subscribe", "payload": { "query": STOCK, "variables": { "p": product } } })).await;
    let answer = ok(next(&mut a, Duration::from_secs(10))
        .await
        .map_err(|c| format!("{c:?}")));
    assert_eq!(
        (
            answer["id"].as_str(),
            answer["payload"][0]["extensions"]["code"].as_str()
        ),
        (Some("3"), Some("THROTTLED")),
        "{answer}"
    );
    // Completing one makes room.
    send(&mut a, json!({ "id": "1", "type": "complete" })).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(&mut a, json!({ "id": "4", "type": "subscribe", "payload": { "query": STOCK, "variables": { "p": product } } })).await;
    assert_eq!(
        first_change(&app, &mut a, &product, "4").await["type"],
        "next"
    );
}

/// Restocks `product` by one (as staff), so its subscribers get a frame.
async fn restock(app: &TestApp, product: &str) {
    let (_, body) = app
        .gql(Some(&app.staff_token), RESTOCK, json!({ "p": product }))
        .await;
    assert_eq!(code(&body), None, "{body}");
}

/// The first frame about subscription `id` to `product`'s stock, restocking it until
/// one comes: the server registers a subscription a moment after its `subscribe`
/// message, and a change before that is not sent (subscriptions send changes, not the
/// current state).
async fn first_change(app: &TestApp, ws: &mut Ws, product: &str, id: &str) -> Value {
    for _ in 0..20 {
        restock(app, product).await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(frame) = tokio::time::timeout_at(deadline, ws.next()).await {
            match frame {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = ok(serde_json::from_str(&t));
                    if v["id"] == id {
                        return v;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("{e}"),
                None => panic!("the socket closed"),
            }
        }
    }
    panic!("no frame for {id} after 20 restocks");
}

#[tokio::test]
async fn a_socket_closes_when_its_session_ends_or_its_token_expires() {
    let app = spawn_app().await;
    let (access, refresh, _) = app.sign_up("ws@example.com").await;
    let mut ws = connected(&app, Some(&access)).await;
    app.log_out(&refresh).await;
    assert_eq!(closed(&mut ws, Duration::from_secs(3)).await, Some(4401));

    // A token that expires in a second (plus the 5 s leeway every token gets).
    let (id, _) = app.customer("brief@example.com").await;
    let brief = ok(
        till_api::auth::TokenService::new(&till_api::config::Secret::new(SECRET)).mint(
            id,
            till_domain::types::Role::Customer,
            Duration::from_secs(1),
        ),
    );
    let mut ws = connected(&app, Some(&brief)).await;
    assert_eq!(closed(&mut ws, Duration::from_secs(15)).await, Some(4401));
}

#[tokio::test]
async fn the_document_policy_holds_on_a_socket() {
    let dir = std::env::temp_dir().join(format!("till-ws-trusted-{}", uuid::Uuid::new_v4()));
    ok(std::fs::create_dir_all(&dir));
    let manifest = dir.join("manifest.json");
    let hash = till_api::graphql::execution::documents::sha256_hex(STOCK);
    ok(std::fs::write(
        &manifest,
        json!({ hash.clone(): STOCK, till_api::graphql::execution::documents::sha256_hex(RESTOCK): RESTOCK })
            .to_string(),
    ));
    let app = spawn_app_with(move |cfg| cfg.trusted_documents = Some(manifest)).await;
    let product = app.product("WS-3", 1000, 5).await;
    let mut ws = connected(&app, None).await;
    send(&mut ws, json!({ "id": "x", "type": "subscribe", "payload": {
        "query": "subscription($p: ID!) { stockChanged(productId: $p) { sku } }", "variables": { "p": product } } })).await;
    let answer = ok(next(&mut ws, Duration::from_secs(10))
        .await
        .map_err(|c| format!("{c:?}")));
    assert_eq!(
        (answer["id"].as_str(), answer["type"].as_str()),
        (Some("x"), Some("error")),
        "{answer}"
    );
    assert_eq!(
        answer["payload"][0]["extensions"]["code"], "FORBIDDEN",
        "{answer}"
    );
    // The listed document, by its hash, runs.
    send(
        &mut ws,
        json!({ "id": "y", "type": "subscribe", "payload": { "variables": { "p": product },
        "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hash } } } }),
    )
    .await;
    let first = first_change(&app, &mut ws, &product, "y").await;
    assert_eq!(first["type"], "next", "{first}");
    assert_eq!(
        first["payload"]["data"]["stockChanged"]["sku"], "WS-3",
        "{first}"
    );
}

#[tokio::test]
async fn subscribing_costs_from_the_callers_budget() {
    let app = spawn_app_with(|cfg| {
        cfg.rate.rate_anonymous_max = 30;
        cfg.rate.rate_anonymous_restore = 1;
    })
    .await;
    let product = app.product("WS-4", 1000, 5).await;
    let mut ws = connected(&app, None).await;
    let mut throttled = false;
    for i in 0..20 {
        send(&mut ws, json!({ "id": i.to_string(), "type": "subscribe", "payload": { "query": STOCK, "variables": { "p": product } } })).await;
        if let Ok(Ok(v)) = tokio::time::timeout(
            Duration::from_millis(200),
            next(&mut ws, Duration::from_secs(1)),
        )
        .await
        {
            if v["payload"]["errors"][0]["extensions"]["code"] == "THROTTLED" {
                throttled = true;
                break;
            }
        }
    }
    assert!(
        throttled,
        "twenty subscribes never ran out of a 30-point budget"
    );
    // The cost applies per subscribe; a refused one is completed, so it holds no slot.
}
