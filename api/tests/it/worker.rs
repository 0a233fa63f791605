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

#[tokio::test]
async fn a_worker_process_projects_and_stops_on_sigterm() {
    let db = TestDb::new().await;
    let mut worker = ok(Command::new(env!("CARGO_BIN_EXE_till"))
        .arg("worker")
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn());
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
    ok(Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status());
    let status = ok(worker.wait());
    assert!(status.success(), "worker exit: {status}");
}
