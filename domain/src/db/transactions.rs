//! Transactions whose statements run on generic plans.
//!
//! PostgreSQL plans a kept (prepared) statement with its actual parameters ("custom
//! plan") for its first five runs, and afterwards keeps its generic plan only when that
//! plan's estimated cost is no higher than the custom plans' average. For an array
//! parameter (`p.id = ANY($2)`, `unnest($1::uuid[])`) the generic estimate assumes far
//! more elements than an order's two lines, so the generic plan never wins and the
//! statement is planned again on every run. Under checkout load that was the case for
//! both `placeOrder` statements and the projector's event read: planning took more time
//! than executing (4.2 s of planning per 10 s, about a third of PostgreSQL's CPU).
//!
//! [`transaction`] opens the transaction with `SET LOCAL plan_cache_mode =
//! force_generic_plan` in the same round trip as `BEGIN`, so each statement is planned
//! once per connection. Commands and the projector use it: their statements are key
//! lookups, keyed writes and keyset reads, whose generic plans are the custom plans
//! (`domain/tests/prepared.rs` checks the event log reads under generic plans). The
//! setting ends with the transaction; statements with optional filters (`$1 IS NULL OR
//! ...`, back-office listings) never run under it.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::Poll;

use diesel::connection::{Instrumentation, InstrumentationEvent, TransactionDepthChange};
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncPgConnection, SimpleAsyncConnection,
    TransactionManager,
};

/// How [`transaction`] begins.
pub const BEGIN: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan";

/// How [`derived_transaction`] begins.
pub const BEGIN_DERIVED: &str =
    "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL synchronous_commit = off";

/// An async closure whose future can be named, so that it can be required to be `Send`
/// (the body of a [`transaction`]).
pub trait Body<T, R>: AsyncFnOnce(T) -> R + FnOnce(T) -> <Self as Body<T, R>>::Fut {
    /// The future the closure returns.
    type Fut: Future<Output = R>;
}

impl<F, T, Fut, R> Body<T, R> for F
where
    F: AsyncFnOnce(T) -> R + FnOnce(T) -> Fut,
    Fut: Future<Output = R>,
{
    type Fut = Fut;
}

/// An async closure that can be called again, whose future can be named (so that it
/// can be required to be `Send`): the body of a command, or of a read that may run again
/// on another source.
pub trait Repeatable<T, R>: AsyncFn(T) -> R + Fn(T) -> <Self as Repeatable<T, R>>::Fut {
    /// The future the closure returns.
    type Fut: Future<Output = R>;
}

impl<F, T, Fut, R> Repeatable<T, R> for F
where
    F: AsyncFn(T) -> R + Fn(T) -> Fut,
    Fut: Future<Output = R>,
{
    type Fut = Fut;
}

/// The body of a transaction: an async closure over the connection whose future is
/// `Send`.
pub trait TxBody<R, E>:
    for<'r> AsyncFnOnce(&'r mut AsyncPgConnection) -> Result<R, E>
    + for<'r> Body<&'r mut AsyncPgConnection, Result<R, E>, Fut: Send>
    + Send
{
}

impl<F, R, E> TxBody<R, E> for F where
    F: for<'r> AsyncFnOnce(&'r mut AsyncPgConnection) -> Result<R, E>
        + for<'r> Body<&'r mut AsyncPgConnection, Result<R, E>, Fut: Send>
        + Send
{
}

/// The first statements of a [`begin_with`] transaction: an async closure over the
/// connection taken shared (so they can be sent behind BEGIN), whose future is `Send`.
pub trait FirstBody<R, E>:
    for<'r> AsyncFnOnce(&'r AsyncPgConnection) -> Result<R, E>
    + for<'r> Body<&'r AsyncPgConnection, Result<R, E>, Fut: Send>
    + Send
{
}

impl<F, R, E> FirstBody<R, E> for F where
    F: for<'r> AsyncFnOnce(&'r AsyncPgConnection) -> Result<R, E>
        + for<'r> Body<&'r AsyncPgConnection, Result<R, E>, Fut: Send>
        + Send
{
}

