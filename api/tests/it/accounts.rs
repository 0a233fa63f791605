//! Accounts end to end over HTTP: register, login, refresh rotation with reuse
//! detection, logout, grantRole, and the admin CLI.

use serde_json::{json, Value};

use crate::support::*;

const SIGNED_IN: &str = "accessToken tokenType expiresIn refreshToken customerId role";

async fn register(app: &TestApp, email: &str, password: &str) -> Value {
    let q = format!(
        "mutation($i: RegisterInput!) {{ register(input: $i) {{ {SIGNED_IN} consistencyToken customer {{ email role }} }} }}"
    );
    app.gql(
        None,
        &q,
        json!({ "i": { "email": email, "password": password, "name": "Ann" } }),
    )
    .await
    .1
}

async fn login(app: &TestApp, email: &str, password: &str) -> Value {
    let q = format!(
        "mutation($e: String!, $p: String!) {{ login(email: $e, password: $p) {{ {SIGNED_IN} }} }}"
    );
    app.gql(None, &q, json!({ "e": email, "p": password }))
        .await
        .1
}

async fn refresh(app: &TestApp, token: &str) -> Value {
    let q = format!("mutation($t: String!) {{ refreshToken(refreshToken: $t) {{ {SIGNED_IN} }} }}");
    app.gql(None, &q, json!({ "t": token })).await.1
}

async fn me(app: &TestApp, access: &str) -> Value {
    app.gql(Some(access), "{ me { email role } }", json!({}))
        .await
        .1
}

