//! Building and running the HTTP application: state built once at start-up and shared
//! through app data, the projector in-process, graceful shutdown.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use thiserror::Error;
use till_domain::commands::Commands;
use till_domain::db::embedded::{EmbeddedError, EmbeddedOptions, EmbeddedPostgres};
use till_domain::db::PgPool;
use till_domain::types::Currency;
use till_domain::DomainError;
use till_read_models::{CacheSettings, Progress, Projector, ReadCache, ReadModels, ReadSources};
use tokio::sync::watch;
use tracing_actix_web::TracingLogger;

use crate::auth::{Authenticator, OidcVerifier, TokenService};
use crate::config::{DbConfig, Mode, Secret, ServeConfig};
use crate::graphql::cost::{BucketSettings, CostLimiter, RateSettings};
use crate::graphql::{self, ApiState, Checks, Limits, TillSchema};
use crate::http::documents::Documents;
use crate::http::health::AdminState;
use crate::metrics::Scrape;
use ipnet::IpNet;

/// Connections the projector of a serving process holds, apart from the request pool.
pub const PROJECTOR_CONNECTIONS: u32 = 5;

/// Why the application could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The embedded PostgreSQL could not start.
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    /// Database trouble.
    #[error("database: {0}")]
    Database(#[from] DomainError),
    /// Socket trouble.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

/// Shared by every HTTP worker.
pub struct AppData {
    /// The executable schema.
    pub schema: TillSchema,
    /// The same schema for queries whose document passed its full validation before:
    /// it repeats only what depends on the variables (see `http::graphql::execute_one`).
    pub known: TillSchema,
    /// The same again without the guard, for such queries whose cost is fixed: the HTTP
    /// layer charges, limits and counts them itself.
    pub priced: TillSchema,
    /// Longest a query may run (None: no bound).
    pub query_timeout: Option<Duration>,
    /// Resolver state.
    pub api: Arc<ApiState>,
    /// Mints Till's own tokens (tests and the CLI use it).
    pub tokens: TokenService,
    /// Verifies bearer tokens (own and external).
    pub auth: Authenticator,
    /// Persisted and trusted documents.
    pub documents: Documents,
    /// Open WebSocket connections per client network and account, with their caps.
    pub connections: Arc<crate::http::clients::Connections>,
    /// GET needs a preflight-forcing header.
    pub csrf_prevention: bool,
    /// Proxies whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Rate limiting, when on.
    pub rate: Option<Arc<CostLimiter>>,
    /// Secret of inbound payment webhooks, when configured.
    pub payment_webhook_secret: Option<Secret>,
    /// Largest age of a webhook signature, seconds.
    pub payment_webhook_tolerance_s: i64,
    /// Per-address bucket of `POST /webhooks/payments` (None: no limit).
    pub webhook_rate: Option<Arc<CostLimiter>>,
    /// The fake payment provider (dev mode only).
    pub fake_provider: Option<crate::http::fake_provider::FakeProvider>,
    /// Which dev conveniences apply (see `config::Conveniences`).
    pub conveniences: crate::config::Conveniences,
    /// The pool (for readiness).
    pub pool: PgPool,
    /// Most operations per batch.
    pub max_batch: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// The SDL served at `/schema.graphql`.
    pub sdl: String,
    /// How long idempotency keys are kept.
    pub idempotency_ttl: Duration,
    /// Probes and metrics.
    pub admin: Arc<AdminState>,
}

impl AppData {
    /// True once shutdown has begun (readiness reports unready).
    pub fn shutting_down(&self) -> bool {
        self.admin.shutting_down.load(Ordering::Acquire)
    }
}

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

/// Longest a read waits for a replica's connection before the primary serves it.
const REPLICA_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// A built, listening application.
pub struct Application {
    server: actix_web::dev::Server,
    port: u16,
    data: Arc<AppData>,
    stop_workers: watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    rebuilds: crate::rebuilds::Rebuilds,
    shutdown_timeout: Duration,
    shutdown_delay: Duration,
    admin_server: Option<actix_web::dev::Server>,
    _database: Database,
}

/// Reads the HS256 secret: from config, or in dev from `.till/jwt-secret` (created
/// with a random value on first use, mode 0600).
pub fn jwt_secret(configured: Option<&Secret>, mode: Mode) -> Result<Secret, StartError> {
    if let Some(s) = configured {
        if s.expose().len() < 32 {
            return Err(StartError::Config(
                "TILL_JWT_SECRET must be at least 32 bytes".into(),
            ));
        }
        return Ok(s.clone());
    }
    if mode == Mode::Production {
        return Err(StartError::Config(
            "TILL_JWT_SECRET is required in production mode".into(),
        ));
    }
    let path = std::path::Path::new(".till/jwt-secret");
    if let Ok(existing) = till_domain::private_file::read(path) {
        if existing.trim().len() >= 32 {
            return Ok(Secret::new(existing.trim()));
        }
    }
    let fresh: String = {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        (0..48)
            .map(|_| format!("{:x}", rng.gen_range(0..16u8)))
            .collect()
    };
    std::fs::create_dir_all(".till")?;
    till_domain::private_file::write(path, &fresh)?;
    Ok(Secret::new(fresh))
}

impl Application {
    /// Connects, migrates (dev), seeds (dev), starts the projector and binds the port
    /// (port 0 picks a free one, for tests).
    pub async fn build(cfg: ServeConfig, database: Database) -> Result<Self, StartError> {
        cfg.check_mode().map_err(StartError::Config)?;
        let conveniences = cfg.conveniences(database.embedded.is_some());
        let currency =
            Currency::parse(&cfg.currency).map_err(|e| StartError::Config(e.to_string()))?;
        let secret = jwt_secret(
            cfg.jwt_secret().map_err(StartError::Config)?.as_ref(),
            cfg.mode,
        )?;
        let oidc_settings = cfg.oidc.settings(cfg.mode).map_err(StartError::Config)?;
        let payment_webhook_secret = cfg.payment_webhook_secret().map_err(StartError::Config)?;
        let trusted_proxies = cfg
            .rate
            .trusted_proxies
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        StartError::Config(format!(
                            "TILL_TRUSTED_PROXIES: `{p}` is not an IP address or CIDR"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let documents = match &cfg.trusted_documents {
            Some(path) => Documents::trusted(path).map_err(StartError::Config)?,
            None => Documents::automatic(cfg.apq_max_bytes),
        };
        if cfg.mode == Mode::Dev {
            let applied = till_domain::db::migrate(&database.url).await?;
            if !applied.is_empty() {
                tracing::info!(?applied, "migrations applied");
            }
        }
        let pool = till_domain::db::pool(&database.url, &cfg.db.pool_settings());
        // Each HTTP worker's commands get a shard of the pool's size split between the
        // workers (`db::shard`); the pool itself serves reads, jobs and the rest.
        let http_workers = match cfg.http_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let shard_settings = till_domain::db::PoolSettings {
            max_size: cfg
                .db
                .db_pool_size
                .div_ceil(u32::try_from(http_workers).unwrap_or(u32::MAX))
                .max(1),
            ..cfg.db.pool_settings()
        };
        let shards = till_domain::db::shard::Shards::default();
        let shard_url = database.url.clone();
        let cache = ReadCache::new(CacheSettings {
            max_bytes: cfg.cache_max_bytes,
            idle: Duration::from_secs(cfg.cache_idle_s),
        });
        let progress = Arc::new(Progress::new());
        if let Ok(mut conn) = pool.get().await {
            if let Err(e) = progress.refresh(&mut conn).await {
                tracing::warn!(error = %e, "could not read projection checkpoints");
            }
        }
        let commands =
            Commands::new(pool.clone()).with_order_batching(cfg.order_batching.settings());
        let read_urls = database.read_urls(&cfg)?;
        let sources = if read_urls.is_empty() {
            ReadSources::primary_only(pool.clone())
        } else {
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
            ReadSources::new(pool.clone(), replicas, cfg.replicas.settings())
        };
        let reads = ReadModels::over(sources.clone(), cache.clone(), progress.clone());
        let (stop_workers, stop_rx) = watch::channel(false);
        let mut workers = Vec::new();
        workers.extend(sources.spawn_monitor(stop_workers.subscribe()));
        // The projector gets connections of its own (one per projection, one for its
        // checks): on the request pool its batches queued behind the requests whose
        // writes they follow, and the commit -> visible lag grew with the write load.
        let projector_pool = till_domain::db::pool(
            &database.url,
            &till_domain::db::PoolSettings {
                max_size: PROJECTOR_CONNECTIONS,
                ..cfg.db.pool_settings()
            },
        );
        let projector = Projector::new(
            projector_pool,
            database.url.clone(),
            cache,
            progress.clone(),
            cfg.projector_tuning.settings(),
        )
        .tracking_wal(sources.has_replicas());
        // One LISTEN connection for the process's followers (projector, jobs, fan-out,
        // ended sessions and changed roles).
        let notifications = till_domain::db::listen::Listener::new(database.url.clone());
        // This process's own commits wake its projector and job workers at once.
        commands.wake_locally(&notifications);
        let access = crate::auth::AccessCheck::new(commands.clone());
        workers.push(access.follow(&notifications, stop_workers.subscribe()));
        if cfg.projector {
            workers.push(projector.spawn_on(&notifications, stop_rx.clone()));
        } else {
            // Another process projects: follow its checkpoints, invalidating what
            // changed and feeding subscriptions.
            workers.push(projector.spawn_follower(&notifications, stop_rx.clone()));
        }
        workers.push(tokio::spawn(housekeeping(
            commands.clone(),
            HOUSEKEEPING_CHUNK,
            stop_workers.subscribe(),
        )));
        workers.push(tokio::spawn(cache_housekeeping(
            reads.cache().clone(),
            stop_workers.subscribe(),
        )));
        let commits = Arc::new(crate::commit_times::CommitTimes::new());
        workers.push(tokio::spawn(crate::metrics::observe_visibility(
            progress.feed(),
            commits.clone(),
            stop_workers.subscribe(),
        )));
        let rebuilds =
            crate::rebuilds::Rebuilds::new(database.url.clone(), stop_workers.subscribe());
        let api = Arc::new(ApiState {
            commands: commands.clone(),
            reads,
            currency: currency.clone(),
            consistency_wait: cfg.consistency_wait(),
            max_page_size: cfg.max_page_size,
            tokens: TokenService::new(&secret),
            access_token_ttl: Duration::from_secs(cfg.access_token_ttl_s.max(1)),
            refresh_token_ttl: Duration::from_secs(cfg.refresh_token_ttl_h.max(1) * 3600),
            payment_max_attempts: cfg.jobs.payment_max_attempts.max(1),
            webhook_urls: till_domain::webhooks::UrlPolicy {
                require_https: cfg.mode == Mode::Production,
                allow_private: cfg.jobs.webhook_allow_private,
            },
            rebuilds: rebuilds.clone(),
            commits,
            sign_in: Arc::new(crate::auth::sign_in::SignInLimiter::new(
                crate::auth::sign_in::Allowance {
                    burst: cfg.rate.signin_per_ip_max,
                    per_minute: cfg.rate.signin_per_ip_per_min,
                },
                crate::auth::sign_in::Allowance {
                    burst: cfg.rate.signin_per_email_max,
                    per_minute: cfg.rate.signin_per_email_per_min,
                },
            )),
        });
        let oidc = match oidc_settings {
            Some(settings) => {
                tracing::info!(issuer = %settings.issuer, "accepting tokens of an external issuer");
                Some(Arc::new(
                    OidcVerifier::new(settings, commands.clone()).map_err(|e| {
                        StartError::Config(format!("HTTP client for the JWKS: {e}"))
                    })?,
                ))
            }
            None => None,
        };
        let rate = cfg.rate.rate_limit.then(|| {
            Arc::new(CostLimiter::new(RateSettings {
                customer: BucketSettings {
                    max: cfg.rate.rate_customer_max,
                    restore: cfg.rate.rate_customer_restore,
                },
                staff: BucketSettings {
                    max: cfg.rate.rate_staff_max,
                    restore: cfg.rate.rate_staff_restore,
                },
                anonymous: BucketSettings {
                    max: cfg.rate.rate_anonymous_max,
                    restore: cfg.rate.rate_anonymous_restore,
                },
                max_principals: cfg.rate.rate_max_principals,
            }))
        });
        let limits = Limits {
            max_depth: cfg.max_depth,
            max_complexity: cfg.max_complexity,
            max_aliases: cfg.max_aliases,
            max_root_fields: cfg.max_root_fields,
            introspection: conveniences.introspection,
            rate: rate.clone(),
            query_timeout: (cfg.request_timeout_ms > 0)
                .then(|| Duration::from_millis(cfg.request_timeout_ms)),
        };
        let query_timeout = limits.query_timeout;
        let shared = graphql::Shared::new(api.clone());
        let serve =
            |limits, checks| graphql::build_serving(Some(&shared), limits, checks, cfg.federation);
        let schema = serve(limits.clone(), Checks::Full);
        let known = serve(limits.clone(), Checks::Known);
        let priced = serve(limits, Checks::Priced);
        crate::metrics::handle();
        let pool_for_admin = pool.clone();
        let api_reads = api.reads.clone();
        let data = Arc::new(AppData {
            sdl: schema.sdl(),
            schema,
            known,
            priced,
            query_timeout,
            api,
            tokens: TokenService::new(&secret),
            auth: Authenticator::new(TokenService::new(&secret), oidc, Some(access.clone())),
            documents,
            connections: Arc::new(crate::http::clients::Connections::new(
                cfg.ws_max_per_ip,
                cfg.ws_max_per_account,
                cfg.ws_max_subscriptions,
            )),
            csrf_prevention: cfg.csrf_prevention,
            trusted_proxies,
            rate,
            payment_webhook_secret,
            payment_webhook_tolerance_s: cfg.payment_webhook_tolerance_s.max(1),
            webhook_rate: (cfg.webhook_rate_max > 0).then(|| {
                Arc::new(CostLimiter::per_address(
                    BucketSettings {
                        max: cfg.webhook_rate_max,
                        restore: cfg.webhook_rate_restore,
                    },
                    cfg.rate.rate_max_principals,
                ))
            }),
            fake_provider: conveniences
                .fake_provider
                .then(crate::http::fake_provider::FakeProvider::default),
            conveniences,
            pool,
            max_batch: cfg.max_batch,
            max_body_bytes: cfg.max_body_bytes,
            idempotency_ttl: Duration::from_secs(cfg.idempotency_ttl_h.max(1) * 3600),
            admin: Arc::new(AdminState {
                scrape: Scrape {
                    pool: pool_for_admin,
                    pool_max: cfg.db.db_pool_size,
                    shards: shards.clone(),
                    shard_max: shard_settings.max_size,
                    reads: api_reads,
                    order_batches: commands.order_batching().map(|(_, stats)| stats),
                },
                shutting_down: Arc::new(AtomicBool::new(false)),
                max_lag: (cfg.ready_max_lag_s > 0)
                    .then(|| Duration::from_secs(cfg.ready_max_lag_s)),
            }),
        });

        if conveniences.seed_demo {
            crate::seed::demo_if_empty(&commands).await?;
        }

        let listener = TcpListener::bind(cfg.listen)?;
        let port = listener.local_addr()?.port();
        if cfg.jobs.jobs {
            let provider = match (&cfg.jobs.payment_provider_url, cfg.mode) {
                (Some(url), _) => Some(url.clone()),
                (None, _) if conveniences.fake_provider => {
                    Some(format!("http://127.0.0.1:{port}/fake-provider"))
                }
                (None, Mode::Production) => {
                    return Err(StartError::Config(
                        "TILL_PAYMENT_PROVIDER_URL is required in production mode".into(),
                    ))
                }
                (None, Mode::Dev) => {
                    tracing::warn!(
                        "no TILL_PAYMENT_PROVIDER_URL and no fake provider (it runs only on the \
                         embedded database unless TILL_FAKE_PROVIDER=true): payments stay pending"
                    );
                    None
                }
            };
            workers.extend(
                crate::jobs::start(
                    commands.clone(),
                    &notifications,
                    &cfg.jobs,
                    provider,
                    stop_workers.subscribe(),
                )
                .map_err(StartError::Config)?,
            );
        }
        if let Some(rate) = &data.rate {
            workers.push(tokio::spawn(replica_heartbeat(
                commands.pool().clone(),
                rate.clone(),
                stop_workers.subscribe(),
            )));
        }
        // Started once every follower has subscribed.
        workers.push(notifications.spawn(stop_workers.subscribe()));
        let shared = web::Data::new(data.clone());
        let admin = web::Data::new(data.admin.clone());
        let metrics_on_main = cfg.admin_listen.is_none();
        let admin_server = match cfg.admin_listen {
            Some(addr) => Some(crate::http::health::serve_admin(addr, data.admin.clone())?),
            None => None,
        };
        let max_body = cfg.max_body_bytes;
        let origins: Vec<String> = cfg
            .cors_origins
            .iter()
            .map(|o| o.trim().to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        let mut server = HttpServer::new(move || {
            // Runs once on each worker's thread, inside its runtime.
            till_domain::db::shard::adopt(
                till_domain::db::pool(&shard_url, &shard_settings),
                &shards,
            );
            App::new()
                .app_data(shared.clone())
                .app_data(admin.clone())
                .app_data(web::PayloadConfig::new(max_body))
                .wrap(actix_web::middleware::from_fn(
                    crate::http::request_id_header,
                ))
                .wrap(crate::http::security_headers())
                .wrap(crate::http::cors(&origins))
                .wrap(TracingLogger::<crate::telemetry::RequestSpan>::new())
                .wrap(actix_web::middleware::from_fn(crate::http::record_metrics))
                .configure(crate::http::configure)
                .configure(|c| {
                    if metrics_on_main {
                        c.route("/metrics", web::get().to(crate::http::health::metrics));
                    }
                })
        })
        .disable_signals()
        .shutdown_timeout(cfg.shutdown_timeout_s);
        server = server.workers(http_workers);
        let server = server.listen(listener)?.run();
        Ok(Self {
            server,
            port,
            data,
            stop_workers,
            workers,
            rebuilds,
            shutdown_timeout: Duration::from_secs(cfg.shutdown_timeout_s),
            shutdown_delay: Duration::from_millis(cfg.shutdown_delay_ms),
            admin_server,
            _database: database,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Shared state (tests use it to mint tokens).
    pub fn data(&self) -> &Arc<AppData> {
        &self.data
    }

    /// Serves until SIGINT/SIGTERM: readiness turns unready, in-flight requests drain,
    /// the projector stops after its batch, then the embedded PostgreSQL (if any) stops.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let admin = self.admin_server.map(|server| {
            let h = server.handle();
            (tokio::spawn(server), h)
        });
        let data = self.data.clone();
        let delay = self.shutdown_delay;
        let stopper = tokio::spawn(async move {
            wait_for_signal().await;
            // Unready first, so load balancers stop routing here, then drain.
            data.admin.shutting_down.store(true, Ordering::Release);
            if !delay.is_zero() {
                tracing::info!(?delay, "shutting down: reporting unready before draining");
                tokio::time::sleep(delay).await;
            }
            tracing::info!("shutting down: draining in-flight requests");
            handle.stop(true).await;
        });
        let result = self.server.await;
        stopper.abort();
        let _ = self.stop_workers.send(true);
        self.rebuilds.wait(self.shutdown_timeout).await;
        for w in self.workers {
            if tokio::time::timeout(self.shutdown_timeout, w)
                .await
                .is_err()
            {
                tracing::warn!("a background worker did not stop in time");
            }
        }
        if let Some((task, h)) = admin {
            h.stop(true).await;
            let _ = task.await;
        }
        tracing::info!("stopped");
        result
    }

    /// Serves in the background (tests); the returned handle stops it.
    pub fn spawn(
        self,
    ) -> (
        u16,
        Arc<AppData>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let port = self.port;
        let data = self.data.clone();
        (port, data, tokio::spawn(self.run_until_stopped()))
    }
}

pub(crate) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Drops idle cache entries every few seconds even when no request touches the cache:
/// moka does its housekeeping only on access, so after a burst the entries (and the
/// weighted size the metrics show) stayed until the next request. Then hands the
/// heap the dropped entries and the load's buffers left free back to the system
/// when it has grown (`heap`), so that resident memory falls after load.
pub(crate) async fn cache_housekeeping(cache: ReadCache, mut stop: watch::Receiver<bool>) {
    let mut heap = crate::heap::Heap::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                cache.run_pending_tasks().await;
                // After the cache let go of expired entries: hand the memory the
                // load left free back to the system (see `heap`).
                heap.tick();
            }
            _ = stop.changed() => return,
        }
    }
}

/// Rows a housekeeping statement deletes at most.
pub(crate) const HOUSEKEEPING_CHUNK: usize = 10_000;

/// Housekeeping every 5 minutes: expired idempotency keys and refresh tokens are
/// deleted in chunks of `chunk` rows (safe on several replicas at once), looking at
/// `stop` between chunks so that a backlog does not hold up shutdown.
/// Takes the process's `commands` (one per process: each holds the connection that
/// wakes the projectors).
/// How often a serving replica says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A replica not heard from for this long no longer shares the budgets.
const HEARTBEAT_WINDOW: Duration = Duration::from_secs(3);

/// Keeps this replica in `api_replicas` and the rate limiter's replica count current;
/// leaves the table on shutdown so the others take the budget back at once. When the
/// database is away the last count stands.
async fn replica_heartbeat(
    pool: till_domain::db::PgPool,
    rate: Arc<CostLimiter>,
    mut stop: watch::Receiver<bool>,
) {
    let me = uuid::Uuid::now_v7();
    loop {
        match till_domain::replicas::heartbeat(&pool, me, HEARTBEAT_WINDOW).await {
            Ok(n) => {
                rate.set_replicas(n);
                metrics::gauge!("till_api_replicas").set(f64::from(n));
            }
            Err(e) => tracing::debug!(error = %e, "replica heartbeat failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT) => {}
            _ = stop.changed() => break,
        }
    }
    if let Err(e) = till_domain::replicas::leave(&pool, me).await {
        tracing::debug!(error = %e, "could not leave the replica table");
    }
}

pub(crate) async fn housekeeping(
    commands: Commands,
    chunk: usize,
    mut stop: watch::Receiver<bool>,
) {
    let pool = commands.pool().clone();
    let limit = i64::try_from(chunk).unwrap_or(i64::MAX);
    loop {
        let keys = crate::jobs::in_chunks(chunk, &stop, || {
            till_domain::idempotency::purge_expired(&pool, limit)
        })
        .await;
        report("expired idempotency keys", keys);
        if *stop.borrow() {
            return;
        }
        let tokens =
            crate::jobs::in_chunks(chunk, &stop, || commands.purge_refresh_tokens(limit)).await;
        report("expired refresh tokens", tokens);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(300)) => {}
            _ = stop.changed() => return,
        }
    }
}

