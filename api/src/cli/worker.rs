//! `till worker`: the projector, the jobs and the housekeeping, without HTTP (probes
//! and metrics on the admin port).

use std::sync::Arc;
use std::time::Duration;

use till_read_models::ReadSide;

use super::CliError;
use crate::app::Database;
use crate::background::{wait_for_signal, Background};
use crate::config::{DbConfig, Mode};

pub(super) async fn run(
    db: DbConfig,
    jobs: crate::config::JobsConfig,
    tuning: &crate::config::ProjectorTuning,
    admin_listen: std::net::SocketAddr,
    ready_max_lag_s: u64,
) -> Result<(), CliError> {
    let database = Database::resolve(&db, Mode::Production).await?;
    let pool = till_domain::db::pool(&database.url, &db.pool_settings());
    let ReadSide { projector, reads } = ReadSide::builder(pool.clone(), database.url.clone())
        .projector(tuning.settings())
        .build();
    let cache = reads.cache().clone();
    crate::metrics::handle();
    let shutting_down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admin = crate::http::health::serve_admin(
        admin_listen,
        Arc::new(crate::http::health::AdminState {
            scrape: crate::metrics::Scrape {
                pool: pool.clone(),
                pool_max: db.db_pool_size,
                shards: Default::default(),
                shard_max: 0,
                reads,
                order_batches: None,
            },
            shutting_down: shutting_down.clone(),
            max_lag: (ready_max_lag_s > 0).then(|| Duration::from_secs(ready_max_lag_s)),
        }),
    )
    .map_err(|e| CliError::Failed(format!("admin port {admin_listen}: {e}")))?;
    let admin_handle = admin.handle();
    let admin_task = tokio::spawn(admin);
    let mut background = Background::new(database.url.clone());
    // One set of commands for the process: each holds the connection that wakes the
    // projectors after its commits. The worker's cache only takes invalidations, but
    // the projector's batches leave free heap behind: the cache's tick hands it back.
    let commands = till_domain::commands::Commands::new(pool.clone());
    background.start_read_side(&commands, &projector, true, cache);
    if jobs.jobs {
        let provider = jobs.payment_provider_url.clone();
        background
            .start_jobs(commands, &jobs, provider)
            .map_err(CliError::Failed)?;
    }
    background.listen();
    tracing::info!("worker running: projector, jobs and housekeeping");
    wait_for_signal().await;
    tracing::info!("worker stopping after the current batch");
    shutting_down.store(true, std::sync::atomic::Ordering::Release);
    background.stop(Duration::from_secs(30)).await;
    admin_handle.stop(true).await;
    let _ = admin_task.await;
    Ok(())
}
