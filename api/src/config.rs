//! Configuration: one typed struct read from flags and environment variables
//! (12-factor). Every field names its variable and default; secrets are wrapped so
//! they never print.
//!
//! Why one long file: every setting with its flag, variable, default and description in
//! one place, so `till --help`, the README's table and the code cannot drift apart; a
//! quarter of it is tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use till_domain::db::tls::{self, SslMode};

pub use crate::secret::Secret;

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

    /// File holding the PostgreSQL URL (instead of DATABASE_URL).
    #[arg(long, env = "DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// Data folder of the embedded PostgreSQL used when DATABASE_URL is unset.
    #[arg(long, env = "TILL_PG_DATA", default_value = ".till/pg")]
    pub pg_data: PathBuf,

    /// TCP port of the embedded PostgreSQL (0 picks a free one).
    #[arg(long, env = "TILL_PG_PORT", default_value_t = 0)]
    pub pg_port: u16,

    /// `max_connections` of the embedded PostgreSQL (load tests with many pgbench
    /// clients beside the server need more than the default).
    #[arg(long, env = "TILL_PG_MAX_CONNECTIONS", default_value_t = 200, value_parser = clap::value_parser!(u32).range(20..=10_000))]
    pub pg_max_connections: u32,

    /// Most connections in the pool; `serve` also splits this many between its HTTP
    /// workers' command shards. More connections than the database has cores to run
    /// them add contention, not throughput (see docs/operations.md, "Sizing").
    #[arg(long, env = "TILL_DB_POOL_SIZE", default_value_t = 8)]
    pub db_pool_size: u32,

    /// How long a request waits for a pooled connection, in milliseconds.
    #[arg(long, env = "TILL_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 1500)]
    pub db_acquire_timeout_ms: u64,

    /// `statement_timeout` of every connection, in milliseconds.
    #[arg(long, env = "TILL_DB_STATEMENT_TIMEOUT_MS", default_value_t = 10_000)]
    pub db_statement_timeout_ms: u64,

    /// `idle_in_transaction_session_timeout` of every pooled connection, in
    /// milliseconds (0 turns it off): PostgreSQL ends a session of Till's left idle
    /// inside a transaction this long, which would otherwise hold its locks and the
    /// projectors' horizon (docs/runbooks.md, TillDbHorizonHeld).
    #[arg(
        long,
        env = "TILL_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub db_idle_in_transaction_timeout_ms: u64,

    /// TLS to PostgreSQL, as libpq's `sslmode`: disable, prefer, require, verify-ca or
    /// verify-full. Added to the database URL as `sslmode`; unset, the URL's own (and
    /// without one, prefer). Giving both with different values is an error.
    #[arg(long, env = "TILL_DB_SSLMODE", value_parser = parse_sslmode)]
    pub db_sslmode: Option<SslMode>,

    /// PEM file of the CA certificates the server's certificate must chain to (for
    /// verify-ca and verify-full; in production the RDS bundle). Added to the database
    /// URL as `sslrootcert`.
    #[arg(long, env = "TILL_DB_CA_FILE")]
    pub db_ca_file: Option<PathBuf>,
}

fn parse_sslmode(s: &str) -> Result<SslMode, till_domain::db::tls::TlsError> {
    s.parse()
}

impl DbConfig {
    /// DATABASE_URL, or the contents of DATABASE_URL_FILE, with TILL_DB_SSLMODE and
    /// TILL_DB_CA_FILE added to it; checked (parsed, its CA file read) so a bad URL or
    /// CA file stops start-up instead of failing every connection later.
    pub fn url(&self) -> Result<Option<Secret>, String> {
        let Some(url) = Secret::resolve(
            self.database_url.as_ref(),
            self.database_url_file.as_deref(),
            "DATABASE_URL",
        )?
        else {
            return Ok(None);
        };
        let url = tls::with_settings(url.expose(), self.db_sslmode, self.db_ca_file.as_deref())
            .map_err(|e| e.to_string())?;
        tls::Target::parse(&url).map_err(|e| format!("DATABASE_URL: {e}"))?;
        Ok(Some(Secret::new(url)))
    }

    /// Pool settings from these values.
    pub fn pool_settings(&self) -> till_domain::db::PoolSettings {
        till_domain::db::PoolSettings {
            max_size: self.db_pool_size.max(1),
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
            statement_timeout: Duration::from_millis(self.db_statement_timeout_ms),
            idle_in_transaction_timeout: Duration::from_millis(
                self.db_idle_in_transaction_timeout_ms,
            ),
        }
    }
}

/// Where `till serve` reads the read models from (docs/operations.md, "Read replicas").
#[derive(Debug, Clone, Args)]
pub struct ReplicaConfig {
    /// Comma-separated URLs of PostgreSQL streaming read replicas of DATABASE_URL's
    /// database, one instance each (not a load-balancing reader endpoint). Queries read
    /// the read models from them; everything that writes stays on the primary.
    /// TILL_DB_SSLMODE and TILL_DB_CA_FILE apply to them too.
    #[arg(long, env = "TILL_READ_DATABASE_URLS")]
    pub read_database_urls: Option<Secret>,