fn report(what: &str, purged: Result<usize, till_domain::error::DomainError>) {
    match purged {
        Ok(0) => {}
        Ok(n) => tracing::info!(purged = n, "{what} purged"),
        Err(e) => tracing::debug!(error = %e, "purging {what} failed"),
    }
}

#[cfg(test)]
mod tests {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;
    use till_domain::db::testing::TestDb;

    use super::*;

    #[derive(diesel::QueryableByName)]
    struct Left {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    /// Shutdown does not wait for a backlog of expired rows: housekeeping stops after
    /// the chunk in flight, and the rest is purged at its next run.
    #[tokio::test]
    async fn housekeeping_stops_between_chunks_when_asked() {
        let db = TestDb::new().await;
        let mut conn = db.pool.get().await.unwrap_or_else(|e| panic!("{e}"));
        diesel::sql_query(
            "INSERT INTO idempotency_keys (principal, key, fingerprint, expires_at) \
             SELECT 'test', 'k' || g, 'f', now() - interval '1 hour' FROM generate_series(1, 5) g",
        )
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let (stop_tx, stop_rx) = watch::channel(false);
        // Asked to stop before the first chunk ends.
        stop_tx.send(true).unwrap_or_else(|e| panic!("{e}"));
        let run = housekeeping(Commands::new(db.pool.clone()), 2, stop_rx);
        assert!(
            tokio::time::timeout(Duration::from_secs(30), run)
                .await
                .is_ok(),
            "housekeeping did not stop"
        );
        let left: Left = diesel::sql_query("SELECT count(*) AS n FROM idempotency_keys")
            .get_result(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(left.n, 3, "one chunk of 2 purged, then it stopped");
    }
}
