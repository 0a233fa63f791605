//! Bulk seeding goes through the log: once the projector has caught up, the read
//! models count exactly what was inserted.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use till_api::seed::{bulk, SeedSizes};
use till_domain::db::testing::TestDb;
use till_domain::types::Currency;
use till_read_models::schema::{
    rm_categories, rm_customer_summary, rm_order_view, rm_product_view,
};
use till_read_models::ReadSide;

use crate::support::ok;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_seed_is_projected_completely() {
    let db = TestDb::new().await;
    let sizes = SeedSizes {
        categories: 12,
        products: 1500,
        customers: 1200,
        orders: 700,
    };
    ok(bulk(&db.pool, sizes, &ok(Currency::parse("EUR"))).await);
    let projector = ReadSide::builder(db.pool.clone(), db.url.clone())
        .build()
        .projector;
    ok(projector.catch_up_all().await);
    let mut conn = ok(db.pool.get().await);
    let cats: i64 = ok(rm_categories::table.count().get_result(&mut conn).await);
    let products: i64 = ok(rm_product_view::table.count().get_result(&mut conn).await);
    let customers: i64 = ok(rm_customer_summary::table
        .count()
        .get_result(&mut conn)
        .await);
    let orders: i64 = ok(rm_order_view::table
        .filter(rm_order_view::status.eq("PAID"))
        .count()
        .get_result(&mut conn)
        .await);
    assert_eq!((cats, products, customers, orders), (12, 1500, 1200, 700));
    let placed: i64 = ok(rm_customer_summary::table
        .select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "coalesce(sum(orders_count), 0)::bigint",
        ))
        .first(&mut conn)
        .await);
    assert_eq!(placed, 700);
}
