//! Access tokens answer to their session and their account's current role on every
//! replica: `logout` and `grantRole` take effect within moments, not at token expiry.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

async fn gql_at(base: &str, token: &str, query: &str) -> Value {
    let r = ok(reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query }))
        .send()
        .await);
    ok(r.json().await)
}

/// Polls `query` on `base` until its error code is `want` (2 s at most).
async fn until_code(base: &str, token: &str, query: &str, want: Option<&str>) -> Duration {
    let started = Instant::now();
    loop {
        let body = gql_at(base, token, query).await;
        if code(&body) == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "still {body} after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn logout_ends_the_sessions_access_tokens_on_every_replica() {
    let app = spawn_app().await;
    // A second replica on the same database.
    let other = ServerProcess::start(&app.db.url, &[]).await;
    let (access, refresh, _) = app.sign_up("out@example.com").await;
    let (other_access, _, _) = app.sign_up("stay@example.com").await;
    for base in [&app.base, &other.base] {
        until_code(base, &access, "{ me { email } }", None).await;
    }
    app.log_out(&refresh).await;
    for base in [&app.base, &other.base] {
        until_code(base, &access, "{ me { email } }", Some("UNAUTHENTICATED")).await;
    }
    // Other sessions are untouched.
    let body = gql_at(&other.base, &other_access, "{ me { email } }").await;
    assert_eq!(code(&body), None, "{body}");
}

#[tokio::test]
async fn a_demotion_applies_to_tokens_already_issued() {
    let app = spawn_app().await;
    let other = ServerProcess::start(&app.db.url, &[]).await;
    let admin = app.admin().await;
    let (_, _, id) = app.sign_up("sam@example.com").await;
    let grant = |role: &'static str| {
        let (app, admin, id) = (&app, admin.clone(), id.clone());
        async move {
            let (_, body) = app
                .gql(
                    Some(&admin),
                    &format!("mutation($c: ID!) {{ grantRole(customerId: $c, role: {role}) {{ customerId }} }}"),
                    json!({ "c": id }),
                )
                .await;
            assert_eq!(code(&body), None, "{body}");
        }
    };
    grant("STAFF").await;
    // A token issued while STAFF (the refresh picks up the role).
    let (_, body) = app
        .gql(
            None,
            "mutation($e: String!) { login(email: $e, password: \"correct horse battery\") { accessToken role } }",
            json!({ "e": "sam@example.com" }),
        )
        .await;
    assert_eq!(body["data"]["login"]["role"], "STAFF", "{body}");
    let staff = body["data"]["login"]["accessToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let back_office = "{ projections { name } }";
    for base in [&app.base, &other.base] {
        until_code(base, &staff, back_office, None).await;
    }
    grant("CUSTOMER").await;
    for base in [&app.base, &other.base] {
        until_code(base, &staff, back_office, Some("FORBIDDEN")).await;
    }
}
