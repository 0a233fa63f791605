//! The placeOrder command (2 lines) against a real PostgreSQL: stock reservation,
//! order rows, events, one transaction.

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use till_domain::commands::{CommandContext, OrderLineInput};
use till_domain::types::{Quantity, Role};

fn bench(c: &mut Criterion) {
    let rt = common::runtime();
    let world = rt.block_on(common::world(50));
    let ctx = CommandContext::user(world.customer, Role::Customer);
    let q = Quantity::parse(1).unwrap();
    let mut i = 0usize;
    c.bench_function("command_place_order_2_lines", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            let lines = vec![
                OrderLineInput {
                    product: world.products[i % 50],
                    quantity: q,
                },
                OrderLineInput {
                    product: world.products[(i + 7) % 50],
                    quantity: q,
                },
            ];
            let commands = world.commands.clone();
            let ctx = ctx.clone();
            let customer = world.customer;
            let currency = world.currency.clone();
            async move {
                commands
                    .place_order(&ctx, customer, lines, &currency)
                    .await
                    .unwrap();
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
