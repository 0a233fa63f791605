//! The perimeter: the public `/readyz` tells a stranger nothing but the status.

use std::net::SocketAddr;
use std::time::Duration;

use diesel_async::RunQueryDsl;
use serde_json::{json, Value};

use crate::support::*;

fn free_addr() -> SocketAddr {
    ok(std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()))
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
