//! What every HTTP worker shares: built once at start-up (`app::Application::build`)
//! and handed to the handlers as actix app data.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use till_domain::db::PgPool;

use crate::auth::{Authenticator, TokenService};
use crate::graphql::execution::rate_limit::CostLimiter;
use crate::graphql::execution::Engine;
use crate::graphql::ApiState;
use crate::http::health::AdminState;
use crate::secret::Secret;

/// Shared by every HTTP worker.
pub struct AppData {
    /// Runs GraphQL operations (schemas, limits, rate limiting, documents).
    pub graphql: Engine,
    /// Resolver state.
    pub api: Arc<ApiState>,
    /// Mints Till's own tokens (tests and the CLI use it).
    pub tokens: TokenService,
    /// Verifies bearer tokens (own and external).
    pub auth: Authenticator,
    /// Open WebSocket connections per client network and account, with their caps.
    pub connections: Arc<crate::http::clients::Connections>,
    /// GET needs a preflight-forcing header.
    pub csrf_prevention: bool,
    /// Proxies whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Secret of inbound payment webhooks, when configured.
    pub payment_webhook_secret: Option<Secret>,
    /// Largest age of a webhook signature, seconds.
    pub payment_webhook_tolerance_s: i64,
    /// Per-address bucket of `POST /webhooks/payments` (None: no limit).
    pub webhook_rate: Option<Arc<CostLimiter>>,
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
