//! Orders placed together: concurrent `placeOrder` commands of a process coalesce
//! into one transaction, so that a batch of orders for the product everyone wants takes
//! its inventory row's lock once and commits once.
//!
//! One order per transaction cannot go past the hot row's ceiling: each order holds
//! the row's lock from its reservation to its commit (a round trip and a flush), and
//! the next one waits for it. Here callers queue their orders ([`Batcher::submit`]) and
//! a few runner tasks take them from the queue in arrival order, up to
//! [`OrderBatching::max_orders`] at a time. A runner's transaction
//!
//! 1. claims the batch's idempotency keys (one statement, keys in one global order),
//! 2. reads their stored outcomes, the buyers, and the products with their inventory
//!    rows locked in product order, in one round trip (so batches, single orders and the other stock
//!    commands cannot deadlock),
//! 3. checks the orders one after another against the levels as the earlier orders of
//!    the batch leave them ([`check`]): each order is placed whole or fails alone with
//!    the error it would have had on its own (OUT_OF_STOCK with the level it met,
//!    NOT_FOUND, BAD_USER_INPUT, a used idempotency key),
//! 4. writes every order that passed in one statement ([`WRITE_BATCH`]): the stock, the
//!    orders, their lines and history, their events (each order's own, with its actor
//!    and correlation id) and their idempotency outcomes, and commits in the same
//!    round trip.
//!
//! The database still refuses an oversell (the inventory CHECK constraint); the checks
//! are exact because the rows are locked when read. A batch that fails as a whole on a
//! transient conflict runs again; one that fails otherwise, with nothing committed,
//! falls back to placing its orders one by one ([`Commands::place_alone`]), so a
//! failure is each order's own. Orders wait in arrival order, a bounded time
//! ([`OrderBatching::max_wait`]) in a bounded queue ([`OrderBatching::max_queue`]), and
//! are told so when either bound is passed. Several processes each coalesce their own
//! orders; the row lock arbitrates between their batches.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use diesel::sql_types::{Array, BigInt, Int2, Integer, Jsonb, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use super::order_placing::{PlacedOrder, ProductRow};
use super::{CommandContext, Commands, Outcome};
use crate::db::prepared::Reuse;
use crate::db::transactions;
use crate::error::DomainError;
use crate::event_log::{EventColumns, LogPoint};
use crate::events::{DomainEvent, OrderLineFact, StockLevel};
use crate::idempotency::{self, ClaimConflict, IdempotencyClaim};
use crate::types::{CustomerId, Money, OrderId, ProductId, ProductStatus, Quantity};

/// How `placeOrder` commands coalesce (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderBatching {
    /// Coalesce at all; off, each order is a transaction of its own.
    pub enabled: bool,
    /// Most orders in one transaction.
    pub max_orders: usize,
    /// Most transactions of batches a process runs at once.
    pub runners: usize,
    /// Most orders waiting for a batch; more are refused with SERVICE_UNAVAILABLE.
    pub max_queue: usize,
    /// Longest an order waits for its batch to start before it is refused.
    pub max_wait: Duration,
}

impl Default for OrderBatching {
    fn default() -> Self {
        Self {
            enabled: true,
            max_orders: 64,
            runners: 1,
            max_queue: 10_000,
            max_wait: Duration::from_secs(5),
        }
    }
}

impl OrderBatching {
    /// One transaction per order, as before batching.
    pub fn off() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
}

/// What the batches of a process have done, for its metrics.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Transactions of batches committed.
    pub batches: AtomicU64,
    /// Orders that went through them (placed or refused).
    pub orders: AtomicU64,
    /// Orders refused because the queue was full or they waited too long.
    pub refused: AtomicU64,
    /// Batches that failed as a whole and fell back to one transaction per order.
    pub fallbacks: AtomicU64,
    /// Orders waiting for a batch now.
    pub waiting: AtomicU64,
}