    /// File holding the replica URLs (one per line or comma-separated), instead of
    /// TILL_READ_DATABASE_URLS. A file that does not exist counts as no replicas (a
    /// secret key left out of the mount).
    #[arg(long, env = "TILL_READ_DATABASE_URLS_FILE")]
    pub read_database_urls_file: Option<PathBuf>,

    /// Connections in each replica's pool.
    #[arg(long, env = "TILL_READ_POOL_SIZE", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub read_pool_size: u32,

    /// A replica whose replay lag passes this many milliseconds leaves the rotation; it
    /// comes back under half of it.
    #[arg(long, env = "TILL_REPLICA_MAX_LAG_MS", default_value_t = 2_000)]
    pub replica_max_lag_ms: u64,

    /// Longest a read with a consistency token waits, in milliseconds, for a replica to
    /// replay the token's write before the primary serves it.
    #[arg(long, env = "TILL_REPLICA_WAIT_MS", default_value_t = 1_000)]
    pub replica_wait_ms: u64,

    /// How often replicas' replay positions are polled, in milliseconds (every 5 ms
    /// while token reads wait).
    #[arg(long, env = "TILL_REPLICA_POLL_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub replica_poll_ms: u64,

    /// Dev only, with the embedded PostgreSQL: start this many streaming replicas of it
    /// (pg_basebackup, a replication slot each) and read from them.
    #[arg(long = "replicas", env = "TILL_DEV_REPLICAS", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=4))]
    pub dev_replicas: u8,

    /// Dev only: `recovery_min_apply_delay` of the second and later `--replicas`, in
    /// milliseconds (a lagging replica to watch the routing with).
    #[arg(
        long = "replica-delay-ms",
        env = "TILL_DEV_REPLICA_DELAY_MS",
        default_value_t = 0
    )]
    pub dev_replica_delay_ms: u64,
}

impl ReplicaConfig {
    /// The replica URLs (TILL_READ_DATABASE_URLS or its file), each with the database
    /// TLS settings added and checked; empty without replicas.
    pub fn urls(&self, db: &DbConfig) -> Result<Vec<Secret>, String> {
        const WHAT: &str = "TILL_READ_DATABASE_URLS";
        let file = self
            .read_database_urls_file
            .as_deref()
            .filter(|path| match path.try_exists() {
                Ok(false) => {
                    tracing::info!(file = %path.display(), "{WHAT}_FILE does not exist: no read replicas");
                    false
                }
                _ => true,
            });
        if self.read_database_urls.is_some() && self.read_database_urls_file.is_some() {
            return Err(format!("set {WHAT} or {WHAT}_FILE, not both"));
        }
        let Some(list) = Secret::resolve(self.read_database_urls.as_ref(), file, WHAT)? else {
            return Ok(Vec::new());
        };
        list.expose()
            .split([',', '\n'])
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .enumerate()
            .map(|(i, url)| {
                let url = tls::with_settings(url, db.db_sslmode, db.db_ca_file.as_deref())
                    .map_err(|e| format!("{WHAT} (replica {i}): {e}"))?;
                tls::Target::parse(&url).map_err(|e| format!("{WHAT} (replica {i}): {e}"))?;
                Ok(Secret::new(url))
            })
            .collect()
    }

    /// How replicas are used.
    pub fn settings(&self) -> till_read_models::ReplicaSettings {
        till_read_models::ReplicaSettings {
            max_lag: Duration::from_millis(self.replica_max_lag_ms),
            wait: Duration::from_millis(self.replica_wait_ms),
            poll: Duration::from_millis(self.replica_poll_ms.max(1)),
        }
    }
}

