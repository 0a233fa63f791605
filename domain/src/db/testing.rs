//! Test support: one ephemeral cluster per test binary, a migrated template database,
//! and a fresh database per test cloned from it and dropped afterwards. Tests with read
//! replicas use a second cluster of their own (so that a base backup copies little) and
//! start the streaming replicas they need ([`TestDb::start_replica`]).

use std::path::PathBuf;
use std::sync::OnceLock;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::embedded::{EmbeddedOptions, EmbeddedPostgres, ReplicaOptions};
use super::{PgPool, PoolSettings};

const TEMPLATE: &str = "till_template";

struct Cluster {
    pg: EmbeddedPostgres,
    _dir: PathBuf,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static REPLICATED: OnceLock<Result<Cluster, String>> = OnceLock::new();

fn cluster() -> &'static Cluster {
    started(&CLUSTER)
}

fn started(cell: &'static OnceLock<Result<Cluster, String>>) -> &'static Cluster {
    let result = cell.get_or_init(|| {
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
    cluster: &'static Cluster,
}

impl TestDb {
    /// Clones the migrated template into a new database.
    pub async fn new() -> Self {
        Self::with_pool_size(20).await
    }

    /// Like [`TestDb::new`] with a pool of `max_size` connections.
    pub async fn with_pool_size(max_size: u32) -> Self {
        Self::on(cluster(), max_size).await
    }

    async fn on(cluster: &'static Cluster, max_size: u32) -> Self {
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
            cluster,
        }
    }

    /// A database on the cluster kept for tests with read replicas, with a pool of
    /// `max_size` connections; replicas started afterwards hold it too.
    pub async fn for_replicas(max_size: u32) -> Self {
        Self::on(started(&REPLICATED), max_size).await
    }

    /// Starts a streaming replica of this database's cluster that replays
    /// `apply_delay` behind it (`recovery_min_apply_delay`); stopped, and its slot
    /// dropped, on drop. Blocks for the base backup: call it from a blocking thread or
    /// before load.
    pub fn start_replica(&self, apply_delay: std::time::Duration) -> TestReplica {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let opts = ReplicaOptions {
            data_dir: self.cluster._dir.join(format!("replica-{id}")),
            slot: format!("test_{id}"),
            apply_delay,
            ephemeral: true,
        };
        let pg = match self.cluster.pg.start_replica(&opts) {
            Ok(pg) => pg,
            Err(e) => panic!("cannot start a test replica: {e}"),
        };
        TestReplica {
            port: pg.port(),
            pg: Some(pg),
            opts,
            db: self.name.clone(),
            admin_url: self.admin_url.clone(),
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
        on_own_thread(async move {
            if let Ok(mut conn) = AsyncPgConnection::establish(&admin).await {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        });
    }
}

/// A streaming replica of a test cluster ([`TestDb::start_replica`]).
pub struct TestReplica {
    pg: Option<EmbeddedPostgres>,
    port: u16,
    opts: ReplicaOptions,
    db: String,
    admin_url: String,
}

impl TestReplica {
    /// A URL for the test's database on the replica.
    pub fn url(&self) -> String {
        self.admin_url
            .rsplit_once(':')
            .map(|(head, _)| format!("{head}:{}/{}", self.port, self.db))
            .unwrap_or_default()
    }

    /// Stops the replica (fast shutdown); [`TestReplica::start_again`] brings it back
    /// on the same port, where it resumes streaming from its slot.
    pub fn stop(&mut self) {
        if let Some(pg) = self.pg.take() {
            pg.stop();
        }
    }

    /// Starts the stopped replica again.
    pub fn start_again(&mut self) {
        if self.pg.is_some() {
            return;
        }
        match EmbeddedPostgres::start(&EmbeddedOptions {
            data_dir: self.opts.data_dir.clone(),
            port: Some(self.port),
            ephemeral: true,
            max_connections: 500,
        }) {
            Ok(pg) => self.pg = Some(pg),
            Err(e) => panic!("cannot start the test replica again: {e}"),
        }
    }
}

impl Drop for TestReplica {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.opts.data_dir);
        let admin = self.admin_url.clone();
        let slot = self.opts.slot.clone();
        on_own_thread(async move {
            let _ = super::drop_idle_slot(&admin, &slot).await;
        });
    }
}

/// Runs `work` to its end on a thread and runtime of its own: a `Drop` can run inside a
/// runtime, which cannot block.
fn on_own_thread(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(work);
        }
    })
    .join();
}
