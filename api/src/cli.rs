//! The command line: `till [serve]`, `worker`... (see `till --help`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use thiserror::Error;
use till_domain::types::{Currency, CustomerId, Role};
use till_read_models::{
    CacheSettings, Progress, Projector, ProjectorSettings, ReadCache, ReadModels,
};

use crate::app::{jwt_secret, Application, Database, StartError};
use crate::auth::TokenService;
use crate::config::{DbConfig, Mode, Secret, ServeConfig};
use crate::seed::{self, SeedSizes};

/// Till: a headless-commerce GraphQL API.
#[derive(Debug, Parser)]
#[command(name = "till", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the GraphQL API (and run the projector).
    Serve(Box<ServeConfig>),
    /// Run the background work without HTTP: the projector and housekeeping (several
    /// workers may run against one database; one applies a given batch at a time).
    Worker {
        /// Database settings.
        #[command(flatten)]
        db: DbConfig,
        /// Job settings.
        #[command(flatten)]
        jobs: crate::config::JobsConfig,
        /// Projector settings.
        #[command(flatten)]
        projector: crate::config::ProjectorTuning,
        /// Address of the admin port (`/healthz`, `/readyz`, `/metrics`).
        #[arg(long, env = "TILL_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
        admin_listen: std::net::SocketAddr,
        /// `/readyz` fails when a projection is further behind than this, in seconds
        /// (0: never).
        #[arg(long, env = "TILL_READY_MAX_LAG_S", default_value_t = 300)]
        ready_max_lag_s: u64,
    },
    /// Exit 0 when the local server's `/healthz` answers (for container HEALTHCHECKs).
    Healthcheck {
        /// URL to check (default: the admin port if TILL_ADMIN_LISTEN is set, else
        /// TILL_LISTEN).
        #[arg(long)]
        url: Option<String>,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        /// Database settings.
        #[command(flatten)]
        db: DbConfig,
    },
    /// Insert a large data set (events included; the projector builds the views).
    Seed {
        /// Database settings.
        #[command(flatten)]
        db: DbConfig,
        /// Categories to create.
        #[arg(long, default_value_t = 50)]
        categories: usize,
        /// Products to create.
        #[arg(long, default_value_t = 1000)]
        products: usize,
        /// Customers to create.
        #[arg(long, default_value_t = 500)]
        customers: usize,
        /// Paid orders to create.
        #[arg(long, default_value_t = 5000)]
        orders: usize,
        /// Store currency of the orders.
        #[arg(long, env = "TILL_CURRENCY", default_value = "EUR")]
        currency: String,
        /// Do not wait for the projections to catch up.
        #[arg(long)]
        no_catch_up: bool,
    },
    /// Print the GraphQL schema (SDL, sorted).
    Schema {
        /// Print the Apollo Federation v2 subgraph SDL instead (what `_service { sdl }`
        /// answers with `TILL_FEDERATION=true`), for composing a supergraph.
        #[arg(long)]
        federation: bool,
    },
    /// Mint a development access token.
    Token {
        /// Role of the token.
        #[arg(long, value_enum, default_value_t = RoleArg::Staff)]
        role: RoleArg,
        /// Account id (`sub`); must be an existing account for commands that need one.
        #[arg(long)]
        sub: uuid::Uuid,
        /// Lifetime in minutes.
        #[arg(long, default_value_t = 60)]
        ttl_minutes: u64,
        /// HS256 secret (default: TILL_JWT_SECRET, else the dev secret in .till/).
        #[arg(long, env = "TILL_JWT_SECRET")]
        jwt_secret: Option<Secret>,
    },
    /// Account administration.
    Admin {
        /// What to do.
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Inspect or drive the projections.
    Projections {
        /// Database settings.
        #[command(flatten)]
        db: DbConfig,
        /// What to do.
        #[arg(value_enum, default_value_t = ProjectionsAction::Status)]
        action: ProjectionsAction,
        /// With `rebuild`: the projection to rebuild (repeat for several; default all,
        /// one after the other).
        #[arg(long = "projection", value_name = "NAME", value_parser = parse_projection)]
        projections: Vec<till_read_models::Projection>,
        /// With `rebuild`: events replayed per transaction [default: 5000].
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        batch_size: Option<i64>,
    },
}