/// Settings of `till serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Database settings.
    #[command(flatten)]
    pub db: DbConfig,

    /// Read replicas.
    #[command(flatten)]
    pub replicas: ReplicaConfig,

    /// Address to listen on. Dev mode listens on loopback addresses only.
    #[arg(long, env = "TILL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Dev or production behaviour.
    #[arg(long, env = "TILL_MODE", value_enum, default_value_t = Mode::Dev)]
    pub mode: Mode,

    /// HS256 secret for access tokens. Required in production; in dev a random one is
    /// kept in `.till/jwt-secret`.
    #[arg(long, env = "TILL_JWT_SECRET")]
    pub jwt_secret: Option<Secret>,

    /// File holding the HS256 secret (instead of TILL_JWT_SECRET).
    #[arg(long, env = "TILL_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "TILL_ACCESS_TOKEN_TTL_S", default_value_t = 900)]
    pub access_token_ttl_s: u64,

    /// Lifetime of refresh tokens, in hours.
    #[arg(long, env = "TILL_REFRESH_TOKEN_TTL_H", default_value_t = 720)]
    pub refresh_token_ttl_h: u64,

    /// External OIDC issuer.
    #[command(flatten)]
    pub oidc: OidcConfig,

    /// Background jobs.
    #[command(flatten)]
    pub jobs: JobsConfig,

    /// Shared secret of inbound payment webhooks (`Till-Signature`), at least
    /// [`MIN_WEBHOOK_SECRET_BYTES`] bytes (a shorter or empty one stops start-up).
    /// Unset: the endpoint answers 404.
    #[arg(long, env = "TILL_PAYMENT_WEBHOOK_SECRET")]
    pub payment_webhook_secret: Option<Secret>,

    /// File holding the payment webhook secret.
    #[arg(long, env = "TILL_PAYMENT_WEBHOOK_SECRET_FILE")]
    pub payment_webhook_secret_file: Option<PathBuf>,

    /// Largest age of a webhook signature's timestamp, in seconds.
    #[arg(long, env = "TILL_PAYMENT_WEBHOOK_TOLERANCE_S", default_value_t = 300)]
    pub payment_webhook_tolerance_s: i64,

    /// Webhook deliveries one client address may send at once (the bucket of
    /// `POST /webhooks/payments`, charged before the signature is checked). 0: no limit.
    #[arg(long, env = "TILL_WEBHOOK_RATE_MAX", default_value_t = 200)]
    pub webhook_rate_max: u32,

    /// Webhook deliveries a client address's bucket regains per second.
    #[arg(long, env = "TILL_WEBHOOK_RATE_RESTORE", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub webhook_rate_restore: u32,

    /// Cost-based rate limiting.
    #[command(flatten)]
    pub rate: RateConfig,

    /// Only run operations from this trusted-documents manifest (JSON object
    /// `{"<sha256 hex>": "<document>"}`). Unset: any document, plus Automatic
    /// Persisted Queries.
    #[arg(long, env = "TILL_TRUSTED_DOCUMENTS")]
    pub trusted_documents: Option<PathBuf>,

    /// Bytes of documents kept for Automatic Persisted Queries.
    #[arg(long, env = "TILL_APQ_MAX_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub apq_max_bytes: u64,

    /// Refuse GET requests without a preflight-forcing header (CSRF prevention).
    #[arg(long, env = "TILL_CSRF_PREVENTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub csrf_prevention: bool,

    /// Longest a query may run, in milliseconds (mutations are never cut short).
    #[arg(long, env = "TILL_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,

    /// ISO 4217 code of the store currency.
    #[arg(long, env = "TILL_CURRENCY", default_value = "EUR")]
    pub currency: String,

    /// Seed the demo catalog and its demo accounts (with the published password) when
    /// the database has no categories, and print their tokens at start. Unset: only in
    /// dev mode on the embedded database; `true` asks for it on any database.
    #[arg(long, env = "TILL_SEED_DEMO")]
    pub seed_demo: Option<bool>,

    /// Answer introspection queries. Unset: only in dev mode on the embedded database.
    #[arg(long, env = "TILL_INTROSPECTION")]
    pub introspection: Option<bool>,

    /// Serve as an Apollo Federation v2 subgraph: `_service { sdl }` and `_entities`
    /// (Product by id and by sku, Order, Customer, Category). Off by default: `_entities`
    /// lets a caller look up many objects by key in one request, which a gateway needs
    /// and a public endpoint does not; turn it on where only the gateway reaches Till.
    #[arg(
        long,
        env = "TILL_FEDERATION",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub federation: bool,

    /// Capture payments against Till's own fake provider (`/fake-provider`) when no
    /// `TILL_PAYMENT_PROVIDER_URL` is set. Unset: only in dev mode on the embedded
    /// database.
    #[arg(long, env = "TILL_FAKE_PROVIDER")]
    pub fake_provider: Option<bool>,

    /// Serve the GraphiQL page (`/graphiql`) and the SDL (`/schema.graphql`). Unset: in
    /// dev mode only.
    #[arg(long, env = "TILL_EXPLORER")]
    pub explorer: Option<bool>,

    /// Run the projector in this process.
    #[arg(long, env = "TILL_PROJECTOR", default_value_t = true, action = clap::ArgAction::Set)]
    pub projector: bool,

    /// How the projector batches (when it runs here).
    #[command(flatten)]
    pub projector_tuning: ProjectorTuning,

    /// How `placeOrder` commands coalesce into shared transactions.
    #[command(flatten)]
    pub order_batching: OrderBatchingConfig,

    /// Bound of the read-model cache in bytes.
    #[arg(long, env = "TILL_CACHE_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub cache_max_bytes: u64,

    /// Seconds after which a cache entry nobody read is dropped (memory returns after
    /// a burst).
    #[arg(long, env = "TILL_CACHE_IDLE_S", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_idle_s: u64,

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
    #[arg(long, env = "TILL_MAX_COMPLEXITY", default_value_t = 1000)]
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

    /// Most WebSocket connections open at once from one client address (IPv6: one /64).
    #[arg(long, env = "TILL_WS_MAX_PER_IP", default_value_t = 50)]
    pub ws_max_per_ip: usize,

    /// Most WebSocket connections open at once for one account.
    #[arg(long, env = "TILL_WS_MAX_PER_ACCOUNT", default_value_t = 10)]
    pub ws_max_per_account: usize,

    /// Most subscriptions running at once on one WebSocket connection.
    #[arg(long, env = "TILL_WS_MAX_SUBSCRIPTIONS", default_value_t = 20)]
    pub ws_max_subscriptions: usize,

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

    /// Address of the admin port serving `/metrics`, `/healthz` and `/readyz` (e.g.
    /// `0.0.0.0:9090`). Unset: `/metrics` is served on the main port.
    #[arg(long, env = "TILL_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// `/readyz` fails when a projection is further behind than this, in seconds
    /// (0: never).
    #[arg(long, env = "TILL_READY_MAX_LAG_S", default_value_t = 300)]
    pub ready_max_lag_s: u64,

    /// HTTP worker threads (0 = one per core).
    #[arg(long, env = "TILL_HTTP_WORKERS", default_value_t = 0)]
    pub http_workers: usize,
}