/// Runs `body` in a transaction on generic plans: committed when it returns `Ok`,
/// rolled back when it returns `Err` (as `AsyncConnection::transaction` does).
pub async fn transaction<R: Send, E, F>(conn: &mut AsyncPgConnection, body: F) -> Result<R, E>
where
    F: TxBody<R, E>,
    E: From<diesel::result::Error> + Send,
{
    run(conn, BEGIN, body).await
}

/// [`transaction`] for writes that the event log can always derive again (projections
/// with their checkpoints): its commit does not wait for the flush to disk. A crash of
/// the machine may lose the last fraction of a second of them, checkpoint included,
/// and the projector then applies those events again; nothing else is affected. The
/// projector's commits then neither wait for the disk themselves nor hold the NOTIFY
/// lock (see [`crate::wakeups`]) through a flush.
pub async fn derived_transaction<R: Send, E, F>(
    conn: &mut AsyncPgConnection,
    body: F,
) -> Result<R, E>
where
    F: TxBody<R, E>,
    E: From<diesel::result::Error> + Send,
{
    run(conn, BEGIN_DERIVED, body).await
}

/// [`derived_transaction`] whose first round trip also runs `first`: simple-query SQL of
/// fixed text (advisory locks, say) that the body needs before its own statements.
pub async fn derived_transaction_with<R: Send, E, F>(
    conn: &mut AsyncPgConnection,
    first: &str,
    body: F,
) -> Result<R, E>
where
    F: TxBody<R, E>,
    E: From<diesel::result::Error> + Send,
{
    run(conn, &format!("{BEGIN_DERIVED}; {first}"), body).await
}

async fn run<R: Send, E, F>(conn: &mut AsyncPgConnection, begin: &str, body: F) -> Result<R, E>
where
    F: TxBody<R, E>,
    E: From<diesel::result::Error> + Send,
{
    AnsiTransactionManager::begin_transaction_sql(&mut *conn, begin).await?;
    let result = body(&mut *conn).await;
    end(conn, result).await
}

/// Opens a [`transaction`] and sends `first` (the body's first statements) in the same
/// round trip as its BEGIN, instead of waiting for BEGIN's answer before sending them:
/// one round trip less for a command. BEGIN goes out as a simple query when polled
/// first, so PostgreSQL runs `first`'s statements after it, inside the transaction,
/// whether they are kept prepared or still need their Parse. On an error of either the
/// transaction is rolled back and the error returned; on success the caller goes on with
/// its statements and must close it with [`end`].
///
/// The connection counts as in a transaction from before BEGIN is sent, so a future
/// dropped halfway leaves it looking broken (the pool then discards it), never idle.
pub async fn begin_with<A, E, F>(conn: &mut AsyncPgConnection, first: F) -> Result<A, E>
where
    F: FirstBody<A, E>,
    E: From<diesel::result::Error>,
{
    let state =
        AnsiTransactionManager::transaction_manager_status_mut(&mut *conn).transaction_state()?;
    if state.transaction_depth().is_some() {
        return Err(diesel::result::Error::AlreadyInTransaction.into());
    }
    state.change_transaction_depth(TransactionDepthChange::IncreaseDepth)?;
    let shared: &AsyncPgConnection = conn;
    let mut begin = shared;
    let (began, result) =
        futures_util::future::join(begin.batch_execute(BEGIN), first(shared)).await;
    let result = match began {
        Ok(()) => result,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(value) => Ok(value),
        Err(error) => end(conn, Err(error)).await,
    }
}

/// Closes the transaction a [`begin_with`] opened: commits it when `result` is `Ok`,
/// rolls it back when it is an error (and returns that error).
pub async fn end<R, E>(conn: &mut AsyncPgConnection, result: Result<R, E>) -> Result<R, E>
where
    E: From<diesel::result::Error>,
{
    match result {
        Ok(value) => {
            AnsiTransactionManager::commit_transaction(&mut *conn).await?;
            Ok(value)
        }
        Err(error) => match AnsiTransactionManager::rollback_transaction(&mut *conn).await {
            // A broken manager is discarded by the pool; the body's error says more.
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(error),
            Err(rollback) => Err(rollback.into()),
        },
    }
}

