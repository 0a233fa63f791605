//! Set-up shared by the benches: a fresh database with a small catalog, customers and
//! the read side caught up.

#![allow(dead_code)]

use till_domain::commands::{CommandContext, Commands, NewCategory, NewCustomer, NewProduct};
use till_domain::db::testing::TestDb;
use till_domain::types::*;
use till_read_models::{Projector, ReadModels, ReadSide};

pub struct World {
    pub db: TestDb,
    pub commands: Commands,
    pub reads: ReadModels,
    pub projector: Projector,
    pub products: Vec<ProductId>,
    pub customer: CustomerId,
    pub currency: Currency,
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

pub fn runtime() -> tokio::runtime::Runtime {
    ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build())
}

/// A database with `n` ACTIVE products (plenty of stock) in 4 categories and one
/// customer; projections caught up.
pub async fn world(n: usize) -> World {
    let db = TestDb::with_pool_size(16).await;
    let commands = Commands::new(db.pool.clone());
    let sys = CommandContext::system("bench");
    let mut cats = Vec::new();
    for i in 0..4 {
        cats.push(
            ok(commands
                .create_category(
                    &sys,
                    NewCategory {
                        slug: ok(Slug::parse(&format!("bench-{i}"))),
                        name: ok(Name::parse("name", &format!("Bench {i}"))),
                        parent: None,
                    },
                )
                .await)
            .value,
        );
    }
    let mut products = Vec::new();
    for i in 0..n {
        products.push(
            ok(commands
                .create_product(
                    &sys,
                    NewProduct {
                        sku: ok(Sku::parse(&format!("BENCH-{i:05}"))),
                        name: ok(Name::parse("name", &format!("Bench product {i}"))),
                        description: ok(Description::parse("A product for benchmarks.")),
                        category: cats[i % cats.len()],
                        price: ok(Money::price(100 + (i as i64 * 37) % 10_000)),
                        status: ProductStatus::Active,
                        initial_stock: Some(ok(StockDelta::restock(1_000_000))),
                    },
                )
                .await)
            .value,
        );
    }
    let customer = ok(commands
        .create_customer(
            &sys,
            NewCustomer {
                email: ok(Email::parse("bench@example.com")),
                name: ok(Name::parse("name", "Bench")),
                role: Role::Customer,
                password_hash: None,
            },
        )
        .await)
    .value;
    let ReadSide { projector, reads } = ReadSide::builder(db.pool.clone(), db.url.clone()).build();
    ok(projector.catch_up_all().await);
    World {
        db,
        commands,
        reads,
        projector,
        products,
        customer,
        currency: ok(Currency::parse("EUR")),
    }
}
