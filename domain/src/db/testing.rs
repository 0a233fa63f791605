//! Test support: one ephemeral cluster per test binary, a migrated template database,
//! and a fresh database per test cloned from it and dropped afterwards.

use std::path::PathBuf;
use std::sync::OnceLock;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::embedded::{EmbeddedOptions, EmbeddedPostgres};
use super::{PgPool, PoolSettings};

const TEMPLATE: &str = "till_template";

struct Cluster {
    pg: EmbeddedPostgres,
    _dir: PathBuf,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

fn cluster() -> &'static Cluster {
    let result = CLUSTER.get_or_init(|| {
        // Run on a separate thread: start-up is blocking and migrations need a runtime.
        std::thread::spawn(start_cluster)
            .join()
            .unwrap_or_else(|_| Err("cluster start-up panicked".into()))
    });
    match result {
        Ok(c) => c,
        Err(e) => panic!("cannot start the test PostgreSQL cluster: {e}"),
    }
}

fn start_cluster() -> Result<Cluster, String> {
    remove_stale_dirs();
    let dir = std::env::temp_dir().join(format!(
        "till-test-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let pg = EmbeddedPostgres::start(&EmbeddedOptions {
        data_dir: dir.join("pg"),
        port: None,
        ephemeral: true,
        max_connections: 500,
    })
    .map_err(|e| e.to_string())?;
    let admin = pg.url("postgres");
    let template = pg.url(TEMPLATE);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut conn = AsyncPgConnection::establish(&admin)
            .await
            .map_err(|e| e.to_string())?;
        diesel::sql_query(format!("CREATE DATABASE {TEMPLATE}"))
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        super::migrate(&template).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    })?;
    Ok(Cluster { pg, _dir: dir })
}

/// Removes data folders of earlier test processes that are no longer running.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("till-test-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A database of its own for one test, dropped when this value is dropped.
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// A URL to connect to it.
    pub url: String,
    /// A pool on it.
    pub pool: PgPool,
    admin_url: String,
}

impl TestDb {
    /// Clones the migrated template into a new database.
    pub async fn new() -> Self {
        Self::with_pool_size(20).await
    }

    /// Like [`TestDb::new`] with a pool of `max_size` connections.
    pub async fn with_pool_size(max_size: u32) -> Self {
        let cluster = cluster();
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let admin_url = cluster.pg.url("postgres");
        let mut conn = match AsyncPgConnection::establish(&admin_url).await {
            Ok(c) => c,
            Err(e) => panic!("connect to test cluster: {e}"),
        };
        if let Err(e) = diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
            .execute(&mut conn)
            .await
        {
            panic!("create test database: {e}");
        }
        let url = cluster.pg.url(&name);
        let pool = super::pool(
            &url,
            &PoolSettings {
                max_size,
                ..PoolSettings::default()
            },
        );
        Self {
            name,
            url,
            pool,
            admin_url,
        }
    }

    /// A URL for another database of the same cluster (for tests that need one).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // Drop on a separate thread: Drop can run inside a runtime, which cannot block.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = AsyncPgConnection::establish(&admin).await {
                    let _ =
                        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                }
            });
        })
        .join();
    }
}
