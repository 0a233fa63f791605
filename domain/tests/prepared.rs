//! Statements marked `.prepared()` stay prepared on their connection; raw SQL without
//! it is prepared and closed again on every run (what diesel does by default).

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]

use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use till_domain::db::prepared::Reuse;
use till_domain::db::testing::TestDb;

#[derive(diesel::QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn prepared_copies(conn: &mut diesel_async::AsyncPgConnection, text: &str) -> i64 {
    diesel::sql_query("SELECT count(*) AS n FROM pg_prepared_statements WHERE statement = $1")
        .bind::<Text, _>(text)
        .get_result::<N>(conn)
        .await
        .unwrap()
        .n
}

#[tokio::test]
async fn prepared_statements_are_kept_and_raw_ones_are_not() {
    let db = TestDb::new().await;
    let mut conn = db.pool.get().await.unwrap();
    let kept = "SELECT $1::int8 + 1 AS n";
    let raw = "SELECT $1::int8 + 2 AS n";
    for i in 0..3 {
        let a: N = diesel::sql_query(kept)
            .bind::<BigInt, _>(i)
            .prepared()
            .get_result(&mut *conn)
            .await
            .unwrap();
        let b: N = diesel::sql_query(raw)
            .bind::<BigInt, _>(i)
            .get_result(&mut *conn)
            .await
            .unwrap();
        assert_eq!((a.n, b.n), (i + 1, i + 2));
    }
    assert_eq!(
        prepared_copies(&mut conn, kept).await,
        1,
        "one kept statement"
    );
    assert_eq!(
        prepared_copies(&mut conn, raw).await,
        0,
        "raw SQL is not kept"
    );
}

/// The event log's reads stay right when PostgreSQL plans them generically (as it may
/// for a statement kept prepared): a read from the middle of one transaction's events
/// returns the rest of them and everything after, in order.
#[tokio::test]
async fn event_log_reads_are_right_under_generic_plans() {
    use till_domain::event_log::{self, EventMeta, LogPoint};
    use till_domain::events::DomainEvent;

    let db = TestDb::new().await;
    let mut conn = db.pool.get().await.unwrap();
    diesel::sql_query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    let category = |slug: &str| DomainEvent::CategoryCreated {
        category_id: uuid::Uuid::now_v7(),
        slug: slug.into(),
        name: slug.into(),
        parent_id: None,
    };
    let meta = EventMeta::system("test");
    let first = event_log::append(
        &mut conn,
        &meta,
        &[category("a"), category("b"), category("c")],
    )
    .await
    .unwrap();
    let second = event_log::append(&mut conn, &meta, &[category("d")])
        .await
        .unwrap();
    assert!(second > first);
    // The log shows events only once every older transaction of the cluster has ended,
    // and tests in other databases of the same cluster run alongside this one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while event_log::read_after(&conn, first, 10)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the horizon never passed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for _ in 0..7 {
        // past the five custom plans PostgreSQL tries before a generic one
        let middle = LogPoint {
            tx_id: first.tx_id,
            position: first.position - 2,
        };
        let read = event_log::read_after(&conn, middle, 10).await.unwrap();
        let positions: Vec<i64> = read.iter().map(|e| e.position).collect();
        assert_eq!(
            positions,
            [first.position - 1, first.position, second.position]
        );
        assert!(event_log::any_after(&mut conn, first).await.unwrap());
        assert!(!event_log::any_after(&mut conn, second).await.unwrap());
    }
}

#[derive(diesel::QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    v: String,
}

/// The session's current value of setting `name`.
async fn setting(
    conn: &mut diesel_async::AsyncPgConnection,
    name: &str,
) -> Result<String, diesel::result::Error> {
    diesel::sql_query("SELECT current_setting($1) AS v")
        .bind::<Text, _>(name)
        .get_result::<Setting>(conn)
        .await
        .map(|s| s.v)
}

async fn plan_cache_mode(
    conn: &mut diesel_async::AsyncPgConnection,
) -> Result<String, diesel::result::Error> {
    setting(conn, "plan_cache_mode").await
}