/// Counts what a connection started while it was watched: queries, and statements it
/// had to prepare (send a Parse for) before it could execute them.
#[derive(Default)]
struct Started {
    queries: AtomicU32,
    prepares: AtomicU32,
}

struct Watch(Arc<Started>);

impl Instrumentation for Watch {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { .. } => {
                self.0.queries.fetch_add(1, Ordering::Relaxed);
            }
            InstrumentationEvent::CacheQuery { .. } => {
                self.0.prepares.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// How [`commit_after`]'s statement and the COMMIT went out.
enum Sent<R, E> {
    /// The statement is done (or never sent); the transaction is still open.
    Open(Result<R, E>),
    /// COMMIT went out right behind the statement: the transaction is over.
    Ended(Result<R, E>, diesel::QueryResult<()>),
}

/// Runs `last`, the final statement of a [`begin_with`] transaction, and ends the
/// transaction as [`end`] does, sending COMMIT in the same round trip as the statement
/// instead of after its answer whenever that is safe: one round trip less for a command.
///
/// It is safe when the statement's Execute is already on its way before COMMIT is
/// queued. diesel-async sends a statement it keeps prepared in the first poll of its
/// future; one it must prepare first waits for the Parse's answer before executing,
/// and COMMIT would overtake it (the statement would then run outside the
/// transaction). So `last` is polled once while the connection is watched: COMMIT is
/// pipelined only when exactly one query started and nothing was prepared (the first
/// run of a statement on a connection, or a statement diesel does not cache, takes the
/// round trip as [`end`] would). A failing statement aborts the transaction, and
/// PostgreSQL then answers the pipelined COMMIT with a rollback: nothing of it stays.
///
/// `last` must send one statement, kept prepared (a `.prepared()` raw query or a
/// DSL query), as its first action and nothing after it. It may also return without
/// any statement (then this is [`end`]).
pub async fn commit_after<R, E, F>(conn: &mut AsyncPgConnection, last: F) -> Result<R, E>
where
    F: FirstBody<R, E>,
    E: From<diesel::result::Error>,
{
    let started = Arc::new(Started::default());
    conn.set_instrumentation(Watch(Arc::clone(&started)));
    let sent = {
        let shared: &AsyncPgConnection = conn;
        let mut statement = std::pin::pin!(last(shared));
        let first = std::future::poll_fn(|cx| Poll::Ready(statement.as_mut().poll(cx))).await;
        match first {
            Poll::Ready(result) => Sent::Open(result),
            Poll::Pending
                if started.queries.load(Ordering::Relaxed) != 1
                    || started.prepares.load(Ordering::Relaxed) != 0 =>
            {
                Sent::Open(statement.await)
            }
            Poll::Pending => {
                let mut commit = shared;
                let (result, committed) =
                    futures_util::future::join(statement, commit.batch_execute("COMMIT")).await;
                Sent::Ended(result, committed)
            }
        }
    };
    conn.set_instrumentation(diesel::connection::get_default_instrumentation());
    match sent {
        Sent::Open(result) => end(conn, result).await,
        Sent::Ended(result, committed) => {
            let status = AnsiTransactionManager::transaction_manager_status_mut(&mut *conn);
            match committed {
                // Committed, or rolled back when the statement had failed.
                Ok(()) => {
                    status
                        .transaction_state()?
                        .change_transaction_depth(TransactionDepthChange::DecreaseDepth)?;
                    result
                }
                // Whether the transaction ended is unknown: the pool discards the connection.
                Err(e) => {
                    status.set_in_error();
                    match result {
                        Ok(_) => Err(e.into()),
                        Err(error) => Err(error),
                    }
                }
            }
        }
    }
}