/// `till admin` actions.
#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// Create an ADMIN account (the first one, or more) with a password.
    Create {
        /// Database settings.
        #[command(flatten)]
        db: DbConfig,
        /// Email of the account.
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long, default_value = "Administrator")]
        name: String,
        /// The password (default: TILL_ADMIN_PASSWORD, else the contents of
        /// --password-file, else a random one printed once).
        #[arg(long, env = "TILL_ADMIN_PASSWORD", hide_env_values = true)]
        password: Option<Secret>,
        /// File holding the password.
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
    },
}

/// Roles for `till token`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// CUSTOMER.
    Customer,
    /// STAFF.
    Staff,
    /// ADMIN.
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Customer => Role::Customer,
            RoleArg::Staff => Role::Staff,
            RoleArg::Admin => Role::Admin,
        }
    }
}

/// `till projections` actions.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProjectionsAction {
    /// Show each projection's checkpoint and lag.
    Status,
    /// Apply every pending event now and exit.
    CatchUp,
    /// Rebuild projections from the whole event log without downtime (build aside,
    /// then swap), with a progress bar; servers keep serving meanwhile.
    Rebuild,
}

fn parse_projection(name: &str) -> Result<till_read_models::Projection, String> {
    till_read_models::Projection::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = till_read_models::Projection::ALL
            .iter()
            .map(|p| p.name())
            .collect();
        format!("unknown projection {name:?}; one of: {}", names.join(", "))
    })
}

/// A CLI failure.
#[derive(Debug, Error)]
pub enum CliError {
    /// Start-up failed.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A command failed.
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, Parser)]
struct ServeFromEnv {
    #[command(flatten)]
    cfg: ServeConfig,
}

