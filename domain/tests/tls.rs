//! TLS to PostgreSQL against a real server that refuses plaintext (`hostssl` only) and
//! presents a certificate for `localhost` signed by a test CA: each `sslmode`, and the
//! pool, migrations and the LISTEN connection over TLS.

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use till_domain::channels::EVENTS_CHANNEL;
use till_domain::db::listen::Listener;
use till_domain::db::testing_tls::TlsCluster;
use till_domain::db::{self, PoolSettings};

fn cluster() -> &'static TlsCluster {
    TlsCluster::shared()
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// `postgres` database URL on `host` with `sslmode` and, when given, `sslrootcert`.
fn url(host: &str, sslmode: Option<&str>, ca: Option<&std::path::Path>) -> String {
    let mut query = Vec::new();
    if let Some(mode) = sslmode {
        query.push(format!("sslmode={mode}"));
    }
    if let Some(ca) = ca {
        query.push(format!("sslrootcert={}", ca.display()));
    }
    cluster().url(host, "postgres", &query.join("&"))
}

fn right_ca() -> Option<&'static std::path::Path> {
    Some(&cluster().ca_file)
}

fn wrong_ca() -> Option<&'static std::path::Path> {
    Some(&cluster().other_ca_file)
}

/// Whether the session runs over TLS, by the server's own account.
async fn encrypted(conn: &mut AsyncPgConnection) -> bool {
    #[derive(QueryableByName)]
    struct Ssl {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ssl: bool,
    }
    let row: Ssl = ok(diesel::sql_query(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .get_result(conn)
    .await);
    row.ssl
}

/// The error of a connection attempt that must fail.
async fn refused(url: &str) -> String {
    match db::connect(url).await {
        Ok(_) => panic!("connected, but should have been refused"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn verify_full_with_the_right_ca_connects_encrypted() {
    let mut conn = ok(db::connect(&url("localhost", Some("verify-full"), right_ca())).await);
    assert!(encrypted(&mut conn).await);
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_of_another_ca() {
    let err = refused(&url("localhost", Some("verify-full"), wrong_ca())).await;
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn verify_full_refuses_a_host_the_certificate_does_not_name() {
    // The certificate names `localhost`; the same server reached as 127.0.0.1 fails.
    let err = refused(&url("127.0.0.1", Some("verify-full"), right_ca())).await;
    assert!(err.contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_host_name() {
    let mut conn = ok(db::connect(&url("127.0.0.1", Some("verify-ca"), right_ca())).await);
    assert!(encrypted(&mut conn).await);
    let err = refused(&url("127.0.0.1", Some("verify-ca"), wrong_ca())).await;
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn require_encrypts_without_a_ca_file() {
    let mut conn = ok(db::connect(&url("127.0.0.1", Some("require"), None)).await);
    assert!(encrypted(&mut conn).await);
}

#[tokio::test]
async fn require_with_a_ca_file_checks_the_chain_as_libpq_does() {
    let err = refused(&url("127.0.0.1", Some("require"), wrong_ca())).await;
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn prefer_is_the_default_and_uses_tls_when_offered() {
    let mut conn = ok(db::connect(&url("127.0.0.1", None, None)).await);
    assert!(encrypted(&mut conn).await);
}

#[tokio::test]
async fn disable_is_refused_by_a_server_that_requires_tls() {
    let err = refused(&url("127.0.0.1", Some("disable"), None)).await;
    assert!(err.contains("no encryption"), "{err}");
}

async fn pool_connects_encrypted(url: &str) {
    let pool = db::pool(
        url,
        &PoolSettings {
            max_size: 2,
            statement_timeout: Duration::from_millis(4321),
            ..PoolSettings::default()
        },
    );
    let mut conn = ok(pool.get().await);
    assert!(encrypted(&mut conn).await);
    // The pool's own set-up still runs on the TLS connection.
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        statement_timeout: String,
    }
    let row: Setting = ok(diesel::sql_query("SHOW statement_timeout")
        .get_result(&mut *conn)
        .await);
    assert_eq!(row.statement_timeout, "4321ms");
}

#[tokio::test]
async fn the_pool_connects_with_verify_full() {
    pool_connects_encrypted(&url("localhost", Some("verify-full"), right_ca())).await;
}

#[tokio::test]
async fn the_pool_connects_with_require() {
    pool_connects_encrypted(&url("127.0.0.1", Some("require"), None)).await;
}

#[tokio::test]
async fn migrations_run_over_tls_and_the_pool_sees_them() {
    let name = format!("tls_{}", uuid::Uuid::new_v4().simple());
    ok(
        db::create_database_if_missing(&url("localhost", Some("verify-full"), right_ca()), &name)
            .await,
    );
    let ca = format!(
        "sslmode=verify-full&sslrootcert={}",
        cluster().ca_file.display()
    );
    let db_url = cluster().url("localhost", &name, &ca);
    let applied = ok(db::migrate(&db_url).await);
    assert_eq!(applied, db::migration_versions());
    let pool = db::pool(&db_url, &PoolSettings::default());
    assert_eq!(db::check_ready(&pool).await, Ok(()));
}

#[tokio::test]
async fn the_listen_connection_follows_notifications_over_tls() {
    let listen_url = url("localhost", Some("verify-full"), right_ca());
    let listener = Listener::new(listen_url.clone());
    let mut wake = listener.subscribe(&[EVENTS_CHANNEL]);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = listener.spawn(stopped);
    // Bumped once LISTEN is in place; the guard only stops a broken build from hanging.
    ok(ok(tokio::time::timeout(
        Duration::from_secs(60),
        wake.wait_for(|n| *n >= 1),
    )
    .await));
    let seen = *wake.borrow_and_update();
    let mut conn = ok(db::connect(&listen_url).await);
    ok(
        diesel::sql_query(format!("SELECT pg_notify('{EVENTS_CHANNEL}', '')"))
            .execute(&mut conn)
            .await,
    );
    ok(ok(tokio::time::timeout(
        Duration::from_secs(60),
        wake.wait_for(|n| *n > seen),
    )
    .await));
    let _ = stop.send(true);
    ok(task.await);
}
