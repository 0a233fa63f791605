//! Projection tests against a real PostgreSQL: gap safety under out-of-order commits,
//! exactly-once application with two projectors racing, and views that agree with the
//! write model.

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, RunQueryDsl};
use rand::Rng;
use till_domain::commands::{
    CommandContext, Commands, NewCategory, NewCustomer, NewProduct, OrderLineInput,
};
use till_domain::db::testing::TestDb;
use till_domain::event_log::{self, EventMeta};
use till_domain::events::{DomainEvent, OrderLineFact};
use till_domain::schema::inventory;
use till_domain::types::*;
use till_read_models::schema::{
    rm_customer_summary, rm_order_view, rm_product_sales, rm_sales_daily,
};
use till_read_models::{CacheKind, Projection, Projector, ProjectorSettings, ReadModels};
use uuid::Uuid;

mod common;
use common::ok;

struct Side {
    projector: Projector,
    reads: ReadModels,
}

fn read_side(db: &TestDb) -> Side {
    let (projector, reads) = common::read_side(
        db,
        ProjectorSettings {
            batch_size: 7,
            ..ProjectorSettings::default()
        },
    );
    Side { projector, reads }
}

async fn wait_until_visible(db: &TestDb) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut conn = ok(db.pool.get().await);
        let visible: bool = ok(diesel::dsl::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
            "pg_snapshot_xmin(pg_current_snapshot())::text::bigint > (SELECT max(tx_id) FROM events)",
        ))
        .get_result(&mut conn)
        .await);
        if visible {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "horizon never passed the log head"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_caught_up(db: &TestDb, reads: &ReadModels, head: event_log::LogPoint) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut conn = ok(db.pool.get().await);
        ok(reads.progress().refresh(&mut conn).await);
        if Projection::ALL
            .iter()
            .all(|p| reads.progress().current(*p) >= head)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "projections did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fake_order(customer: Uuid, total: i64, day_offset: i64) -> DomainEvent {
    let placed_at = chrono::Utc::now() - chrono::Duration::days(day_offset);
    DomainEvent::OrderPlaced {
        order_id: Uuid::now_v7(),
        customer_id: customer,
        customer_email: "x@example.com".into(),
        customer_name: "X".into(),
        lines: vec![OrderLineFact {
            product_id: Uuid::nil(),
            sku: "GAP".into(),
            name: "Gap".into(),
            quantity: 1,
            unit_price_minor: total,
        }],
        total_minor: total,
        currency: "EUR".into(),
        placed_at,
        version: 1,
    }
}

/// Writers hold their transactions open for random times after appending, so lower
/// positions routinely commit after higher ones are visible. Two projectors run the
/// whole time. Every committed event must be reflected exactly once; rolled-back ones
/// never.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn out_of_order_commits_are_never_skipped_nor_applied_twice() {
    let db = TestDb::with_pool_size(60).await;
    let a = read_side(&db);
    let b = read_side(&db);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut handles = a.projector.spawn(stop_rx.clone());
    handles.extend(b.projector.spawn(stop_rx));

    let customer = Uuid::now_v7();
    let writers: Vec<_> = (0..24)
        .map(|w| {
            let url = db.url.clone();
            tokio::spawn(async move {
                let mut conn = ok(diesel_async::AsyncPgConnection::establish(&url).await);
                let mut committed = (0i64, 0i64);
                for i in 0..12 {
                    let (total, delay, day, rollback) = {
                        let mut rng = rand::thread_rng();
                        (
                            rng.gen_range(1..10_000i64),
                            rng.gen_range(0..40u64),
                            rng.gen_range(0..3i64),
                            rng.gen_bool(0.1),
                        )
                    };
                    let meta = EventMeta::system("gap-test");
                    let event = fake_order(customer, total, day);
                    let result: Result<(), till_domain::DomainError> = conn
                        .transaction(async |conn| {
                            event_log::append(conn, &meta, &[event]).await?;
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                            if rollback {
                                return Err(till_domain::DomainError::Conflict(format!(
                                    "writer {w} rolls back {i}"
                                )));
                            }
                            Ok(())
                        })
                        .await;
                    if result.is_ok() {
                        committed.0 += 1;
                        committed.1 += total;
                    }
                }
                committed
            })
        })
        .collect();
    let mut expected_count = 0;
    let mut expected_sum = 0;
    for w in writers {
        let (n, sum) = ok(w.await);
        expected_count += n;
        expected_sum += sum;
    }

    let head = {
        let mut conn = ok(db.pool.get().await);
        ok(event_log::head(&mut conn).await)
    };
    // Either projector may have applied any batch; watch the database's checkpoints.
    wait_caught_up(&db, &a.reads, head).await;
    let _ = stop_tx.send(true);
    for h in handles {
        let _ = h.await;
    }

    let c = counted(&db, customer).await;
    assert!(
        expected_count > 200,
        "the test must commit plenty: {expected_count}"
    );
    assert_eq!(c.orders, expected_count, "order view rows");
    assert_eq!(c.daily_orders, expected_count, "sales per day, orders");
    assert_eq!(c.daily_revenue, expected_sum, "sales per day, revenue");
    assert_eq!(
        (c.count, c.spend),
        (expected_count, expected_sum),
        "customer summary"
    );
    assert_eq!(c.units, expected_count, "product sales");
}