/// How the projector batches events.
#[derive(Debug, Clone, Args)]
pub struct ProjectorTuning {
    /// Longest time between the starts of two batches of one group of projections
    /// while events keep arriving, in milliseconds (a full batch goes on at once).
    /// Longer gathers more events per transaction: more orders per second from the
    /// same database, a later commit -> visible (`benches/HISTORY.md`, load run 11).
    #[arg(
        long = "projector-pace-ms",
        env = "TILL_PROJECTOR_PACE_MS",
        default_value_t = till_read_models::DEFAULT_PACE_MS,
        value_parser = clap::value_parser!(u64).range(0..=1000)
    )]
    pub pace_ms: u64,

    /// Events in a batch from which the next batch waits the whole pace; after a
    /// smaller batch it waits that share of the pace (a batch of one event when the
    /// server is idle is followed by the next at once). Higher keeps reads fresher under
    /// a moderate load, lower gathers more events per transaction
    /// (`benches/HISTORY.md`, load run 19).
    #[arg(
        long = "projector-pace-full-at",
        env = "TILL_PROJECTOR_PACE_FULL_AT",
        default_value_t = till_read_models::DEFAULT_PACE_FULL_AT,
        value_parser = clap::builder::TypedValueParser::map(
            clap::value_parser!(u64).range(1..=100_000),
            |v| usize::try_from(v).unwrap_or(usize::MAX)
        )
    )]
    pub pace_full_at: usize,
}

impl ProjectorTuning {
    /// The projector's settings with this tuning.
    pub fn settings(&self) -> till_read_models::ProjectorSettings {
        till_read_models::ProjectorSettings {
            pace: Duration::from_millis(self.pace_ms),
            pace_full_at: self.pace_full_at,
            ..till_read_models::ProjectorSettings::default()
        }
    }
}

/// How concurrent `placeOrder` commands coalesce: one transaction (one lock of a hot
/// product's inventory row, one commit) for a batch of orders, each still its own rows,
/// events and answer (docs/architecture.md, "Orders placed together").
#[derive(Debug, Clone, Args)]
pub struct OrderBatchingConfig {
    /// Coalesce concurrent orders; `false`: one transaction per order.
    #[arg(long = "order-batching", env = "TILL_ORDER_BATCHING", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,

    /// Most orders in one transaction.
    #[arg(
        long = "order-batch-max",
        env = "TILL_ORDER_BATCH_MAX",
        default_value_t = 64,
        value_parser = clap::builder::TypedValueParser::map(
            clap::value_parser!(u64).range(1..=1000),
            |v| usize::try_from(v).unwrap_or(1)
        )
    )]
    pub max_orders: usize,

    /// Batches a process runs at once (each holds a database connection while it runs).
    /// One gives the largest batches: on 2 cores it placed the most orders, of one hot
    /// product and of random ones (`benches/HISTORY.md`, load run 20).
    #[arg(
        long = "order-batch-runners",
        env = "TILL_ORDER_BATCH_RUNNERS",
        default_value_t = 1,
        value_parser = clap::builder::TypedValueParser::map(
            clap::value_parser!(u64).range(1..=64),
            |v| usize::try_from(v).unwrap_or(1)
        )
    )]
    pub runners: usize,

    /// Most orders waiting for a batch; more are refused with SERVICE_UNAVAILABLE.
    #[arg(
        long = "order-queue-max",
        env = "TILL_ORDER_QUEUE_MAX",
        default_value_t = 10_000,
        value_parser = clap::builder::TypedValueParser::map(
            clap::value_parser!(u64).range(1..=1_000_000),
            |v| usize::try_from(v).unwrap_or(1)
        )
    )]
    pub max_queue: usize,

    /// Longest an order waits for its batch to start, in milliseconds; after that it is
    /// refused with SERVICE_UNAVAILABLE (nothing was placed, it may be sent again).
    #[arg(long = "order-queue-wait-ms", env = "TILL_ORDER_QUEUE_WAIT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub max_wait_ms: u64,
}

impl OrderBatchingConfig {
    /// The command layer's settings.
    pub fn settings(&self) -> till_domain::commands::OrderBatching {
        till_domain::commands::OrderBatching {
            enabled: self.enabled,
            max_orders: self.max_orders,
            runners: self.runners,
            max_queue: self.max_queue,
            max_wait: Duration::from_millis(self.max_wait_ms),
        }
    }
}