/// The answer an order waits for.
type Answer = Result<Outcome<PlacedOrder>, DomainError>;

/// An order waiting for its batch.
pub(super) struct Pending {
    pub(super) ctx: CommandContext,
    pub(super) customer: CustomerId,
    /// Its lines, one per product, in product order.
    pub(super) lines: Vec<(ProductId, Quantity)>,
    pub(super) currency: String,
    since: Instant,
    reply: oneshot::Sender<Answer>,
}

impl Pending {
    fn key(&self) -> Option<(&str, &str)> {
        self.ctx
            .idempotency
            .as_ref()
            .map(|c| (c.principal.as_str(), c.key.as_str()))
    }
}

struct Queue {
    waiting: VecDeque<Pending>,
    runners: usize,
}

/// The queue of a process's orders and its runners.
pub(super) struct Batcher {
    settings: OrderBatching,
    queue: Mutex<Queue>,
    stats: Arc<BatchStats>,
}

impl Batcher {
    pub(super) fn new(settings: OrderBatching) -> Self {
        Self {
            settings: OrderBatching {
                max_orders: settings.max_orders.max(1),
                runners: settings.runners.max(1),
                ..settings
            },
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                runners: 0,
            }),
            stats: Arc::default(),
        }
    }

    pub(super) fn settings(&self) -> OrderBatching {
        self.settings
    }

    pub(super) fn stats(&self) -> Arc<BatchStats> {
        Arc::clone(&self.stats)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an order and waits for its answer; starts a runner (on the caller's
    /// runtime, so it uses the caller's connections) when fewer than the most run.
    pub(super) async fn submit(
        &self,
        commands: &Commands,
        ctx: &CommandContext,
        customer: CustomerId,
        lines: Vec<(ProductId, Quantity)>,
        currency: String,
    ) -> Answer {
        let (reply, answer) = oneshot::channel();
        {
            let mut queue = self.lock();
            if queue.waiting.len() >= self.settings.max_queue {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Err(DomainError::Busy(format!(
                    "{} orders are waiting to be placed; try again in a moment",
                    queue.waiting.len()
                )));
            }
            self.stats
                .waiting
                .store(queue.waiting.len() as u64 + 1, Ordering::Relaxed);
            queue.waiting.push_back(Pending {
                ctx: ctx.clone(),
                customer,
                lines,
                currency,
                since: Instant::now(),
                reply,
            });
            if queue.runners < self.settings.runners {
                queue.runners += 1;
                let commands = commands.clone();
                tokio::spawn(
                    async move { commands.run_batches().await }
                        .instrument(tracing::info_span!("order_batches")),
                );
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(DomainError::Internal(
                "an order's batch ended without an answer".into(),
            ))
        })
    }

    /// The next batch: the longest-waiting orders, up to the most, leaving a second
    /// order of an idempotency key already in the batch at the head of the queue for
    /// the next one. Orders that waited too long are refused; those whose caller is
    /// gone are dropped. `None` (and one runner less) when nothing waits.
    fn next_batch(&self) -> Option<Vec<Pending>> {
        let mut queue = self.lock();
        let mut batch: Vec<Pending> = Vec::new();
        let mut keys: BTreeSet<(String, String)> = BTreeSet::new();
        let mut deferred: Vec<Pending> = Vec::new();
        while batch.len() < self.settings.max_orders {
            let Some(order) = queue.waiting.pop_front() else {
                break;
            };
            if order.reply.is_closed() {
                continue;
            }
            if order.since.elapsed() > self.settings.max_wait {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                let waited = order.since.elapsed();
                let _ = order.reply.send(Err(DomainError::Busy(format!(
                    "the order waited {} ms for its turn; try again in a moment",
                    waited.as_millis()
                ))));
                continue;
            }
            if let Some((principal, key)) = order.key() {
                if !keys.insert((principal.to_owned(), key.to_owned())) {
                    deferred.push(order);
                    continue;
                }
            }
            batch.push(order);
        }
        for order in deferred.into_iter().rev() {
            queue.waiting.push_front(order);
        }
        self.stats
            .waiting
            .store(queue.waiting.len() as u64, Ordering::Relaxed);
        if batch.is_empty() && queue.waiting.is_empty() {
            queue.runners -= 1;
            return None;
        }
        Some(batch)
    }
}

impl Commands {
    /// A runner: places batches until the queue is empty.
    async fn run_batches(&self) {
        let Some(batcher) = self.batcher.as_deref() else {
            return;
        };
        while let Some(batch) = batcher.next_batch() {
            if batch.is_empty() {
                continue;
            }
            let stats = batcher.stats();
            stats
                .orders
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let size = batch.len();
            let answers = async {
                match self.place_batch(&batch).await {
                    Ok(answers) => {
                        stats.batches.fetch_add(1, Ordering::Relaxed);
                        answers
                    }
                    Err(e) if fall_back(&e) => {
                        stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, orders = size, "a batch of orders failed; placing them one by one");
                        let alone = batch.iter().map(|o| {
                            self.place_alone(&o.ctx, o.customer, &o.lines, &o.currency)
                        });
                        futures_util::future::join_all(alone).await
                    }
                    Err(e) => batch.iter().map(|_| Err(for_each_order(&e))).collect(),
                }
            }
            .instrument(tracing::info_span!("order_batch", orders = size))
            .await;
            for (order, answer) in batch.into_iter().zip(answers) {
                let _ = order.reply.send(answer);
            }
        }
    }

    /// One transaction for `batch`: an answer per order, or the error that failed the
    /// transaction as a whole.
    async fn place_batch(&self, batch: &[Pending]) -> Result<Vec<Answer>, DomainError> {
        let products: Vec<Uuid> = batch
            .iter()
            .flat_map(|o| o.lines.iter().map(|(p, _)| p.0))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let customers: Vec<Uuid> = batch
            .iter()
            .map(|o| o.customer.0)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let claims: Vec<&IdempotencyClaim> = batch
            .iter()
            .filter_map(|o| o.ctx.idempotency.as_ref())
            .collect();
        self.run(|mut conn| {
            let (products, customers, claims) = (&products, &customers, &claims);
            async move {
                let (conflicts, stock, buyers) =
                    transactions::begin_with(&mut conn, async |shared| {
                        // The keys' locks first; the reads after them, in one round trip.
                        idempotency::lock_keys(shared, claims).await?;
                        futures_util::future::try_join3(
                            idempotency::stored_conflicts(shared, claims),
                            read_stock(shared, products),
                            read_buyers(shared, customers),
                        )
                        .await
                    })
                    .await?;
                // The claims' conflicts, order by order.
                let mut conflicts = conflicts.into_iter();
                let conflicts: Vec<Option<ClaimConflict>> = batch
                    .iter()
                    .map(|o| {
                        o.ctx
                            .idempotency
                            .as_ref()
                            .and_then(|_| conflicts.next().flatten())
                    })
                    .collect();
                let checked = check(batch, &conflicts, stock, buyers);
                write(&mut conn, batch, checked).await
            }
        })
        .await
    }
}