/// Parses the command line and runs it.
pub async fn run() -> Result<(), CliError> {
    let cli = Cli::parse();
    let command = match cli.command {
        Some(c) => c,
        None => Command::Serve(Box::new(ServeFromEnv::parse_from(["till"]).cfg)),
    };
    match command {
        Command::Serve(cfg) => serve(*cfg).await,
        Command::Worker {
            db,
            jobs,
            projector,
            admin_listen,
            ready_max_lag_s,
        } => worker(db, jobs, &projector, admin_listen, ready_max_lag_s).await,
        Command::Healthcheck { url } => healthcheck(url).await,
        Command::Migrate { db } => {
            let database = Database::resolve(&db, Mode::Dev).await?;
            let applied = till_domain::db::migrate(&database.url)
                .await
                .map_err(StartError::from)?;
            if applied.is_empty() {
                println!("migrations: nothing to apply");
            } else {
                println!("migrations applied: {}", applied.join(", "));
            }
            Ok(())
        }
        Command::Seed {
            db,
            categories,
            products,
            customers,
            orders,
            currency,
            no_catch_up,
        } => {
            let currency =
                Currency::parse(&currency).map_err(|e| CliError::Failed(e.to_string()))?;
            let database = Database::resolve(&db, Mode::Dev).await?;
            till_domain::db::migrate(&database.url)
                .await
                .map_err(StartError::from)?;
            let pool = till_domain::db::pool(&database.url, &db.pool_settings());
            let sizes = SeedSizes {
                categories: categories.max(1),
                products,
                customers,
                orders,
            };
            if orders > 0 && (products == 0 || customers == 0) {
                return Err(CliError::Failed(
                    "orders need at least one product and one customer".into(),
                ));
            }
            let timings = seed::bulk(&pool, sizes, &currency)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            for (phase, rows, took) in &timings.phases {
                println!(
                    "seeded {rows:>8} {phase:<10} in {:>7.2}s",
                    took.as_secs_f64()
                );
            }
            if !no_catch_up {
                let started = Instant::now();
                catch_up(&pool, &database.url).await?;
                println!(
                    "projections caught up in {:.2}s",
                    started.elapsed().as_secs_f64()
                );
            }
            let started = Instant::now();
            till_domain::seed::vacuum_analyze(&pool)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            println!(
                "vacuumed and analyzed in {:.2}s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Schema { federation } => {
            if federation {
                print!("{}", crate::graphql::federation_sdl());
            } else {
                print!("{}", crate::graphql::sdl());
            }
            Ok(())
        }
        Command::Token {
            role,
            sub,
            ttl_minutes,
            jwt_secret: secret,
        } => {
            let secret = jwt_secret(secret.as_ref(), Mode::Dev)?;
            let token = TokenService::new(&secret)
                .mint(
                    CustomerId(sub),
                    role.into(),
                    Duration::from_secs(ttl_minutes * 60),
                )
                .map_err(|e| CliError::Failed(e.to_string()))?;
            println!("{token}");
            Ok(())
        }
        Command::Admin {
            action:
                AdminAction::Create {
                    db,
                    email,
                    name,
                    password,
                    password_file,
                },
        } => create_admin(&db, &email, &name, password, password_file).await,
        Command::Projections {
            db,
            action,
            projections,
            batch_size,
        } => {
            if !matches!(action, ProjectionsAction::Rebuild)
                && (!projections.is_empty() || batch_size.is_some())
            {
                return Err(CliError::Failed(
                    "--projection and --batch-size only apply to `till projections rebuild`".into(),
                ));
            }
            let database = Database::resolve(&db, Mode::Dev).await?;
            let pool = till_domain::db::pool(&database.url, &db.pool_settings());
            match action {
                ProjectionsAction::CatchUp => catch_up(&pool, &database.url).await?,
                ProjectionsAction::Rebuild => {
                    rebuild(&database.url, &projections, batch_size).await?;
                }
                ProjectionsAction::Status => {}
            }
            let reads = ReadModels::new(
                pool,
                ReadCache::new(CacheSettings::default()),
                Arc::new(Progress::new()),
            );
            let status = reads
                .projection_status()
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            println!(
                "{:<18} {:>10} {:>10}  {:<32}  last rebuild",
                "projection", "position", "lag", "updated"
            );
            for s in status {
                let updated = s
                    .updated_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "never".into());
                let rebuild = s
                    .rebuild
                    .map_or_else(|| "never".to_owned(), describe_rebuild);
                println!(
                    "{:<18} {:>10} {:>10}  {updated:<32}  {rebuild}",
                    s.name, s.position, s.lag_events
                );
            }
            Ok(())
        }
    }
}

fn describe_rebuild(r: till_read_models::RebuildStatus) -> String {
    use till_read_models::RebuildState;
    match r.state {
        RebuildState::Running => format!(
            "running ({:?}, {}/{} events) since {}",
            r.phase,
            r.events_applied,
            r.events_total,
            r.started_at.to_rfc3339()
        ),
        RebuildState::Done => format!(
            "done at {} ({} events)",
            r.finished_at.unwrap_or(r.updated_at).to_rfc3339(),
            r.events_applied
        ),
        RebuildState::Failed => format!(
            "failed at {}: {}",
            r.finished_at.unwrap_or(r.updated_at).to_rfc3339(),
            r.error.as_deref().unwrap_or("unknown")
        ),
    }
}

