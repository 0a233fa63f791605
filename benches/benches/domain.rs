//! Criterion benches of domain input parsing (hot on every mutation) and of decoding
//! events read back from the log (every projection decodes every event it reads).

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use till_domain::events::{DomainEvent, OrderLineFact};
use uuid::Uuid;

fn parse_inputs(c: &mut Criterion) {
    c.bench_function("sku_parse", |b| {
        b.iter(|| till_domain::types::Sku::parse(std::hint::black_box("SKU-000123")))
    });
}

fn decode_events(c: &mut Criterion) {
    let line = |n: u32| OrderLineFact {
        product_id: Uuid::now_v7(),
        sku: format!("SKU-{n:06}"),
        name: format!("Product number {n} with a longer catalog name"),
        quantity: 1,
        unit_price_minor: 1999,
    };
    let placed = DomainEvent::OrderPlaced {
        order_id: Uuid::now_v7(),
        customer_id: Uuid::now_v7(),
        customer_email: "buyer@example.com".into(),
        customer_name: "A Buyer".into(),
        lines: vec![line(1), line(2)],
        total_minor: 3998,
        currency: "EUR".into(),
        placed_at: chrono::Utc::now(),
        version: 1,
    };
    // What the log row carries: the payload as the database sends jsonb (text).
    let text = placed.payload().to_string();
    c.bench_function("event_decode_order_placed", |b| {
        b.iter_batched(
            || text.clone(),
            |text| DomainEvent::from_stored("OrderPlaced", 1, &text),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, parse_inputs, decode_events);
criterion_main!(benches);
