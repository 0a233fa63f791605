//! An OAuth2/OIDC resource server: accepts RS256/ES256 access tokens of one configured
//! issuer, verified with keys from its JWKS URL.
//!
//! Keys are cached by `kid` (at most [`MAX_KEYS`]) and fetched again when a token names
//! an unknown `kid` or when the set is older than [`MAX_AGE`], at most once per
//! [`MIN_REFETCH`] whether the last fetch worked or failed, so a stream of made-up kids
//! cannot hammer the issuer, up or down. `iss`, `aud`, `exp` and `nbf` are checked with
//! a small leeway; the role comes from a configurable claim.
//! The first token of a subject creates its account from the `email` claim, only when
//! the issuer vouches for it (`email_verified: true`); the mapping is cached in process.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{decode, Algorithm, DecodingKey, Header, Validation};
use serde_json::{Map, Value};
use till_domain::commands::Commands;
use till_domain::types::{CustomerId, Email, Name, Role};
use till_domain::DomainError;
use tokio::sync::{Mutex, RwLock};

use super::tokens::Verified;
use super::{AuthError, Principal};

/// Most keys kept from one JWKS document.
pub const MAX_KEYS: usize = 64;
/// Shortest interval between two JWKS fetches (after a success or a failure).
pub const MIN_REFETCH: Duration = Duration::from_secs(30);
/// Keys are fetched again when older than this.
pub const MAX_AGE: Duration = Duration::from_secs(3600);
/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Settings of the external issuer.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// Where the issuer publishes its keys.
    pub jwks_url: String,
    /// The claim holding the role (a string or an array of strings).
    pub role_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

struct KeySet {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    /// When the keys were last fetched successfully.
    fetched_at: Option<Instant>,
    /// When a fetch was last tried, and whether it failed.
    tried: Option<(Instant, bool)>,
}

/// Why an external identity gets no account.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    /// A first sign-in whose email the issuer did not verify.
    #[error(
        "the token's email is not verified by the issuer (`email_verified` is not true); \
         a first sign-in binds its email to an account, so it is refused"
    )]
    Unverified,
    /// The account could not be found or made.
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// Verifies external access tokens.
pub struct OidcVerifier {
    settings: OidcSettings,
    http: reqwest::Client,
    keys: RwLock<KeySet>,
    fetching: Mutex<()>,
    accounts: moka::future::Cache<String, CustomerId>,
    commands: Commands,
}

