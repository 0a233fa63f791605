//! The GraphQL schema: thin resolvers that parse input into domain types, call a
//! command or a read query, and map the result.

mod accounts;
pub mod codes;
pub mod error;
pub mod execution;
mod federation;
pub mod ids;
mod inputs;
mod jobs;
pub mod loaders;
mod mutation;
mod payloads;
mod projections;
mod query;
mod subscription;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{
    Context, Data, Executor, Request, Response, SDLExportOptions, Schema, SchemaBuilder,
    ValidationMode,
};
use futures_util::stream::BoxStream;
use till_domain::commands::{CommandContext, Commands};
use till_domain::event_log::LogPoint;
use till_domain::idempotency::IdempotencyClaim;
use till_domain::types::Currency;
use till_read_models::ReadModels;
use uuid::Uuid;

pub use execution::{Checks, Limits};
pub use mutation::Mutation;
pub use query::Query;
pub use subscription::Subscription;

use crate::auth::{Principal, TokenService};

/// The plain schema: what non-federated clients see (`schema.graphql`).
pub type PlainSchema = Schema<Query, Mutation, Subscription>;

/// The schema with Apollo Federation's `_service` and `_entities` (`TILL_FEDERATION`).
pub type FederatedSchema = Schema<federation::FederatedQuery, Mutation, Subscription>;

/// The schema a process serves: plain, or the same with federation's fields. One type
/// for the HTTP and WebSocket layers, which run it through [`Executor`].
#[derive(Clone)]
pub enum TillSchema {
    /// Without federation.
    Plain(PlainSchema),
    /// With `_service` and `_entities`.
    Federated(FederatedSchema),
}

impl TillSchema {
    /// Runs one request.
    pub async fn execute(&self, request: impl Into<Request>) -> Response {
        Executor::execute(self, request.into()).await
    }

    /// The SDL as served at `/schema.graphql` (federation's fields included when on).
    pub fn sdl(&self) -> String {
        match self {
            Self::Plain(s) => s.sdl(),
            Self::Federated(s) => s.sdl(),
        }
    }

    /// The SDL with these options.
    pub fn sdl_with(&self, options: SDLExportOptions) -> String {
        match self {
            Self::Plain(s) => s.sdl_with_options(options),
            Self::Federated(s) => s.sdl_with_options(options),
        }
    }
}

impl Executor for TillSchema {
    async fn execute(&self, request: Request) -> Response {
        match self {
            Self::Plain(s) => s.execute(request).await,
            Self::Federated(s) => s.execute(request).await,
        }
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        match self {
            Self::Plain(s) => Executor::execute_stream(s, request, session_data),
            Self::Federated(s) => Executor::execute_stream(s, request, session_data),
        }
    }
}

/// What resolvers share: built once at start-up.
pub struct ApiState {
    /// The write side.
    pub commands: Commands,
    /// The read side.
    pub reads: ReadModels,
    /// Store currency.
    pub currency: Currency,
    /// Bound on waiting for the read models.
    pub consistency_wait: Duration,
    /// Largest page.
    pub max_page_size: i64,
    /// Mints access tokens on sign-in.
    pub tokens: TokenService,
    /// Lifetime of access tokens.
    pub access_token_ttl: Duration,
    /// Lifetime of refresh tokens.
    pub refresh_token_ttl: Duration,
    /// Attempts of a payment capture job.
    pub payment_max_attempts: i32,
    /// What webhook subscriber URLs may be (https in production, public addresses).
    pub webhook_urls: till_domain::webhooks::UrlPolicy,
    /// Projection rebuilds started from the back office.
    pub rebuilds: crate::rebuilds::Rebuilds,
    /// When this process's commands committed (for the commit -> visible metric).
    pub commits: Arc<crate::local_commits::CommitTimes>,
    /// Sign-in attempts per client network and per email.
    pub sign_in: Arc<crate::auth::sign_in::SignInLimiter>,
}

