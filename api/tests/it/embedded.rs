//! The embedded default as a user runs it: the real `till` binary with its own
//! PostgreSQL. `kill -9` leaves no PostgreSQL behind and the next start works;
//! SIGTERM drains, stops PostgreSQL and exits 0.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::ok;

fn free_port() -> u16 {
    ok(std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr())).port()
}

fn start(dir: &Path, port: u16) -> Child {
    ok(Command::new(env!("CARGO_BIN_EXE_till"))
        .arg("serve")
        .current_dir(dir)
        .env("TILL_LISTEN", format!("127.0.0.1:{port}"))
        .env("TILL_PG_DATA", dir.join("pg"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn())
}

async fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let http = reqwest::Client::new();
    loop {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "server never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn postmaster_pid(dir: &Path) -> String {
    let pidfile = ok(std::fs::read_to_string(dir.join("pg/postmaster.pid")));
    pidfile.lines().next().unwrap_or_default().trim().to_owned()
}

fn alive(pid: &str) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn wait_gone(pid: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "{what}: PostgreSQL {pid} outlived its server"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn postgres_dies_with_its_server_and_the_next_start_works() {
    let dir = std::env::temp_dir().join(format!("till-embedded-{}", uuid::Uuid::new_v4().simple()));
    ok(std::fs::create_dir_all(&dir));
    ok(std::process::Command::new("chmod")
        .arg("755")
        .arg(&dir)
        .status());

    let port = free_port();
    let mut server = start(&dir, port);
    wait_ready(port).await;
    let pg = postmaster_pid(&dir);
    ok(Command::new("kill")
        .args(["-9", &server.id().to_string()])
        .status());
    let _ = server.wait();
    wait_gone(&pg, "kill -9");

    let port = free_port();
    let mut server = start(&dir, port);
    wait_ready(port).await;
    let pg = postmaster_pid(&dir);
    ok(Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status());
    let status = ok(server.wait());
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    wait_gone(&pg, "SIGTERM");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `cargo run` on a fresh machine: the embedded PostgreSQL refuses a local user who
/// does not have its password, and every secret Till wrote is readable by its owner
/// alone.
#[tokio::test]
async fn the_embedded_default_keeps_its_secrets() {
    use diesel_async::{AsyncConnection, AsyncPgConnection};
    use std::os::unix::fs::PermissionsExt;

    let dir = std::env::temp_dir().join(format!("till-secrets-{}", uuid::Uuid::new_v4().simple()));
    ok(std::fs::create_dir_all(&dir));
    ok(std::fs::set_permissions(
        &dir,
        std::fs::Permissions::from_mode(0o755),
    ));
    let port = free_port();
    let mut server = start(&dir, port);
    wait_ready(port).await;

    let pidfile = ok(std::fs::read_to_string(dir.join("pg/postmaster.pid")));
    let pg_port = pidfile.lines().nth(3).unwrap_or_default().trim().to_owned();
    for url in [
        format!("postgres://postgres@127.0.0.1:{pg_port}/till"),
        format!("postgres://postgres:guess@127.0.0.1:{pg_port}/till"),
    ] {
        let connected = AsyncPgConnection::establish(&url).await.map(drop);
        assert!(
            connected.is_err(),
            "a local user without the password connected to {url}"
        );
    }
    for secret in [".till/jwt-secret", "pg/till-password"] {
        let mode = ok(std::fs::metadata(dir.join(secret))).permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{secret} has mode {mode:o}");
    }

    ok(Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status());
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