/// The error that failed a whole batch, for each of its orders (the ones that do not
/// [`fall_back`]).
fn for_each_order(e: &DomainError) -> DomainError {
    match e {
        DomainError::Unavailable(m) => DomainError::Unavailable(m.clone()),
        DomainError::Transient(m) => DomainError::Transient(m.clone()),
        DomainError::Busy(m) => DomainError::Busy(m.clone()),
        other => DomainError::Internal(other.to_string()),
    }
}

/// Whether a batch that failed as a whole is placed again order by order: when nothing
/// of it committed and the failure may be one order's (not the database's being away,
/// which every order would meet again, nor a conflict the batch already retried).
fn fall_back(e: &DomainError) -> bool {
    !matches!(
        e,
        DomainError::Unavailable(_) | DomainError::Transient(_) | DomainError::Busy(_)
    )
}

/// A buyer of the batch.
#[derive(QueryableByName)]
struct Buyer {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    email: String,
    #[diesel(sql_type = Text)]
    name: String,
}

async fn read_stock(
    mut conn: &AsyncPgConnection,
    ids: &[Uuid],
) -> Result<Vec<ProductRow>, DomainError> {
    Ok(diesel::sql_query(
        "SELECT p.id, p.sku, p.name, p.price_minor, p.status, i.on_hand, i.reserved, i.version \
         FROM products p JOIN inventory i ON i.product_id = p.id \
         WHERE p.id = ANY($1) ORDER BY p.id FOR UPDATE OF i",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .prepared()
    .load(&mut conn)
    .await?)
}

async fn read_buyers(
    mut conn: &AsyncPgConnection,
    ids: &[Uuid],
) -> Result<Vec<Buyer>, DomainError> {
    Ok(
        diesel::sql_query("SELECT id, email, name FROM customers WHERE id = ANY($1)")
            .bind::<Array<SqlUuid>, _>(ids)
            .prepared()
            .load(&mut conn)
            .await?,
    )
}

/// An order of the batch that passed its checks, ready to be written.
struct Ready {
    order_id: OrderId,
    facts: Vec<OrderLineFact>,
    total: Money,
    /// Its reservations, at the levels it leaves (its `OrderPlaced` is added when it is
    /// written, at the batch's time).
    events: Vec<DomainEvent>,
    customer_email: String,
    customer_name: String,
}

/// A product's level as the orders checked so far leave it.
struct Level<'r> {
    row: &'r ProductRow,
    reserved: i32,
    version: i64,
}