/// Statements in a `transactions::transaction` use generic plans; the connection is back to
/// PostgreSQL's own choice after a commit and after a rollback, and out of the
/// transaction either way.
#[tokio::test]
async fn plans_transaction_is_generic_inside_and_leaves_no_trace() {
    use till_domain::db::transactions;

    let db = TestDb::new().await;
    let mut conn = db.pool.get().await.unwrap();
    let inside = transactions::transaction(&mut conn, async |conn| plan_cache_mode(conn).await)
        .await
        .unwrap();
    assert_eq!(inside, "force_generic_plan");
    assert_eq!(
        plan_cache_mode(&mut conn).await.ok().as_deref(),
        Some("auto")
    );

    let failed: Result<(), diesel::result::Error> =
        transactions::transaction(&mut conn, async |conn| {
            diesel::sql_query("SELECT 1 / 0").execute(conn).await?;
            Ok(())
        })
        .await;
    assert!(failed.is_err(), "division by zero fails the body");
    assert_eq!(
        plan_cache_mode(&mut conn).await.ok().as_deref(),
        Some("auto")
    );
    let again = transactions::transaction(&mut conn, async |conn| plan_cache_mode(conn).await)
        .await
        .unwrap();
    assert_eq!(
        again, "force_generic_plan",
        "rolled back, so a new transaction begins"
    );
}

/// A `transactions::derived_transaction` (projections) commits without waiting for the flush;
/// the setting ends with it.
#[tokio::test]
async fn derived_transactions_commit_without_waiting_for_the_flush() {
    use till_domain::db::transactions;

    async fn synchronous_commit(
        conn: &mut diesel_async::AsyncPgConnection,
    ) -> Result<String, diesel::result::Error> {
        setting(conn, "synchronous_commit").await
    }

    let db = TestDb::new().await;
    let mut conn = db.pool.get().await.unwrap();
    // (test clusters run with it off; a server's sessions have it on)
    diesel::sql_query("SET synchronous_commit = on")
        .execute(&mut *conn)
        .await
        .unwrap();
    let outside = synchronous_commit(&mut conn).await.unwrap();
    let inside = transactions::derived_transaction(&mut conn, async |conn| {
        Ok::<_, diesel::result::Error>((
            synchronous_commit(conn).await?,
            plan_cache_mode(conn).await?,
        ))
    })
    .await
    .unwrap();
    assert_eq!(inside, ("off".to_owned(), "force_generic_plan".to_owned()));
    assert_ne!(outside, "off");
    assert_eq!(
        synchronous_commit(&mut conn).await.ok(),
        Some(outside),
        "back to the session's setting"
    );
}

/// Rows of the test table `t`, or only those holding `n`.
async fn rows_of_t(conn: &mut diesel_async::AsyncPgConnection, n: Option<i32>) -> i64 {
    diesel::sql_query("SELECT count(*) AS n FROM t WHERE $1::int IS NULL OR n = $1")
        .bind::<diesel::sql_types::Nullable<diesel::sql_types::Integer>, _>(n)
        .get_result::<N>(conn)
        .await
        .unwrap()
        .n
}