/// `till projections rebuild`: one projection after the other, each with a progress
/// bar; Ctrl-C stops the running one (its live tables stay as they were).
async fn rebuild(
    url: &str,
    projections: &[till_read_models::Projection],
    batch_size: Option<i64>,
) -> Result<(), CliError> {
    use till_read_models::{Projection, Rebuild, RebuildPhase, RebuildSettings};
    let chosen: Vec<Projection> = if projections.is_empty() {
        Projection::ALL.to_vec()
    } else {
        projections.to_vec()
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopping the rebuild (the live tables stay as they are)");
            let _ = stop_tx.send(true);
        }
    });
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:>16} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta}) {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    let mut outcome = Ok(());
    for p in chosen {
        let defaults = RebuildSettings::default();
        let settings = RebuildSettings {
            batch_size: batch_size.unwrap_or(defaults.batch_size),
            ..defaults
        };
        let rebuild = Rebuild::start(url, p, settings)
            .await
            .map_err(|e| CliError::Failed(format!("{}: {e}", p.name())))?;
        let pb = indicatif::ProgressBar::new(rebuild.total().max(0) as u64);
        pb.set_style(style.clone());
        pb.set_prefix(p.name());
        let mut on_progress = |progress: till_read_models::RebuildProgress| {
            pb.set_length(progress.total.max(0) as u64);
            pb.set_position(progress.applied.max(0) as u64);
            pb.set_message(match progress.phase {
                RebuildPhase::Copying => "copying",
                RebuildPhase::Indexing => "building indexes",
                RebuildPhase::Swapping => "swapping in",
                RebuildPhase::Finished => "swapped in",
            });
        };
        match rebuild.run(&mut on_progress, &stop).await {
            Ok(report) => {
                pb.finish();
                let secs = report.replay.as_secs_f64().max(1e-9);
                println!(
                    "{}: {} events replayed in {:.2}s ({:.0} events/s), {:.2}s in all; swapped in",
                    p.name(),
                    report.events,
                    report.replay.as_secs_f64(),
                    report.events as f64 / secs,
                    report.elapsed.as_secs_f64()
                );
            }
            Err(e) => {
                pb.abandon();
                outcome = Err(CliError::Failed(format!("{}: {e}", p.name())));
                break;
            }
        }
    }
    interrupt.abort();
    outcome
}

async fn catch_up(pool: &till_domain::db::PgPool, url: &str) -> Result<(), CliError> {
    let total = {
        let reads = ReadModels::new(
            pool.clone(),
            ReadCache::new(CacheSettings::default()),
            Arc::new(Progress::new()),
        );
        reads
            .projection_status()
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?
            .iter()
            .map(|s| s.lag_events)
            .sum::<i64>()
    };
    let pb = indicatif::ProgressBar::new(total.max(0) as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>10} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix("projecting");
    let projector = Projector::new(
        pool.clone(),
        url.to_owned(),
        ReadCache::new(CacheSettings::default()),
        Arc::new(Progress::new()),
        ProjectorSettings {
            batch_size: 2000,
            ..ProjectorSettings::default()
        },
    );
    // Projections are independent: catch them up side by side.
    let runs = till_read_models::Projection::ALL.map(|p| {
        let projector = projector.clone();
        let pb = pb.clone();
        async move {
            loop {
                let out = projector.run_batch(p).await?;
                pb.inc(out.applied as u64);
                if out.applied == 0 {
                    return Ok::<_, till_read_models::ReadError>(());
                }
            }
        }
    });
    for result in futures_util::future::join_all(runs).await {
        result.map_err(|e| CliError::Failed(e.to_string()))?;
    }
    projector
        .catch_up_all()
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    pb.finish();
    Ok(())
}

async fn worker(
    db: DbConfig,
    jobs: crate::config::JobsConfig,
    tuning: &crate::config::ProjectorTuning,
    admin_listen: std::net::SocketAddr,
    ready_max_lag_s: u64,
) -> Result<(), CliError> {
    let database = Database::resolve(&db, Mode::Production).await?;
    let pool = till_domain::db::pool(&database.url, &db.pool_settings());
    let cache = ReadCache::new(CacheSettings::default());
    let progress = Arc::new(Progress::new());
    let projector = Projector::new(
        pool.clone(),
        database.url.clone(),
        cache.clone(),
        progress.clone(),
        tuning.settings(),
    );
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
                reads: ReadModels::new(pool.clone(), cache.clone(), progress),
                order_batches: None,
            },
            shutting_down: shutting_down.clone(),
            max_lag: (ready_max_lag_s > 0).then(|| Duration::from_secs(ready_max_lag_s)),
        }),
    )
    .map_err(|e| CliError::Failed(format!("admin port {admin_listen}: {e}")))?;
    let admin_handle = admin.handle();
    let admin_task = tokio::spawn(admin);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    // One LISTEN connection for the process's followers (projector, jobs, fan-out).
    let notifications = till_domain::db::listen::Listener::new(database.url.clone());
    let mut tasks = vec![projector.spawn_on(&notifications, stop_rx.clone())];
    // One set of commands for the process: each holds the connection that wakes the
    // projectors after its commits.
    let commands = till_domain::commands::Commands::new(pool.clone());
    commands.wake_locally(&notifications);
    tasks.push(tokio::spawn(crate::app::housekeeping(
        commands.clone(),
        crate::app::HOUSEKEEPING_CHUNK,
        stop_rx.clone(),
    )));
    if jobs.jobs {
        let provider = jobs.payment_provider_url.clone();
        tasks.extend(
            crate::jobs::start(commands, &notifications, &jobs, provider, stop_rx.clone())
                .map_err(CliError::Failed)?,
        );
    }
    // The worker's cache only takes invalidations, but the projector's batches leave
    // free heap behind: the same tick hands it back (`heap`).
    tasks.push(tokio::spawn(crate::app::cache_housekeeping(
        cache,
        stop_rx.clone(),
    )));
    tasks.push(notifications.spawn(stop_rx));
    tracing::info!("worker running: projector, jobs and housekeeping");
    crate::app::wait_for_signal().await;
    tracing::info!("worker stopping after the current batch");
    shutting_down.store(true, std::sync::atomic::Ordering::Release);
    let _ = stop.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    admin_handle.stop(true).await;
    let _ = admin_task.await;
    Ok(())
}

