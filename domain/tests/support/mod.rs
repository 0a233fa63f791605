//! What the domain's integration tests share: a world of commands over a fresh
//! database, with builders for its entities.
#![allow(dead_code)]

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use till_domain::commands::{
    CommandContext, Commands, NewCategory, NewCustomer, NewProduct, OrderLineInput, Outcome,
    PlacedOrder,
};
use till_domain::db::testing::TestDb;
use till_domain::schema::{events, inventory, orders};
use till_domain::types::*;
use till_domain::DomainError;

pub struct World {
    pub db: TestDb,
    pub cmd: Commands,
    pub staff: CommandContext,
    pub eur: Currency,
}

impl World {
    pub async fn new() -> Self {
        Self::on(TestDb::new().await)
    }

    pub fn on(db: TestDb) -> Self {
        let cmd = Commands::new(db.pool.clone());
        Self {
            db,
            cmd,
            staff: CommandContext::system("test"),
            eur: Currency::parse("EUR").unwrap(),
        }
    }

    pub async fn category(&self, slug: &str) -> CategoryId {
        self.cmd
            .create_category(
                &self.staff,
                NewCategory {
                    slug: Slug::parse(slug).unwrap(),
                    name: Name::parse("name", slug).unwrap(),
                    parent: None,
                },
            )
            .await
            .unwrap()
            .value
    }

    pub async fn product(&self, sku: &str, price: i64, stock: i64) -> ProductId {
        let cat = self.category(&format!("cat-{}", sku.to_lowercase())).await;
        self.cmd
            .create_product(
                &self.staff,
                NewProduct {
                    sku: Sku::parse(sku).unwrap(),
                    name: Name::parse("name", &format!("Product {sku}")).unwrap(),
                    description: Description::default(),
                    category: cat,
                    price: Money::price(price).unwrap(),
                    status: ProductStatus::Active,
                    initial_stock: (stock > 0).then(|| StockDelta::restock(stock).unwrap()),
                },
            )
            .await
            .unwrap()
            .value
    }

    pub async fn customer(&self, email: &str) -> CustomerId {
        self.cmd
            .create_customer(
                &self.staff,
                NewCustomer {
                    email: Email::parse(email).unwrap(),
                    name: Name::parse("name", "Ann").unwrap(),
                    role: Role::Customer,
                    password_hash: None,
                },
            )
            .await
            .unwrap()
            .value
    }

    pub async fn stock(&self, p: ProductId) -> (i32, i32) {
        let mut conn = self.db.pool.get().await.unwrap();
        inventory::table
            .find(p.0)
            .select((inventory::on_hand, inventory::reserved))
            .first(&mut conn)
            .await
            .unwrap()
    }

    pub async fn event_count(&self, event_type: &str) -> i64 {
        let mut conn = self.db.pool.get().await.unwrap();
        events::table
            .filter(events::event_type.eq(event_type))
            .count()
            .get_result(&mut conn)
            .await
            .unwrap()
    }

    /// Places `n` orders for `who` at once, the i-th with `lines(i)`; their results.
    pub async fn race(
        &self,
        who: CustomerId,
        n: usize,
        lines: impl Fn(usize) -> Vec<OrderLineInput>,
    ) -> Vec<Result<(), DomainError>> {
        let ctx = CommandContext::user(who, Role::Customer);
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (cmd, ctx, eur, lines) =
                    (self.cmd.clone(), ctx.clone(), self.eur.clone(), lines(i));
                tokio::spawn(async move { cmd.place_order(&ctx, who, lines, &eur).await })
            })
            .collect();
        let mut results = Vec::with_capacity(n);
        for t in tasks {
            results.push(t.await.unwrap().map(|_| ()));
        }
        results
    }

    /// An order `customer` places for themselves (given: it succeeds).
    pub async fn order(
        &self,
        customer: CustomerId,
        lines: Vec<OrderLineInput>,
    ) -> Outcome<PlacedOrder> {
        self.cmd
            .place_order(
                &CommandContext::user(customer, Role::Customer),
                customer,
                lines,
                &self.eur,
            )
            .await
            .unwrap()
    }

    pub async fn order_status(&self, id: OrderId) -> String {
        let mut conn = self.db.pool.get().await.unwrap();
        orders::table
            .find(id.0)
            .select(orders::status)
            .first(&mut conn)
            .await
            .unwrap()
    }
}

pub fn line(p: ProductId, q: i64) -> OrderLineInput {
    OrderLineInput {
        product: p,
        quantity: Quantity::parse(q).unwrap(),
    }
}
