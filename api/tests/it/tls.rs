//! A real `till serve` against a PostgreSQL that refuses plaintext, configured as in
//! production (`TILL_DB_SSLMODE=verify-full`, `TILL_DB_CA_FILE`): it migrates, serves a
//! write and reads it back through its projector, so the migration connection, the
//! pools, the LISTEN connection and the projector's connections all speak TLS.

use diesel_async::RunQueryDsl;
use serde_json::json;
use till_domain::commands::Commands;
use till_domain::db::testing_tls::TlsCluster;
use till_domain::types::Role;

use crate::support::{account_on, ok, ServerProcess};

fn cluster() -> &'static TlsCluster {
    TlsCluster::shared()
}

#[derive(diesel::QueryableByName)]
struct Sessions {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    encrypted: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    plain: i64,
}

#[tokio::test]
async fn serve_runs_on_a_database_that_requires_verified_tls() {
    let cluster = cluster();
    let verify = format!(
        "sslmode=verify-full&sslrootcert={}",
        cluster.ca_file.display()
    );
    let name = format!("till_tls_{}", uuid::Uuid::new_v4().simple());
    ok(till_domain::db::create_database_if_missing(
        &cluster.url("localhost", "postgres", &verify),
        &name,
    )
    .await);
    let ca_file = cluster.ca_file.display().to_string();
    // The URL names no TLS settings: they come from the server's own settings.
    let server = ServerProcess::start(
        &cluster.url("localhost", &name, ""),
        &[
            ("TILL_DB_SSLMODE", "verify-full"),
            ("TILL_DB_CA_FILE", &ca_file),
            ("TILL_RATE_LIMIT", "false"),
        ],
    )
    .await;

    let pool = till_domain::db::pool(
        &cluster.url("localhost", &name, &verify),
        &Default::default(),
    );
    let (_, staff) = account_on(
        &Commands::new(pool.clone()),
        "staff@example.com",
        Role::Staff,
    )
    .await;
    let http = reqwest::Client::new();
    let gql = |query: &'static str, ct: Option<String>| {
        let mut req = http
            .post(format!("{}/graphql", server.base))
            .bearer_auth(&staff)
            .json(&json!({ "query": query }));
        if let Some(ct) = ct {
            req = req.header("x-consistency-token", ct);
        }
        async move { ok(ok(req.send().await).json::<serde_json::Value>().await) }
    };
    let body = gql(
        r#"mutation { createCategory(input: {slug: "tls", name: "Over TLS"}) { consistencyToken } }"#,
        None,
    )
    .await;
    let ct = body["data"]["createCategory"]["consistencyToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    // Read back through the projector, which the LISTEN connection wakes.
    let body = gql("{ categories { slug name } }", Some(ct)).await;
    assert_eq!(
        body["data"]["categories"],
        json!([{ "slug": "tls", "name": "Over TLS" }]),
        "{body}"
    );

    let mut conn = ok(pool.get().await);
    let sessions: Sessions = ok(diesel::sql_query(
        "SELECT count(*) FILTER (WHERE s.ssl) AS encrypted, count(*) FILTER (WHERE NOT s.ssl) AS plain \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = current_database()",
    )
    .get_result(&mut *conn)
    .await);
    assert_eq!(sessions.plain, 0);
    // This test's connection, the server's pools and its LISTEN connection at least.
    assert!(
        sessions.encrypted >= 3,
        "{} encrypted sessions",
        sessions.encrypted
    );
}
