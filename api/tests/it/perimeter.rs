//! The perimeter: the unauthenticated payment-webhook endpoint bounds the work a
//! request can cause (signature header size, signatures per header, requests per
//! client address), its secret must be long enough to start, and the public `/readyz`
//! tells a stranger nothing but the status.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};
use till_api::app::{Application, Database};
use till_api::config::{Secret, ServeConfig};
use till_domain::db::testing::TestDb;

use crate::support::*;

const WEBHOOK_SECRET: &str = "whsec_perimeter_0123456789";

fn free_addr() -> SocketAddr {
    ok(std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()))
}

/// POSTs an event to `/webhooks/payments` with `signature`, as `client` when given
/// (through the trusted proxy's `X-Forwarded-For`).
async fn deliver(
    http: &reqwest::Client,
    base: &str,
    signature: &str,
    client: Option<&str>,
) -> reqwest::Response {
    let mut req = http
        .post(format!("{base}/webhooks/payments"))
        .header("content-type", "application/json")
        .header("till-signature", signature)
        .body(json!({ "id": "evt_1", "type": "charge.succeeded" }).to_string());
    if let Some(ip) = client {
        req = req.header("x-forwarded-for", ip);
    }
    ok(req.send().await)
}

#[tokio::test]
async fn webhook_signature_headers_and_request_rates_are_bounded() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(
        &db.url,
        &[
            ("TILL_PAYMENT_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("TILL_WEBHOOK_RATE_MAX", "3"),
            ("TILL_WEBHOOK_RATE_RESTORE", "1"),
            ("TILL_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);

    // A stuffed header is refused by its size, with a message saying so.
    let stuffed = format!("t={now}{}", format!(",v1={}", "ab".repeat(32)).repeat(30));
    let r = deliver(&http, &server.base, &stuffed, Some("203.0.113.1")).await;
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = ok(r.json().await);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("Till-Signature") && e.contains("1024 bytes")),
        "{body}"
    );

    // One client address gets a small burst, then 429 with Retry-After.
    let forged = format!("t={now},v1={}", "00".repeat(32));
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..20 {
        let r = deliver(&http, &server.base, &forged, Some("203.0.113.1")).await;
        statuses.push(r.status().as_u16());
        if r.status().as_u16() == 429 {
            retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let body: Value = ok(r.json().await);
            assert!(body["error"].is_string(), "{body}");
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "never limited: {statuses:?}");
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    // Another address has a bucket of its own.
    let r = deliver(&http, &server.base, &forged, Some("203.0.113.2")).await;
    assert_eq!(r.status().as_u16(), 400, "another client was limited too");
}

async fn build_with_webhook_secret(db: &TestDb, secret: &str) -> Result<(), String> {
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        cfg: ServeConfig,
    }
    let mut cfg = Defaults::parse_from(["till"]).cfg;
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.jwt_secret = Some(Secret::new(SECRET));
    cfg.seed_demo = Some(false);
    cfg.jobs.jobs = false;
    cfg.payment_webhook_secret = Some(Secret::new(secret));
    Application::build(
        cfg,
        Database {
            url: db.url.clone(),
            embedded: None,
            replicas: Vec::new(),
        },
    )
    .await
    .map(drop)
    .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_short_webhook_secret_stops_start_up() {
    let db = TestDb::new().await;
    for short in ["", "whsec_short"] {
        let started = build_with_webhook_secret(&db, short).await;
        assert!(
            started
                .as_ref()
                .is_err_and(|e| e.contains("TILL_PAYMENT_WEBHOOK_SECRET")
                    && e.contains("16 bytes")
                    && !e.contains(short.get(1..).unwrap_or("-"))),
            "{short:?}: {started:?}"
        );
    }
    ok(build_with_webhook_secret(&db, WEBHOOK_SECRET).await);
}

#[tokio::test]
async fn public_readiness_says_only_the_status() {
    let admin = free_addr();
    let app = spawn_app_with(move |cfg| cfg.admin_listen = Some(admin)).await;
    let ready: Value = ok(
        ok(app.http.get(format!("{}/readyz", app.base)).send().await)
            .json()
            .await,
    );
    assert_eq!(ready, json!({ "status": "ready" }));
    let detail: Value = ok(
        ok(app.http.get(format!("http://{admin}/readyz")).send().await)
            .json()
            .await,
    );
    assert_eq!(detail["migrations"], "current", "{detail}");
    assert!(
        detail["projections"]["product_view"]["lagSeconds"].is_number(),
        "{detail}"
    );

    // A migration the database has not applied: unready, and only the admin port says
    // which one.
    let mut conn = ok(app.db.pool.get().await);
    ok(diesel::sql_query(
        "DELETE FROM __diesel_schema_migrations WHERE version = \
         (SELECT max(version) FROM __diesel_schema_migrations)",
    )
    .execute(&mut conn)
    .await);
    let r = ok(app.http.get(format!("{}/readyz", app.base)).send().await);
    assert_eq!(r.status().as_u16(), 503);
    let public: Value = ok(r.json().await);
    assert_eq!(public, json!({ "status": "unready" }));
    let r = ok(app
        .http
        .get(format!("http://{admin}/readyz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await);
    assert_eq!(r.status().as_u16(), 503);
    let detail: Value = ok(r.json().await);
    assert!(
        detail["reason"]
            .as_str()
            .is_some_and(|r| r.contains("migrations pending")),
        "{detail}"
    );
}