/// `transactions::begin_with` sends the first statements behind BEGIN without waiting for it,
/// and they run inside the transaction: rolled back with it, on generic plans, whether
/// the statement still needed its Parse (first run) or was kept prepared (second run).
#[tokio::test]
async fn begin_with_runs_the_first_statements_inside_the_transaction() {
    use diesel_async::AsyncPgConnection;
    use till_domain::db::transactions;

    let db = TestDb::new().await;
    let mut conn = db.pool.get().await.unwrap();
    create_t(&mut conn).await;
    for run in 0..2 {
        let first = transactions::begin_with(&mut conn, async |mut shared: &AsyncPgConnection| {
            diesel::sql_query("INSERT INTO t VALUES (1)")
                .prepared()
                .execute(&mut shared)
                .await?;
            let mode: Setting = diesel::sql_query("SELECT current_setting('plan_cache_mode') AS v")
                .get_result(&mut shared)
                .await?;
            Ok::<_, diesel::result::Error>(mode.v)
        })
        .await
        .unwrap();
        assert_eq!(first, "force_generic_plan", "run {run}");
        let inside = rows_of_t(&mut conn, None).await;
        let ended: Result<(), _> =
            transactions::end(&mut conn, Err(diesel::result::Error::RollbackTransaction)).await;
        assert!(matches!(
            ended,
            Err(diesel::result::Error::RollbackTransaction)
        ));
        assert_eq!(
            (inside, rows_of_t(&mut conn, None).await),
            (1, 0),
            "run {run}"
        );
    }

    // Committed when the caller ends it with Ok.
    transactions::begin_with(&mut conn, async |mut shared: &AsyncPgConnection| {
        diesel::sql_query("INSERT INTO t VALUES (2)")
            .execute(&mut shared)
            .await
            .map(|_| ())
    })
    .await
    .unwrap();
    transactions::end(&mut conn, Ok::<_, diesel::result::Error>(()))
        .await
        .unwrap();
    assert_eq!(rows_of_t(&mut conn, None).await, 1);
    assert_eq!(
        plan_cache_mode(&mut conn).await.ok().as_deref(),
        Some("auto")
    );
}

/// A failing first statement rolls the transaction back and leaves the connection out
/// of it and usable; a `begin_with` dropped after sending leaves the connection marked
/// as in a transaction, which the pool treats as broken (it is discarded, never reused
/// inside someone else's transaction).
#[tokio::test]
async fn begin_with_rolls_back_on_error_and_a_dropped_one_breaks_the_connection() {
    use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};
    use futures_util::FutureExt;
    use till_domain::db::transactions;

    let db = TestDb::new().await;
    let mut conn = db.pool.get().await.unwrap();
    let failed = transactions::begin_with(&mut conn, async |mut shared: &AsyncPgConnection| {
        diesel::sql_query("SELECT 1 / 0")
            .execute(&mut shared)
            .await
            .map(|_| ())
    })
    .await;
    assert!(
        failed.is_err(),
        "division by zero fails the first statement"
    );
    assert!(!in_transaction(&mut conn), "rolled back");
    assert_eq!(
        plan_cache_mode(&mut conn).await.ok().as_deref(),
        Some("auto"),
        "out of the transaction and usable"
    );

    let mut other = db.pool.get().await.unwrap();
    let dropped = transactions::begin_with(&mut other, async |mut shared: &AsyncPgConnection| {
        diesel::sql_query("SELECT pg_sleep(0.2)")
            .execute(&mut shared)
            .await
            .map(|_| ())
    })
    .now_or_never();
    assert!(dropped.is_none(), "still waiting when dropped");
    assert!(
        AnsiTransactionManager::is_broken_transaction_manager(&mut *other),
        "the pool discards it"
    );
}

/// Opens a `transactions::begin_with` transaction whose first statement inserts `n` into `t`
/// and returns the transaction's id.
async fn open_with_row(conn: &mut diesel_async::AsyncPgConnection, n: i32) -> String {
    use diesel::sql_types::Integer;
    use diesel_async::AsyncPgConnection;
    use till_domain::db::transactions;

    transactions::begin_with(conn, async |mut shared: &AsyncPgConnection| {
        diesel::sql_query("INSERT INTO t VALUES ($1) RETURNING pg_current_xact_id()::text AS v")
            .bind::<Integer, _>(n)
            .prepared()
            .get_result::<Setting>(&mut shared)
            .await
            .map(|s| s.v)
    })
    .await
    .unwrap()
}

/// The last statement of the `commit_after` tests: the id of the transaction it runs in.
async fn last_statement(
    mut shared: &diesel_async::AsyncPgConnection,
) -> Result<String, diesel::result::Error> {
    diesel::sql_query("SELECT pg_current_xact_id_if_assigned()::text AS v")
        .prepared()
        .get_result::<Setting>(&mut shared)
        .await
        .map(|s| s.v)
}

