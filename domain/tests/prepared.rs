//! Statements marked `.prepared()` stay prepared on their connection; raw SQL without
//! it is prepared and closed again on every run (what diesel does by default).

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
        .unwrap_or_else(|e| panic!("{e}"))
        .n
}

#[tokio::test]
async fn prepared_statements_are_kept_and_raw_ones_are_not() {
    let db = TestDb::new().await;
    let mut conn = db.pool.get().await.unwrap_or_else(|e| panic!("{e}"));
    let kept = "SELECT $1::int8 + 1 AS n";
    let raw = "SELECT $1::int8 + 2 AS n";
    for i in 0..3 {
        let a: N = diesel::sql_query(kept)
            .bind::<BigInt, _>(i)
            .prepared()
            .get_result(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let b: N = diesel::sql_query(raw)
            .bind::<BigInt, _>(i)
            .get_result(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.n, b.n), (i + 1, i + 2));
    }
    assert_eq!(prepared_copies(&mut conn, kept).await, 1, "one kept statement");
    assert_eq!(prepared_copies(&mut conn, raw).await, 0, "raw SQL is not kept");
}
