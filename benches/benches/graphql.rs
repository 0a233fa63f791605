//! GraphQL execution of the hot storefront queries in process (no HTTP): the schema,
//! resolvers, cache and (for lists) PostgreSQL; and what the request analysis costs:
//! parsing a document, the same cached query with the cost-based rate limiter and
//! document limits on, and as the server runs a document it has parsed and validated
//! before.

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use till_api::auth::Principal;
use till_api::graphql::{self, ApiState, Limits, RequestInfo};

fn bench(c: &mut Criterion) {
    let rt = common::runtime();
    let world = rt.block_on(common::world(200));
    // Rebuilds run on the runtime they are created on.
    let _entered = rt.enter();
    let api = Arc::new(ApiState {
        commands: world.commands.clone(),
        reads: world.reads.clone(),
        currency: world.currency.clone(),
        consistency_wait: Duration::from_secs(2),
        max_page_size: 100,
        tokens: till_api::auth::TokenService::new(&till_api::config::Secret::new(
            "bench-secret-0123456789abcdef0123456789",
        )),
        access_token_ttl: Duration::from_secs(900),
        refresh_token_ttl: Duration::from_secs(3600),
        payment_max_attempts: 8,
        webhook_urls: till_domain::webhooks::UrlPolicy::STRICT,
        rebuilds: till_api::rebuilds::Rebuilds::new(
            world.db.url.clone(),
            tokio::sync::watch::channel(false).1,
        ),
        commits: Arc::default(),
        sign_in: Arc::new(till_api::auth::sign_in::SignInLimiter::new(
            till_api::auth::sign_in::Allowance {
                burst: 1_000_000,
                per_minute: 1_000_000,
            },
            till_api::auth::sign_in::Allowance {
                burst: 1_000_000,
                per_minute: 1_000_000,
            },
        )),
    });
    let limits = |rate| Limits {
        max_depth: 15,
        max_complexity: 5000,
        max_aliases: 30,
        max_root_fields: 10,
        introspection: false,
        rate,
        query_timeout: None,
    };
    let schema = graphql::build(Some(api.clone()), limits(None));
    let bucket = graphql::execution::rate_limit::BucketSettings {
        max: u32::MAX,
        restore: u32::MAX,
    };
    let limited = graphql::build(
        Some(api.clone()),
        limits(Some(Arc::new(
            graphql::execution::rate_limit::CostLimiter::new(
                graphql::execution::rate_limit::RateSettings {
                    customer: bucket,
                    staff: bucket,
                    anonymous: bucket,
                    max_principals: 10_000,
                },
            ),
        ))),
    );
    let product_id = format!("Product:{}", world.products[0]);
    let product_id = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(product_id)
    };
    let info = RequestInfo {
        principal: Principal::Anonymous,
        request_id: uuid::Uuid::nil(),
        idempotency: None,
        client_ip: None,
        reads: None,
    };
    let run = |query: String| {
        let schema = schema.clone();
        let info = info.clone();
        async move {
            let r = schema
                .execute(async_graphql::Request::new(query).data(info))
                .await;
            assert!(r.errors.is_empty(), "{:?}", r.errors);
        }
    };
    let by_id = format!(
        "{{ product(id: \"{product_id}\") {{ id sku name price {{ amount currency }} available categoryPath {{ slug }} }} }}"
    );
    c.bench_function("graphql_product_by_id_cached", |b| {
        b.to_async(&rt).iter(|| run(by_id.clone()))
    });
    c.bench_function("graphql_product_by_id_cached_cost_limited", |b| {
        b.to_async(&rt).iter(|| {
            let schema = limited.clone();
            let request = async_graphql::Request::new(by_id.clone()).data(info.clone());
            async move {
                let r = schema.execute(request).await;
                assert!(r.errors.is_empty(), "{:?}", r.errors);
            }
        })
    });
    // As the server runs a query whose document it parsed and fully validated before:
    // a copy of the cached parse, and the schema that repeats only cost and depth (with
    // the guard when the cost depends on the variables, without it when it is fixed).
    let parsed = async_graphql::parser::parse_query(&by_id).ok();
    for (name, checks) in [
        (
            "graphql_product_by_id_known_document",
            graphql::Checks::CostAndDepth,
        ),
        (
            "graphql_product_by_id_priced_document",
            graphql::Checks::CostAndDepthUnguarded,
        ),
    ] {
        let shared = graphql::Shared::new(api.clone());
        let schema = graphql::build_checking(Some(&shared), limits(None), checks);
        c.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let schema = schema.clone();
                let mut request = async_graphql::Request::new(by_id.clone()).data(info.clone());
                if let Some(doc) = &parsed {
                    request.set_parsed_query(doc.clone());
                }
                async move {
                    let r = schema.execute(request).await;
                    assert!(r.errors.is_empty(), "{:?}", r.errors);
                }
            })
        });
    }
    c.bench_function("graphql_parse_product_by_id", |b| {
        b.iter(|| async_graphql::parser::parse_query(&by_id).map(|_| ()))
    });
    let page = "{ products(first: 20, sortBy: PRICE) { edges { cursor node { id sku name price { amount } available } } pageInfo { hasNextPage endCursor } } }".to_owned();
    c.bench_function("graphql_products_first_20_by_price", |b| {
        b.to_async(&rt).iter(|| run(page.clone()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