/// Per-request facts resolvers need.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Who is calling.
    pub principal: Principal,
    /// Correlates logs and events of this request.
    pub request_id: Uuid,
    /// The request's idempotency key, when it carries one.
    pub idempotency: Option<IdempotencyClaim>,
    /// The client's address (rate-limit key of anonymous callers).
    pub client_ip: Option<std::net::IpAddr>,
    /// The read models of the request's consistency token: they read only from a
    /// source that has replayed it (None: the process's, any source).
    pub reads: Option<ReadModels>,
}

/// Present when a stored idempotent result is being rendered again: mutations return
/// the recorded outcome instead of running their command.
#[derive(Debug, Clone)]
pub struct Replay(pub serde_json::Value);

/// What the schemas of one process share: the resolver state and the product loader.
#[derive(Clone)]
pub struct Shared {
    state: Arc<ApiState>,
    products: Arc<ProductLoader>,
}

/// The loader of products that are not in the read-model cache.
pub type ProductLoader = async_graphql::dataloader::DataLoader<loaders::ProductLoader>;

impl Shared {
    /// One loader per process: it keeps no cache of its own (products come from the
    /// read-model cache), so sharing it is safe, costs no per-request set-up, and
    /// concurrent requests' misses, on whichever schema, are gathered into the same
    /// query.
    pub fn new(state: Arc<ApiState>) -> Self {
        let products = async_graphql::dataloader::DataLoader::new(
            loaders::ProductLoader(state.reads.clone()),
            tokio::spawn,
        );
        Self {
            state,
            products: Arc::new(products),
        }
    }
}

/// Builds the plain schema around shared state.
pub fn build(state: Option<Arc<ApiState>>, limits: Limits) -> TillSchema {
    build_checking(state.map(Shared::new).as_ref(), limits, Checks::AllRules)
}

/// Builds the plain schema with the given checks.
pub fn build_checking(shared: Option<&Shared>, limits: Limits, checks: Checks) -> TillSchema {
    build_serving(shared, limits, checks, false)
}

/// Builds the schema with the given checks, federated or not.
pub fn build_serving(
    shared: Option<&Shared>,
    limits: Limits,
    checks: Checks,
    federation: bool,
) -> TillSchema {
    if federation {
        let root = Schema::build(
            federation::FederatedQuery::default(),
            Mutation::default(),
            Subscription,
        );
        TillSchema::Federated(configure(root, shared, limits, checks).finish())
    } else {
        let root = Schema::build(Query::default(), Mutation::default(), Subscription);
        TillSchema::Plain(configure(root, shared, limits, checks).finish())
    }
}

/// The `DateTime` scalar, for clients (async-graphql's own description names Rust types).
const DATE_TIME: &str = "An instant: an RFC 3339 string in UTC (offset `+00:00`), with \
    fractional seconds when it has them (up to microseconds), e.g. \
    `2026-12-06T14:03:27.512345+00:00`. As input, any RFC 3339 offset is accepted.";

/// Limits, checks, the guard and the shared state, whatever the query root.
fn configure<Q>(
    builder: SchemaBuilder<Q, Mutation, Subscription>,
    shared: Option<&Shared>,
    limits: Limits,
    checks: Checks,
) -> SchemaBuilder<Q, Mutation, Subscription> {
    let mode = match checks {
        Checks::AllRules => ValidationMode::Strict,
        Checks::CostAndDepth | Checks::CostAndDepthUnguarded => ValidationMode::Fast,
    };
    let mut builder = builder
        // Referenced by no field: in the SDL so that codegen types `extensions.code`.
        .register_output_type::<error::Code>()
        .override_output_type_description::<chrono::DateTime<chrono::Utc>>(DATE_TIME)
        .validation_mode(mode)
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity);
    if checks != Checks::CostAndDepthUnguarded {
        builder = builder.extension(execution::guard::Guard::new(
            execution::limits::DocumentLimits {
                max_aliases: limits.max_aliases,
                max_root_fields: limits.max_root_fields,
                max_complexity: limits.max_complexity,
            },
            limits.rate,
            limits.query_timeout,
        ));
    }
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    if let Some(shared) = shared {
        builder = builder
            .data(shared.state.clone())
            .data(shared.products.clone());
    }
    builder
}

