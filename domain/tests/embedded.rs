//! The embedded PostgreSQL is not open to every local user: its superuser has a
//! generated password (scram-sha-256), kept in a file only its owner can read, and a
//! connection without it is refused.

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use till_domain::db::embedded::{EmbeddedOptions, EmbeddedPostgres};

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn start(dir: &std::path::Path) -> EmbeddedPostgres {
    ok(EmbeddedPostgres::start(&EmbeddedOptions {
        data_dir: dir.join("pg"),
        port: None,
        ephemeral: true,
        max_connections: 20,
    }))
}

async fn connects(url: &str) -> Result<(), String> {
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .map_err(|e| e.to_string())?;
    diesel::sql_query("SELECT 1")
        .execute(&mut conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("till-pg-auth-{}", uuid::Uuid::new_v4().simple()));
    ok(std::fs::create_dir_all(&dir));
    ok(std::fs::set_permissions(
        &dir,
        std::fs::Permissions::from_mode(0o755),
    ));
    dir
}

#[tokio::test]
async fn the_embedded_cluster_wants_its_password() {
    let dir = temp_dir();
    let pg = start(&dir);
    let anonymous = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
    let refused = connects(&anonymous).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("password authentication failed")
                || e.contains("invalid configuration")),
        "a connection without the password: {refused:?}"
    );
    let wrong = format!("postgres://postgres:wrong@127.0.0.1:{}/postgres", pg.port());
    let refused = connects(&wrong).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("password authentication failed")),
        "a wrong password: {refused:?}"
    );
    ok(connects(&pg.url("postgres")).await);

    let file = pg.password_file();
    let mode = ok(std::fs::metadata(&file)).permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{} is {mode:o}", file.display());

    // Started again on the same folder, it keeps its password.
    let url = pg.url("postgres");
    drop(pg);
    let pg = start(&dir);
    assert_eq!(pg.url("postgres").split('@').next(), url.split('@').next());
    ok(connects(&pg.url("postgres")).await);
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A folder made by an older Till (trust authentication, no password file) gets a
/// password and password authentication when it is started.
#[tokio::test]
async fn a_trusting_cluster_from_before_is_locked_on_start() {
    let dir = temp_dir();
    let pg = start(&dir);
    let data = pg.data_dir().to_owned();
    let file = pg.password_file();
    drop(pg);
    ok(std::fs::remove_file(&file));
    ok(std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n",
    ));
    let pg = start(&dir);
    let anonymous = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
    assert!(
        connects(&anonymous).await.is_err(),
        "the old cluster still trusts everyone"
    );
    ok(connects(&pg.url("postgres")).await);
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}