fn in_transaction(conn: &mut diesel_async::AsyncPgConnection) -> bool {
    use diesel_async::{AnsiTransactionManager, TransactionManager};
    AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_state()
        .map_or(true, |s| s.transaction_depth().is_some())
}

async fn create_t(conn: &mut diesel_async::AsyncPgConnection) {
    diesel::sql_query("CREATE TABLE t (n int)")
        .execute(conn)
        .await
        .unwrap();
}

/// `transactions::commit_after` ends the transaction with its last statement inside it, whether
/// that statement still needed its Parse (first run on the connection: COMMIT waits
/// for it) or was kept prepared (COMMIT goes out behind it), and leaves the connection
/// out of the transaction.
#[tokio::test]
async fn commit_after_runs_the_last_statement_inside_the_transaction() {
    use till_domain::db::transactions;

    let db = TestDb::new().await;
    let mut conn = db.pool.get().await.unwrap();
    create_t(&mut conn).await;
    for run in 0..3 {
        let xid = open_with_row(&mut conn, run).await;
        let last = transactions::commit_after(&mut conn, last_statement)
            .await
            .unwrap();
        assert_eq!(last, xid, "run {run}: the same transaction");
        assert!(!in_transaction(&mut conn), "run {run}: ended");
        assert_eq!(
            rows_of_t(&mut conn, None).await,
            i64::from(run) + 1,
            "run {run}"
        );
    }
}

/// COMMIT is pipelined only behind a statement kept prepared: polled once and dropped,
/// a `commit_after` commits when the statement ran before on that connection (COMMIT
/// was already sent), and not on a connection that has to prepare it first.
#[tokio::test]
async fn commit_after_sends_commit_with_a_prepared_statement_only() {
    use futures_util::FutureExt;
    use till_domain::db::transactions;

    async fn committed(conn: &mut diesel_async::AsyncPgConnection, n: i32) -> bool {
        rows_of_t(conn, Some(n)).await == 1
    }

    let db = TestDb::new().await;
    let mut observer = db.pool.get().await.unwrap();
    create_t(&mut observer).await;

    // A fresh connection: the last statement needs its Parse, so COMMIT waits for it.
    let mut fresh = db.pool.get().await.unwrap();
    open_with_row(&mut fresh, 1).await;
    let once = transactions::commit_after(&mut fresh, last_statement).now_or_never();
    assert!(once.is_none(), "still waiting for the statement");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!committed(&mut observer, 1).await, "COMMIT was not sent");

    // The statement kept prepared on this connection: COMMIT goes out with it.
    let mut warm = db.pool.get().await.unwrap();
    open_with_row(&mut warm, 2).await;
    transactions::commit_after(&mut warm, last_statement)
        .await
        .unwrap();
    open_with_row(&mut warm, 3).await;
    let once = transactions::commit_after(&mut warm, last_statement).now_or_never();
    assert!(once.is_none(), "still waiting for the answers");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !committed(&mut observer, 3).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "COMMIT went out behind the statement"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A last statement that fails rolls the whole transaction back, also when COMMIT was
/// sent behind it (PostgreSQL answers it with a rollback), and the connection is out of
/// the transaction and usable.
#[tokio::test]
async fn commit_after_rolls_back_when_the_last_statement_fails() {
    use diesel_async::AsyncPgConnection;
    use till_domain::db::transactions;

    let db = TestDb::new().await;
    let mut conn = db.pool.get().await.unwrap();
    create_t(&mut conn).await;
    for run in 0..3 {
        open_with_row(&mut conn, run).await;
        let failed =
            transactions::commit_after(&mut conn, async |mut shared: &AsyncPgConnection| {
                diesel::sql_query("SELECT 1 / 0")
                    .prepared()
                    .execute(&mut shared)
                    .await
                    .map(|_| ())
            })
            .await;
        assert!(failed.is_err(), "run {run}: division by zero");
        assert!(!in_transaction(&mut conn), "run {run}: ended");
        assert_eq!(
            rows_of_t(&mut conn, None).await,
            0,
            "run {run}: rolled back"
        );
    }
}
