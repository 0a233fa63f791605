//! `/metrics` after a little traffic shows every family with sane values, and GraphQL
//! operation names stay bounded under 1,000 distinct names; `/readyz` reports the
//! projections.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn metrics_cover_every_family_with_bounded_labels() {
    let app = spawn_app_with(|cfg| {
        cfg.rate.rate_anonymous_max = 40;
        cfg.rate.rate_anonymous_restore = 1;
        cfg.jobs.job_backoff_base_ms = 20;
    })
    .await;
    let product = app.product("OBS-1", 100, 10).await;
    let (_, token) = app.customer("watch@example.com").await;

    // Traffic: named and anonymous queries, a mutation, a payment job, a replay, a
    // throttled anonymous client. The reads wait for the writes above to be projected
    // (else the projector's next batch may invalidate the product between them).
    let written = app.head_token().await;
    for _ in 0..3 {
        app.gql(
            Some(&token),
            "query Catalog { categories { slug } }",
            json!({}),
        )
        .await;
        app.gql_after(
            Some(&token),
            &written,
            "query($p: ID!) { product(id: $p) { sku } }",
            json!({ "p": product }),
        )
        .await;
    }
    let place = "mutation Buy($p: ID!) { placeOrder(input: {lines: [{productId: $p, quantity: 1}]}) { orderId } }";
    let (_, body) = app
        .gql_with(
            Some(&token),
            place,
            json!({ "p": product }),
            &[("idempotency-key", "obs-1")],
        )
        .await;
    let order = body["data"]["placeOrder"]["orderId"].clone();
    app.gql_with(
        Some(&token),
        place,
        json!({ "p": product }),
        &[("idempotency-key", "obs-1")],
    )
    .await;
    app.gql(
        Some(&token),
        "mutation($o: ID!) { payOrder(orderId: $o, paymentMethodToken: \"tok_flaky\") { orderId } }",
        json!({ "o": order }),
    )
    .await;
    let mut throttled = false;
    for _ in 0..20 {
        let (status, _) = app
            .gql(
                None,
                "{ products(first: 10) { edges { cursor } } }",
                json!({}),
            )
            .await;
        if status == 429 {
            throttled = true;
            break;
        }
    }
    assert!(throttled);

    // 1,000 distinct operation names.
    let http = &app.http;
    let url = format!("{}/graphql", app.base);
    for i in 0..1000 {
        let _ = http
            .post(&url)
            .bearer_auth(&token)
            .json(&json!({ "query": format!("query Op{i} {{ __typename }}") }))
            .send()
            .await;
    }

    // The payment job ran (tok_flaky fails twice first).
    let started = Instant::now();
    let text = loop {
        let text = app.metrics_text().await;
        if text.contains("till_job_duration_seconds_count{queue=\"payments\",outcome=\"ok\"}") {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no finished payment job:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for family in [
        "till_http_requests_total{",
        "till_http_request_duration_seconds_bucket{",
        "till_graphql_operations_total{",
        "till_graphql_operation_duration_seconds_bucket{",
        "till_db_pool_connections{",
        "till_db_pool_max_connections",
        "till_db_pool_waits_total",
        "till_db_pool_acquire_timeouts_total",
        "till_cache_hits_total{",
        "till_cache_misses_total{",
        "till_cache_evictions_total{",
        "till_cache_weighted_bytes{",
        "till_cache_entries{",
        "till_projection_position{",
        "till_projection_lag_events{",
        "till_projection_lag_seconds{",
        "till_projection_visible_seconds_bucket{projection=\"order_view\",le=\"0.1\"}",
        "till_projection_commit_visible_seconds_bucket{projection=\"order_view\",le=\"0.1\"}",
        "till_jobs{",
        "till_job_duration_seconds_bucket{",
        "till_job_retries_total{",
        "till_job_failures_total{",
        "till_throttled_requests_total{",
        "till_idempotent_replays_total",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(family), "{family} missing from /metrics");
    }
    // Sane values.
    assert!(
        value_of(
            &text,
            "till_projection_visible_seconds_count{projection=\"order_view\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "the placed order's events were seen applied"
    );
    // Once per transaction of a command this process ran (placeOrder alone appends two
    // events in one transaction), and not for the payment job's events: fewer than the
    // events applied.
    let commits = value_of(
        &text,
        "till_projection_commit_visible_seconds_count{projection=\"order_view\"}",
    )
    .unwrap_or(0.0);
    let events = value_of(
        &text,
        "till_projection_visible_seconds_count{projection=\"order_view\"}",
    )
    .unwrap_or(0.0);
    assert!(
        commits >= 1.0 && commits < events,
        "commit -> visible counted {commits} commits of {events} events"
    );
    assert!(
        value_of(
            &text,
            "till_http_requests_total{route=\"/graphql\",status=\"200\"}"
        )
        .unwrap_or(0.0)
            >= 1000.0
    );
    assert!(value_of(&text, "till_cache_hits_total{cache=\"products\"}").unwrap_or(0.0) >= 1.0);
    // The pool (30 in tests) and one shard per HTTP worker (2 x 15) for commands.
    assert_eq!(value_of(&text, "till_db_pool_max_connections"), Some(60.0));
    assert!(value_of(&text, "till_idempotent_replays_total").unwrap_or(0.0) >= 1.0);
    assert!(value_of(&text, "till_job_retries_total{queue=\"payments\"}").unwrap_or(0.0) >= 2.0);
    let rss = value_of(&text, "process_resident_memory_bytes").unwrap_or(0.0);
    assert!(rss > 1e6 && rss < 8e9, "{rss}");
    // Bounded: at most MAX_OPERATION_NAMES names plus `other` and `anonymous`.
    let names: HashSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("till_graphql_operations_total{"))
        .filter_map(|l| l.split("operation=\"").nth(1)?.split('"').next())
        .collect();
    assert!(
        names.len() <= till_api::metrics::MAX_OPERATION_NAMES + 2,
        "{}",
        names.len()
    );
    assert!(
        names.contains("other") && names.contains("Catalog"),
        "{names:?}"
    );

    // Readiness on the main port says only the status (the admin port has the
    // projections' lag: perimeter::public_readiness_says_only_the_status).
    let ready: serde_json::Value =
        ok(
            ok(app.http.get(format!("{}/readyz", app.base)).send().await)
                .json()
                .await,
        );
    assert_eq!(ready, serde_json::json!({ "status": "ready" }));
}