struct Shop {
    db: TestDb,
    cmd: Commands,
    side: Side,
    staff: CommandContext,
    eur: Currency,
}

impl Shop {
    async fn new() -> Self {
        let db = TestDb::new().await;
        let cmd = Commands::new(db.pool.clone());
        let side = read_side(&db);
        Self {
            db,
            cmd,
            side,
            staff: CommandContext::system("test"),
            eur: ok(Currency::parse("EUR")),
        }
    }

    async fn product(
        &self,
        sku: &str,
        parent: Option<CategoryId>,
        price: i64,
        stock: i64,
    ) -> (CategoryId, ProductId) {
        let cat = ok(self
            .cmd
            .create_category(
                &self.staff,
                NewCategory {
                    slug: ok(Slug::parse(&format!("c-{}", sku.to_lowercase()))),
                    name: ok(Name::parse("name", &format!("Cat {sku}"))),
                    parent,
                },
            )
            .await)
        .value;
        let id = ok(self
            .cmd
            .create_product(
                &self.staff,
                NewProduct {
                    sku: ok(Sku::parse(sku)),
                    name: ok(Name::parse("name", &format!("Widget {sku}"))),
                    description: Description::default(),
                    category: cat,
                    price: ok(Money::price(price)),
                    status: ProductStatus::Active,
                    initial_stock: Some(ok(StockDelta::restock(stock))),
                },
            )
            .await)
        .value;
        (cat, id)
    }

    async fn customer(&self, email: &str) -> CustomerId {
        ok(self
            .cmd
            .create_customer(
                &self.staff,
                NewCustomer {
                    email: ok(Email::parse(email)),
                    name: ok(Name::parse("name", "Ann")),
                    role: Role::Customer,
                    password_hash: None,
                },
            )
            .await)
        .value
    }
}

