//! Tokens from an external OIDC issuer (RS256 / ES256 via JWKS served by a mock issuer)
//! and every attack the issue lists: each gets 401 UNAUTHENTICATED and the server keeps
//! serving.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

const ISSUER: &str = "https://issuer.example.test/";
const AUDIENCE: &str = "till-api";
const RSA_DER: &[u8] = include_bytes!("../fixtures/oidc-rsa.der");
const EC_DER: &[u8] = include_bytes!("../fixtures/oidc-ec.der");
const RSA_PUBLIC_PEM: &[u8] = include_bytes!("../fixtures/oidc-rsa.pub.pem");
const JWKS: &str = include_str!("../fixtures/oidc-jwks.json");

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn claims(sub: &str) -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub,
        "iat": now(), "exp": now() + 600,
        "email": format!("{sub}@idp.example.com"), "email_verified": true, "name": "Idp User",
    })
}

fn rs(kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    ok(encode(&h, claims, &EncodingKey::from_rsa_der(RSA_DER)))
}

fn es(claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("ec-1".into());
    ok(encode(&h, claims, &EncodingKey::from_ec_der(EC_DER)))
}

async fn status_of(app: &TestApp, token: &str) -> (u16, Value) {
    app.gql(Some(token), "{ me { email role } }", json!({}))
        .await
}

#[tokio::test]
async fn external_tokens_are_verified_and_every_attack_is_refused() {
    let issuer = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(JWKS, "application/json"))
        .expect(1..=2)
        .mount(&issuer)
        .await;
    let jwks_url = format!("{}/jwks.json", issuer.uri());
    let app = spawn_app_with(|cfg| {
        cfg.oidc.oidc_issuer = Some(ISSUER.into());
        cfg.oidc.oidc_audience = Some(AUDIENCE.into());
        cfg.oidc.oidc_jwks_url = Some(jwks_url);
    })
    .await;

    // Valid RS256: the account is created on first sight from the email claim.
    let good = rs("rsa-1", &claims("alice"));
    let (status, body) = status_of(&app, &good).await;
    assert_eq!(status, 200, "{body}");
    // `me` reads the read model: wait for the account to be projected.
    let ct = app.head_token().await;
    let (_, body) = app
        .gql_with(
            Some(&good),
            "{ me { email role } }",
            json!({}),
            &[("x-consistency-token", &ct)],
        )
        .await;
    assert_eq!(
        body["data"]["me"]["email"], "alice@idp.example.com",
        "{body}"
    );
    assert_eq!(body["data"]["me"]["role"], "CUSTOMER");

    // Valid ES256 with a staff role claim reaches a staff-only query.
    let mut staff = claims("bob");
    staff["till_role"] = json!(["staff"]);
    let (_, body) = app
        .gql(Some(&es(&staff)), "{ projections { name } }", json!({}))
        .await;
    assert_eq!(code(&body), None, "{body}");

    let mut attacks: Vec<(&str, String)> = Vec::new();
    let mut c = claims("alice");
    c["exp"] = json!(now() - 3600);
    attacks.push(("expired", rs("rsa-1", &c)));
    let mut c = claims("alice");
    c["nbf"] = json!(now() + 3600);
    attacks.push(("not yet valid", rs("rsa-1", &c)));
    let mut c = claims("alice");
    c["iss"] = json!("https://evil.example.test/");
    attacks.push(("wrong issuer", rs("rsa-1", &c)));
    let mut c = claims("alice");
    c["aud"] = json!("another-api");
    attacks.push(("wrong audience", rs("rsa-1", &c)));
    let payload = URL_SAFE_NO_PAD.encode(claims("alice").to_string());
    attacks.push((
        "alg none",
        format!(
            "{}.{payload}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#)
        ),
    ));
    // Key confusion: HS256 "signed" with the issuer's public key as the HMAC secret.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-1".into());
    attacks.push((
        "HS/RS key confusion",
        ok(encode(
            &h,
            &claims("alice"),
            &EncodingKey::from_secret(RSA_PUBLIC_PEM),
        )),
    ));
    // An ES key's token claiming RS256 under the EC kid.
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("ec-1".into());
    attacks.push((
        "algorithm not the key's",
        ok(encode(
            &h,
            &claims("alice"),
            &EncodingKey::from_rsa_der(RSA_DER),
        )),
    ));
    // Tampered payload: role raised after signing.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut raised = claims("alice");
    raised["till_role"] = json!("admin");
    parts[1] = URL_SAFE_NO_PAD.encode(raised.to_string());
    attacks.push(("tampered", parts.join(".")));
    attacks.push(("unknown kid", rs("rsa-404", &claims("alice"))));
    let mut c = claims("carol");
    c.as_object_mut().map(|m| m.remove("email"));
    attacks.push(("first sign-in without email", rs("rsa-1", &c)));

    for (what, token) in attacks {
        let (status, body) = status_of(&app, &token).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(code(&body), Some("UNAUTHENTICATED"), "{what}: {body}");
    }
    // Still serving, and the good token still works.
    let (status, body) = status_of(&app, &good).await;
    assert_eq!(status, 200, "{body}");
    // The JWKS was fetched once (plus at most one refetch for the unknown kid): a
    // stream of made-up kids does not hammer the issuer.
    issuer.verify().await;
}

