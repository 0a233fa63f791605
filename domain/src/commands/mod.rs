//! The command layer: each command validates its (already parsed) input against the
//! current state, writes the normalized tables and appends its events in one
//! transaction. Transient conflicts (deadlock, serialization failure) are retried a few
//! times with jittered backoff.

mod accounts;
mod catalog;
mod customers;
mod inventory;
mod order_batches;
mod order_placing;
mod order_transitions;
mod payments;

use std::future::Future;
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use rand::Rng;
use serde::Serialize;
use tracing::Instrument;
use uuid::Uuid;

pub use accounts::{RefreshToken, Registration, Session};
pub use catalog::{NewCategory, NewProduct, ProductPatch};
pub use customers::NewCustomer;
pub use inventory::StockOutcome;
pub use order_batches::{BatchStats, OrderBatching};
pub use order_placing::{OrderLineInput, PlacedOrder};
pub use payments::{
    PaymentStatus, PaymentToCapture, Refund, Settlement, PAYMENTS_QUEUE, REFUNDS_QUEUE,
    REFUND_MAX_ATTEMPTS,
};

use crate::db::transactions::{self, Repeatable};
use crate::db::{PgPool, PooledConn};
use crate::error::DomainError;
use crate::event_log::{self, EventMeta, LogPoint};
use crate::events::DomainEvent;
use crate::idempotency::{self, IdempotencyClaim};
use crate::types::{CustomerId, Role};
use crate::wakeups::{self, Announcer};

/// Who is issuing a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A signed-in account.
    User {
        /// The account.
        id: CustomerId,
        /// Its role.
        role: Role,
    },
    /// The system itself (seeding, scheduled jobs).
    System(&'static str),
}

/// Per-request context of a command.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// Who.
    pub actor: Actor,
    /// Correlates every event this request appends.
    pub correlation_id: Uuid,
    /// The request's idempotency key, claimed in the command's own transaction.
    pub idempotency: Option<IdempotencyClaim>,
}

impl CommandContext {
    /// Context for a signed-in user.
    pub fn user(id: CustomerId, role: Role) -> Self {
        Self {
            actor: Actor::User { id, role },
            correlation_id: Uuid::now_v7(),
            idempotency: None,
        }
    }

    /// Context for the system itself.
    pub fn system(what: &'static str) -> Self {
        Self {
            actor: Actor::System(what),
            correlation_id: Uuid::now_v7(),
            idempotency: None,
        }
    }

    fn meta(&self) -> EventMeta {
        let actor = match &self.actor {
            Actor::User { id, role } => format!("{}:{id}", role.as_str().to_ascii_lowercase()),
            Actor::System(what) => format!("system:{what}"),
        };
        EventMeta {
            actor,
            correlation_id: self.correlation_id,
        }
    }

    fn is_staff(&self) -> bool {
        match &self.actor {
            Actor::User { role, .. } => role.is_staff(),
            Actor::System(_) => true,
        }
    }

    /// Back-office commands: STAFF, ADMIN or the system.
    fn require_staff(&self) -> Result<(), DomainError> {
        if self.is_staff() {
            Ok(())
        } else {
            Err(DomainError::Forbidden(
                "this needs a STAFF or ADMIN role".into(),
            ))
        }
    }

    /// Account administration: ADMIN or the system.
    fn require_admin(&self) -> Result<(), DomainError> {
        match &self.actor {
            Actor::User {
                role: Role::Admin, ..
            }
            | Actor::System(_) => Ok(()),
            Actor::User { .. } => Err(DomainError::Forbidden("this needs the ADMIN role".into())),
        }
    }

    /// The customer acting, when it is a signed-in user.
    fn user_id(&self) -> Option<CustomerId> {
        match &self.actor {
            Actor::User { id, .. } => Some(*id),
            Actor::System(_) => None,
        }
    }
}

/// What a command returns: its result and the log point of its last event, from which
/// clients get a consistency token.
#[derive(Debug, Clone)]
pub struct Outcome<T> {
    /// The command's result.
    pub value: T,
    /// Where its events landed in the log.
    pub at: LogPoint,
}

/// Entry point of the write side; cheap to clone.
#[derive(Clone)]
pub struct Commands {
    pool: PgPool,
    max_attempts: u32,
    announcer: Announcer,
    /// Where `placeOrder` commands coalesce, unless batching is off.
    batcher: Option<std::sync::Arc<order_batches::Batcher>>,
}

impl Commands {
    /// Commands over a pool.
    pub fn new(pool: PgPool) -> Self {
        Self {
            announcer: Announcer::new(pool.clone()),
            pool,
            max_attempts: 4,
            batcher: None,
        }
        .with_order_batching(OrderBatching::default())
    }

    /// These commands with `placeOrder` coalescing as `batching` says (see
    /// [`OrderBatching`]).
    pub fn with_order_batching(mut self, batching: OrderBatching) -> Self {
        self.batcher = batching
            .enabled
            .then(|| std::sync::Arc::new(order_batches::Batcher::new(batching)));
        self
    }

    /// How `placeOrder` commands coalesce, and what their batches did so far (`None`
    /// when batching is off).
    pub fn order_batching(&self) -> Option<(OrderBatching, std::sync::Arc<BatchStats>)> {
        self.batcher.as_deref().map(|b| (b.settings(), b.stats()))
    }

    /// Wakes `listener`'s followers (this process's projector and job workers) at once
    /// after every commit of these commands, besides the NOTIFY for other processes.
    pub fn wake_locally(&self, listener: &crate::db::listen::Listener) {
        self.announcer.wake_locally(listener);
    }