#[tokio::test]
async fn views_follow_the_write_model_and_the_cache_is_invalidated() {
    let s = Shop::new().await;
    let (root, a) = s.product("VA-1", None, 500, 10).await;
    let (_, b) = s.product("VB-1", Some(root), 200, 5).await;
    let ann = s.customer("ann@example.com").await;
    ok(s.side.projector.catch_up_all().await);

    // Cached before the order.
    let before = ok(s.side.reads.product(a.0).await).unwrap_or_else(|| panic!("no product"));
    assert_eq!(before.available, 10);

    let ctx = CommandContext::user(ann, Role::Customer);
    let placed = ok(s
        .cmd
        .place_order(
            &ctx,
            ann,
            vec![
                OrderLineInput {
                    product: a,
                    quantity: ok(Quantity::parse(3)),
                },
                OrderLineInput {
                    product: b,
                    quantity: ok(Quantity::parse(2)),
                },
            ],
            &s.eur,
        )
        .await);
    let second = ok(s
        .cmd
        .place_order(
            &ctx,
            ann,
            vec![OrderLineInput {
                product: a,
                quantity: ok(Quantity::parse(1)),
            }],
            &s.eur,
        )
        .await);
    ok(s.cmd.cancel_order(&ctx, second.value.id).await);
    ok(s.side.projector.catch_up_all().await);

    let after = ok(s.side.reads.product(a.0).await).unwrap_or_else(|| panic!("no product"));
    assert_eq!(
        (after.on_hand, after.reserved, after.available),
        (10, 3, 7),
        "cache invalidated"
    );
    assert_eq!(after.popularity, 3, "cancelled units do not count");
    let bview = ok(s.side.reads.product(b.0).await).unwrap_or_else(|| panic!("no product"));
    assert_eq!(
        bview
            .category_path
            .iter()
            .map(|c| c.slug.as_str())
            .collect::<Vec<_>>(),
        vec!["c-va-1", "c-vb-1"]
    );

    // The product view agrees with the write model.
    let mut conn = ok(s.db.pool.get().await);
    let (on_hand, reserved): (i32, i32) = ok(inventory::table
        .find(a.0)
        .select((inventory::on_hand, inventory::reserved))
        .first(&mut conn)
        .await);
    assert_eq!((on_hand, reserved), (after.on_hand, after.reserved));

    let order =
        ok(s.side.reads.order(placed.value.id.0).await).unwrap_or_else(|| panic!("no order"));
    assert_eq!(order.total_minor, 3 * 500 + 2 * 200);
    assert_eq!(order.lines.len(), 2);
    assert_eq!(order.lines[0].name, "Widget VA-1");
    let cancelled =
        ok(s.side.reads.order(second.value.id.0).await).unwrap_or_else(|| panic!("no order"));
    assert_eq!(
        cancelled
            .status_history
            .iter()
            .map(|h| h.status.as_str())
            .collect::<Vec<_>>(),
        vec!["PENDING_PAYMENT", "CANCELLED"]
    );

    let summary =
        ok(s.side.reads.customer_summary(ann.0).await).unwrap_or_else(|| panic!("no summary"));
    assert_eq!(
        (summary.orders_count, summary.lifetime_spend_minor),
        (2, 1900)
    );

    let today = chrono::Utc::now().date_naive();
    let report = ok(s.side.reads.sales_report(today, today).await);
    assert_eq!(report.len(), 1);
    assert_eq!(
        (
            report[0].orders_count,
            report[0].units,
            report[0].revenue_minor
        ),
        (1, 5, 1900)
    );
    let top = ok(s.side.reads.top_products(10).await);
    assert_eq!(
        top.iter()
            .map(|p| (p.sku.as_str(), p.units))
            .collect::<Vec<_>>(),
        vec![("VA-1", 3), ("VB-1", 2)]
    );

    // Keyset pages: category filter includes sub-categories; pages do not overlap.
    let filter = till_read_models::queries::ProductFilter {
        category: Some(root.0),
        ..Default::default()
    };
    let p1 = ok(s
        .side
        .reads
        .products(
            &filter,
            till_read_models::queries::ProductSort::Price,
            None,
            1,
        )
        .await);
    assert!(p1.has_next_page);
    assert_eq!(p1.items[0].1.sku, "VB-1");
    let p2 = ok(s
        .side
        .reads
        .products(
            &filter,
            till_read_models::queries::ProductSort::Price,
            Some(&p1.items[0].0),
            1,
        )
        .await);
    assert!(!p2.has_next_page);
    assert_eq!(p2.items[0].1.sku, "VA-1");
}

/// Several changes of one order inside one projector batch apply in order.
#[tokio::test]
async fn an_orders_whole_life_in_one_batch_is_applied_in_order() {
    let db = TestDb::new().await;
    let cmd = Commands::new(db.pool.clone());
    let (projector, reads) = common::read_side(&db, ProjectorSettings::default());
    let shop = Shop {
        db,
        cmd,
        side: Side { projector, reads },
        staff: CommandContext::system("test"),
        eur: ok(Currency::parse("EUR")),
    };
    let (_, a) = shop.product("LIFE-1", None, 700, 9).await;
    let ann = shop.customer("life@example.com").await;
    let ctx = CommandContext::user(ann, Role::Customer);
    let placed = ok(shop
        .cmd
        .place_order(
            &ctx,
            ann,
            vec![OrderLineInput {
                product: a,
                quantity: ok(Quantity::parse(2)),
            }],
            &shop.eur,
        )
        .await);
    ok(shop.cmd.mark_paid(&shop.staff, placed.value.id).await);
    ok(shop.cmd.ship_order(&shop.staff, placed.value.id).await);
    // Transactions of other tests on the same cluster hold the visibility horizon back
    // for a moment: wait until every event here is readable, then take one batch.
    wait_until_visible(&shop.db).await;
    let out = ok(shop.side.projector.run_batch(Projection::OrderView).await);
    assert!(
        out.applied > 6,
        "everything fits one batch: {}",
        out.applied
    );
    ok(shop.side.projector.catch_up_all().await);

    let order =
        ok(shop.side.reads.order(placed.value.id.0).await).unwrap_or_else(|| panic!("no order"));
    assert_eq!(order.status, "SHIPPED");
    assert_eq!(
        order
            .status_history
            .iter()
            .map(|h| h.status.as_str())
            .collect::<Vec<_>>(),
        vec!["PENDING_PAYMENT", "PAID", "SHIPPED"]
    );
    let p = ok(shop.side.reads.product(a.0).await).unwrap_or_else(|| panic!("no product"));
    assert_eq!(
        (p.on_hand, p.reserved, p.available, p.popularity),
        (7, 0, 7, 2)
    );
}

