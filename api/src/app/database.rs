//! Where the database is: `DATABASE_URL`, or the embedded PostgreSQL (dev) with its
//! optional streaming replicas; and where the read models are read from.

use std::time::Duration;

use till_domain::db::embedded::{EmbeddedOptions, EmbeddedPostgres};
use till_domain::db::PgPool;
use till_read_models::ReadSources;

use super::StartError;
use crate::config::{DbConfig, Mode, ServeConfig};

/// Longest a read waits for a replica's connection before the primary serves it.
const REPLICA_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the database is.
pub struct Database {
    /// Connection URL.
    pub url: String,
    /// Streaming replicas of the embedded cluster (`till serve --replicas`), stopped on
    /// drop before it.
    pub replicas: Vec<EmbeddedPostgres>,
    /// The embedded cluster, when Till started one (stopped on drop).
    pub embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Uses `DATABASE_URL`, or starts the embedded PostgreSQL in dev mode.
    pub async fn resolve(db: &DbConfig, mode: Mode) -> Result<Self, StartError> {
        if let Some(url) = db.url().map_err(StartError::Config)? {
            return Ok(Self {
                url: url.expose().to_owned(),
                replicas: Vec::new(),
                embedded: None,
            });
        }
        if mode == Mode::Production {
            return Err(StartError::Config(
                "DATABASE_URL is required in production mode".into(),
            ));
        }
        let opts = EmbeddedOptions {
            data_dir: db.pg_data.clone(),
            port: (db.pg_port != 0).then_some(db.pg_port),
            ephemeral: false,
            max_connections: db.pg_max_connections,
        };
        tracing::info!(data = %opts.data_dir.display(), "starting the embedded PostgreSQL");
        let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&opts))
            .await
            .map_err(|e| {
                StartError::Config(format!("embedded PostgreSQL start-up panicked: {e}"))
            })??;
        let admin = pg.url("postgres");
        till_domain::db::create_database_if_missing(&admin, "till").await?;
        Ok(Self {
            url: pg.url("till"),
            replicas: Vec::new(),
            embedded: Some(pg),
        })
    }

    /// Starts `n` streaming replicas of the embedded cluster beside its data folder
    /// (`<data>-replica-<i>`, made afresh each time, slot `till_replica_<i>`); the
    /// second and later ones replay `delay` behind. Dev only (`till serve --replicas`).
    pub async fn start_dev_replicas(
        &mut self,
        n: u8,
        delay: Duration,
        data: &std::path::Path,
    ) -> Result<(), StartError> {
        let Some(primary) = &self.embedded else {
            return Err(StartError::Config(
                "--replicas starts replicas of the embedded PostgreSQL: leave DATABASE_URL \
                 unset, or list your replicas in TILL_READ_DATABASE_URLS"
                    .into(),
            ));
        };
        let admin = primary.url("postgres");
        for i in 0..n {
            let slot = format!("till_replica_{i}");
            till_domain::db::drop_idle_slot(&admin, &slot).await?;
            let opts = till_domain::db::embedded::ReplicaOptions {
                data_dir: data.with_file_name(format!(
                    "{}-replica-{i}",
                    data.file_name()
                        .map_or("pg".into(), |n| n.to_string_lossy())
                )),
                slot,
                apply_delay: if i == 0 { Duration::ZERO } else { delay },
                ephemeral: false,
            };
            tracing::info!(replica = i, data = %opts.data_dir.display(), "starting an embedded streaming replica");
            let replica = tokio::task::block_in_place(|| primary.start_replica(&opts))?;
            self.replicas.push(replica);
        }
        Ok(())
    }

    /// Where the read models are read: the replicas in TILL_READ_DATABASE_URLS, or the
    /// embedded ones, beside `primary`; `primary` alone without any.
    pub(super) fn read_sources(
        &self,
        cfg: &ServeConfig,
        primary: &PgPool,
    ) -> Result<ReadSources, StartError> {
        let read_urls = self.read_urls(cfg)?;
        if read_urls.is_empty() {
            return Ok(ReadSources::primary_only(primary.clone()));
        }
        let base = cfg.db.pool_settings();
        let settings = till_domain::db::PoolSettings {
            max_size: cfg.replicas.read_pool_size,
            // A replica that went away must not hold a read for long: past this the
            // read runs on the primary instead.
            acquire_timeout: base.acquire_timeout.min(REPLICA_ACQUIRE_TIMEOUT),
            ..base
        };
        let replicas = read_urls
            .iter()
            .map(|url| {
                (
                    till_read_models::sources::host_of(url),
                    till_domain::db::pool(url, &settings),
                )
            })
            .collect();
        tracing::info!(
            replicas = read_urls.len(),
            "reading the read models from replicas"
        );
        Ok(ReadSources::new(
            primary.clone(),
            replicas,
            cfg.replicas.settings(),
        ))
    }

    /// URLs of the read replicas: TILL_READ_DATABASE_URLS, or the embedded ones.
    fn read_urls(&self, cfg: &ServeConfig) -> Result<Vec<String>, StartError> {
        let configured = cfg.replicas.urls(&cfg.db).map_err(StartError::Config)?;
        if !configured.is_empty() && !self.replicas.is_empty() {
            return Err(StartError::Config(
                "set TILL_READ_DATABASE_URLS or --replicas, not both".into(),
            ));
        }
        Ok(if configured.is_empty() {
            self.replicas.iter().map(|r| r.url("till")).collect()
        } else {
            configured.iter().map(|u| u.expose().to_owned()).collect()
        })
    }
}
