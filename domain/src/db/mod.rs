//! Database plumbing shared by every crate: the connection pool, the embedded migrations,
//! and an embedded PostgreSQL cluster for development and tests.

pub mod embedded;
pub mod listen;
pub mod prepared;
pub mod shard;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "testing")]
pub mod testing_tls;
pub mod tls;
pub mod transactions;

use std::time::Duration;

use diesel::migration::MigrationSource;
use diesel::{ConnectionError, ConnectionResult};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::error::DomainError;

/// The pooled connection type every crate uses.
pub type PgPool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

/// A connection checked out of [`PgPool`].
pub type PooledConn<'a> =
    bb8::PooledConnection<'a, AsyncDieselConnectionManager<AsyncPgConnection>>;

/// The SQL migrations under `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// How to size and guard the pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Most connections the pool opens.
    pub max_size: u32,
    /// How long a caller waits for a free connection before failing fast.
    pub acquire_timeout: Duration,
    /// `statement_timeout` set on every connection.
    pub statement_timeout: Duration,
    /// `idle_in_transaction_session_timeout` set on every connection: PostgreSQL ends a
    /// session left idle inside a transaction this long (a task that stopped between
    /// BEGIN and COMMIT), which would otherwise hold its locks and, once it wrote, the
    /// projectors' horizon until the connection is closed. Zero turns it off.
    pub idle_in_transaction_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_size: 16,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(60),
        }
    }
}

/// Opens one connection to `url`, with the TLS its `sslmode`/`sslrootcert` ask for
/// ([`tls`]). Every connection Till makes goes through here or through a [`pool`].
pub async fn connect(url: &str) -> ConnectionResult<AsyncPgConnection> {
    tls::Target::parse(url)
        .map_err(|e| ConnectionError::InvalidConnectionUrl(e.to_string()))?
        .connect()
        .await
}

/// Builds a bounded pool. It does not connect up front, so a server can start (and
/// report unready) while the database is down. The URL is parsed (and its CA file read)
/// once here; when that fails, every connection attempt fails with the reason (check
/// it at start-up with [`tls::Target::parse`]).
pub fn pool(url: &str, settings: &PoolSettings) -> PgPool {
    let setup = session_settings(
        settings.statement_timeout,
        settings.idle_in_transaction_timeout,
    );
    let target = tls::Target::parse(url).map_err(|e| e.to_string());
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(move |_url| {
        let target = target.clone();
        let setup = setup.clone();
        Box::pin(async move {
            let mut conn = target
                .map_err(ConnectionError::InvalidConnectionUrl)?
                .connect()
                .await?;
            conn.batch_execute(&setup)
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::new_with_config(url, config);
    bb8::Pool::builder()
        .error_sink(Box::new(LogConnectErrors))
        .max_size(settings.max_size)
        .connection_timeout(settings.acquire_timeout)
        .test_on_check_out(false)
        .build_unchecked(manager)
}

/// The `SET` statements (one simple query) that give a session of Till's its
/// `statement_timeout` and `idle_in_transaction_session_timeout`, in milliseconds.
pub fn session_settings(statement_timeout: Duration, idle_in_transaction: Duration) -> String {
    format!(
        "SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}",
        statement_timeout.as_millis(),
        idle_in_transaction.as_millis()
    )
}

/// Logs why the pool could not open a connection (a refused certificate, a password, an
/// unreachable host): bb8 itself only tells the waiting caller that it timed out.
#[derive(Debug, Clone, Copy)]
struct LogConnectErrors;

impl bb8::ErrorSink<diesel_async::pooled_connection::PoolError> for LogConnectErrors {
    fn sink(&self, error: diesel_async::pooled_connection::PoolError) {
        tracing::warn!(error = %error, "cannot open a database connection");
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<diesel_async::pooled_connection::PoolError>> {
        Box::new(*self)
    }
}

/// Applies every pending migration; returns the versions applied.
pub async fn migrate(url: &str) -> Result<Vec<String>, DomainError> {
    // Connected here, on the caller's runtime, which keeps driving the connection while
    // diesel's synchronous migration harness uses it from a blocking thread.
    let conn = connect(url)
        .await
        .map_err(|e| DomainError::Unavailable(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        type Wrapper =
            diesel_async::async_connection_wrapper::AsyncConnectionWrapper<AsyncPgConnection>;
        let mut conn = Wrapper::from(conn);
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| DomainError::Internal(format!("migration failed: {e}")))?;
        Ok(applied.iter().map(ToString::to_string).collect())
    })
    .await
    .map_err(|e| DomainError::Internal(format!("migration task failed: {e}")))?
}

/// Versions of the embedded migrations, oldest first.
pub fn migration_versions() -> Vec<String> {
    MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
        .map(|ms| ms.iter().map(|m| m.name().version().to_string()).collect())
        .unwrap_or_default()
}

diesel::table! {
    __diesel_schema_migrations (version) {
        version -> VarChar,
    }
}

/// Readiness: the database answers and every embedded migration is applied. The error
/// says which check failed, for operators.
pub async fn check_ready(pool: &PgPool) -> Result<(), String> {
    use diesel::QueryDsl as _;
    let mut conn = pool.get().await.map_err(|e| format!("database: {e}"))?;
    let applied: Vec<String> = __diesel_schema_migrations::table
        .select(__diesel_schema_migrations::version)
        .load(&mut *conn)
        .await
        .map_err(|e| format!("database: {e}"))?;
    let missing: Vec<String> = migration_versions()
        .into_iter()
        .filter(|v| !applied.contains(v))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("migrations pending: {}", missing.join(", ")))
    }
}

/// Drops replication slot `slot` through `admin_url` when it exists and no replica
/// streams from it (a replica made afresh takes a new one).
pub async fn drop_idle_slot(admin_url: &str, slot: &str) -> Result<(), DomainError> {
    let mut conn = connect(admin_url)
        .await
        .map_err(|e| DomainError::Unavailable(e.to_string()))?;
    diesel::sql_query(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
         WHERE slot_name = $1 AND NOT active",
    )
    .bind::<diesel::sql_types::Text, _>(slot)
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// Creates database `name` through the maintenance URL `admin_url` unless it exists.
pub async fn create_database_if_missing(admin_url: &str, name: &str) -> Result<(), DomainError> {
    use diesel::{ExpressionMethods as _, QueryDsl as _};
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(DomainError::Internal(format!(
            "unsafe database name {name:?}"
        )));
    }
    let mut conn = connect(admin_url)
        .await
        .map_err(|e| DomainError::Unavailable(e.to_string()))?;
    diesel::table! {
        pg_database (datname) {
            datname -> Text,
        }
    }
    let exists: bool = diesel::select(diesel::dsl::exists(
        pg_database::table.filter(pg_database::datname.eq(name)),
    ))
    .get_result(&mut conn)
    .await?;
    if !exists {
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}
