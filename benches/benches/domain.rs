//! Criterion benches of domain input parsing (hot on every mutation).
use criterion::{criterion_group, criterion_main, Criterion};

fn parse_inputs(c: &mut Criterion) {
    c.bench_function("sku_parse", |b| {
        b.iter(|| till_domain::types::Sku::parse(std::hint::black_box("SKU-000123")))
    });
}

criterion_group!(benches, parse_inputs);
criterion_main!(benches);