#[tokio::test]
async fn register_login_refresh_and_logout() {
    let app = spawn_app().await;

    // Password policy and duplicate emails give clear errors.
    let body = register(&app, "ann@example.com", "short").await;
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");
    assert!(body["errors"][0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("at least 10 characters")));
    let body = register(&app, "ann@example.com", "ann@example.com").await;
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");

    let body = register(&app, "Ann@Example.com", "correct horse battery").await;
    let reg = &body["data"]["register"];
    assert_eq!(reg["tokenType"], "Bearer", "{body}");
    assert_eq!(reg["expiresIn"], 900);
    assert_eq!(reg["role"], "CUSTOMER");
    assert_eq!(reg["customer"]["email"], "Ann@Example.com", "{body}");
    let access = reg["accessToken"].as_str().unwrap_or_default().to_owned();
    assert_eq!(me(&app, &access).await["data"]["me"]["role"], "CUSTOMER");

    let body = register(&app, "ann@EXAMPLE.com", "another good password").await;
    assert_eq!(code(&body), Some("CONFLICT"), "{body}");

    // Wrong password and unknown email fail alike.
    let wrong = login(&app, "ann@example.com", "wrong password!!").await;
    let unknown = login(&app, "nobody@example.com", "correct horse battery").await;
    assert_eq!(code(&wrong), Some("UNAUTHENTICATED"), "{wrong}");
    assert_eq!(
        wrong["errors"][0]["message"],
        unknown["errors"][0]["message"]
    );
    assert_eq!(code(&unknown), Some("UNAUTHENTICATED"));

    // Login (email case-insensitive) then rotate.
    let body = login(&app, "ANN@example.com", "correct horse battery").await;
    let first = body["data"]["login"]["refreshToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!first.is_empty(), "{body}");
    let body = refresh(&app, &first).await;
    let second = body["data"]["refreshToken"]["refreshToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!second.is_empty() && second != first, "{body}");
    let access = body["data"]["refreshToken"]["accessToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        me(&app, &access).await["data"]["me"]["email"],
        "Ann@Example.com"
    );

    // Logout ends the session: its refresh token no longer works.
    let (_, body) = app
        .gql(
            None,
            "mutation($t: String!) { logout(refreshToken: $t) { revoked } }",
            json!({ "t": second }),
        )
        .await;
    assert_eq!(body["data"]["logout"]["revoked"], true, "{body}");
    assert_eq!(code(&refresh(&app, &second).await), Some("UNAUTHENTICATED"));
    assert_eq!(
        code(&refresh(&app, "not-a-token").await),
        Some("UNAUTHENTICATED")
    );

    // Only hashes are stored.
    let stored = app
        .count(
            "SELECT count(*) AS n FROM refresh_tokens WHERE encode(token_hash, 'escape') LIKE '%' || $1 || '%'",
            Some(&second[..16]),
        )
        .await;
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_family() {
    let app = spawn_app().await;
    register(&app, "eve@example.com", "correct horse battery").await;
    let body = login(&app, "eve@example.com", "correct horse battery").await;
    let stolen = body["data"]["login"]["refreshToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The owner rotates; then the thief presents the old token.
    let owner = refresh(&app, &stolen).await["data"]["refreshToken"]["refreshToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!owner.is_empty());
    let body = refresh(&app, &stolen).await;
    assert_eq!(code(&body), Some("UNAUTHENTICATED"), "{body}");
    // ... which ends the owner's session too: both must sign in again.
    assert_eq!(code(&refresh(&app, &owner).await), Some("UNAUTHENTICATED"));
    // Another sign-in is a new family and works.
    let body = login(&app, "eve@example.com", "correct horse battery").await;
    let fresh = body["data"]["login"]["refreshToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(refresh(&app, &fresh).await["data"]["refreshToken"]["accessToken"].is_string());

    // Two concurrent exchanges of one token: one wins, the other is a reuse.
    let body = login(&app, "eve@example.com", "correct horse battery").await;
    let raced = body["data"]["login"]["refreshToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (a, b) = tokio::join!(refresh(&app, &raced), refresh(&app, &raced));
    let wins = [&a, &b]
        .iter()
        .filter(|r| r["data"]["refreshToken"]["accessToken"].is_string())
        .count();
    assert_eq!(wins, 1, "{a} {b}");
}

#[tokio::test]
async fn only_admins_grant_roles_and_refresh_picks_up_the_new_role() {
    let app = spawn_app().await;
    let body = register(&app, "sam@example.com", "correct horse battery").await;
    let sam_id = body["data"]["register"]["customerId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let sam_refresh = body["data"]["register"]["refreshToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let grant = "mutation($c: ID!) { grantRole(customerId: $c, role: STAFF) { customerId customer { role } } }";
    let (_, customer) = app.customer("cust@example.com").await;
    for (token, want) in [
        (None, "UNAUTHENTICATED"),
        (Some(customer.as_str()), "FORBIDDEN"),
        (Some(app.staff_token.as_str()), "FORBIDDEN"),
    ] {
        let (_, body) = app.gql(token, grant, json!({ "c": sam_id })).await;
        assert_eq!(code(&body), Some(want), "{body}");
    }
    let admin = app.admin().await;
    let (_, body) = app.gql(Some(&admin), grant, json!({ "c": sam_id })).await;
    assert_eq!(
        body["data"]["grantRole"]["customer"]["role"], "STAFF",
        "{body}"
    );
    let body = refresh(&app, &sam_refresh).await;
    assert_eq!(body["data"]["refreshToken"]["role"], "STAFF", "{body}");
    let staff_access = body["data"]["refreshToken"]["accessToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (_, body) = app
        .gql(Some(&staff_access), "{ projections { name } }", json!({}))
        .await;
    assert_eq!(code(&body), None, "{body}");
}

#[tokio::test]
async fn the_admin_cli_creates_an_admin_who_can_sign_in() {
    let app = spawn_app().await;
    let out = ok(std::process::Command::new(env!("CARGO_BIN_EXE_till"))
        .args(["admin", "create", "--email", "root@example.com"])
        .env("DATABASE_URL", &app.db.url)
        .env("TILL_ADMIN_PASSWORD", "an admin password")
        .output());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = login(&app, "root@example.com", "an admin password").await;
    assert_eq!(body["data"]["login"]["role"], "ADMIN", "{body}");
    // A second run with the same email says what to do instead.
    let out = ok(std::process::Command::new(env!("CARGO_BIN_EXE_till"))
        .args(["admin", "create", "--email", "root@example.com"])
        .env("DATABASE_URL", &app.db.url)
        .env("TILL_ADMIN_PASSWORD", "an admin password")
        .output());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("grantRole"));
}

/// Sign-in attempts count per target email and per client network, not only against
/// the caller's budget: guessing one account's password, or many accounts' from one
/// network, runs out.
#[tokio::test]
async fn sign_in_attempts_are_limited_per_email_and_per_network() {
    let app = spawn_app_with(|cfg| {
        cfg.rate.signin_per_email_max = 3;
        cfg.rate.signin_per_email_per_min = 1;
        cfg.rate.signin_per_ip_max = 6;
        cfg.rate.signin_per_ip_per_min = 1;
    })
    .await;
    register(&app, "target@example.com", "correct horse battery").await;
    for _ in 0..3 {
        let body = login(&app, "target@example.com", "wrong guess 123").await;
        assert_eq!(code(&body), Some("UNAUTHENTICATED"), "{body}");
    }
    // Out of attempts: even the right password waits.
    let body = login(&app, "Target@Example.com", "correct horse battery").await;
    assert_eq!(code(&body), Some("THROTTLED"), "{body}");
    assert!(
        body["errors"][0]["extensions"]["retryAfter"]
            .as_u64()
            .is_some(),
        "{body}"
    );
    // Other accounts from the same network: the network's allowance (6) runs out too.
    let mut codes = Vec::new();
    for i in 0..4 {
        let body = login(&app, &format!("other{i}@example.com"), "wrong guess 123").await;
        codes.push(code(&body).map(str::to_owned));
    }
    assert_eq!(
        codes,
        [
            Some("UNAUTHENTICATED".to_owned()),
            Some("UNAUTHENTICATED".to_owned()),
            Some("THROTTLED".to_owned()),
            Some("THROTTLED".to_owned())
        ]
    );
}