/// Checks the orders of a batch one after another, each against the levels the ones
/// before it leave (the rows are locked, so these are the levels the writes will
/// change): the answer each would have had in a transaction of its own right after
/// the ones before it.
fn check(
    batch: &[Pending],
    conflicts: &[Option<ClaimConflict>],
    stock: Vec<ProductRow>,
    buyers: Vec<Buyer>,
) -> Vec<Result<Ready, DomainError>> {
    let buyers: HashMap<Uuid, &Buyer> = buyers.iter().map(|b| (b.id, b)).collect();
    let mut levels: HashMap<Uuid, Level<'_>> = stock
        .iter()
        .map(|row| {
            (
                row.id,
                Level {
                    row,
                    reserved: row.reserved,
                    version: row.version,
                },
            )
        })
        .collect();
    batch
        .iter()
        .zip(conflicts)
        .map(|(order, conflict)| {
            if conflict.is_some() {
                return Err(DomainError::IdempotencyConflict);
            }
            let Some(buyer) = buyers.get(&order.customer.0) else {
                return Err(DomainError::not_found("customer", order.customer));
            };
            check_order(order, buyer, &mut levels)
        })
        .collect()
}

/// One order of [`check`]: reserves its lines in `levels` when all of them fit.
fn check_order(
    order: &Pending,
    buyer: &Buyer,
    levels: &mut HashMap<Uuid, Level<'_>>,
) -> Result<Ready, DomainError> {
    let order_id = OrderId::new();
    let mut total = Money::from_minor(0);
    let mut facts = Vec::with_capacity(order.lines.len());
    for (product, qty) in &order.lines {
        let Some(level) = levels.get(&product.0) else {
            return Err(DomainError::not_found("product", product));
        };
        let row = level.row;
        if row.status != ProductStatus::Active.as_str() {
            return Err(DomainError::Validation {
                field: "lines",
                message: format!("product {} is not for sale", row.sku),
            });
        }
        let available = row.on_hand - level.reserved;
        if available < qty.get() {
            return Err(DomainError::OutOfStock {
                product_id: product.0,
                sku: row.sku.clone(),
                requested: qty.get(),
                available,
            });
        }
        total = Money::from_minor(row.price_minor)
            .times(*qty)
            .and_then(|line| total.plus(line))
            .ok_or_else(|| DomainError::Validation {
                field: "lines",
                message: "order total is too large".into(),
            })?;
        facts.push(OrderLineFact {
            product_id: product.0,
            sku: row.sku.clone(),
            name: row.name.clone(),
            quantity: qty.get(),
            unit_price_minor: row.price_minor,
        });
    }
    // Every line fits: reserve them.
    let mut events = Vec::with_capacity(order.lines.len() + 1);
    for (product, qty) in &order.lines {
        if let Some(level) = levels.get_mut(&product.0) {
            level.reserved += qty.get();
            level.version += 1;
            events.push(DomainEvent::StockReserved {
                product_id: product.0,
                order_id: order_id.0,
                quantity: qty.get(),
                stock: StockLevel {
                    on_hand: level.row.on_hand,
                    reserved: level.reserved,
                    version: level.version,
                },
            });
        }
    }
    Ok(Ready {
        order_id,
        facts,
        total,
        events,
        customer_email: buyer.email.clone(),
        customer_name: buyer.name.clone(),
    })
}

