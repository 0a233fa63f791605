//! Building and running the HTTP application: state built once at start-up and shared
//! through app data, the projector in-process, graceful shutdown.
//!
//! Why over 400 lines: `Application::build` reads top to bottom in the order a server
//! starts; the parts that stand alone are in `app/database.rs`, `read_side.rs`
//! (read-models), `background.rs` and `graphql/execution/`.

mod database;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use thiserror::Error;
use till_domain::commands::Commands;
use till_domain::db::embedded::EmbeddedError;
use till_domain::types::Currency;
use till_domain::DomainError;
use till_read_models::{CacheSettings, ReadSide};
use tracing_actix_web::TracingLogger;

use crate::auth::{Authenticator, OidcVerifier, TokenService};
use crate::background::{replica_heartbeat, wait_for_signal, Background};
use crate::config::{Mode, Secret, ServeConfig};
use crate::graphql::execution::documents::Documents;
use crate::graphql::execution::rate_limit::{BucketSettings, CostLimiter, RateSettings};
use crate::graphql::execution::Engine;
use crate::graphql::{self, ApiState, Limits};
use crate::http::health::AdminState;
pub use crate::http::state::AppData;
use crate::metrics::Scrape;
pub use database::Database;
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

/// A built, listening application.
pub struct Application {
    server: actix_web::dev::Server,
    port: u16,
    data: Arc<AppData>,
    background: Background,
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
        let commands =
            Commands::new(pool.clone()).with_order_batching(cfg.order_batching.settings());
        let sources = database.read_sources(&cfg, &pool)?;
        // One LISTEN connection for the process's followers (projector, jobs, fan-out,
        // ended sessions and changed roles), and every background task.
        let mut background = Background::new(database.url.clone());
        let replica_monitor = sources.spawn_monitor(background.stopping());
        background.tasks.extend(replica_monitor);
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
        let ReadSide { projector, reads } = ReadSide::builder(pool.clone(), database.url.clone())
            .cache(CacheSettings {
                max_bytes: cfg.cache_max_bytes,
                idle: Duration::from_secs(cfg.cache_idle_s),
            })
            .projector(cfg.projector_tuning.settings())
            .projector_pool(projector_pool)
            .sources(sources)
            .build();
        let progress = reads.progress().clone();
        if let Ok(mut conn) = pool.get().await {
            if let Err(e) = progress.refresh(&mut conn).await {
                tracing::warn!(error = %e, "could not read projection checkpoints");
            }
        }
        let access = crate::auth::AccessCheck::new(commands.clone());
        let follow_access = access.follow(&background.notifications, background.stopping());
        background.tasks.push(follow_access);
        // Without the projector here, another process projects: this one follows its
        // checkpoints, invalidating what changed and feeding subscriptions.
        background.start_read_side(&commands, &projector, cfg.projector, reads.cache().clone());
        let commits = Arc::new(crate::local_commits::CommitTimes::new());
        background
            .tasks
            .push(tokio::spawn(crate::metrics::observe_visibility(
                progress.feed(),
                commits.clone(),
                background.stopping(),
            )));
        let rebuilds = crate::rebuilds::Rebuilds::new(database.url.clone(), background.stopping());
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
        let rate = rate_limiter(&cfg);
        let limits = limits(&cfg, conveniences.introspection, rate.clone());
        let shared = graphql::Shared::new(api.clone());
        let engine = Engine::new(&shared, limits, cfg.federation, documents);
        crate::metrics::handle();
        let pool_for_admin = pool.clone();
        let api_reads = api.reads.clone();
        let data = Arc::new(AppData {
            sdl: engine.schema.sdl(),
            graphql: engine,
            api,
            tokens: TokenService::new(&secret),
            auth: Authenticator::new(TokenService::new(&secret), oidc, Some(access.clone())),
            connections: Arc::new(crate::http::clients::Connections::new(
                cfg.ws_max_per_ip,
                cfg.ws_max_per_account,
                cfg.ws_max_subscriptions,
            )),
            csrf_prevention: cfg.csrf_prevention,
            trusted_proxies,
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
            let provider = payment_provider(&cfg, conveniences.fake_provider, port)?;
            background
                .start_jobs(commands.clone(), &cfg.jobs, provider)
                .map_err(StartError::Config)?;
        }
        if let Some(rate) = &data.graphql.rate {
            background.tasks.push(tokio::spawn(replica_heartbeat(
                commands.pool().clone(),
                rate.clone(),
                background.stopping(),
            )));
        }
        background.listen();
        let shared = web::Data::new(data.clone());
        let admin = web::Data::new(data.admin.clone());
        // The fake payment provider's own state (dev mode only; its routes answer 404
        // without it).
        let fake_provider = web::Data::new(
            data.conveniences
                .fake_provider
                .then(crate::http::fake_provider::FakeProvider::default),
        );
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
                .app_data(fake_provider.clone())
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
            background,
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
        self.background.signal_stop();
        self.rebuilds.wait(self.shutdown_timeout).await;
        self.background.stop(self.shutdown_timeout).await;
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

/// The cost-based rate limiter, when on.
fn rate_limiter(cfg: &ServeConfig) -> Option<Arc<CostLimiter>> {
    cfg.rate.rate_limit.then(|| {
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
    })
}

/// The limits every operation is held to.
fn limits(cfg: &ServeConfig, introspection: bool, rate: Option<Arc<CostLimiter>>) -> Limits {
    Limits {
        max_depth: cfg.max_depth,
        max_complexity: cfg.max_complexity,
        max_aliases: cfg.max_aliases,
        max_root_fields: cfg.max_root_fields,
        introspection,
        rate,
        query_timeout: (cfg.request_timeout_ms > 0)
            .then(|| Duration::from_millis(cfg.request_timeout_ms)),
    }
}

/// Where payment captures go: the configured provider, the built-in fake one (dev, on
/// `port`), or nowhere (dev without either: payments stay pending).
fn payment_provider(
    cfg: &ServeConfig,
    fake_provider: bool,
    port: u16,
) -> Result<Option<String>, StartError> {
    Ok(match (&cfg.jobs.payment_provider_url, cfg.mode) {
        (Some(url), _) => Some(url.clone()),
        (None, _) if fake_provider => Some(format!("http://127.0.0.1:{port}/fake-provider")),
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
    })
}