/// The SDL with types, fields, arguments and enum values sorted (the checked-in
/// `schema.graphql`).
pub fn sdl() -> String {
    build(None, open_limits()).sdl_with(sorted())
}

/// The subgraph's SDL as a gateway composes it (what `_service { sdl }` answers, sorted):
/// Federation v2's `@link` and `@key` directives, without `_service` and `_entities`.
pub fn federation_sdl() -> String {
    build_serving(None, open_limits(), Checks::AllRules, true)
        .sdl_with(sorted().federation().compose_directive())
}

fn sorted() -> SDLExportOptions {
    SDLExportOptions::new()
        .sorted_fields()
        .sorted_arguments()
        .sorted_enum_items()
}

/// No limits beyond a generous depth, introspection on (the SDL export and tests).
pub(crate) fn open_limits() -> Limits {
    Limits {
        max_depth: 64,
        max_complexity: usize::MAX,
        max_aliases: usize::MAX,
        max_root_fields: usize::MAX,
        introspection: true,
        rate: None,
        query_timeout: None,
    }
}

pub(crate) fn state<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Arc<ApiState>> {
    ctx.data::<Arc<ApiState>>()
}

/// The read models this request reads through: its consistency token's when it sent
/// one ([`RequestInfo::reads`]), else the process's.
pub(crate) fn reads<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a ReadModels> {
    match ctx.data_opt::<RequestInfo>().and_then(|i| i.reads.as_ref()) {
        Some(reads) => Ok(reads),
        None => Ok(&state(ctx)?.reads),
    }
}

/// Waits (bounded) until the read models include `at`, for payload entities; they
/// are read from a replica only if one has already replayed it (else the primary).
pub(crate) async fn caught_up(
    ctx: &Context<'_>,
    at: LogPoint,
) -> async_graphql::Result<ReadModels> {
    let st = state(ctx)?;
    reads(ctx)?
        .following(at, st.consistency_wait)
        .await
        .map_err(error::read)
}

pub(crate) fn principal(ctx: &Context<'_>) -> async_graphql::Result<Principal> {
    Ok(ctx
        .data_opt::<RequestInfo>()
        .map(|r| r.principal)
        .unwrap_or(Principal::Anonymous))
}

/// The command context of a signed-in caller (UNAUTHENTICATED otherwise).
pub(crate) fn command_context(ctx: &Context<'_>) -> async_graphql::Result<CommandContext> {
    let Some(info) = ctx.data_opt::<RequestInfo>() else {
        return Err(error::unauthenticated());
    };
    let Principal::User { id, role } = info.principal else {
        return Err(error::unauthenticated());
    };
    let mut c = CommandContext::user(id, role);
    c.correlation_id = info.request_id;
    if let Some(claim) = &info.idempotency {
        if !claim.take() {
            return Err(error::coded(
                error::Code::BadUserInput,
                "an Idempotency-Key covers one mutation; send one mutation per request",
            ));
        }
        c.idempotency = Some(claim.clone());
    }
    Ok(c)
}

/// Guard for back-office fields.
pub struct StaffGuard;

impl async_graphql::Guard for StaffGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        match principal(ctx)? {
            Principal::Anonymous => Err(error::unauthenticated()),
            p if p.is_staff() => Ok(()),
            _ => Err(error::forbidden()),
        }
    }
}

/// Guard for account administration.
pub struct AdminGuard;

impl async_graphql::Guard for AdminGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        match principal(ctx)? {
            Principal::Anonymous => Err(error::unauthenticated()),
            p if p.is_admin() => Ok(()),
            _ => Err(error::coded(
                error::Code::Forbidden,
                "this needs the ADMIN role",
            )),
        }
    }
}

/// Guard for fields that need any signed-in account.
pub struct SignedInGuard;

impl async_graphql::Guard for SignedInGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        match principal(ctx)? {
            Principal::Anonymous => Err(error::unauthenticated()),
            _ => Ok(()),
        }
    }
}