impl OidcVerifier {
    /// A verifier; keys are fetched on first use.
    pub fn new(settings: OidcSettings, commands: Commands) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            settings,
            http,
            keys: RwLock::new(KeySet {
                keys: HashMap::new(),
                fetched_at: None,
                tried: None,
            }),
            fetching: Mutex::new(()),
            accounts: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            commands,
        })
    }

    /// Verifies a token whose header names RS256 or ES256.
    pub async fn verify(&self, token: &str, header: &Header) -> Result<Verified, AuthError> {
        let kid = header.kid.as_deref().ok_or(AuthError::Invalid)?;
        let (key, alg) = self.key(kid).await?;
        // The key decides the algorithm; a header claiming another one is refused.
        if header.alg != alg {
            return Err(AuthError::Invalid);
        }
        let mut validation = Validation::new(alg);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|_| AuthError::Invalid)?
            .claims;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .ok_or(AuthError::Invalid)?
            .to_owned();
        let role = role_from(claims.get(&self.settings.role_claim));
        let id = self
            .accounts
            .try_get_with(subject.clone(), self.account(&subject, &claims, role))
            .await
            .map_err(|e| match &*e {
                LinkError::Domain(DomainError::Unavailable(_) | DomainError::Transient(_)) => {
                    AuthError::Unavailable
                }
                other => {
                    tracing::warn!(error = %other, "external identity refused");
                    AuthError::Invalid
                }
            })?;
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        Ok(Verified {
            principal: Principal::User { id, role },
            valid_until: exp.saturating_add(self.settings.leeway.as_secs()),
            session: None,
        })
    }

    /// The subject's account. A subject seen before keeps its account whatever its
    /// email claim says now. A first sign-in creates one from the `email` claim only
    /// when `email_verified` is `true` (the JSON boolean): an email the issuer did not
    /// verify could be anyone's, and must neither take over nor squat an address. An
    /// existing account with the same email is never taken over either (CONFLICT).
    async fn account(
        &self,
        subject: &str,
        claims: &Map<String, Value>,
        role: Role,
    ) -> Result<CustomerId, LinkError> {
        let email = claims
            .get("email")
            .and_then(Value::as_str)
            .and_then(|e| Email::parse(e).ok());
        let verified = claims.get("email_verified") == Some(&Value::Bool(true));
        let unverified = email.is_some() && !verified;
        let name = claims
            .get("name")
            .and_then(Value::as_str)
            .and_then(|n| Name::parse("name", n).ok())
            .map_or_else(|| Name::parse("name", "External account"), Ok)?;
        let email = email.filter(|_| verified);
        match self
            .commands
            .account_for_external(&self.settings.issuer, subject, email.as_ref(), &name, role)
            .await
        {
            // Without an email, only a first sign-in fails validation.
            Err(DomainError::Validation { .. }) if unverified => Err(LinkError::Unverified),
            other => other.map_err(LinkError::from),
        }
    }

    async fn key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), AuthError> {
        {
            let set = self.keys.read().await;
            let fresh = set.fetched_at.is_some_and(|t| t.elapsed() < MAX_AGE);
            if let (Some(found), true) = (set.keys.get(kid), fresh) {
                return Ok(found.clone());
            }
        }
        let _one_fetch = self.fetching.lock().await;
        {
            let set = self.keys.read().await;
            let recent = set.tried.filter(|(t, _)| t.elapsed() < MIN_REFETCH);
            if recent.is_some() || set.fetched_at.is_some_and(|t| t.elapsed() < MAX_AGE) {
                if let Some(found) = set.keys.get(kid) {
                    return Ok(found.clone());
                }
            }
            if let Some((_, failed)) = recent {
                // Asked too recently to ask again. After a failure the kid may well be
                // a real one the issuer could not tell us about.
                return Err(if failed {
                    AuthError::Unavailable
                } else {
                    AuthError::Invalid
                });
            }
        }
        let fetched = self.fetch().await;
        let mut set = self.keys.write().await;
        set.tried = Some((Instant::now(), fetched.is_err()));
        match fetched {
            Ok(keys) => {
                set.keys = keys;
                set.fetched_at = Some(Instant::now());
                set.keys.get(kid).cloned().ok_or(AuthError::Invalid)
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    url = %self.settings.jwks_url,
                    retry_after_s = MIN_REFETCH.as_secs(),
                    "JWKS fetch failed"
                );
                // Stale keys are better than none while the issuer is unreachable.
                set.keys.get(kid).cloned().ok_or(AuthError::Unavailable)
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, (DecodingKey, Algorithm)>, String> {
        let mut resp = self
            .http
            .get(&self.settings.jwks_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err("JWKS document too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let mut keys = HashMap::new();
        for jwk in set.keys.iter() {
            if keys.len() >= MAX_KEYS {
                break;
            }
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => continue,
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, (key, alg));
            }
        }
        Ok(keys)
    }
}

/// The highest role named by the claim (a string or an array of strings, any case);
/// CUSTOMER when absent or unknown.
fn role_from(claim: Option<&Value>) -> Role {
    let names: Vec<&str> = match claim {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let has = |want: &str| names.iter().any(|n| n.eq_ignore_ascii_case(want));
    if has("admin") {
        Role::Admin
    } else if has("staff") {
        Role::Staff
    } else {
        Role::Customer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_claims_map_to_the_highest_role() {
        assert_eq!(role_from(None), Role::Customer);
        assert_eq!(role_from(Some(&Value::from("STAFF"))), Role::Staff);
        assert_eq!(
            role_from(Some(&serde_json::json!(["staff", "admin"]))),
            Role::Admin
        );
        assert_eq!(role_from(Some(&serde_json::json!(42))), Role::Customer);
    }
}
