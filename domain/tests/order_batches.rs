//! Coalesced orders (`commands::order_batches`) against a real PostgreSQL database: a
//! crowd buying one product, mixed with multi-line orders and repeated idempotency
//! keys, from two processes' worth of batchers; one bad order inside a batch; the
//! queue's bounds.

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text, Uuid as SqlUuid};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use till_domain::commands::{
    CommandContext, Commands, OrderBatching, OrderLineInput, Outcome, PlacedOrder,
};
use till_domain::event_log::LogPoint;
use till_domain::idempotency::{ClaimConflict, IdempotencyClaim};
use till_domain::types::*;
use till_domain::DomainError;

mod support;

use support::{line, World};

type Answer = Result<Outcome<PlacedOrder>, DomainError>;

/// A counter of the batches' stats (a function, since diesel's `load` would shadow the
/// atomic's).
/// The batching statistics of `cmd` (batching must be on).
fn stats_of(cmd: &Commands) -> std::sync::Arc<till_domain::commands::BatchStats> {
    cmd.order_batching()
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("batching is on"))
}

fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(std::sync::atomic::Ordering::Relaxed)
}

fn batching(runners: usize) -> OrderBatching {
    OrderBatching {
        runners,
        ..OrderBatching::default()
    }
}

fn keyed(who: CustomerId, key: &str, fingerprint: &str) -> CommandContext {
    let mut ctx = CommandContext::user(who, Role::Customer);
    ctx.idempotency = Some(IdempotencyClaim::new(
        format!("customer:{}", who.0),
        key.to_owned(),
        fingerprint.to_owned(),
        Duration::from_secs(3600),
    ));
    ctx
}

