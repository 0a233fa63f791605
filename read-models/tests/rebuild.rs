//! Projection rebuilds against a real PostgreSQL: built aside while orders keep coming
//! and readers keep reading, swapped in without a failed read, equal to a replay from
//! scratch, with every cache dropped; one rebuild per projection at a time; a stopped or
//! abandoned rebuild changes nothing.

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::sql_types::{Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use rand::Rng;
use till_domain::commands::{CommandContext, Commands, OrderLineInput};
use till_domain::db::testing::TestDb;
use till_domain::seed;
use till_domain::types::{CustomerId, ProductId, Quantity, Role};
use till_read_models::rebuild::{last_rebuilds, RebuildPhase};
use till_read_models::{
    Projection, Projector, ProjectorSettings, ReadError, ReadModels, Rebuild, RebuildSettings,
    RebuildState,
};
use tokio::sync::watch;
use uuid::Uuid;

mod common;
use common::ok;

fn side(db: &TestDb) -> (Projector, ReadModels) {
    common::read_side(db, ProjectorSettings::default())
}

#[derive(diesel::QueryableByName)]
struct Text1 {
    #[diesel(sql_type = Text)]
    t: String,
}

async fn texts(db: &TestDb, sql: &str) -> Vec<String> {
    let mut conn = ok(db.pool.get().await);
    ok(diesel::sql_query(sql).load::<Text1>(&mut conn).await)
        .into_iter()
        .map(|r| r.t)
        .collect()
}

async fn exec(db: &TestDb, sql: &str) {
    let mut conn = ok(db.pool.get().await);
    ok(diesel::sql_query(sql).execute(&mut conn).await);
}

/// Names and definitions of the read-model tables' indexes, constraints and triggers,
/// and their storage options: a swap must keep them all (later migrations name them).
async fn catalog_shape(db: &TestDb) -> Vec<String> {
    let mut shape = texts(
        db,
        "SELECT schemaname || ' ' || indexname || ' ' || indexdef AS t FROM pg_indexes \
         WHERE tablename LIKE 'rm\\_%' \
         UNION ALL SELECT conname || ' ' || pg_get_constraintdef(c.oid) FROM pg_constraint c \
           JOIN pg_class r ON r.oid = c.conrelid WHERE r.relname LIKE 'rm\\_%' \
         UNION ALL SELECT tgname || ' ' || pg_get_triggerdef(t.oid) FROM pg_trigger t \
           JOIN pg_class r ON r.oid = t.tgrelid WHERE r.relname LIKE 'rm\\_%' AND NOT tgisinternal \
         UNION ALL SELECT relname || ' ' || coalesce(array_to_string(reloptions, ','), '-') \
           FROM pg_class WHERE relname LIKE 'rm\\_%' AND relkind = 'r'",
    )
    .await;
    shape.sort();
    shape
}

/// Every row of every read-model table, as text, sorted.
async fn contents(db: &TestDb) -> Vec<String> {
    let mut out = Vec::new();
    for p in Projection::ALL {
        for table in p.tables() {
            let mut rows = texts(
                db,
                &format!("SELECT '{table} ' || t::text AS t FROM {table} t"),
            )
            .await;
            rows.sort();
            out.extend(rows);
        }
    }
    out
}

async fn cached_name(reads: &ReadModels, id: Uuid) -> String {
    ok(reads.product(id).await)
        .unwrap_or_else(|| panic!("product {id} not in the view"))
        .name
        .clone()
}

/// All four projections are rebuilt at once (small batches, so it takes many) while
/// buyers place and cancel orders and readers read the tables through prepared
/// statements. Before it starts, the live read models are damaged (rows changed and
/// deleted) and the damaged product is cached in two processes. Afterwards: no read
/// failed or missed its row during the swap, the damage is gone, both caches were
/// dropped, the tables keep their index, constraint and trigger names, and their
/// contents equal a replay of the whole log from scratch by the ordinary projector.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_under_load_swaps_in_the_same_tables_without_failing_a_read() {
    let db = TestDb::with_pool_size(24).await;
    let cmd = Commands::new(db.pool.clone());
    let cats = ok(seed::categories(&db.pool, "rb", 0, 10, &[]).await);
    let products = ok(seed::products(&db.pool, "rb", 0, 200, &cats).await);
    let customers = ok(seed::customers(&db.pool, "rb", 0, 50).await);
    ok(seed::orders(&db.pool, 1500, &customers, &products, "EUR").await);

    let (projector, reads) = side(&db);
    ok(projector.catch_up_all().await);
    let (stop_tx, stop) = watch::channel(false);
    let live = projector.spawn(stop.clone());
    // A second process that projects nothing and follows the checkpoints.
    let (follower, follower_reads) = side(&db);
    ok(follower.catch_up_all().await);
    let shape_before = catalog_shape(&db).await;

    // Damage the live read models, and cache the damaged product in both processes.
    let damaged = products[0].id;
    exec(
        &db,
        &format!("UPDATE rm_product_view SET name = 'damaged' WHERE id = '{damaged}'"),
    )
    .await;
    exec(
        &db,
        "DELETE FROM rm_order_view WHERE id IN (SELECT id FROM rm_order_view LIMIT 10)",
    )
    .await;
    exec(&db, "UPDATE rm_customer_summary SET orders_count = 999").await;
    exec(&db, "DELETE FROM rm_sales_daily").await;
    assert_eq!(cached_name(&reads, damaged).await, "damaged");
    assert_eq!(cached_name(&follower_reads, damaged).await, "damaged");

    // Buyers and readers until the rebuilds are done.
    let done = Arc::new(AtomicBool::new(false));
    let placed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for buyer in customers.iter().take(4) {
        let (cmd, done, placed) = (cmd.clone(), done.clone(), placed.clone());
        let ids: Vec<Uuid> = products.iter().map(|p| p.id).collect();
        let buyer = CustomerId(buyer.id);
        load.push(tokio::spawn(async move {
            let ctx = CommandContext::user(buyer, Role::Customer);
            let eur = ok(till_domain::types::Currency::parse("EUR"));
            while !AtomicBool::load(&done, Ordering::Relaxed) {
                // Never the damaged product: only the swap may correct it.
                let product = ProductId(ids[rand::thread_rng().gen_range(1..ids.len())]);
                let line = OrderLineInput {
                    product,
                    quantity: ok(Quantity::parse(1)),
                };
                let order = ok(cmd.place_order(&ctx, buyer, vec![line], &eur).await);
                if placed.fetch_add(1, Ordering::Relaxed) % 3 == 0 {
                    ok(cmd.cancel_order(&ctx, order.value.id).await);
                }
            }
        }));
    }
    let reads_done = Arc::new(AtomicU64::new(0));
    for _ in 0..2 {
        let (pool, done, reads_done) = (db.pool.clone(), done.clone(), reads_done.clone());
        let ids: Vec<Uuid> = products.iter().map(|p| p.id).collect();
        load.push(tokio::spawn(async move {
            while !AtomicBool::load(&done, Ordering::Relaxed) {
                let id = ids[rand::thread_rng().gen_range(1..ids.len())];
                let mut conn = ok(pool.get().await);
                // Prepared on this connection before the swap, run after it too.
                let rows = diesel::sql_query("SELECT name AS t FROM rm_product_view WHERE id = $1")
                    .bind::<SqlUuid, _>(id)
                    .load::<Text1>(&mut conn)
                    .await;
                let rows = rows.unwrap_or_else(|e| panic!("a read failed during the rebuild: {e}"));
                assert_eq!(
                    rows.len(),
                    1,
                    "product {id} missing from the view during the rebuild"
                );
                reads_done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let settings = RebuildSettings {
        batch_size: 200,
        ..RebuildSettings::default()
    };
    let rebuilds = Projection::ALL.map(|p| {
        let (url, settings, stop) = (db.url.clone(), settings.clone(), stop.clone());
        tokio::spawn(async move {
            let rebuild = Rebuild::start(&url, p, settings).await?;
            let total = rebuild.total();
            let mut phases = Vec::new();
            let mut last = 0;
            let report = rebuild
                .run(
                    &mut |progress| {
                        assert!(progress.applied >= last, "progress went backwards");
                        last = progress.applied;
                        if phases.last() != Some(&progress.phase) {
                            phases.push(progress.phase);
                        }
                    },
                    &stop,
                )
                .await?;
            Ok::<_, ReadError>((total, phases, report))
        })
    });
    let mut reports = Vec::new();
    for r in rebuilds {
        reports.push(ok(ok(r.await)));
    }
    done.store(true, Ordering::Relaxed);
    for task in load {
        ok(task.await);
    }
    assert!(
        AtomicU64::load(&placed, Ordering::Relaxed) > 0,
        "no order was placed during the rebuild"
    );
    assert!(
        AtomicU64::load(&reads_done, Ordering::Relaxed) > 0,
        "no read ran during the rebuild"
    );
    for (total, phases, report) in &reports {
        assert!(
            report.events >= *total,
            "replayed {} of {total}",
            report.events
        );
        assert_eq!(
            phases,
            &[
                RebuildPhase::Copying,
                RebuildPhase::Indexing,
                RebuildPhase::Swapping,
                RebuildPhase::Finished
            ]
        );
    }

    // The live projector carries on on the new tables; the follower notices the swap.
    ok(projector.catch_up_all().await);
    for p in Projection::ALL {
        ok(follower.observe(p).await);
    }
    let name = products[0].name.clone();
    assert_eq!(
        cached_name(&reads, damaged).await,
        name,
        "projector's cache dropped"
    );
    assert_eq!(
        cached_name(&follower_reads, damaged).await,
        name,
        "follower's cache dropped"
    );
    assert_eq!(
        catalog_shape(&db).await,
        shape_before,
        "names and definitions kept"
    );
    let leftovers = texts(
        &db,
        "SELECT nspname::text AS t FROM pg_namespace WHERE nspname LIKE 'till\\_re%'",
    )
    .await;
    assert!(leftovers.is_empty(), "schemas left behind: {leftovers:?}");
    let mut conn = ok(db.pool.get().await);
    let statuses = ok(last_rebuilds(&mut conn).await);
    drop(conn);
    assert_eq!(statuses.len(), 4);
    for s in &statuses {
        assert_eq!(s.state, RebuildState::Done, "{:?}", s.error);
        assert!(s.events_applied >= s.events_total && s.finished_at.is_some());
    }
    let _ = stop_tx.send(true);
    for h in live {
        ok(h.await);
    }

    // The ordinary projector replaying the whole log from scratch gives the same rows.
    let rebuilt = contents(&db).await;
    assert!(rebuilt.iter().any(|r| r.starts_with("rm_sales_daily ")));
    for p in Projection::ALL {
        exec(&db, &format!("TRUNCATE {}", p.tables().join(", "))).await;
    }
    exec(&db, "DELETE FROM projection_checkpoints").await;
    let (fresh, _) = side(&db);
    ok(fresh.catch_up_all().await);
    let replayed = contents(&db).await;
    assert_eq!(rebuilt.len(), replayed.len());
    assert!(
        rebuilt == replayed,
        "the rebuilt tables differ from a replay from scratch"
    );
}

/// A second rebuild of a projection is refused while one runs; a rebuild that is
/// stopped, or whose process goes away, leaves the live tables as they were and reads
/// as failed.
#[tokio::test]
async fn rebuilds_are_exclusive_and_a_stopped_one_changes_nothing() {
    let db = TestDb::new().await;
    let cats = ok(seed::categories(&db.pool, "rx", 0, 3, &[]).await);
    ok(seed::products(&db.pool, "rx", 0, 20, &cats).await);
    let (projector, _) = side(&db);
    ok(projector.catch_up_all().await);
    let table_oid = "SELECT to_regclass('rm_product_view')::oid::text AS t";
    let oid_before = texts(&db, table_oid).await;

    let first =
        ok(Rebuild::start(&db.url, Projection::ProductView, RebuildSettings::default()).await);
    match Rebuild::start(&db.url, Projection::ProductView, RebuildSettings::default()).await {
        Err(ReadError::Conflict(m)) => assert!(m.contains("already running"), "{m}"),
        Err(e) => panic!("expected a conflict, got {e}"),
        Ok(_) => panic!("a second rebuild of the same projection started"),
    }
    // Other projections are independent.
    let other = ok(Rebuild::start(&db.url, Projection::Sales, RebuildSettings::default()).await);
    let mut conn = ok(db.pool.get().await);
    let running = ok(last_rebuilds(&mut conn).await);
    assert!(running.iter().all(|s| s.state == RebuildState::Running));

    // Stopped before it finished.
    let (_stop_tx, stopped) = watch::channel(true);
    match first.run(&mut |_| {}, &stopped).await {
        Err(ReadError::Interrupted) => {}
        other => panic!("expected Interrupted, got {:?}", other.map(|r| r.events)),
    }
    assert_eq!(
        texts(&db, table_oid).await,
        oid_before,
        "live table untouched"
    );
    let leftovers = texts(
        &db,
        "SELECT nspname::text AS t FROM pg_namespace WHERE nspname LIKE 'till\\_re%product%'",
    )
    .await;
    assert!(leftovers.is_empty(), "schemas left behind: {leftovers:?}");

    // Its process went away mid-rebuild (the connection closes, the lock goes).
    drop(other);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let statuses = loop {
        let statuses = ok(last_rebuilds(&mut conn).await);
        if statuses.iter().all(|s| s.state == RebuildState::Failed) {
            break statuses;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "abandoned rebuild still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let by = |p: Projection| {
        statuses
            .iter()
            .find(|s| s.projection == p)
            .map(|s| s.error.clone())
    };
    assert_eq!(
        by(Projection::ProductView).flatten().as_deref(),
        Some("stopped before it finished")
    );
    assert!(by(Projection::Sales)
        .flatten()
        .is_some_and(|e| e.contains("went away")));

    // And the next rebuild runs.
    let (_keep, go) = watch::channel(false);
    let again =
        ok(Rebuild::start(&db.url, Projection::ProductView, RebuildSettings::default()).await);
    let report = ok(again.run(&mut |_| {}, &go).await);
    assert!(report.events > 0);
    assert_ne!(
        texts(&db, table_oid).await,
        oid_before,
        "swapped for a new table"
    );
}

/// A migration that changes a projection's table while its rebuild runs (here: a new
/// index) fails the swap: the live table, with its new index, is kept.
#[tokio::test]
async fn a_table_changed_during_the_rebuild_is_not_swapped_away() {
    let db = TestDb::new().await;
    let cats = ok(seed::categories(&db.pool, "mg", 0, 3, &[]).await);
    let products = ok(seed::products(&db.pool, "mg", 0, 20, &cats).await);
    let customers = ok(seed::customers(&db.pool, "mg", 0, 5).await);
    ok(seed::orders(&db.pool, 50, &customers, &products, "EUR").await);
    let (projector, _) = side(&db);
    ok(projector.catch_up_all().await);
    let table_oid = "SELECT to_regclass('rm_product_sales')::oid::text AS t";
    let oid_before = texts(&db, table_oid).await;

    // The swap waits for the projector's applier lock, held here.
    let mut holder = ok(db.pool.get().await);
    ok(
        diesel::sql_query("SELECT pg_advisory_lock(hashtext('till.projection.sales'))")
            .execute(&mut holder)
            .await,
    );
    let settings = RebuildSettings {
        lock_timeout: Duration::from_millis(100),
        swap_attempts: 1000,
        ..RebuildSettings::default()
    };
    let url = db.url.clone();
    let (_keep, stop) = watch::channel(false);
    let rebuild = tokio::spawn(async move {
        let rebuild = Rebuild::start(&url, Projection::Sales, settings).await?;
        rebuild.run(&mut |_| {}, &stop).await
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut conn = ok(db.pool.get().await);
        let swapping = ok(last_rebuilds(&mut conn).await)
            .iter()
            .any(|s| s.projection == Projection::Sales && s.phase == RebuildPhase::Swapping);
        if swapping {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached the swap"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    exec(
        &db,
        "CREATE INDEX rm_product_sales_name_idx ON rm_product_sales (name)",
    )
    .await;
    ok(
        diesel::sql_query("SELECT pg_advisory_unlock(hashtext('till.projection.sales'))")
            .execute(&mut holder)
            .await,
    );

    match ok(rebuild.await) {
        Err(ReadError::Conflict(m)) => assert!(m.contains("changed during the rebuild"), "{m}"),
        Err(e) => panic!("expected a conflict, got {e}"),
        Ok(_) => panic!("the rebuild swapped away a table a migration had changed"),
    }
    assert_eq!(texts(&db, table_oid).await, oid_before, "live table kept");
    let kept = texts(
        &db,
        "SELECT indexname::text AS t FROM pg_indexes WHERE indexname = 'rm_product_sales_name_idx'",
    )
    .await;
    assert_eq!(kept, ["rm_product_sales_name_idx"]);
    let mut conn = ok(db.pool.get().await);
    let row = ok(last_rebuilds(&mut conn).await);
    assert!(row
        .iter()
        .any(|s| s.projection == Projection::Sales && s.state == RebuildState::Failed));
}

/// A rebuild's index phase holds back no projection: an order placed while the rebuild
/// is building its indexes becomes readable by the live projector before the rebuild
/// finishes. The live order view gets an extra expression index whose function waits
/// on an advisory lock the test holds, but only inside a `CREATE INDEX` statement, so
/// the rebuild stops in the middle of its index build (and nothing else does) until the
/// test lets it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_building_its_indexes_holds_back_no_projection() {
    let db = TestDb::new().await;
    let cmd = Commands::new(db.pool.clone());
    let cats = ok(seed::categories(&db.pool, "ix", 0, 3, &[]).await);
    let products = ok(seed::products(&db.pool, "ix", 0, 20, &cats).await);
    let customers = ok(seed::customers(&db.pool, "ix", 0, 5).await);
    ok(seed::orders(&db.pool, 200, &customers, &products, "EUR").await);
    let (projector, _) = side(&db);
    ok(projector.catch_up_all().await);

    const GATE: i64 = 0x7e57;
    exec(
        &db,
        &format!(
            "CREATE FUNCTION rebuild_gate(v uuid) RETURNS uuid LANGUAGE plpgsql IMMUTABLE AS $$ \
             BEGIN \
               IF current_query() ILIKE 'CREATE INDEX%' THEN \
                 PERFORM pg_advisory_lock_shared({GATE}); \
                 PERFORM pg_advisory_unlock_shared({GATE}); \
               END IF; \
               RETURN v; \
             END $$"
        ),
    )
    .await;
    exec(
        &db,
        "CREATE INDEX rm_order_view_gate_idx ON rm_order_view (rebuild_gate(id))",
    )
    .await;
    let mut gate = ok(db.pool.get().await);
    ok(
        diesel::sql_query(format!("SELECT pg_advisory_lock({GATE})"))
            .execute(&mut gate)
            .await,
    );

    let url = db.url.clone();
    let (_keep, stop) = watch::channel(false);
    let rebuild = tokio::spawn(async move {
        let rebuild =
            Rebuild::start(&url, Projection::OrderView, RebuildSettings::default()).await?;
        rebuild.run(&mut |_| {}, &stop).await
    });
    // Wait until the rebuild is stopped at the gate, in the middle of an index build.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let gated = loop {
        let waiting = texts(
            &db,
            "SELECT pid::text AS t FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock' \
               AND wait_event = 'advisory' AND query ILIKE 'CREATE INDEX%'",
        )
        .await;
        if let Some(pid) = waiting.into_iter().next() {
            break pid;
        }
        assert!(
            !rebuild.is_finished(),
            "the rebuild finished without reaching the gate"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rebuild never reached its index build"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // The index build in progress holds no transaction id...
    let xid = texts(
        &db,
        &format!(
            "SELECT coalesce(backend_xid::text, 'none') AS t FROM pg_stat_activity WHERE pid = {gated}"
        ),
    )
    .await;
    // ...so an order placed now becomes readable by the live projector while the
    // rebuild is still stopped. (Other tests' transactions on the same cluster hold the
    // horizon for moments too, hence the loop; the deadline only guards against a hang.)
    let buyer = CustomerId(customers[0].id);
    let ctx = CommandContext::user(buyer, Role::Customer);
    let eur = ok(till_domain::types::Currency::parse("EUR"));
    let line = OrderLineInput {
        product: ProductId(products[1].id),
        quantity: ok(Quantity::parse(1)),
    };
    let order = ok(cmd.place_order(&ctx, buyer, vec![line], &eur).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let projected = loop {
        ok(projector.catch_up(Projection::OrderView).await);
        let rows = texts(
            &db,
            &format!(
                "SELECT id::text AS t FROM rm_order_view WHERE id = '{}'",
                order.value.id
            ),
        )
        .await;
        if !rows.is_empty() || tokio::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let still_gated = texts(
        &db,
        &format!("SELECT pid::text AS t FROM pg_stat_activity WHERE pid = {gated} AND wait_event = 'advisory'"),
    )
    .await;

    ok(
        diesel::sql_query(format!("SELECT pg_advisory_unlock({GATE})"))
            .execute(&mut gate)
            .await,
    );
    drop(gate);
    let report = ok(ok(rebuild.await));
    assert_eq!(
        still_gated,
        std::slice::from_ref(&gated),
        "the rebuild was still building its index"
    );
    assert_eq!(
        projected,
        [order.value.id.to_string()],
        "an order placed during the rebuild's index build was not projected"
    );
    assert_eq!(xid, ["none"], "the index build held a transaction id");
    assert!(report.events > 0);
    // The rebuilt table has the order too, and kept the gate index.
    ok(projector.catch_up_all().await);
    let rebuilt = texts(
        &db,
        &format!(
            "SELECT id::text AS t FROM rm_order_view WHERE id = '{}'",
            order.value.id
        ),
    )
    .await;
    assert_eq!(rebuilt.len(), 1);
    let kept = texts(
        &db,
        "SELECT indexname::text AS t FROM pg_indexes WHERE indexname = 'rm_order_view_gate_idx'",
    )
    .await;
    assert_eq!(kept, ["rm_order_view_gate_idx"]);
}