#[tokio::test]
async fn an_unreachable_issuer_is_a_503_not_a_401() {
    let app = spawn_app_with(|cfg| {
        cfg.oidc.oidc_issuer = Some(ISSUER.into());
        cfg.oidc.oidc_audience = Some(AUDIENCE.into());
        cfg.oidc.oidc_jwks_url = Some("http://127.0.0.1:9/jwks.json".into());
    })
    .await;
    let (status, body) = status_of(&app, &rs("rsa-1", &claims("dave"))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(code(&body), Some("SERVICE_UNAVAILABLE"));
    // Till's own tokens keep working meanwhile.
    let (status, _) = app
        .gql(
            Some(&app.staff_token),
            "{ projections { name } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
}

async fn app_with_issuer(issuer: &MockServer) -> TestApp {
    let jwks_url = format!("{}/jwks.json", issuer.uri());
    spawn_app_with(|cfg| {
        cfg.oidc.oidc_issuer = Some(ISSUER.into());
        cfg.oidc.oidc_audience = Some(AUDIENCE.into());
        cfg.oidc.oidc_jwks_url = Some(jwks_url);
    })
    .await
}

/// An email the issuer did not verify binds nothing: the first sign-in of a subject
/// whose `email_verified` is not `true` is refused, so it can neither take over nor
/// squat the address (its owner can still register it). A subject already linked
/// signs in whatever its email claim says.
#[tokio::test]
async fn an_unverified_email_claims_no_account() {
    let issuer = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(JWKS, "application/json"))
        .mount(&issuer)
        .await;
    let app = app_with_issuer(&issuer).await;

    let mut unverified = claims("mallory");
    unverified["email"] = json!("victim@example.com");
    unverified["email_verified"] = json!(false);
    let mut unsaid = unverified.clone();
    unsaid.as_object_mut().map(|m| m.remove("email_verified"));
    let mut as_text = unverified.clone();
    as_text["email_verified"] = json!("yes");
    for (what, c) in [
        ("email_verified false", &unverified),
        ("no email_verified", &unsaid),
        ("email_verified not a boolean", &as_text),
    ] {
        let (status, body) = status_of(&app, &rs("rsa-1", c)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(code(&body), Some("UNAUTHENTICATED"), "{what}: {body}");
    }
    let accounts = app
        .count(
            "SELECT count(*) AS n FROM customers WHERE lower(email) = $1",
            Some("victim@example.com"),
        )
        .await;
    assert_eq!(accounts, 0, "an unverified email created an account");
    // The address's owner registers it with a password.
    let (_, body) = app
        .gql(
            None,
            "mutation($i: RegisterInput!) { register(input: $i) { customerId } }",
            json!({ "i": { "email": "victim@example.com", "password": "a long passphrase 42", "name": "Victim" } }),
        )
        .await;
    assert_eq!(code(&body), None, "{body}");
    // A verified email that belongs to that password account does not take it over.
    let mut verified = claims("mallory");
    verified["email"] = json!("victim@example.com");
    let (status, body) = status_of(&app, &rs("rsa-1", &verified)).await;
    assert_eq!(status, 401, "{body}");

    // Linked with a verified email, a subject keeps signing in when a later token
    // carries an unverified one (the email is only read on the first sign-in).
    let (status, body) = status_of(&app, &rs("rsa-1", &claims("erin"))).await;
    assert_eq!(status, 200, "{body}");
    let mut later = claims("erin");
    later["email_verified"] = json!(false);
    let (status, body) = status_of(&app, &rs("rsa-1", &later)).await;
    assert_eq!(status, 200, "{body}");
}

/// A JWKS endpoint that fails is asked again at most once per refetch interval too:
/// tokens with made-up kids cannot make Till hammer a struggling issuer.
#[tokio::test]
async fn a_failing_jwks_endpoint_is_not_hammered() {
    let issuer = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&issuer)
        .await;
    let app = app_with_issuer(&issuer).await;
    for i in 0..5 {
        let (status, body) = status_of(&app, &rs(&format!("made-up-{i}"), &claims("frank"))).await;
        assert_eq!(status, 503, "{i}: {body}");
        assert_eq!(code(&body), Some("SERVICE_UNAVAILABLE"), "{i}: {body}");
    }
    issuer.verify().await;
}

/// In production the issuer and its JWKS must be https: keys fetched in plain text
/// could be swapped on the way, and every token signed with them accepted.
#[tokio::test]
async fn production_needs_https_for_the_issuer_and_its_keys() {
    for (issuer, jwks) in [
        (ISSUER, "http://login.example.com/.well-known/jwks.json"),
        (
            "http://login.example.com/",
            "https://login.example.com/.well-known/jwks.json",
        ),
    ] {
        let db = till_domain::db::testing::TestDb::new().await;
        let mut cfg = test_config();
        cfg.mode = till_api::config::Mode::Production;
        cfg.jobs.jobs = false;
        cfg.oidc.oidc_issuer = Some(issuer.into());
        cfg.oidc.oidc_audience = Some(AUDIENCE.into());
        cfg.oidc.oidc_jwks_url = Some(jwks.into());
        let built = till_api::app::Application::build(
            cfg,
            till_api::app::Database {
                url: db.url.clone(),
                embedded: None,
                replicas: Vec::new(),
            },
        )
        .await;
        match built {
            Err(till_api::app::StartError::Config(message)) => {
                assert!(message.contains("https"), "{message}")
            }
            Err(e) => panic!("{issuer} {jwks}: {e}"),
            Ok(_) => panic!("{issuer} {jwks}: started in production with a plain-http issuer"),
        }
    }
}