/// Background jobs: payment capture and order expiry.
#[derive(Debug, Clone, Args)]
pub struct JobsConfig {
    /// Run the job workers and order expiry in this process.
    #[arg(long, env = "TILL_JOBS", default_value_t = true, action = clap::ArgAction::Set)]
    pub jobs: bool,

    /// Base URL of the payment provider's API. Unset in dev: the fake provider `till`
    /// serves itself at `/fake-provider`. Required in production.
    #[arg(long, env = "TILL_PAYMENT_PROVIDER_URL")]
    pub payment_provider_url: Option<String>,

    /// Connect timeout of provider calls, in milliseconds.
    #[arg(long, env = "TILL_PAYMENT_CONNECT_TIMEOUT_MS", default_value_t = 2000)]
    pub payment_connect_timeout_ms: u64,

    /// Whole-request timeout of provider calls, in milliseconds.
    #[arg(long, env = "TILL_PAYMENT_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub payment_read_timeout_ms: u64,

    /// Capture jobs running at once in this process.
    #[arg(long, env = "TILL_PAYMENTS_CONCURRENCY", default_value_t = 4)]
    pub payments_concurrency: usize,

    /// Attempts of a capture before it becomes a dead letter.
    #[arg(long, env = "TILL_PAYMENT_MAX_ATTEMPTS", default_value_t = 8)]
    pub payment_max_attempts: i32,

    /// Webhook deliveries running at once in this process.
    #[arg(long, env = "TILL_WEBHOOKS_CONCURRENCY", default_value_t = 8)]
    pub webhooks_concurrency: usize,

    /// Attempts of a webhook delivery before it becomes a dead letter.
    #[arg(long, env = "TILL_WEBHOOK_MAX_ATTEMPTS", default_value_t = 10)]
    pub webhook_max_attempts: i32,

    /// Let webhook subscribers be internal addresses (loopback, private, link-local,
    /// metadata...), at registration and when delivering. Only for development and
    /// tests whose subscriber runs on the same machine; never in production.
    #[arg(long, env = "TILL_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,

    /// Seconds a claimed job is reserved for its worker; renewed every third of it while
    /// the job runs, so only a worker that died or lost the database loses it (then
    /// another may take it).
    #[arg(long, env = "TILL_JOB_LEASE_S", default_value_t = 60)]
    pub job_lease_s: u64,

    /// Longest one job attempt may run, in seconds; must be below the lease (start-up
    /// refuses anything else).
    #[arg(long, env = "TILL_JOB_TIMEOUT_S", default_value_t = 30)]
    pub job_timeout_s: u64,

    /// First retry ceiling, in milliseconds (doubles per attempt, full jitter).
    #[arg(long, env = "TILL_JOB_BACKOFF_BASE_MS", default_value_t = 1000)]
    pub job_backoff_base_ms: u64,

    /// Largest retry ceiling, in seconds.
    #[arg(long, env = "TILL_JOB_BACKOFF_CAP_S", default_value_t = 300)]
    pub job_backoff_cap_s: u64,

    /// Minutes after which an unpaid order expires and releases its stock.
    #[arg(long, env = "TILL_ORDER_EXPIRY_MIN", default_value_t = 30)]
    pub order_expiry_min: u64,

    /// Seconds between two expiry sweeps.
    #[arg(long, env = "TILL_EXPIRY_INTERVAL_S", default_value_t = 30)]
    pub expiry_interval_s: u64,
}

/// An external OAuth2/OIDC issuer whose access tokens are accepted.
#[derive(Debug, Clone, Args)]
pub struct OidcConfig {
    /// Expected `iss` of external tokens. Unset: only Till's own tokens are accepted.
    #[arg(long, env = "TILL_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,

    /// Expected `aud` of external tokens (required with an issuer).
    #[arg(long, env = "TILL_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,

    /// URL of the issuer's JWKS (required with an issuer; https in production, as is
    /// the issuer).
    #[arg(long, env = "TILL_OIDC_JWKS_URL")]
    pub oidc_jwks_url: Option<String>,

    /// Claim holding the role: a string or array containing `admin` or `staff`
    /// (any case); anything else is CUSTOMER.
    #[arg(long, env = "TILL_OIDC_ROLE_CLAIM", default_value = "till_role")]
    pub oidc_role_claim: String,

    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(long, env = "TILL_OIDC_LEEWAY_S", default_value_t = 30)]
    pub oidc_leeway_s: u64,
}

impl OidcConfig {
    /// The verifier settings, when an issuer is configured. In production the issuer
    /// and the JWKS URL must be https: keys fetched in plain text could be swapped on
    /// the way, and every token signed with the swapped ones accepted.
    pub fn settings(&self, mode: Mode) -> Result<Option<crate::auth::oidc::OidcSettings>, String> {
        let Some(issuer) = &self.oidc_issuer else {
            return Ok(None);
        };
        let need = |v: &Option<String>, name: &str| {
            v.clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("{name} is required when TILL_OIDC_ISSUER is set"))
        };
        let jwks_url = need(&self.oidc_jwks_url, "TILL_OIDC_JWKS_URL")?;
        if mode == Mode::Production {
            for (name, url) in [
                ("TILL_OIDC_ISSUER", issuer),
                ("TILL_OIDC_JWKS_URL", &jwks_url),
            ] {
                let https = reqwest::Url::parse(url).is_ok_and(|u| u.scheme() == "https");
                if !https {
                    return Err(format!("{name} must be an https URL in production mode"));
                }
            }
        }
        Ok(Some(crate::auth::oidc::OidcSettings {
            issuer: issuer.clone(),
            audience: need(&self.oidc_audience, "TILL_OIDC_AUDIENCE")?,
            jwks_url,
            role_claim: self.oidc_role_claim.clone(),
            leeway: Duration::from_secs(self.oidc_leeway_s),
        }))
    }
}