async fn healthcheck(url: Option<String>) -> Result<(), CliError> {
    let url = url.unwrap_or_else(|| {
        let addr = std::env::var("TILL_ADMIN_LISTEN")
            .or_else(|_| std::env::var("TILL_LISTEN"))
            .unwrap_or_else(|_| "127.0.0.1:8080".into());
        let port = addr.rsplit(':').next().unwrap_or("8080").to_owned();
        format!("http://127.0.0.1:{port}/healthz")
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    match client.get(&url).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(CliError::Failed(format!("{url} answered {}", r.status()))),
        Err(e) => Err(CliError::Failed(format!("{url}: {e}"))),
    }
}

async fn serve(cfg: ServeConfig) -> Result<(), CliError> {
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
            if let Ok(Some((id, role))) = till_domain::lookups::account_by_email(pool, email).await
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

async fn create_admin(
    db: &DbConfig,
    email: &str,
    name: &str,
    password: Option<Secret>,
    password_file: Option<std::path::PathBuf>,
) -> Result<(), CliError> {
    use till_domain::commands::{CommandContext, NewCustomer};
    use till_domain::passwords::{self, Password};
    use till_domain::types::{Email, Name};

    let fail = |e: till_domain::DomainError| CliError::Failed(e.to_string());
    let email = Email::parse(email).map_err(fail)?;
    let name = Name::parse("name", name).map_err(fail)?;
    let given = Secret::resolve(password.as_ref(), password_file.as_deref(), "password")
        .map_err(CliError::Failed)?;
    let generated = given.is_none();
    let plain = match given {
        Some(p) => p.expose().to_owned(),
        None => {
            use base64::Engine as _;
            use rand::RngCore;
            let mut raw = [0u8; 18];
            rand::thread_rng().fill_bytes(&mut raw);
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        }
    };
    let password = Password::new_for(&plain, &email).map_err(fail)?;
    let hash = passwords::hash(&password).await.map_err(fail)?;
    let database = Database::resolve(db, Mode::Dev).await?;
    till_domain::db::migrate(&database.url)
        .await
        .map_err(fail)?;
    let pool = till_domain::db::pool(&database.url, &db.pool_settings());
    let commands = till_domain::commands::Commands::new(pool);
    let created = commands
        .create_customer(
            &CommandContext::system("admin-cli"),
            NewCustomer {
                email: email.clone(),
                name,
                role: Role::Admin,
                password_hash: Some(hash),
            },
        )
        .await
        .map_err(|e| match e {
            till_domain::DomainError::Conflict(_) => CliError::Failed(format!(
                "{} is already registered; an ADMIN can promote it with the grantRole mutation",
                email.as_str()
            )),
            other => fail(other),
        })?;
    println!("created ADMIN {} ({})", email.as_str(), created.value);
    if generated {
        println!("password (shown once): {plain}");
    }
    Ok(())
}