/// The `OrderPlaced` event of a checked order.
fn order_placed(order: &Pending, ready: &Ready, now: DateTime<Utc>) -> DomainEvent {
    DomainEvent::OrderPlaced {
        order_id: ready.order_id.0,
        customer_id: order.customer.0,
        customer_email: ready.customer_email.clone(),
        customer_name: ready.customer_name.clone(),
        lines: ready.facts.clone(),
        total_minor: ready.total.minor(),
        currency: order.currency.clone(),
        placed_at: now,
        version: 1,
    }
}

/// The one statement that writes a batch's orders (see the module's documentation).
/// Each order's consistency token is the point of its `OrderPlaced` event, its last.
const WRITE_BATCH: &str = "\
WITH reserved AS ( \
  UPDATE inventory i SET reserved = i.reserved + d.q, version = i.version + d.n \
  FROM unnest($1::uuid[], $2::int4[], $3::int4[]) AS d(id, q, n) \
  WHERE i.product_id = d.id RETURNING i.product_id), \
placed AS ( \
  INSERT INTO orders (id, customer_id, status, total_minor, currency, version, placed_at, updated_at) \
  SELECT o.id, o.customer, 'PENDING_PAYMENT', o.total, o.currency, 1, $8, $8 \
  FROM unnest($4::uuid[], $5::uuid[], $6::int8[], $7::text[]) AS o(id, customer, total, currency)), \
lines AS ( \
  INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price_minor) \
  SELECT * FROM unnest($9::uuid[], $10::int2[], $11::uuid[], $12::int4[], $13::int8[])), \
history AS ( \
  INSERT INTO order_status_history (order_id, seq, status, changed_at) \
  SELECT o.id, 1, 'PENDING_PAYMENT', $8 FROM unnest($4::uuid[]) AS o(id)), \
appended AS ( \
  INSERT INTO events (event_type, event_version, stream_type, stream_id, payload, actor, correlation_id) \
  SELECT t.event_type, t.event_version, t.stream_type, t.stream_id, t.payload, t.actor, t.correlation_id \
  FROM unnest($14::text[], $15::int2[], $16::text[], $17::uuid[], $18::jsonb[], $19::text[], $20::uuid[]) \
    WITH ORDINALITY AS t(event_type, event_version, stream_type, stream_id, payload, actor, correlation_id, n) \
  ORDER BY t.n \
  RETURNING tx_id, position, stream_id, event_type), \
keys AS ( \
  INSERT INTO idempotency_keys (principal, key, fingerprint, outcome, expires_at) \
  SELECT k.principal, k.key, k.fingerprint, \
    jsonb_build_object('at', a.tx_id || '.' || a.position, 'value', k.value), k.expires \
  FROM unnest($21::uuid[], $22::text[], $23::text[], $24::text[], $25::jsonb[], $26::timestamptz[]) \
    AS k(order_id, principal, key, fingerprint, value, expires) \
  JOIN appended a ON a.stream_id = k.order_id AND a.event_type = 'OrderPlaced' \
  ON CONFLICT (principal, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, \
    outcome = EXCLUDED.outcome, response = NULL, created_at = now(), \
    expires_at = EXCLUDED.expires_at \
  WHERE idempotency_keys.expires_at <= now() \
  RETURNING 1) \
SELECT a.stream_id AS order_id, a.tx_id, a.position, \
  (SELECT count(*) FROM keys) AS keys_stored, (SELECT count(*) FROM reserved) AS rows_reserved \
FROM appended a WHERE a.event_type = 'OrderPlaced'";

