//! Projection throughput over the whole log (catalog, customers and 10,000 paid orders,
//! about 34,000 events): `projection_replay` is the projector applying it to emptied
//! tables (apply throughput); `projection_rebuild` is the real rebuild
//! (`till projections rebuild`): copy into tables built aside, index, swap in.

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use diesel_async::RunQueryDsl;
use till_domain::seed;
use till_read_models::{Projection, Rebuild, RebuildSettings};

fn reset_sql(p: Projection) -> &'static str {
    match p {
        Projection::ProductView => "TRUNCATE rm_categories, rm_product_view, rm_product_popularity",
        Projection::OrderView => "TRUNCATE rm_order_view",
        Projection::CustomerSummary => "TRUNCATE rm_customer_summary",
        Projection::Sales => "TRUNCATE rm_sales_daily, rm_product_sales",
    }
}

fn bench(c: &mut Criterion) {
    let rt = common::runtime();
    let world = rt.block_on(async {
        let w = common::world(0).await;
        let pool = &w.db.pool;
        let cats = seed::categories(pool, "pb", 0, 20, &[]).await;
        let cats = cats.unwrap();
        let products = seed::products(pool, "pb", 0, 2000, &cats).await;
        let products = products.unwrap();
        let customers = seed::customers(pool, "pb", 0, 1000).await;
        let customers = customers.unwrap();
        for _ in 0..5 {
            seed::orders(pool, 2000, &customers, &products, "EUR")
                .await
                .unwrap();
        }
        w
    });
    let events: u64 = rt.block_on(async {
        let mut conn = world.db.pool.get().await.unwrap();
        till_domain::event_log::head(&mut conn)
            .await
            .unwrap()
            .position as u64
    });
    let mut group = c.benchmark_group("projection_replay");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events));
    for p in Projection::ALL {
        group.bench_function(p.name(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut conn = world.db.pool.get().await.unwrap();
                        diesel::sql_query(reset_sql(p))
                            .execute(&mut conn)
                            .await
                            .unwrap();
                        diesel::sql_query(
                            "UPDATE projection_checkpoints SET tx_id = 0, position = 0 WHERE projection = $1",
                        )
                        .bind::<diesel::sql_types::Text, _>(p.name())
                        .execute(&mut conn)
                        .await
                        .unwrap();
                        drop(conn);
                        let started = Instant::now();
                        world
                            .projector
                            .catch_up(p)
                            .await
                            .unwrap();
                        total += started.elapsed();
                    }
                    total
                })
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("projection_rebuild");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events));
    let (_keep, stop) = tokio::sync::watch::channel(false);
    for p in Projection::ALL {
        group.bench_function(p.name(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let started = Instant::now();
                        let rebuild = Rebuild::start(&world.db.url, p, RebuildSettings::default())
                            .await
                            .unwrap();
                        rebuild.run(&mut |_| {}, &stop).await.unwrap();
                        total += started.elapsed();
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
