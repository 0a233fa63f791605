//! Projection rebuilds from the back office and the CLI: `rebuildProjection` (ADMIN)
//! starts one in the background, `projections` shows its progress and outcome, the
//! storefront keeps answering, a second rebuild of the same projection is a CONFLICT;
//! `till projections rebuild` does the same with a progress bar.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use till_read_models::{Projection, Rebuild, RebuildSettings};

use crate::support::{account_on, code, ok, spawn_app, ServerProcess};

const STATUS: &str = "{ projections { name position rebuild { state phase eventsApplied \
                      eventsTotal startedAt finishedAt error } } }";

fn rebuild_of<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["data"]["projections"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == name))
        .map(|p| &p["rebuild"])
        .unwrap_or_else(|| panic!("no projection {name}: {body}"))
}

#[tokio::test]
async fn an_admin_rebuilds_a_projection_while_the_storefront_keeps_answering() {
    let app = spawn_app().await;
    let product = app.product("REB-1", 1250, 7).await;
    let admin = app.admin().await;
    let rebuild = "mutation($p: ProjectionName!) { rebuildProjection(projection: $p) { \
                   name rebuild { state eventsTotal } } }";

    // Not for staff, nor for anonymous callers.
    let (_, body) = app
        .gql(
            Some(&app.staff_token),
            rebuild,
            json!({"p": "PRODUCT_VIEW"}),
        )
        .await;
    assert_eq!(code(&body), Some("FORBIDDEN"), "{body}");
    let (_, body) = app.gql(None, rebuild, json!({"p": "PRODUCT_VIEW"})).await;
    assert_eq!(code(&body), Some("UNAUTHENTICATED"), "{body}");

    // While another rebuild of it holds the lock: CONFLICT, nothing recorded as failed.
    let held = ok(Rebuild::start(
        &app.db.url,
        Projection::ProductView,
        RebuildSettings::default(),
    )
    .await);
    let (_, body) = app
        .gql(Some(&admin), rebuild, json!({"p": "PRODUCT_VIEW"}))
        .await;
    assert_eq!(code(&body), Some("CONFLICT"), "{body}");
    drop(held);

    // Started (the lock of the dropped one goes with its connection, soon).
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = app
            .gql(Some(&admin), rebuild, json!({"p": "PRODUCT_VIEW"}))
            .await;
        if code(&body) != Some("CONFLICT") {
            assert_eq!(status, 200, "{body}");
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the dropped rebuild's lock never went"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let started = &body["data"]["rebuildProjection"];
    assert_eq!(started["name"], "product_view", "{body}");
    assert!(
        ["RUNNING", "DONE"].contains(&started["rebuild"]["state"].as_str().unwrap_or("")),
        "{body}"
    );
    assert!(
        started["rebuild"]["eventsTotal"].as_i64() > Some(0),
        "{body}"
    );

    // Progress until done; the storefront answers throughout.
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let (_, body) = app
            .gql(
                None,
                "query($p: ID!) { product(id: $p) { name available } }",
                json!({"p": product}),
            )
            .await;
        assert_eq!(body["data"]["product"]["available"], 7, "{body}");
        let (_, status) = app.gql(Some(&admin), STATUS, json!({})).await;
        let r = rebuild_of(&status, "product_view").clone();
        if r["state"] == "DONE" {
            break r;
        }
        assert_ne!(r["state"], "FAILED", "{status}");
        assert!(
            Instant::now() < deadline,
            "the rebuild never finished: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["phase"], "FINISHED");
    assert!(
        done["eventsApplied"].as_i64() >= done["eventsTotal"].as_i64(),
        "{done}"
    );
    assert!(
        done["finishedAt"].is_string() && done["error"].is_null(),
        "{done}"
    );

    // The rebuilt view serves, and writes after it are projected into it.
    let (_, body) = app
        .gql(
            Some(&admin),
            "mutation($p: ID!) { restockProduct(productId: $p, quantity: 3) { consistencyToken } }",
            json!({"p": product}),
        )
        .await;
    let token = crate::support::consistency_token(&body, "restockProduct");
    let (_, body) = app
        .gql_after(
            None,
            &token,
            "query($p: ID!) { product(id: $p) { available } }",
            json!({"p": product}),
        )
        .await;
    assert_eq!(body["data"]["product"]["available"], 10, "{body}");

    // The others never ran one.
    let (_, status) = app.gql(Some(&app.staff_token), STATUS, json!({})).await;
    assert!(rebuild_of(&status, "sales").is_null(), "{status}");

    // Counted in /metrics (once the rebuild's task has finished, right after its row).
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = app.metrics_text().await;
        let done = text.lines().any(|l| {
            l.starts_with("till_projection_rebuilds_total{")
                && l.contains("projection=\"product_view\"")
                && l.contains("outcome=\"done\"")
                && l.ends_with(" 1")
        });
        if done {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no rebuild counter in /metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.contains("till_projection_rebuild_events{projection=\"product_view\"}"));
}

#[tokio::test]
async fn the_cli_rebuilds_with_progress_and_reports_it_in_status() {
    let app = spawn_app().await;
    app.product("REB-CLI", 500, 3).await;
    let till = env!("CARGO_BIN_EXE_till");
    // tokio's Command: the server under test runs on this test's runtime, and a
    // blocking wait here would freeze its projector mid-transaction.
    let out = ok(tokio::process::Command::new(till)
        .args([
            "projections",
            "rebuild",
            "--projection",
            "product_view",
            "--projection",
            "sales",
        ])
        .env("DATABASE_URL", &app.db.url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["product_view", "sales"] {
        assert!(
            stdout.contains(&format!("{name}: ")) && stdout.contains("swapped in"),
            "{stdout}"
        );
    }
    // The status table that follows shows both as done, the others never rebuilt.
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    assert!(line("product_view").contains("done at"), "{stdout}");
    assert!(line("order_view").ends_with("never"), "{stdout}");

    let bad = ok(tokio::process::Command::new(till)
        .args(["projections", "rebuild", "--projection", "nope"])
        .env("DATABASE_URL", &app.db.url)
        .output()
        .await);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown projection \"nope\""));

    // The rebuild's options mean nothing to the other actions: refused, not ignored.
    let misplaced = ok(tokio::process::Command::new(till)
        .args(["projections", "status", "--projection", "sales"])
        .env("DATABASE_URL", &app.db.url)
        .output()
        .await);
    assert!(!misplaced.status.success());
    assert!(
        String::from_utf8_lossy(&misplaced.stderr)
            .contains("only apply to `till projections rebuild`"),
        "{}",
        String::from_utf8_lossy(&misplaced.stderr)
    );
}

/// A server stopped (SIGTERM) while its rebuild waits to swap: the rebuild stops, its row
/// says so, the live tables stay, the rebuild's schemas go, and the server exits 0.
#[tokio::test]
async fn a_rebuild_stops_with_its_server_and_leaves_the_live_tables() {
    use diesel_async::RunQueryDsl;
    use till_domain::commands::Commands;
    use till_domain::db::testing::TestDb;
    use till_domain::types::Role;

    let db = TestDb::new().await;
    let cats = ok(till_domain::seed::categories(&db.pool, "st", 0, 3, &[]).await);
    ok(till_domain::seed::products(&db.pool, "st", 0, 20, &cats).await);
    let (_, admin) = account_on(
        &Commands::new(db.pool.clone()),
        "root@example.com",
        Role::Admin,
    )
    .await;
    let mut server = ServerProcess::start(&db.url, &[("TILL_SHUTDOWN_DELAY_MS", "0")]).await;
    let table = "SELECT to_regclass('rm_product_view')::oid::text AS t";
    #[derive(diesel::QueryableByName)]
    struct T {
        #[diesel(sql_type = diesel::sql_types::Text)]
        t: String,
    }
    let mut conn = ok(db.pool.get().await);
    let before = ok(diesel::sql_query(table).get_result::<T>(&mut conn).await).t;
    // Hold the projection's applier lock: the rebuild copies, then waits to swap.
    let mut holder = ok(db.pool.get().await);
    ok(
        diesel::sql_query("SELECT pg_advisory_lock(hashtext('till.projection.product_view'))")
            .execute(&mut holder)
            .await,
    );

    let http = reqwest::Client::new();
    let gql = |query: &'static str| {
        let req = http
            .post(format!("{}/graphql", server.base))
            .bearer_auth(&admin)
            .json(&json!({ "query": query }));
        async move { ok(ok(req.send().await).json::<Value>().await) }
    };
    let body = gql("mutation { rebuildProjection(projection: PRODUCT_VIEW) { name } }").await;
    assert!(body["errors"].is_null(), "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = gql(STATUS).await;
        if rebuild_of(&status, "product_view")["phase"] == "SWAPPING" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never reached the swap: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let exit = server.terminate().await;
    assert!(exit.success(), "SIGTERM exits 0, got {exit}");
    let rebuilds = ok(till_read_models::rebuild::last_rebuilds(&mut conn).await);
    let r = rebuilds
        .iter()
        .find(|r| r.projection == Projection::ProductView)
        .unwrap_or_else(|| panic!("no rebuild row"));
    assert_eq!(r.state, till_read_models::RebuildState::Failed);
    assert_eq!(r.error.as_deref(), Some("stopped before it finished"));
    assert_eq!(
        ok(diesel::sql_query(table).get_result::<T>(&mut conn).await).t,
        before
    );
    let left = ok(diesel::sql_query(
        "SELECT count(*)::text AS t FROM pg_namespace WHERE nspname LIKE 'till\\_re%'",
    )
    .get_result::<T>(&mut conn)
    .await)
    .t;
    assert_eq!(left, "0", "the rebuild's schemas were dropped");
}