/// A written order's place in the log, with counts that check the statement's writes.
#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = SqlUuid)]
    order_id: Uuid,
    #[diesel(sql_type = BigInt)]
    tx_id: i64,
    #[diesel(sql_type = BigInt)]
    position: i64,
    #[diesel(sql_type = BigInt)]
    keys_stored: i64,
    #[diesel(sql_type = BigInt)]
    rows_reserved: i64,
}

/// The columns of [`WRITE_BATCH`]'s orders.
#[derive(Default)]
struct Columns {
    stock_ids: Vec<Uuid>,
    stock_q: Vec<i32>,
    stock_n: Vec<i32>,
    order_ids: Vec<Uuid>,
    customers: Vec<Uuid>,
    totals: Vec<i64>,
    currencies: Vec<String>,
    line_orders: Vec<Uuid>,
    line_nos: Vec<i16>,
    line_products: Vec<Uuid>,
    line_q: Vec<i32>,
    line_prices: Vec<i64>,
    actors: Vec<String>,
    correlations: Vec<Uuid>,
    key_orders: Vec<Uuid>,
    principals: Vec<String>,
    keys: Vec<String>,
    fingerprints: Vec<String>,
    values: Vec<serde_json::Value>,
    expires: Vec<DateTime<Utc>>,
}