    /// The pool commands use.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `attempt` with a pooled connection, retrying transient failures.
    async fn run<T, F, Fut>(&self, mut attempt: F) -> Result<T, DomainError>
    where
        F: FnMut(PooledConn<'static>) -> Fut,
        Fut: Future<Output = Result<T, DomainError>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            // On an HTTP worker, its own shard (`db::shard`), else the commands' pool.
            let pool = crate::db::shard::current().unwrap_or_else(|| self.pool.clone());
            let conn = pool
                .get_owned()
                .instrument(tracing::info_span!("db.acquire"))
                .await?;
            let (result, wakes) = wakeups::track(
                attempt(conn).instrument(tracing::info_span!("db.transaction", attempt = tries)),
            )
            .await;
            if result.is_ok() {
                // Committed: the projectors may read the events, workers claim the jobs.
                self.announcer.wake(wakes);
            }
            match result {
                Err(e) if e.is_retryable() && tries < self.max_attempts => {
                    let base = 10u64 << tries;
                    let wait = rand::thread_rng().gen_range(0..=base);
                    tracing::debug!(error = %e, tries, wait_ms = wait, "retrying command");
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                other => return other,
            }
        }
    }
}

/// What a command decides inside its transaction: the value it answers with and the
/// events it appends (in that order). See [`Commands::execute`].
pub(crate) type Decision<T> = (T, Vec<DomainEvent>);

/// The body of a command: checks the current state and writes the tables on the
/// transaction's connection, then returns its [`Decision`]. Called again when the
/// transaction is retried, so it takes its input by reference.
pub(crate) trait Decide<T>:
    for<'r> AsyncFn(&'r mut AsyncPgConnection) -> Result<Decision<T>, DomainError>
    + for<'r> Repeatable<&'r mut AsyncPgConnection, Result<Decision<T>, DomainError>, Fut: Send>
    + Send
    + Sync
{
}

impl<F, T> Decide<T> for F where
    F: for<'r> AsyncFn(&'r mut AsyncPgConnection) -> Result<Decision<T>, DomainError>
        + for<'r> Repeatable<&'r mut AsyncPgConnection, Result<Decision<T>, DomainError>, Fut: Send>
        + Send
        + Sync
{
}

impl Commands {
    /// Runs a command as every command runs (in the manner of cqrs-es's command
    /// handlers): one transaction on generic plans, retried on transient conflicts, that
    /// claims the request's idempotency key, runs `decide`, appends the events it
    /// decided and records the outcome under the key. A decision without events is an
    /// error, and nothing it wrote is kept.
    async fn execute<T, F>(
        &self,
        ctx: &CommandContext,
        decide: F,
    ) -> Result<Outcome<T>, DomainError>
    where
        T: Serialize + Send,
        F: Decide<T>,
    {
        self.transact(ctx, true, decide)
            .await?
            .ok_or_else(|| DomainError::Internal("a command appended no events".into()))
    }

    /// [`Commands::execute`] for a follow-up that may find nothing left to do: a
    /// decision without events appends nothing, records nothing and answers `None`.
    async fn execute_if_any<F>(
        &self,
        ctx: &CommandContext,
        decide: F,
    ) -> Result<Option<LogPoint>, DomainError>
    where
        F: Decide<()>,
    {
        Ok(self.transact(ctx, false, decide).await?.map(|out| out.at))
    }

    async fn transact<T, F>(
        &self,
        ctx: &CommandContext,
        events_required: bool,
        decide: F,
    ) -> Result<Option<Outcome<T>>, DomainError>
    where
        T: Serialize + Send,
        F: Decide<T>,
    {
        let meta = ctx.meta();
        let (meta, decide) = (&meta, &decide);
        self.run(|mut conn| async move {
            transactions::transaction(&mut conn, async |conn| {
                begin(conn, ctx).await?;
                let (value, events) = decide(conn).await?;
                if events.is_empty() && !events_required {
                    return Ok(None);
                }
                let at = event_log::append(conn, meta, &events).await?;
                finish(conn, ctx, Outcome { value, at }).await.map(Some)
            })
            .await
        })
        .await
    }
}

/// First statement of every command transaction: claim the idempotency key, if any
/// (a duplicate waits here until the first transaction ends). Takes the connection
/// shared, so it can go out with the transaction's BEGIN ([`transactions::begin_with`]).
async fn begin(conn: &AsyncPgConnection, ctx: &CommandContext) -> Result<(), DomainError> {
    match &ctx.idempotency {
        Some(claim) => idempotency::claim(conn, claim).await,
        None => Ok(()),
    }
}

/// Last statement of every command transaction: record the outcome under the key.
/// Sends that one statement and nothing else ([`transactions::commit_after`] may follow it).
async fn finish<T: Serialize>(
    conn: &AsyncPgConnection,
    ctx: &CommandContext,
    out: Outcome<T>,
) -> Result<Outcome<T>, DomainError> {
    if let Some(claim) = &ctx.idempotency {
        let value = serde_json::to_value(&out.value)
            .map_err(|e| DomainError::Internal(format!("outcome does not serialize: {e}")))?;
        idempotency::record_outcome(
            conn,
            claim,
            serde_json::json!({ "at": out.at.to_token(), "value": value }),
        )
        .await?;
    }
    Ok(out)
}

/// Maps a unique violation of `constraint` to `conflict`, anything else through `From`.
fn on_unique(
    err: diesel::result::Error,
    constraint: &str,
    conflict: impl FnOnce() -> DomainError,
) -> DomainError {
    use diesel::result::{DatabaseErrorKind, Error};
    match &err {
        Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some(constraint) =>
        {
            conflict()
        }
        _ => err.into(),
    }
}