fn place(
    cmd: &Commands,
    ctx: CommandContext,
    who: CustomerId,
    lines: Vec<OrderLineInput>,
    eur: &Currency,
) -> tokio::task::JoinHandle<(CommandContext, Answer)> {
    let (cmd, eur) = (cmd.clone(), eur.clone());
    tokio::spawn(async move {
        let answer = cmd.place_order(&ctx, who, lines, &eur).await;
        (ctx, answer)
    })
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(w: &World, sql: &str) -> i64 {
    let mut conn = w.db.pool.get().await.unwrap();
    diesel::sql_query(sql)
        .get_result::<Count>(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

#[derive(QueryableByName)]
struct Placed {
    #[diesel(sql_type = SqlUuid)]
    order_id: uuid::Uuid,
    #[diesel(sql_type = BigInt)]
    tx_id: i64,
    #[diesel(sql_type = BigInt)]
    position: i64,
}

#[derive(QueryableByName)]
struct Reserved {
    #[diesel(sql_type = Integer)]
    reserved: i32,
}

/// Three hundred buyers of one product (40 units) race, through two batchers over the
/// same database (two API replicas), mixed with two-line orders of the hot product and a
/// scarce one, and with twenty idempotency keys each sent twice at once. Every
/// invariant is checked against the database afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crowd_buying_one_product_through_batches_keeps_every_order_guarantee() {
    let w = World::new().await;
    let hot = w.product("HOT-SALE", 1999, 40).await;
    let scarce = w.product("SCARCE-1", 500, 5).await;
    let ann = w.customer("crowd-a@example.com").await;
    let bob = w.customer("crowd-b@example.com").await;
    let replicas = [
        Commands::new(w.db.pool.clone()).with_order_batching(batching(2)),
        Commands::new(w.db.pool.clone()).with_order_batching(batching(2)),
    ];
    let mut tasks = Vec::new();
    for i in 0..300usize {
        let who = if i % 2 == 0 { ann } else { bob };
        let lines = match i % 10 {
            3 => vec![line(scarce, 1), line(hot, 1)],
            7 => vec![line(hot, 2)],
            _ => vec![line(hot, 1)],
        };
        // Orders 0..40 use keys, each key twice (i and i+1 share it).
        let ctx = if i < 40 {
            let who = ann;
            keyed(who, &format!("key-{}", i / 2), "fp")
        } else {
            CommandContext::user(who, Role::Customer)
        };
        let who = if i < 40 { ann } else { who };
        tasks.push((
            i,
            lines.clone(),
            place(&replicas[i % 2], ctx, who, lines, &w.eur),
        ));
    }
    let mut placed: HashMap<uuid::Uuid, (LogPoint, Vec<OrderLineInput>)> = HashMap::new();
    let mut per_key: BTreeMap<usize, Vec<Result<(), Option<ClaimConflict>>>> = BTreeMap::new();
    let mut out_of_stock = 0;
    for (i, lines, task) in tasks {
        let (ctx, answer) = task.await.unwrap();
        let result = match answer {
            Ok(out) => {
                assert!(
                    placed.insert(out.value.id.0, (out.at, lines)).is_none(),
                    "an order id answered twice"
                );
                Ok(())
            }
            Err(DomainError::OutOfStock {
                sku,
                available,
                requested,
                ..
            }) => {
                assert!(
                    available < requested,
                    "{sku}: refused with {available} >= {requested}"
                );
                out_of_stock += 1;
                Err(None)
            }
            Err(DomainError::IdempotencyConflict) => {
                let claim = ctx.idempotency.as_ref().map(|c| c.conflict());
                Err(claim.flatten())
            }
            Err(e) => panic!("order {i}: unexpected {e}"),
        };
        if i < 40 {
            per_key.entry(i / 2).or_default().push(result);
        }
    }
    // Each key ran once: the other request of the pair replays it (or, when the first
    // was refused for stock, met the same refusal on its own).
    for (key, results) in &per_key {
        let ran = results.iter().filter(|r| r.is_ok()).count();
        let replays = results
            .iter()
            .filter(|r| matches!(r, Err(Some(ClaimConflict::Replay))))
            .count();
        assert!(ran <= 1, "key {key} ran {ran} times: {results:?}");
        if ran == 1 {
            assert_eq!(replays, 1, "key {key}: {results:?}");
        }
    }
    // No oversell, and the hot product sold out exactly.
    let units: i64 = placed
        .values()
        .flat_map(|(_, lines)| lines.iter())
        .filter(|l| l.product == hot)
        .map(|l| i64::from(l.quantity.get()))
        .sum();
    assert_eq!(w.stock(hot).await, (40, 40), "sold out, not oversold");
    assert_eq!(units, 40, "the answers account for every unit");
    let scarce_units = placed
        .values()
        .filter(|(_, lines)| lines.iter().any(|l| l.product == scarce))
        .count();
    assert_eq!(w.stock(scarce).await.1, scarce_units as i32);
    assert!(out_of_stock > 0);
    // Every placed order has its row, its lines, one OrderPlaced and one StockReserved
    // per line; nothing else was written.
    assert_eq!(
        count(&w, "SELECT count(*) AS n FROM orders").await,
        placed.len() as i64
    );
    assert_eq!(w.event_count("OrderPlaced").await, placed.len() as i64);
    let lines: usize = placed.values().map(|(_, l)| l.len()).sum();
    assert_eq!(w.event_count("StockReserved").await, lines as i64);
    assert_eq!(
        count(&w, "SELECT count(*) AS n FROM order_lines").await,
        lines as i64
    );
    assert_eq!(
        count(&w, "SELECT count(*) AS n FROM order_status_history").await,
        placed.len() as i64
    );
    assert_eq!(
        count(&w, "SELECT count(DISTINCT correlation_id) AS n FROM events WHERE event_type = 'OrderPlaced'").await,
        placed.len() as i64,
        "each order has its own correlation id"
    );
    // Each answer's token is its own OrderPlaced event.
    let mut conn = w.db.pool.get().await.unwrap();
    let logged: Vec<Placed> = diesel::sql_query(
        "SELECT stream_id AS order_id, tx_id, position FROM events WHERE event_type = 'OrderPlaced'",
    )
    .load(&mut conn)
    .await
    .unwrap();
    for p in &logged {
        let Some((at, _)) = placed.get(&p.order_id) else {
            panic!("an order in the log nobody was told of");
        };
        assert_eq!(
            *at,
            LogPoint {
                tx_id: p.tx_id,
                position: p.position
            }
        );
    }
    // The hot product's StockReserved events report each level once, as if one after
    // another: 1..=40 with the two-unit orders skipping one.
    let levels: Vec<Reserved> = diesel::sql_query(
        "SELECT (payload->'stock'->>'reserved')::int AS reserved FROM events \
         WHERE event_type = 'StockReserved' AND stream_id = $1 ORDER BY 1",
    )
    .bind::<SqlUuid, _>(hot.0)
    .load(&mut conn)
    .await
    .unwrap();
    let distinct: HashSet<i32> = levels.iter().map(|l| l.reserved).collect();
    assert_eq!(distinct.len(), levels.len(), "a level reported twice");
    assert_eq!(levels.last().map(|l| l.reserved), Some(40));
    // Stored idempotency outcomes: one per key that ran, with that order's token.
    let keys = count(&w, "SELECT count(*) AS n FROM idempotency_keys").await;
    let ran = per_key
        .values()
        .filter(|r| r.iter().any(|x| x.is_ok()))
        .count();
    assert_eq!(keys, ran as i64);
    // And they were coalesced: fewer transactions than orders.
    let (mut batches, mut orders) = (0, 0);
    for r in &replicas {
        let Some((_, stats)) = r.order_batching() else {
            panic!("batching is on");
        };
        batches += get(&stats.batches);
        orders += get(&stats.orders);
    }
    assert_eq!(orders, 300);
    assert!(batches < 150, "{batches} transactions for 300 orders");
}

/// Holds the hot product's row in a transaction of its own, so that a batch queues
/// behind it and the orders sent meanwhile gather into the next batch.
struct RowHolder {
    conn: till_domain::db::PooledConn<'static>,
}

impl RowHolder {
    async fn hold(w: &World, p: ProductId) -> Self {
        let mut conn = w.db.pool.get_owned().await.unwrap();
        conn.batch_execute(&format!(
            "BEGIN; SELECT 1 FROM inventory WHERE product_id = '{}' FOR UPDATE",
            p.0
        ))
        .await
        .unwrap();
        Self { conn }
    }

    async fn release(mut self) {
        self.conn.batch_execute("COMMIT").await.unwrap();
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An order as the tests send it: who sends it, for whom, which lines.
type Order = (CommandContext, CustomerId, Vec<OrderLineInput>);

/// Sends `first` through `cmd`'s one runner and waits until its batch is held behind
/// `hot`'s locked row; queues `orders` one after another meanwhile (so they gather into
/// the next batch in this order); releases the row. The answers to `orders`, in order.
async fn the_batch_behind_a_held_one(
    w: &World,
    cmd: &Commands,
    hot: ProductId,
    first: Order,
    orders: Vec<Order>,
) -> Vec<(CommandContext, Answer)> {
    let stats = stats_of(cmd);
    let holder = RowHolder::hold(w, hot).await;
    let (ctx, who, lines) = first;
    let first = place(cmd, ctx, who, lines, &w.eur);
    wait_until("the first batch to start", || {
        get(&stats.waiting) == 0 && get(&stats.orders) == 1
    })
    .await;
    let mut tasks = Vec::new();
    for (ctx, who, lines) in orders {
        tasks.push(place(cmd, ctx, who, lines, &w.eur));
        let queued = tasks.len() as u64;
        wait_until("the order to queue", || get(&stats.waiting) == queued).await;
    }
    holder.release().await;
    first.await.unwrap().1.unwrap();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// One batch holds good orders and bad ones (a product not for sale, an unknown
/// buyer, more than is left, a reused key, an unknown product): each bad one fails
/// alone with its own error, the good ones are placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_order_in_a_batch_fails_alone() {
    let w = World::new().await;
    let hot = w.product("BATCH-HOT", 100, 10).await;
    let draft = w.product("BATCH-DRAFT", 100, 10).await;
    let ann = w.customer("batch@example.com").await;
    let mut conn = w.db.pool.get().await.unwrap();
    diesel::sql_query("UPDATE products SET status = 'DRAFT' WHERE id = $1")
        .bind::<SqlUuid, _>(draft.0)
        .execute(&mut conn)
        .await
        .unwrap();
    // a key already used for another request
    let used = keyed(ann, "used-key", "first");
    w.cmd
        .place_order(&used, ann, vec![line(hot, 1)], &w.eur)
        .await
        .unwrap();
    drop(conn);
    let cmd = Commands::new(w.db.pool.clone()).with_order_batching(batching(1));
    let stats = stats_of(&cmd);
    let me = || CommandContext::user(ann, Role::Customer);

    // when good and bad orders gather into the batch behind the runner's first
    let nobody = CustomerId(uuid::Uuid::now_v7());
    let ghost = ProductId(uuid::Uuid::now_v7());
    let orders = vec![
        ("good", me(), ann, vec![line(hot, 2)]),
        ("draft", me(), ann, vec![line(hot, 1), line(draft, 1)]),
        (
            "nobody",
            CommandContext::system("test"),
            nobody,
            vec![line(hot, 1)],
        ),
        ("too-many", me(), ann, vec![line(hot, 7)]),
        (
            "reused",
            keyed(ann, "used-key", "second"),
            ann,
            vec![line(hot, 1)],
        ),
        ("ghost", me(), ann, vec![line(ghost, 1)]),
        ("good-2", me(), ann, vec![line(hot, 3)]),
    ];
    let (names, orders): (Vec<_>, Vec<Order>) = orders
        .into_iter()
        .map(|(name, ctx, who, lines)| (name, (ctx, who, lines)))
        .unzip();
    let first = (me(), ann, vec![line(hot, 1)]);
    let answers: BTreeMap<_, _> = names
        .into_iter()
        .zip(the_batch_behind_a_held_one(&w, &cmd, hot, first, orders).await)
        .collect();
    // then
    assert_eq!(get(&stats.batches), 2, "two batches");
    assert_eq!(get(&stats.fallbacks), 0);
    let outcome = |name: &str| match answers.get(name) {
        Some((_, Ok(_))) => "placed".to_owned(),
        Some((_, Err(e))) => format!("{e}"),
        None => panic!("no answer for {name}"),
    };
    assert_eq!(outcome("good"), "placed");
    assert_eq!(outcome("good-2"), "placed");
    assert!(
        outcome("draft").contains("not for sale"),
        "{}",
        outcome("draft")
    );
    assert!(
        outcome("nobody").contains("customer"),
        "{}",
        outcome("nobody")
    );
    assert!(outcome("ghost").contains("product"), "{}", outcome("ghost"));
    // 10 units: 1 (used key) + 1 (first) + 2 (good) leave 6 when too-many asks for 7.
    match answers.get("too-many") {
        Some((
            _,
            Err(DomainError::OutOfStock {
                requested,
                available,
                ..
            }),
        )) => {
            assert_eq!((*requested, *available), (7, 6));
        }
        other => panic!("too-many: {:?}", other.map(|(_, a)| a.as_ref().err())),
    }
    match answers.get("reused") {
        Some((ctx, Err(DomainError::IdempotencyConflict))) => assert_eq!(
            ctx.idempotency.as_ref().and_then(|c| c.conflict()),
            Some(ClaimConflict::KeyReused)
        ),
        other => panic!("reused: {:?}", other.map(|(_, a)| a.as_ref().err())),
    }
    assert_eq!(w.stock(hot).await, (10, 1 + 1 + 2 + 3));
    assert_eq!(
        w.stock(draft).await,
        (10, 0),
        "nothing of the failed order stays"
    );
    assert_eq!(w.event_count("OrderPlaced").await, 4);
}

/// The queue's bounds: orders beyond its length are refused at once, and orders that
/// wait longer than the bound are refused when their turn comes; neither takes stock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_past_the_queues_bounds_are_refused_and_take_nothing() {
    let w = World::new().await;
    let hot = w.product("QUEUE-HOT", 100, 100).await;
    let ann = w.customer("queue@example.com").await;
    let cmd = Commands::new(w.db.pool.clone()).with_order_batching(OrderBatching {
        runners: 1,
        max_queue: 3,
        max_wait: Duration::from_millis(200),
        ..OrderBatching::default()
    });
    let stats = stats_of(&cmd);
    let me = || CommandContext::user(ann, Role::Customer);
    let holder = RowHolder::hold(&w, hot).await;
    let first = place(&cmd, me(), ann, vec![line(hot, 1)], &w.eur);
    wait_until("the first batch to start", || get(&stats.orders) == 1).await;
    let queued: Vec<_> = (0..3)
        .map(|_| place(&cmd, me(), ann, vec![line(hot, 1)], &w.eur))
        .collect();
    wait_until("three to queue", || get(&stats.waiting) == 3).await;
    // the queue is full
    match cmd
        .place_order(&me(), ann, vec![line(hot, 1)], &w.eur)
        .await
    {
        Err(DomainError::Busy(m)) => assert!(m.contains("waiting"), "{m}"),
        other => panic!("expected Busy, got {:?}", other.map(|o| o.value.id)),
    }
    // the queued ones wait past their bound
    tokio::time::sleep(Duration::from_millis(400)).await;
    holder.release().await;
    first.await.unwrap().1.unwrap();
    for task in queued {
        match task.await.unwrap().1 {
            Err(DomainError::Busy(m)) => assert!(m.contains("waited"), "{m}"),
            other => panic!("expected Busy, got {:?}", other.map(|o| o.value.id)),
        }
    }
    assert_eq!(get(&stats.refused), 4);
    assert_eq!(w.stock(hot).await, (100, 1));
    assert_eq!(w.event_count("OrderPlaced").await, 1);
    // and the queue serves again afterwards
    cmd.place_order(&me(), ann, vec![line(hot, 1)], &w.eur)
        .await
        .unwrap();
    assert_eq!(w.stock(hot).await, (100, 2));
}

#[derive(QueryableByName)]
struct Plans {
    #[diesel(sql_type = Text)]
    statement: String,
    #[diesel(sql_type = BigInt)]
    generic: i64,
    #[diesel(sql_type = BigInt)]
    custom: i64,
}

/// The batch's statements are kept prepared and planned once per connection, as the
/// single order's are.
#[tokio::test]
async fn batch_statements_are_planned_once_per_connection() {
    // given one connection, so every batch runs the same prepared statements
    let w = World::on(till_domain::db::testing::TestDb::with_pool_size(1).await);
    let a = w.product("BPLAN-A", 100, 100).await;
    let b = w.product("BPLAN-B", 200, 100).await;
    let ann = w.customer("bplans@example.com").await;
    let ctx = CommandContext::user(ann, Role::Customer);
    // when
    for _ in 0..8 {
        w.cmd
            .place_order(&ctx, ann, vec![line(a, 1), line(b, 1)], &w.eur)
            .await
            .unwrap();
    }
    // then
    let mut conn = w.db.pool.get().await.unwrap();
    let plans: Vec<Plans> = diesel::sql_query(
        "SELECT statement, generic_plans AS generic, custom_plans AS custom \
         FROM pg_prepared_statements \
         WHERE statement LIKE 'SELECT p.id, p.sku%' OR statement LIKE 'WITH reserved AS%' \
            OR statement LIKE 'SELECT id, email, name FROM customers%'",
    )
    .load(&mut conn)
    .await
    .unwrap();
    assert_eq!(plans.len(), 3, "the three statements are kept prepared");
    for p in plans {
        assert_eq!(
            p.custom, 0,
            "never planned for its parameters: {}",
            p.statement
        );
        assert_eq!(
            p.generic, 8,
            "the one generic plan ran for every order: {}",
            p.statement
        );
    }
}

/// A batch whose write fails as a whole (here a trigger refuses one buyer's order, which
/// no check in Rust foresees) places its orders one by one: the refused order fails
/// alone, the others are placed, nothing is placed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_fails_as_a_whole_places_its_orders_one_by_one() {
    let w = World::new().await;
    let hot = w.product("FALLBACK-HOT", 100, 100).await;
    let ann = w.customer("fallback-a@example.com").await;
    let refused = w.customer("fallback-b@example.com").await;
    let mut conn = w.db.pool.get().await.unwrap();
    conn.batch_execute(&format!(
        "CREATE FUNCTION refuse_order() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
         CREATE TRIGGER refuse_order BEFORE INSERT ON orders FOR EACH ROW \
         WHEN (NEW.customer_id = '{}') EXECUTE FUNCTION refuse_order()",
        refused.0
    ))
    .await
    .unwrap();
    drop(conn);
    let cmd = Commands::new(w.db.pool.clone()).with_order_batching(batching(1));
    let stats = stats_of(&cmd);
    let buyer = |who| {
        (
            CommandContext::user(who, Role::Customer),
            who,
            vec![line(hot, 1)],
        )
    };
    let answers: Vec<Answer> = the_batch_behind_a_held_one(
        &w,
        &cmd,
        hot,
        buyer(ann),
        vec![buyer(ann), buyer(refused), buyer(ann)],
    )
    .await
    .into_iter()
    .map(|(_, answer)| answer)
    .collect();
    assert_eq!(get(&stats.fallbacks), 1, "the second batch fell back");
    assert!(answers[0].is_ok(), "{:?}", answers[0].as_ref().err());
    assert!(
        matches!(answers[1], Err(DomainError::Internal(_))),
        "{:?}",
        answers[1].as_ref().map(|o| o.value.id)
    );
    assert!(answers[2].is_ok(), "{:?}", answers[2].as_ref().err());
    assert_eq!(w.stock(hot).await, (100, 3));
    assert_eq!(w.event_count("OrderPlaced").await, 3);
}