/// Cost-based rate limiting: a leaky bucket of points per principal.
#[derive(Debug, Clone, Args)]
pub struct RateConfig {
    /// Turn rate limiting on or off.
    #[arg(long, env = "TILL_RATE_LIMIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub rate_limit: bool,

    /// Bucket size of a signed-in customer, in points.
    #[arg(long, env = "TILL_RATE_CUSTOMER_MAX", default_value_t = 1000)]
    pub rate_customer_max: u32,

    /// Points a customer's bucket regains per second.
    #[arg(long, env = "TILL_RATE_CUSTOMER_RESTORE", default_value_t = 50)]
    pub rate_customer_restore: u32,

    /// Bucket size of STAFF and ADMIN accounts.
    #[arg(long, env = "TILL_RATE_STAFF_MAX", default_value_t = 5000)]
    pub rate_staff_max: u32,

    /// Points a staff bucket regains per second.
    #[arg(long, env = "TILL_RATE_STAFF_RESTORE", default_value_t = 250)]
    pub rate_staff_restore: u32,

    /// Bucket size of an anonymous client (per IP address).
    #[arg(long, env = "TILL_RATE_ANONYMOUS_MAX", default_value_t = 1000)]
    pub rate_anonymous_max: u32,

    /// Points an anonymous bucket regains per second.
    #[arg(long, env = "TILL_RATE_ANONYMOUS_RESTORE", default_value_t = 50)]
    pub rate_anonymous_restore: u32,

    /// Most buckets kept in memory; idle ones are dropped once full again.
    #[arg(long, env = "TILL_RATE_MAX_PRINCIPALS", default_value_t = 100_000)]
    pub rate_max_principals: u64,

    /// Sign-in attempts (`login`) one client network (IPv6: a /64) may make at once.
    #[arg(long, env = "TILL_SIGNIN_PER_IP_MAX", default_value_t = 30)]
    pub signin_per_ip_max: u32,

    /// Sign-in attempts a client network regains per minute.
    #[arg(long, env = "TILL_SIGNIN_PER_IP_PER_MIN", default_value_t = 30)]
    pub signin_per_ip_per_min: u32,

    /// Sign-in attempts at one email (from anywhere) at once.
    #[arg(long, env = "TILL_SIGNIN_PER_EMAIL_MAX", default_value_t = 10)]
    pub signin_per_email_max: u32,

    /// Sign-in attempts at one email regained per minute.
    #[arg(long, env = "TILL_SIGNIN_PER_EMAIL_PER_MIN", default_value_t = 6)]
    pub signin_per_email_per_min: u32,

    /// Proxies (IPs or CIDRs, comma-separated) whose `X-Forwarded-For` is believed when
    /// finding an anonymous client's address, e.g. `10.0.0.0/8`.
    #[arg(
        long,
        env = "TILL_TRUSTED_PROXIES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub trusted_proxies: Vec<String>,
}

/// Shortest payment webhook secret accepted, in bytes.
pub const MIN_WEBHOOK_SECRET_BYTES: usize = 16;

/// The conveniences of dev mode, resolved: each is on when asked for by name, else only
/// in dev mode (the demo data, introspection and the fake provider: only on the embedded
/// database, so a dev-mode binary pointed at a real database does not open it up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conveniences {
    /// Seed the demo catalog and accounts; print their tokens.
    pub seed_demo: bool,
    /// Answer introspection.
    pub introspection: bool,
    /// Capture against the built-in fake provider.
    pub fake_provider: bool,
    /// Serve GraphiQL and the SDL.
    pub explorer: bool,
    /// Hand GraphiQL the demo accounts' tokens (`/graphiql/demo-tokens`): dev mode, which
    /// listens on loopback only, with the demo accounts seeded.
    pub demo_tokens: bool,
}

impl ServeConfig {
    /// Which conveniences apply, given whether the database is Till's embedded one.
    pub fn conveniences(&self, embedded: bool) -> Conveniences {
        let dev = self.mode == Mode::Dev;
        let local = dev && embedded;
        let seed_demo = self.seed_demo.unwrap_or(local);
        Conveniences {
            seed_demo,
            introspection: self.introspection.unwrap_or(local),
            fake_provider: self.fake_provider.unwrap_or(local),
            explorer: self.explorer.unwrap_or(dev),
            demo_tokens: dev && seed_demo,
        }
    }

