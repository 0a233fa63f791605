//! The command line: `till [serve]`, `worker`... (see `till --help`). This file holds
//! the commands and their flags; each subcommand runs in its own file.

mod admin;
mod healthcheck;
mod migrate;
mod projections;
mod schema;
mod seed;
mod serve;
mod token;
mod worker;

use clap::{Parser, Subcommand, ValueEnum};
use thiserror::Error;
use till_domain::types::Role;

use crate::app::StartError;
use crate::config::{DbConfig, ServeConfig};
use crate::secret::Secret;
use crate::seed::SeedSizes;

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
        Command::Serve(cfg) => serve::run(*cfg).await,
        Command::Worker {
            db,
            jobs,
            projector,
            admin_listen,
            ready_max_lag_s,
        } => worker::run(db, jobs, &projector, admin_listen, ready_max_lag_s).await,
        Command::Healthcheck { url } => healthcheck::run(url).await,
        Command::Migrate { db } => migrate::run(db).await,
        Command::Seed {
            db,
            categories,
            products,
            customers,
            orders,
            currency,
            no_catch_up,
        } => {
            let sizes = SeedSizes {
                categories: categories.max(1),
                products,
                customers,
                orders,
            };
            seed::run(db, sizes, &currency, no_catch_up).await
        }
        Command::Schema { federation } => {
            schema::run(federation);
            Ok(())
        }
        Command::Token {
            role,
            sub,
            ttl_minutes,
            jwt_secret,
        } => token::run(role, sub, ttl_minutes, jwt_secret),
        Command::Admin {
            action:
                AdminAction::Create {
                    db,
                    email,
                    name,
                    password,
                    password_file,
                },
        } => admin::create(&db, &email, &name, password, password_file).await,
        Command::Projections {
            db,
            action,
            projections,
            batch_size,
        } => projections::run(db, action, &projections, batch_size).await,
    }
}