/// Writes the orders of `batch` that passed their checks and ends the transaction;
/// the answer of every order.
async fn write(
    conn: &mut AsyncPgConnection,
    batch: &[Pending],
    checked: Vec<Result<Ready, DomainError>>,
) -> Result<Vec<Answer>, DomainError> {
    // At the database's precision, so the events, the rows and the views agree.
    let now = Utc::now().trunc_subsecs(6);
    let mut cols = Columns::default();
    let mut events: Vec<DomainEvent> = Vec::new();
    let mut deltas: BTreeMap<Uuid, (i32, i32)> = BTreeMap::new();
    let mut placed: Vec<Option<PlacedOrder>> = Vec::with_capacity(batch.len());
    for (order, ready) in batch.iter().zip(&checked) {
        let Ok(ready) = ready else {
            placed.push(None);
            continue;
        };
        let placed_event = order_placed(order, ready, now);
        let meta = order.ctx.meta();
        for event in ready.events.iter().chain(std::iter::once(&placed_event)) {
            cols.actors.push(meta.actor.clone());
            cols.correlations.push(meta.correlation_id);
            events.push(event.clone());
        }
        for (n, fact) in ready.facts.iter().enumerate() {
            let delta = deltas.entry(fact.product_id).or_default();
            delta.0 += fact.quantity;
            delta.1 += 1;
            cols.line_orders.push(ready.order_id.0);
            cols.line_nos.push(i16::try_from(n + 1).unwrap_or(i16::MAX));
            cols.line_products.push(fact.product_id);
            cols.line_q.push(fact.quantity);
            cols.line_prices.push(fact.unit_price_minor);
        }
        cols.order_ids.push(ready.order_id.0);
        cols.customers.push(order.customer.0);
        cols.totals.push(ready.total.minor());
        cols.currencies.push(order.currency.clone());
        let value = PlacedOrder {
            id: ready.order_id,
            total: ready.total,
            lines: ready.facts.clone(),
            event: None,
        };
        if let Some(claim) = &order.ctx.idempotency {
            cols.key_orders.push(ready.order_id.0);
            cols.principals.push(claim.principal.clone());
            cols.keys.push(claim.key.clone());
            cols.fingerprints.push(claim.fingerprint.clone());
            cols.values.push(
                serde_json::to_value(&value).map_err(|e| {
                    DomainError::Internal(format!("outcome does not serialize: {e}"))
                })?,
            );
            cols.expires.push(idempotency::expiry(claim));
        }
        placed.push(Some(PlacedOrder {
            event: Some(placed_event),
            ..value
        }));
    }
    if cols.order_ids.is_empty() {
        // Every order failed its checks: nothing to write, and the answers are theirs.
        transactions::end(conn, Ok::<_, DomainError>(())).await?;
        return Ok(checked
            .into_iter()
            .map(|c| match c {
                Err(e) => Err(e),
                Ok(_) => Err(DomainError::Internal(
                    "a checked order was not written".into(),
                )),
            })
            .collect());
    }
    for (id, (q, n)) in &deltas {
        cols.stock_ids.push(*id);
        cols.stock_q.push(*q);
        cols.stock_n.push(*n);
    }
    let expected_keys = cols.key_orders.len();
    let expected_rows = cols.stock_ids.len();
    let ev = EventColumns::of(events.iter());
    let written: Vec<Written> = transactions::commit_after(conn, async move |mut shared| {
        Ok::<_, DomainError>(
            diesel::sql_query(WRITE_BATCH)
                .bind::<Array<SqlUuid>, _>(cols.stock_ids)
                .bind::<Array<Integer>, _>(cols.stock_q)
                .bind::<Array<Integer>, _>(cols.stock_n)
                .bind::<Array<SqlUuid>, _>(cols.order_ids)
                .bind::<Array<SqlUuid>, _>(cols.customers)
                .bind::<Array<BigInt>, _>(cols.totals)
                .bind::<Array<Text>, _>(cols.currencies)
                .bind::<Timestamptz, _>(now)
                .bind::<Array<SqlUuid>, _>(cols.line_orders)
                .bind::<Array<Int2>, _>(cols.line_nos)
                .bind::<Array<SqlUuid>, _>(cols.line_products)
                .bind::<Array<Integer>, _>(cols.line_q)
                .bind::<Array<BigInt>, _>(cols.line_prices)
                .bind::<Array<Text>, _>(ev.types)
                .bind::<Array<Int2>, _>(ev.versions)
                .bind::<Array<Text>, _>(ev.stream_types)
                .bind::<Array<SqlUuid>, _>(ev.stream_ids)
                .bind::<Array<Jsonb>, _>(ev.payloads)
                .bind::<Array<Text>, _>(cols.actors)
                .bind::<Array<SqlUuid>, _>(cols.correlations)
                .bind::<Array<SqlUuid>, _>(cols.key_orders)
                .bind::<Array<Text>, _>(cols.principals)
                .bind::<Array<Text>, _>(cols.keys)
                .bind::<Array<Text>, _>(cols.fingerprints)
                .bind::<Array<Jsonb>, _>(cols.values)
                .bind::<Array<Timestamptz>, _>(cols.expires)
                .prepared()
                .load(&mut shared)
                .await?,
        )
    })
    .await?;
    crate::wakeups::appended();
    // The statement and COMMIT went out together; a mismatch here is a bug, and the
    // orders are committed: say so in the log, answer with what was written.
    if let [first, ..] = written.as_slice() {
        if first.keys_stored != expected_keys as i64 || first.rows_reserved != expected_rows as i64
        {
            tracing::error!(
                keys_stored = first.keys_stored,
                expected_keys,
                rows_reserved = first.rows_reserved,
                expected_rows,
                "a batch of orders wrote other counts than it planned"
            );
        }
    }
    let points: HashMap<Uuid, LogPoint> = written
        .iter()
        .map(|w| {
            (
                w.order_id,
                LogPoint {
                    tx_id: w.tx_id,
                    position: w.position,
                },
            )
        })
        .collect();
    Ok(checked
        .into_iter()
        .zip(placed)
        .map(|(check, placed)| {
            check?;
            let placed = placed
                .ok_or_else(|| DomainError::Internal("a checked order was not written".into()))?;
            let at = points.get(&placed.id.0).copied().ok_or_else(|| {
                DomainError::Internal("a written order has no place in the log".into())
            })?;
            Ok(Outcome { value: placed, at })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(key: Option<&str>) -> (Pending, oneshot::Receiver<Answer>) {
        let (reply, answer) = oneshot::channel();
        let mut ctx = CommandContext::system("test");
        ctx.idempotency = key.map(|k| {
            IdempotencyClaim::new("p".into(), k.into(), "f".into(), Duration::from_secs(60))
        });
        let order = Pending {
            ctx,
            customer: CustomerId(Uuid::now_v7()),
            lines: Vec::new(),
            currency: "EUR".into(),
            since: Instant::now(),
            reply,
        };
        (order, answer)
    }

    fn queue(batcher: &Batcher, orders: Vec<Pending>) {
        let mut q = batcher.lock();
        q.runners = 1;
        q.waiting.extend(orders);
    }

    fn keys(batch: &[Pending]) -> Vec<Option<&str>> {
        batch.iter().map(|o| o.key().map(|(_, k)| k)).collect()
    }

    /// Batches take the longest-waiting orders first; a second order of a key already in
    /// the batch keeps its place at the head for the next one.
    #[test]
    fn batches_are_served_in_arrival_order_and_a_key_once_per_batch() {
        let batcher = Batcher::new(OrderBatching {
            max_orders: 3,
            ..OrderBatching::default()
        });
        let (orders, _answers): (Vec<_>, Vec<_>) =
            [Some("a"), Some("a"), None, Some("b"), Some("c"), None]
                .into_iter()
                .map(pending)
                .unzip();
        queue(&batcher, orders);
        let first = batcher.next_batch().unwrap_or_default();
        assert_eq!(keys(&first), [Some("a"), None, Some("b")]);
        let second = batcher.next_batch().unwrap_or_default();
        assert_eq!(keys(&second), [Some("a"), Some("c"), None]);
        assert!(
            batcher.next_batch().is_none(),
            "the runner stops when none wait"
        );
        assert_eq!(batcher.lock().runners, 0);
    }

    /// Orders whose caller went away are dropped; orders that waited too long are
    /// answered Busy and never reach a batch.
    #[test]
    fn gone_and_stale_orders_never_reach_a_batch() {
        let batcher = Batcher::new(OrderBatching {
            max_wait: Duration::from_millis(50),
            ..OrderBatching::default()
        });
        let (gone, answer) = pending(None);
        drop(answer);
        let (mut stale, mut stale_answer) = pending(None);
        stale.since = Instant::now() - Duration::from_secs(1);
        let (fresh, _fresh_answer) = pending(Some("fresh"));
        queue(&batcher, vec![gone, stale, fresh]);
        let batch = batcher.next_batch().unwrap_or_default();
        assert_eq!(keys(&batch), [Some("fresh")]);
        match stale_answer.try_recv() {
            Ok(Err(DomainError::Busy(m))) => assert!(m.contains("waited"), "{m}"),
            other => panic!(
                "expected Busy, got {:?}",
                other.map(|a| a.map(|o| o.value.id))
            ),
        }
        assert_eq!(
            AtomicU64::load(&batcher.stats.refused, Ordering::Relaxed),
            1
        );
    }
}