    /// Refuses what dev mode must not do: listen beyond loopback.
    pub fn check_mode(&self) -> Result<(), String> {
        if self.mode == Mode::Dev && !self.listen.ip().is_loopback() {
            return Err(format!(
                "dev mode listens on loopback only, not {}: dev mode trusts whoever can \
                 reach it. To serve other hosts run in production mode (TILL_MODE=production \
                 with DATABASE_URL, TILL_JWT_SECRET and TILL_PAYMENT_PROVIDER_URL), or listen \
                 on 127.0.0.1",
                self.listen
            ));
        }
        Ok(())
    }

    /// The payment webhook secret given directly or in a file, when set; an empty or
    /// short one (under [`MIN_WEBHOOK_SECRET_BYTES`]) is an error, since a guessable
    /// secret lets anyone mark orders paid.
    pub fn payment_webhook_secret(&self) -> Result<Option<Secret>, String> {
        let secret = Secret::resolve(
            self.payment_webhook_secret.as_ref(),
            self.payment_webhook_secret_file.as_deref(),
            "TILL_PAYMENT_WEBHOOK_SECRET",
        )?;
        match secret {
            Some(s) if s.expose().len() < MIN_WEBHOOK_SECRET_BYTES => Err(format!(
                "TILL_PAYMENT_WEBHOOK_SECRET must be at least {MIN_WEBHOOK_SECRET_BYTES} bytes \
                 (unset it to turn payment webhooks off)"
            )),
            s => Ok(s),
        }
    }

    /// The HS256 secret given directly or in a file.
    pub fn jwt_secret(&self) -> Result<Option<Secret>, String> {
        Secret::resolve(
            self.jwt_secret.as_ref(),
            self.jwt_secret_file.as_deref(),
            "TILL_JWT_SECRET",
        )
    }