/// Hits of one cache so far.
fn hits(reads: &ReadModels, kind: CacheKind) -> u64 {
    reads
        .cache()
        .snapshot()
        .iter()
        .find(|s| s.kind == kind)
        .map_or(0, |s| s.hits)
}

/// List pages are cached as ids: stock changes show through without dropping the page,
/// catalog changes (price, new product, archive) and a customer's new orders drop it.
#[tokio::test]
async fn cached_list_pages_follow_catalog_stock_and_order_changes() {
    use till_read_models::queries::{OrderFilter, ProductFilter, ProductSort};
    let s = Shop::new().await;
    let (root, a) = s.product("LA-1", None, 500, 10).await;
    let (_, b) = s.product("LB-1", Some(root), 200, 5).await;
    let ann = s.customer("ann@example.com").await;
    ok(s.side.projector.catch_up_all().await);
    let reads = &s.side.reads;
    let filter = ProductFilter {
        category: Some(root.0),
        statuses: vec!["ACTIVE".to_owned()],
        ..Default::default()
    };
    let page = async || {
        let p = ok(reads.products(&filter, ProductSort::Price, None, 10).await);
        p.items
            .iter()
            .map(|(_, v)| (v.sku.clone(), v.available))
            .collect::<Vec<_>>()
    };
    let sku = |s: &str| s.to_owned();

    assert_eq!(page().await, vec![(sku("LB-1"), 5), (sku("LA-1"), 10)]);
    let before = hits(reads, CacheKind::ProductPages);
    assert_eq!(page().await, vec![(sku("LB-1"), 5), (sku("LA-1"), 10)]);
    assert_eq!(
        hits(reads, CacheKind::ProductPages),
        before + 1,
        "second read is a hit"
    );

    // A stock change: the page stays cached, its item shows the new stock.
    let ctx = CommandContext::user(ann, Role::Customer);
    let line = |p: ProductId, q: i64| OrderLineInput {
        product: p,
        quantity: ok(Quantity::parse(q)),
    };
    let first = ok(s.cmd.place_order(&ctx, ann, vec![line(a, 3)], &s.eur).await);
    ok(s.side.projector.catch_up_all().await);
    let before = hits(reads, CacheKind::ProductPages);
    assert_eq!(page().await, vec![(sku("LB-1"), 5), (sku("LA-1"), 7)]);
    assert_eq!(
        hits(reads, CacheKind::ProductPages),
        before + 1,
        "still cached"
    );

    // A price change reorders the list.
    ok(s.cmd
        .update_product(
            &s.staff,
            b,
            None,
            till_domain::commands::ProductPatch {
                price: Some(ok(Money::price(900))),
                ..Default::default()
            },
        )
        .await);
    ok(s.side.projector.catch_up_all().await);
    assert_eq!(page().await, vec![(sku("LA-1"), 7), (sku("LB-1"), 5)]);

    // A new product appears; an archived one disappears.
    let (_, c) = s.product("LC-1", Some(root), 100, 1).await;
    ok(s.side.projector.catch_up_all().await);
    assert_eq!(
        page().await,
        vec![(sku("LC-1"), 1), (sku("LA-1"), 7), (sku("LB-1"), 5)]
    );
    ok(s.cmd.archive_product(&s.staff, c, None).await);
    ok(s.side.projector.catch_up_all().await);
    assert_eq!(page().await, vec![(sku("LA-1"), 7), (sku("LB-1"), 5)]);

    // A customer's order pages: new orders and status changes show.
    let mine = OrderFilter {
        customer: Some(ann.0),
        ..Default::default()
    };
    let orders = async || {
        let p = ok(reads.orders(&mine, None, 10).await);
        p.items
            .iter()
            .map(|(_, o)| (o.id, o.status.clone()))
            .collect::<Vec<_>>()
    };
    let pending = |id: OrderId| (id.0, "PENDING_PAYMENT".to_owned());
    assert_eq!(orders().await, vec![pending(first.value.id)]);
    let before = hits(reads, CacheKind::OrderPages);
    assert_eq!(orders().await, vec![pending(first.value.id)]);
    assert_eq!(
        hits(reads, CacheKind::OrderPages),
        before + 1,
        "second read is a hit"
    );
    let second = ok(s.cmd.place_order(&ctx, ann, vec![line(b, 1)], &s.eur).await);
    ok(s.side.projector.catch_up_all().await);
    assert_eq!(
        orders().await,
        vec![pending(second.value.id), pending(first.value.id)]
    );
    ok(s.cmd.cancel_order(&ctx, first.value.id).await);
    ok(s.side.projector.catch_up_all().await);
    assert_eq!(
        orders().await,
        vec![
            pending(second.value.id),
            (first.value.id.0, "CANCELLED".to_owned())
        ]
    );
}

