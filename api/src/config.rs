//! Configuration: one typed struct read from flags and environment variables
//! (12-factor). Every field names its variable and default; secrets are wrapped so
//! they never print.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// A secret value that never shows in logs or debug output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// How the server treats itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Developer defaults: migrations on start, demo seed, GraphiQL, introspection.
    Dev,
    /// Production: no migrations on start (run `till migrate`), JWT secret required.
    Production,
}

/// Settings shared by every subcommand that touches the database.
#[derive(Debug, Clone, Args)]
pub struct DbConfig {
    /// PostgreSQL URL. When unset, Till starts its own PostgreSQL (dev only).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<Secret>,

    /// Data folder of the embedded PostgreSQL used when DATABASE_URL is unset.
    #[arg(long, env = "TILL_PG_DATA", default_value = ".till/pg")]
    pub pg_data: PathBuf,

    /// TCP port of the embedded PostgreSQL (0 picks a free one).
    #[arg(long, env = "TILL_PG_PORT", default_value_t = 0)]
    pub pg_port: u16,

    /// Most connections in the pool.
    #[arg(long, env = "TILL_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,

    /// How long a request waits for a pooled connection, in milliseconds.
    #[arg(long, env = "TILL_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 1500)]
    pub db_acquire_timeout_ms: u64,

    /// `statement_timeout` of every connection, in milliseconds.
    #[arg(long, env = "TILL_DB_STATEMENT_TIMEOUT_MS", default_value_t = 10_000)]
    pub db_statement_timeout_ms: u64,
}

impl DbConfig {
    /// Pool settings from these values.
    pub fn pool_settings(&self) -> till_domain::db::PoolSettings {
        till_domain::db::PoolSettings {
            max_size: self.db_pool_size.max(1),
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
            statement_timeout: Duration::from_millis(self.db_statement_timeout_ms),
        }
    }
}

/// Settings of `till serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Database settings.
    #[command(flatten)]
    pub db: DbConfig,

    /// Address to listen on.
    #[arg(long, env = "TILL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Dev or production behaviour.
    #[arg(long, env = "TILL_MODE", value_enum, default_value_t = Mode::Dev)]
    pub mode: Mode,

    /// HS256 secret for access tokens. Required in production; in dev a random one is
    /// kept in `.till/jwt-secret`.
    #[arg(long, env = "TILL_JWT_SECRET")]
    pub jwt_secret: Option<Secret>,

    /// ISO 4217 code of the store currency.
    #[arg(long, env = "TILL_CURRENCY", default_value = "EUR")]
    pub currency: String,

    /// Seed the demo catalog when the database has no categories (dev only).
    #[arg(long, env = "TILL_SEED_DEMO", default_value_t = true, action = clap::ArgAction::Set)]
    pub seed_demo: bool,

    /// Run the projector in this process.
    #[arg(long, env = "TILL_PROJECTOR", default_value_t = true, action = clap::ArgAction::Set)]
    pub projector: bool,

    /// Bound of the read-model cache in bytes.
    #[arg(long, env = "TILL_CACHE_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub cache_max_bytes: u64,

    /// Longest wait for `X-Consistency-Token` (and for mutation payload entities), ms.
    #[arg(long, env = "TILL_CONSISTENCY_WAIT_MS", default_value_t = 2000)]
    pub consistency_wait_ms: u64,

    /// Largest `first` accepted on connections.
    #[arg(long, env = "TILL_MAX_PAGE_SIZE", default_value_t = 100)]
    pub max_page_size: i64,

    /// Maximum query depth.
    #[arg(long, env = "TILL_MAX_DEPTH", default_value_t = 15)]
    pub max_depth: usize,

    /// Maximum query complexity.
    #[arg(long, env = "TILL_MAX_COMPLEXITY", default_value_t = 5000)]
    pub max_complexity: usize,

    /// Most aliased fields in one document.
    #[arg(long, env = "TILL_MAX_ALIASES", default_value_t = 30)]
    pub max_aliases: usize,

    /// Most root fields in one operation.
    #[arg(long, env = "TILL_MAX_ROOT_FIELDS", default_value_t = 10)]
    pub max_root_fields: usize,

    /// Browser origins allowed to call the API (CORS), comma-separated, e.g.
    /// `https://shop.example.com,https://admin.example.com`. Empty: no cross-origin
    /// access.
    #[arg(
        long,
        env = "TILL_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub cors_origins: Vec<String>,

    /// Largest request body in bytes.
    #[arg(long, env = "TILL_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,

    /// Most operations in one batched request.
    #[arg(long, env = "TILL_MAX_BATCH", default_value_t = 10)]
    pub max_batch: usize,

    /// Hours an `Idempotency-Key` and its response are kept.
    #[arg(long, env = "TILL_IDEMPOTENCY_TTL_H", default_value_t = 24)]
    pub idempotency_ttl_h: u64,

    /// On SIGTERM, how long to keep serving while reporting unready (so a load balancer
    /// stops sending traffic) before closing the listener, in milliseconds.
    #[arg(long, env = "TILL_SHUTDOWN_DELAY_MS", default_value_t = 0)]
    pub shutdown_delay_ms: u64,

    /// Seconds to drain in-flight requests on shutdown.
    #[arg(long, env = "TILL_SHUTDOWN_TIMEOUT_S", default_value_t = 20)]
    pub shutdown_timeout_s: u64,

    /// HTTP worker threads (0 = one per core).
    #[arg(long, env = "TILL_HTTP_WORKERS", default_value_t = 0)]
    pub http_workers: usize,
}

impl ServeConfig {
    /// The consistency wait bound.
    pub fn consistency_wait(&self) -> Duration {
        Duration::from_millis(self.consistency_wait_ms)
    }
}