    /// The consistency wait bound.
    pub fn consistency_wait(&self) -> Duration {
        Duration::from_millis(self.consistency_wait_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeConfig {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            cfg: ServeConfig,
        }
        let mut all = vec!["till"];
        all.extend_from_slice(args);
        Cli::parse_from(all).cfg
    }

    #[test]
    fn dev_conveniences_need_the_embedded_database_or_a_name() {
        let dev = serve(&[]);
        let all = Conveniences {
            seed_demo: true,
            introspection: true,
            fake_provider: true,
            explorer: true,
            demo_tokens: true,
        };
        assert_eq!(dev.conveniences(true), all);
        assert_eq!(
            dev.conveniences(false),
            Conveniences {
                seed_demo: false,
                introspection: false,
                fake_provider: false,
                explorer: true,
                demo_tokens: false,
            },
            "a dev binary pointed at a real database opens nothing up"
        );
        let prod = serve(&["--mode", "production"]);
        assert_eq!(
            prod.conveniences(false),
            Conveniences {
                seed_demo: false,
                introspection: false,
                fake_provider: false,
                explorer: false,
                demo_tokens: false,
            }
        );
        let asked = serve(&[
            "--mode",
            "production",
            "--explorer",
            "true",
            "--introspection",
            "true",
        ]);
        assert!(asked.conveniences(false).explorer && asked.conveniences(false).introspection);
        let seeded = serve(&["--mode", "production", "--seed-demo", "true"]);
        assert!(
            !seeded.conveniences(false).demo_tokens,
            "production never hands out tokens, even with the demo accounts"
        );
    }

    #[test]
    fn dev_mode_refuses_to_listen_beyond_loopback() {
        assert!(serve(&[]).check_mode().is_ok());
        assert!(serve(&["--listen", "[::1]:8080"]).check_mode().is_ok());
        let open = serve(&["--listen", "0.0.0.0:8080"]).check_mode();
        assert!(
            open.as_ref()
                .is_err_and(|e| e.contains("TILL_MODE=production")),
            "{open:?}"
        );
        assert!(serve(&["--listen", "0.0.0.0:8080", "--mode", "production"])
            .check_mode()
            .is_ok());
    }

    #[test]
    fn secrets_come_from_the_value_or_a_file_never_both() -> Result<(), String> {
        let dir = std::env::temp_dir().join(format!("till-secret-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let file = dir.join("jwt");
        std::fs::write(&file, "from-a-mounted-file\n").map_err(|e| e.to_string())?;
        let read = Secret::resolve(None, Some(&file), "TILL_JWT_SECRET")?;
        assert_eq!(
            read.as_ref().map(Secret::expose),
            Some("from-a-mounted-file")
        );
        assert_eq!(format!("{read:?}"), "Some(Secret(***))");
        let given = Secret::new("direct");
        assert!(Secret::resolve(Some(&given), Some(&file), "X").is_err());
        let missing = Secret::resolve(None, Some(&dir.join("nope")), "TILL_JWT_SECRET");
        assert!(missing.is_err_and(|e| e.contains("TILL_JWT_SECRET_FILE") && !e.contains("from-a")));
        std::fs::write(&file, "").map_err(|e| e.to_string())?;
        assert!(Secret::resolve(None, Some(&file), "X").is_err());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[derive(clap::Parser)]
    struct Db {
        #[command(flatten)]
        db: DbConfig,
    }

    fn db_url(args: &[&str]) -> Result<Option<String>, String> {
        use clap::Parser as _;
        let db = Db::try_parse_from(std::iter::once("till").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?
            .db;
        Ok(db.url()?.map(|u| u.expose().to_owned()))
    }

    #[test]
    fn tls_settings_are_added_to_the_database_url() -> Result<(), String> {
        assert_eq!(
            db_url(&[
                "--database-url",
                "postgres://u@db/till",
                "--db-sslmode",
                "require"
            ])?,
            Some("postgres://u@db/till?sslmode=require".to_owned())
        );
        assert_eq!(db_url(&["--db-sslmode", "verify-full"])?, None);
        // Said twice, differently: refused without showing the URL's password.
        let conflict = db_url(&[
            "--database-url",
            "postgres://u:hunter2@db/till?sslmode=disable",
            "--db-sslmode",
            "verify-full",
        ]);
        assert!(
            conflict
                .as_ref()
                .is_err_and(|e| e.contains("TILL_DB_SSLMODE") && !e.contains("hunter2")),
            "{conflict:?}"
        );
        // A CA file that cannot be read stops start-up.
        let missing = db_url(&[
            "--database-url",
            "postgres://u@db/till",
            "--db-sslmode",
            "verify-full",
            "--db-ca-file",
            "/nonexistent/rds-ca.pem",
        ]);
        assert!(
            missing
                .as_ref()
                .is_err_and(|e| e.contains("/nonexistent/rds-ca.pem")),
            "{missing:?}"
        );
        assert!(db_url(&["--db-sslmode", "allow"]).is_err());
        Ok(())
    }

    #[derive(clap::Parser)]
    struct Oidc {
        #[command(flatten)]
        oidc: OidcConfig,
    }

    fn oidc(issuer: &str, jwks: &str, mode: Mode) -> Result<bool, String> {
        use clap::Parser as _;
        let args = [
            "till",
            "--oidc-issuer",
            issuer,
            "--oidc-audience",
            "till-api",
            "--oidc-jwks-url",
            jwks,
        ];
        let cfg = Oidc::try_parse_from(args).map_err(|e| e.to_string())?;
        Ok(cfg.oidc.settings(mode)?.is_some())
    }

    #[test]
    fn production_needs_https_for_the_oidc_issuer_and_its_keys() {
        let (issuer, jwks) = (
            "https://login.example.com/",
            "https://login.example.com/jwks",
        );
        assert_eq!(oidc(issuer, jwks, Mode::Production), Ok(true));
        let plain_keys = oidc(issuer, "http://login.example.com/jwks", Mode::Production);
        assert!(
            plain_keys
                .as_ref()
                .is_err_and(|e| e.contains("TILL_OIDC_JWKS_URL") && e.contains("https")),
            "{plain_keys:?}"
        );
        let plain_issuer = oidc("http://login.example.com/", jwks, Mode::Production);
        assert!(
            plain_issuer
                .as_ref()
                .is_err_and(|e| e.contains("TILL_OIDC_ISSUER")),
            "{plain_issuer:?}"
        );
        assert!(oidc("login.example.com", jwks, Mode::Production).is_err());
        // A local issuer over http is fine while developing.
        assert_eq!(
            oidc("http://127.0.0.1:9/", "http://127.0.0.1:9/jwks", Mode::Dev),
            Ok(true)
        );
    }

    #[derive(clap::Parser)]
    struct Tuning {
        #[command(flatten)]
        tuning: ProjectorTuning,
    }

    #[test]
    fn the_projector_pace_is_bounded_milliseconds() {
        use clap::Parser;
        let given = Tuning::try_parse_from(["till", "--projector-pace-ms", "40"])
            .map(|t| t.tuning.settings().pace);
        assert_eq!(given.ok(), Some(Duration::from_millis(40)));
        assert!(Tuning::try_parse_from(["till", "--projector-pace-ms", "1001"]).is_err());
        assert!(Tuning::try_parse_from(["till", "--projector-pace-ms", "-1"]).is_err());
    }

    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        cfg: ServeConfig,
    }

    #[test]
    fn a_short_or_empty_webhook_secret_is_refused() {
        use clap::Parser;
        let secret = |args: &[&str]| {
            Serve::try_parse_from([&["till"], args].concat())
                .map_err(|e| e.to_string())
                .and_then(|s| s.cfg.payment_webhook_secret())
                .map(|s| s.map(|s| s.expose().to_owned()))
        };
        let short = secret(&["--payment-webhook-secret", "whsec_short"]);
        assert!(
            short
                .as_ref()
                .is_err_and(|e| e.contains("at least 16 bytes") && !e.contains("whsec")),
            "{short:?}"
        );
        assert!(secret(&["--payment-webhook-secret", ""]).is_err());
        assert_eq!(
            secret(&["--payment-webhook-secret", "whsec_0123456789abcdef"]),
            Ok(Some("whsec_0123456789abcdef".to_owned()))
        );
        assert_eq!(secret(&[]), Ok(None));
        assert!(Serve::try_parse_from(["till", "--webhook-rate-restore", "0"]).is_err());
    }
}
