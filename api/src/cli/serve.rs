//! `till serve` (the default): the HTTP server with its background tasks, and in dev
//! mode the embedded PostgreSQL and its optional streaming replicas.

use std::time::Duration;

use super::CliError;
use crate::app::{Application, Database};
use crate::config::ServeConfig;
use crate::seed;

pub(super) async fn run(cfg: ServeConfig) -> Result<(), CliError> {
    let mode = cfg.mode;
    let mut database = Database::resolve(&cfg.db, mode).await?;
    if cfg.replicas.dev_replicas > 0 {
        if mode != crate::config::Mode::Dev {
            return Err(CliError::Failed(
                "--replicas is for dev mode: in production list your replicas in \
                 TILL_READ_DATABASE_URLS"
                    .into(),
            ));
        }
        database
            .start_dev_replicas(
                cfg.replicas.dev_replicas,
                Duration::from_millis(cfg.replicas.dev_replica_delay_ms),
                &cfg.db.pg_data,
            )
            .await?;
    }
    let embedded = database.embedded.is_some();
    let replicas = database.replicas.len();
    let app = Application::build(cfg.clone(), database).await?;
    let base = format!("http://{}:{}", cfg.listen.ip(), app.port());
    println!();
    println!(
        "  Till is running{}",
        if embedded {
            " (embedded PostgreSQL)"
        } else {
            ""
        }
    );
    if replicas > 0 {
        println!("  reading from {replicas} embedded streaming replica(s): {base}/metrics shows till_read_queries_total by source");
    }
    println!("  GraphiQL:  {base}/graphiql");
    println!("  GraphQL:   {base}/graphql");
    if app.data().conveniences.seed_demo {
        let tokens = &app.data().tokens;
        let pool = &app.data().pool;
        for (email, label) in [
            (seed::DEMO_STAFF_EMAIL, "staff token"),
            (seed::DEMO_SHOPPER_EMAIL, "shopper token"),
        ] {
            if let Ok(Some((id, role))) =
                till_domain::write_side_lookups::account_by_email(pool, email).await
            {
                if let Ok(t) = tokens.mint(id, role, Duration::from_secs(24 * 3600)) {
                    println!("  {label} ({email}, 24 h):");
                    println!("    Authorization: Bearer {t}");
                }
            }
        }
        println!(
            "  demo accounts sign in with the `login` mutation, password `{}`",
            seed::DEMO_PASSWORD
        );
    }
    println!();
    app.run_until_stopped()
        .await
        .map_err(|e| CliError::Failed(e.to_string()))
}
