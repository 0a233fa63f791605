//! Cost-based rate limiting over HTTP: the bucket drains by each request's cost, a
//! client that spends faster than the restore rate gets 429 + Retry-After + THROTTLED,
//! and the bucket refills.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const QUERY: &str = "{ products(first: 10) { edges { node { sku name } } } }";

fn throttle(body: &Value) -> (u64, u64, u64, u64) {
    let c = &body["extensions"]["cost"];
    let t = &c["throttleStatus"];
    (
        c["requestedQueryCost"].as_u64().unwrap_or(0),
        t["maximumAvailable"].as_u64().unwrap_or(0),
        t["currentlyAvailable"].as_u64().unwrap_or(u64::MAX),
        t["restoreRate"].as_u64().unwrap_or(0),
    )
}

#[tokio::test]
async fn spending_faster_than_the_restore_rate_is_throttled_then_refills() {
    let app = spawn_app_with(|cfg| {
        cfg.rate.rate_customer_max = 200;
        cfg.rate.rate_customer_restore = 20;
        cfg.rate.rate_anonymous_max = 50;
        cfg.rate.rate_anonymous_restore = 5;
    })
    .await;
    let (_, token) = app.customer("spender@example.com").await;

    // Drain: each response shows the cost and what is left.
    let (status, body) = app.gql(Some(&token), QUERY, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (cost, max, mut left, restore) = throttle(&body);
    assert!(
        cost > 20,
        "the query costs its page size times its fields: {body}"
    );
    assert_eq!((max, restore), (200, 20));
    assert_eq!(left, max - cost);
    let mut seen = vec![left];
    let retry_after = loop {
        let resp = ok(app
            .http
            .post(format!("{}/graphql", app.base))
            .bearer_auth(&token)
            .json(&json!({ "query": QUERY }))
            .send()
            .await);
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body: Value = ok(resp.json().await);
        let (_, _, now, _) = throttle(&body);
        if status == 429 {
            assert_eq!(code(&body), Some("THROTTLED"), "{body}");
            assert!(now < cost, "refused only when it cannot pay: {body}");
            break ok(retry.ok_or("429 without Retry-After"));
        }
        assert_eq!(status, 200, "{body}");
        assert!(now < left + cost, "the bucket drains: {seen:?} then {now}");
        left = now;
        seen.push(now);
        assert!(seen.len() < 50, "never throttled: {seen:?}");
    };
    assert!((1..=10).contains(&retry_after), "{retry_after}");

    // The bucket refills at the restore rate: after waiting, the request is served and
    // shows more points than there were when it was refused.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let (status, body) = app.gql(Some(&token), QUERY, json!({})).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, body2) = app
        .gql(Some(&token), "{ categories { slug } }", json!({}))
        .await;
    let (_, _, after, _) = throttle(&body2);
    let (_, _, before, _) = throttle(&body);
    assert!(after > before, "refilled: {before} -> {after}");

    // Other principals have their own buckets: anonymous clients (by address) the
    // anonymous settings; a client-sent X-Forwarded-For is not believed (no trusted
    // proxies configured), so it cannot buy a fresh bucket.
    let (status, body) = app
        .gql_with(
            None,
            "{ categories { slug } }",
            json!({}),
            &[("x-forwarded-for", "203.0.113.9")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (c1, max, left1, _) = throttle(&body);
    assert_eq!(max, 50);
    let (_, body) = app
        .gql_with(
            None,
            "{ categories { slug } }",
            json!({}),
            &[("x-forwarded-for", "198.51.100.7")],
        )
        .await;
    let (_, _, left2, _) = throttle(&body);
    assert!(left2 <= left1 - c1 + 1, "same bucket: {left1} then {left2}");

    // Even a request that fails to parse reports (and pays) its cost.
    let (_, body) = app.gql(None, "{ nope", json!({})).await;
    assert_eq!(throttle(&body).0, 1, "{body}");
}

#[tokio::test]
async fn a_query_priced_by_its_variables_is_throttled_when_seen_before_too() {
    // `QUERY` above costs the same every time, so once seen it is charged by the HTTP
    // layer; this one is priced by `$n` on every request, by the guard.
    let app = spawn_app_with(|cfg| {
        cfg.rate.rate_anonymous_max = 100;
        cfg.rate.rate_anonymous_restore = 1;
    })
    .await;
    let query = "query Page($n: Int) { products(first: $n) { edges { node { sku } } } }";
    let mut costs = Vec::new();
    let (status, retry, body) = loop {
        let resp = ok(app
            .http
            .post(format!("{}/graphql", app.base))
            .json(&json!({ "query": query, "variables": { "n": 10 } }))
            .send()
            .await);
        let status = resp.status().as_u16();
        let retry = resp.headers().get("retry-after").cloned();
        let body: Value = ok(resp.json().await);
        costs.push(throttle(&body).0);
        if status != 200 || costs.len() > 20 {
            break (status, retry, body);
        }
    };
    assert_eq!(status, 429, "never throttled: {costs:?} {body}");
    assert_eq!(code(&body), Some("THROTTLED"), "{body}");
    assert!(retry.is_some(), "429 without Retry-After");
    assert!(
        costs.windows(2).all(|w| w[0] == w[1] && w[0] > 20),
        "every request priced alike by its variables: {costs:?}"
    );
}

/// Two real servers behind a round-robin balancer: a client is throttled at about one
/// budget in all (each replica charges its share), not at one budget per replica.
#[tokio::test]
async fn two_replicas_behind_round_robin_give_a_client_about_one_budget() {
    let db = till_domain::db::testing::TestDb::new().await;
    let env = [
        ("TILL_RATE_ANONYMOUS_MAX", "60"),
        ("TILL_RATE_ANONYMOUS_RESTORE", "1"),
    ];
    let a = ServerProcess::start(&db.url, &env).await;
    let b = ServerProcess::start(&db.url, &env).await;
    let http = reqwest::Client::new();
    // Both replicas count each other.
    for base in [&a.base, &b.base] {
        let started = std::time::Instant::now();
        loop {
            let text = ok(ok(http.get(format!("{base}/metrics")).send().await)
                .text()
                .await);
            if value_of(&text, "till_api_replicas") == Some(2.0) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "never 2 replicas: {base}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // `{ __typename }` costs one point; two whole budgets would be 120 answers.
    let mut answered = 0;
    for i in 0..150 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let r = ok(http
            .post(format!("{base}/graphql"))
            .json(&json!({ "query": "{ __typename }" }))
            .send()
            .await);
        if r.status().as_u16() == 200 {
            let body: Value = ok(r.json().await);
            if code(&body).is_none() {
                answered += 1;
            }
        }
    }
    assert!(
        (50..=80).contains(&answered),
        "{answered} answered: about one 60-point budget expected"
    );
}