/// POPULAR lists products by units ordered (cancellations give units back), most
/// popular first, ties by id, and pages through with its cursors; products nobody
/// ordered are listed too.
#[tokio::test]
async fn popular_products_follow_orders_and_page_by_cursor() {
    use till_read_models::queries::{ProductFilter, ProductSort};
    let s = Shop::new().await;
    let (root, a) = s.product("PA-1", None, 100, 50).await;
    let (_, b) = s.product("PB-1", Some(root), 100, 50).await;
    let (_, c) = s.product("PC-1", Some(root), 100, 50).await;
    let (_, d) = s.product("PD-1", Some(root), 100, 50).await;
    let ann = s.customer("pop@example.com").await;
    let ctx = CommandContext::user(ann, Role::Customer);
    let line = |p: ProductId, q: i64| OrderLineInput {
        product: p,
        quantity: ok(Quantity::parse(q)),
    };
    ok(s.cmd
        .place_order(&ctx, ann, vec![line(a, 2), line(b, 5)], &s.eur)
        .await);
    let third = ok(s.cmd.place_order(&ctx, ann, vec![line(c, 9)], &s.eur).await);
    ok(s.cmd
        .place_order(&ctx, ann, vec![line(c, 1), line(a, 3)], &s.eur)
        .await);
    ok(s.side.projector.catch_up_all().await);
    let reads = &s.side.reads;
    let filter = ProductFilter {
        category: Some(root.0),
        ..Default::default()
    };
    let all = async || {
        let mut seen = Vec::new();
        let mut after = None;
        for _ in 0..20 {
            let page = ok(reads
                .products(&filter, ProductSort::Popular, after.as_ref(), 2)
                .await);
            seen.extend(page.items.iter().map(|(_, v)| (v.id, v.popularity)));
            after = page.items.last().map(|(cursor, _)| cursor.clone());
            if !page.has_next_page {
                return seen;
            }
        }
        panic!("paging did not end: {seen:?}");
    };
    let ranked = |mut v: Vec<(uuid::Uuid, i64)>| {
        v.sort_by(|x, y| y.1.cmp(&x.1).then(y.0.cmp(&x.0)));
        v
    };
    assert_eq!(
        all().await,
        ranked(vec![(a.0, 5), (b.0, 5), (c.0, 10), (d.0, 0)])
    );
    ok(s.cmd.cancel_order(&ctx, third.value.id).await);
    ok(s.side.projector.catch_up_all().await);
    assert_eq!(
        all().await,
        ranked(vec![(a.0, 5), (b.0, 5), (c.0, 1), (d.0, 0)])
    );

    // A writer that knows nothing of the ordering table (the previous version's
    // projector during a rolling upgrade) creates a product and moves a popularity:
    // the database keeps the POPULAR ordering in step.
    let old = uuid::Uuid::now_v7();
    let mut conn = ok(s.db.pool.get().await);
    ok(diesel::sql_query(
        "INSERT INTO rm_product_view SELECT (jsonb_populate_record(NULL::rm_product_view, \
           to_jsonb(v) || jsonb_build_object('id', $2::uuid, 'sku', 'OLD-1', 'popularity', 7))).* \
         FROM rm_product_view v WHERE v.id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(d.0)
    .bind::<diesel::sql_types::Uuid, _>(old)
    .execute(&mut conn)
    .await);
    ok(
        diesel::sql_query("UPDATE rm_product_view SET popularity = popularity + 20 WHERE id = $1")
            .bind::<diesel::sql_types::Uuid, _>(d.0)
            .execute(&mut conn)
            .await,
    );
    assert_eq!(
        all().await,
        ranked(vec![(a.0, 5), (b.0, 5), (c.0, 1), (d.0, 20), (old, 7)])
    );
}

/// Appends one fake order for `customer` (see [`fake_order`]).
async fn append_order(db: &TestDb, customer: Uuid, total: i64) {
    let mut conn = ok(db.pool.get().await);
    let meta = EventMeta::system("step-test");
    ok(event_log::append(&mut conn, &meta, &[fake_order(customer, total, 0)]).await);
}

async fn log_head(db: &TestDb) -> event_log::LogPoint {
    let mut conn = ok(db.pool.get().await);
    ok(event_log::head(&mut conn).await)
}

/// Appends an order of 1,000 for `customer`, waits until every projection has applied
/// it, then stops the runner.
async fn last_order_then_stop(
    db: &TestDb,
    side: &Side,
    customer: Uuid,
    stop: tokio::sync::watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
) {
    append_order(db, customer, 1_000).await;
    wait_caught_up(db, &side.reads, log_head(db).await).await;
    let _ = stop.send(true);
    for h in handles {
        let _ = h.await;
    }
}

/// A constraint no sales row meets: the sales projection fails every batch until it is
/// dropped again.
const BREAK_SALES: &str =
    "ALTER TABLE rm_sales_daily ADD CONSTRAINT broken CHECK (orders_count < 0) NOT VALID";

/// Runs one statement on a pooled connection.
async fn run_sql(db: &TestDb, q: &str) {
    let mut conn = ok(db.pool.get().await);
    ok(diesel::sql_query(q).execute(&mut conn).await);
}

/// Every view's count of `customer`'s orders.
#[derive(Debug, PartialEq, Eq)]
struct Counts {
    /// Order view rows.
    orders: i64,
    /// The customer summary's orders count and spend.
    count: i64,
    spend: i64,
    /// Sales per day, summed: orders and revenue.
    daily_orders: i64,
    daily_revenue: i64,
    /// Product sales of the fake orders' product.
    units: i64,
}

async fn counted(db: &TestDb, customer: Uuid) -> Counts {
    let mut conn = ok(db.pool.get().await);
    let orders: i64 = ok(rm_order_view::table.count().get_result(&mut conn).await);
    let (count, spend): (i64, i64) = ok(rm_customer_summary::table
        .find(customer)
        .select((
            rm_customer_summary::orders_count,
            rm_customer_summary::lifetime_spend_minor,
        ))
        .first(&mut conn)
        .await);
    let (daily_orders, daily_revenue): (i64, i64) = ok(rm_sales_daily::table
        .select((
            diesel::dsl::sql::<BigInt>("coalesce(sum(orders_count), 0)::bigint"),
            diesel::dsl::sql::<BigInt>("coalesce(sum(revenue_minor), 0)::bigint"),
        ))
        .first(&mut conn)
        .await);
    let units: i64 = ok(rm_product_sales::table
        .find(Uuid::nil())
        .select(rm_product_sales::units)
        .first(&mut conn)
        .await);
    Counts {
        orders,
        count,
        spend,
        daily_orders,
        daily_revenue,
        units,
    }
}

/// `n` fake orders and their total, as [`Counts`] should show them.
fn expect(n: i64, spend: i64) -> Counts {
    Counts {
        orders: n,
        count: n,
        spend,
        daily_orders: n,
        daily_revenue: spend,
        units: n,
    }
}

/// The runner finds the projections at different checkpoints (one caught up alone, as
/// after another's failure): each takes batches of its own until they stand together,
/// every event is applied exactly once, and from then on one transaction applies the
/// order view, the customer summary and sales together (the product view beside it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_out_of_step_meet_again_and_apply_each_event_once() {
    use till_domain::schema::projection_checkpoints;

    let db = TestDb::new().await;
    let side = read_side(&db);
    let customer = Uuid::now_v7();
    // given 30 orders that only the order view has applied
    for i in 0..30 {
        append_order(&db, customer, 100 + i).await;
    }
    wait_until_visible(&db).await;
    ok(side.projector.catch_up(Projection::OrderView).await);

    // when the runner runs while 30 more orders arrive
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handles = side.projector.spawn(stop_rx);
    for i in 30..60 {
        append_order(&db, customer, 100 + i).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    wait_caught_up(&db, &side.reads, log_head(&db).await).await;
    // one more order, applied after they met again
    last_order_then_stop(&db, &side, customer, stop_tx, handles).await;

    // then every order is counted once in every view
    let expected_sum: i64 = (100..160).sum::<i64>() + 1_000;
    assert_eq!(counted(&db, customer).await, expect(61, expected_sum));
    // and the last batch moved the three checkpoints in one transaction (now() is the
    // transaction's start: one value for all three)
    let mut conn = ok(db.pool.get().await);
    let together = [
        Projection::OrderView,
        Projection::CustomerSummary,
        Projection::Sales,
    ];
    let moved: Vec<chrono::DateTime<chrono::Utc>> = ok(projection_checkpoints::table
        .filter(projection_checkpoints::projection.eq_any(together.map(Projection::name)))
        .select(projection_checkpoints::updated_at)
        .load(&mut conn)
        .await);
    assert_eq!(moved.len(), 3);
    assert!(
        moved.iter().all(|t| *t == moved[0]),
        "checkpoints moved in separate transactions: {moved:?}"
    );
}

/// A projection whose writes fail (a constraint its rows break, here) holds back no
/// other: the batch of its group fails, the other projections go on alone, and once the
/// cause is gone the failing one catches up, every event counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_projection_holds_back_no_other() {
    let db = TestDb::new().await;
    let side = read_side(&db);
    let customer = Uuid::now_v7();
    let sql = |q: &'static str| run_sql(&db, q);
    sql(BREAK_SALES).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handles = side.projector.spawn(stop_rx);
    for i in 0..20 {
        append_order(&db, customer, 100 + i).await;
    }
    let head = log_head(&db).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let at = |p| side.reads.progress().current(p);
        if [
            Projection::ProductView,
            Projection::OrderView,
            Projection::CustomerSummary,
        ]
        .iter()
        .all(|p| at(*p) >= head)
        {
            assert!(
                at(Projection::Sales) < head,
                "the broken projection moved on"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the failing projection held back the others"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sql("ALTER TABLE rm_sales_daily DROP CONSTRAINT broken").await;
    last_order_then_stop(&db, &side, customer, stop_tx, handles).await;
    let expected_sum: i64 = (100..120).sum::<i64>() + 1_000;
    assert_eq!(counted(&db, customer).await, expect(21, expected_sum));
}

/// A projection that failed is tried again after its backoff, not only when new events
/// wake the runner: with polling off (an hour) and no event after the cause is mended,
/// it still catches up.
#[tokio::test]
async fn a_failed_projection_is_retried_without_new_events() {
    let db = TestDb::new().await;
    let (projector, reads) = common::read_side(
        &db,
        ProjectorSettings {
            batch_size: 7,
            poll_interval: Duration::from_secs(3600),
            ..ProjectorSettings::default()
        },
    );
    let customer = Uuid::now_v7();
    let sql = |q: &'static str| run_sql(&db, q);
    sql(BREAK_SALES).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handles = projector.spawn(stop_rx);
    for i in 0..5 {
        append_order(&db, customer, 100 + i).await;
    }
    let head = log_head(&db).await;
    let at = |p| reads.progress().current(p);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // Wakes the runner (the events' own commits notify nobody here) until the healthy
    // projections are at the head.
    while at(Projection::OrderView) < head || at(Projection::ProductView) < head {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the healthy projections never caught up"
        );
        sql("SELECT pg_notify('till_events', '')").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        at(Projection::Sales) < head,
        "the broken projection moved on"
    );
    sql("ALTER TABLE rm_sales_daily DROP CONSTRAINT broken").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while at(Projection::Sales) < head {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mended projection waited for a wake-up that never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    for h in handles {
        let _ = h.await;
    }
    let expected_sum: i64 = (100..105).sum();
    assert_eq!(counted(&db, customer).await, expect(5, expected_sum));
}

/// A batch of a few events (an idle server) is followed by the next as soon as new
/// events arrive, not after the pace: with a pace of a minute, an order appended right
/// after the first one was applied is applied within seconds. Before the pace grew with
/// the load, the runner slept the whole pace after every batch, so a payload or a read
/// with a consistency token waited for the tick.
#[tokio::test]
async fn after_a_small_batch_the_next_events_are_applied_without_waiting_for_the_pace() {
    let db = TestDb::new().await;
    let (projector, reads) = common::read_side(
        &db,
        ProjectorSettings {
            pace: Duration::from_secs(60),
            pace_full_at: 100_000,
            poll_interval: Duration::from_secs(3600),
            ..ProjectorSettings::default()
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handles = projector.spawn(stop_rx);
    let customer = Uuid::now_v7();
    for total in [100, 200] {
        append_order(&db, customer, total).await;
        let head = log_head(&db).await;
        // The events' own commits notify nobody here: wake the runner as a writer's
        // announcer does, until every projection has the order.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while Projection::ALL
            .iter()
            .any(|p| reads.progress().current(*p) < head)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "order of {total} not applied within 20 s: the runner waited for the pace"
            );
            run_sql(&db, "SELECT pg_notify('till_events', '')").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = stop_tx.send(true);
    for h in handles {
        let _ = h.await;
    }
    assert_eq!(counted(&db, customer).await, expect(2, 300));
}

/// A connection in a transaction holding `projection`'s applier lock, as a rebuild's
/// swap takes it (`lock_applier`); COMMIT on it releases the lock.
async fn hold_applier_lock(db: &TestDb, projection: Projection) -> till_domain::db::PooledConn<'_> {
    let mut holder = ok(db.pool.get().await);
    ok(diesel::sql_query("BEGIN").execute(&mut holder).await);
    ok(
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('till.projection.' || $1))")
            .bind::<diesel::sql_types::Text, _>(projection.name())
            .execute(&mut holder)
            .await,
    );
    holder
}

/// A round of several projections takes the applier lock of each (the lock a rebuild's
/// swap holds to pause the projector): while another transaction holds one of them,
/// the round waits.
#[tokio::test]
async fn a_round_waits_for_every_applier_lock() {
    let db = TestDb::new().await;
    let side = read_side(&db);
    append_order(&db, Uuid::now_v7(), 100).await;
    wait_until_visible(&db).await;
    let mut holder = hold_applier_lock(&db, Projection::Sales).await;
    let projector = side.projector.clone();
    let mut round = tokio::spawn(async move {
        projector
            .run_round(&[
                Projection::OrderView,
                Projection::CustomerSummary,
                Projection::Sales,
            ])
            .await
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut round)
            .await
            .is_err(),
        "the round did not wait for the sales projection's lock"
    );
    ok(diesel::sql_query("COMMIT").execute(&mut holder).await);
    let out = ok(ok(tokio::time::timeout(Duration::from_secs(10), round)
        .await
        .unwrap_or_else(|_| panic!("the round never got the lock"))))
    .unwrap_or_else(|| panic!("the projections stood together"));
    assert_eq!(out.applied, 1);
}

/// Each group of projections runs at its own pace: while the product view's applier
/// lock is held elsewhere (as a rebuild's swap holds it), the order view, customer
/// summary and sales keep applying new events. When the groups took their turns
/// together, every turn waited for the blocked one (here until its statement timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_group_holds_back_no_other() {
    let db = TestDb::new().await;
    let side = read_side(&db);
    let customer = Uuid::now_v7();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handles = side.projector.spawn(stop_rx);
    append_order(&db, customer, 100).await;
    wait_caught_up(&db, &side.reads, log_head(&db).await).await;

    // given the product view's applier lock held by another transaction
    let mut holder = hold_applier_lock(&db, Projection::ProductView).await;
    let at = |p| side.reads.progress().current(p);
    let db_ref = &db;
    let others = [
        Projection::OrderView,
        Projection::CustomerSummary,
        Projection::Sales,
    ];
    let reach = |head: event_log::LogPoint, what: &'static str| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while others.iter().any(|p| at(*p) < head) {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            run_sql(db_ref, "SELECT pg_notify('till_events', '')").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // when an order arrives (the product view's next batch now waits for the lock)
    append_order(&db, customer, 200).await;
    reach(
        log_head(&db).await,
        "the others never applied the first order",
    )
    .await;
    // and another after it
    append_order(&db, customer, 300).await;
    let head = log_head(&db).await;
    // then the other group applies it too, while the product view stays paused
    reach(head, "the paused product view held back the other group").await;
    assert!(
        at(Projection::ProductView) < head,
        "the product view moved on"
    );

    ok(diesel::sql_query("COMMIT").execute(&mut holder).await);
    drop(holder);
    last_order_then_stop(&db, &side, customer, stop_tx, handles).await;
    assert_eq!(counted(&db, customer).await, expect(4, 1_600));
}

/// The horizon's age counts from the start of the oldest transaction that holds a
/// transaction id, which holds back every projector until it ends.
#[tokio::test]
async fn the_horizon_age_counts_from_the_oldest_transaction_holding_an_id() {
    let db = TestDb::new().await;
    let (_, reads) = common::read_side(&db, ProjectorSettings::default());
    let mut holder = ok(diesel_async::AsyncPgConnection::establish(&db.url).await);
    ok(diesel::sql_query("BEGIN").execute(&mut holder).await);
    ok(diesel::sql_query("SELECT pg_current_xact_id()")
        .execute(&mut holder)
        .await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = ok(reads.horizon_age().await);
    ok(diesel::sql_query("COMMIT").execute(&mut holder).await);
    assert!(held >= 0.3, "an id held for 300 ms reads as {held} s");
}
