//! `till worker` projects what another process writes, and stops cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use till_domain::commands::{CommandContext, Commands, NewCategory};
use till_domain::db::testing::TestDb;
use till_domain::types::{Name, Slug};
use till_read_models::schema::rm_categories;

use crate::support::ok;

/// Kills the worker if the test fails before it stops it, so that no process outlives
/// the test run.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Both fail harmlessly once the test has stopped and reaped it.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_worker_process_projects_and_stops_on_sigterm() {
    let db = TestDb::new().await;
    let admin = ok(std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()));
    let mut worker = KillOnDrop(ok(Command::new(env!("CARGO_BIN_EXE_till"))
        .arg("worker")
        .env("DATABASE_URL", &db.url)
        .env("TILL_ADMIN_LISTEN", admin.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()));
    let commands = Commands::new(db.pool.clone());
    ok(commands
        .create_category(
            &CommandContext::system("test"),
            NewCategory {
                slug: ok(Slug::parse("worked")),
                name: ok(Name::parse("name", "Worked")),
                parent: None,
            },
        )
        .await);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut conn = ok(db.pool.get().await);
        let n: i64 = ok(rm_categories::table.count().get_result(&mut conn).await);
        if n == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never projected the category"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The worker runs the heap housekeeping too (its first tick is after 5 s): the
    // allocator's free bytes show on its metrics.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = match http.get(format!("http://{admin}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if body.contains("till_heap_free_bytes ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never exported till_heap_free_bytes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ok(Command::new("kill")
        .args(["-TERM", &worker.0.id().to_string()])
        .status());
    let status = ok(worker.0.wait());
    assert!(status.success(), "worker exit: {status}");
}

/// A server without its own projector (the projections run in a worker) follows the
/// worker's checkpoints: consistency tokens resolve and its cache is not left stale.
#[tokio::test]
async fn a_server_without_a_projector_follows_the_worker_and_drops_stale_cache() {
    use serde_json::json;
    use till_read_models::ReadSide;

    use crate::support::{code, spawn_app_with};

    let app = spawn_app_with(|cfg| cfg.projector = false).await;
    let worker = ReadSide::builder(app.db.pool.clone(), app.db.url.clone())
        .build()
        .projector;
    let product = app.product("REPL-1", 100, 5).await;
    ok(worker.catch_up_all().await);
    let q = "query($p: ID!) { product(id: $p) { available } }";
    let ct = app.head_token().await;
    let (_, body) = app
        .gql_with(
            None,
            q,
            json!({ "p": product }),
            &[("x-consistency-token", &ct)],
        )
        .await;
    assert_eq!(body["data"]["product"]["available"], 5, "{body}");

    let (_, body) = app
        .gql(
            Some(&app.staff_token),
            "mutation($p: ID!) { restockProduct(productId: $p, quantity: 3) { consistencyToken } }",
            json!({ "p": product }),
        )
        .await;
    assert_eq!(code(&body), None, "{body}");
    let ct = body["data"]["restockProduct"]["consistencyToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ok(worker.catch_up_all().await);
    let (_, body) = app
        .gql_with(
            None,
            q,
            json!({ "p": product }),
            &[("x-consistency-token", &ct)],
        )
        .await;
    assert_eq!(
        body["data"]["product"]["available"], 8,
        "cache dropped: {body}"
    );
}
