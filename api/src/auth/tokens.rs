//! Till's own access tokens: short-lived HS256 JWTs with `sub` (account id), `role`,
//! `iss`, `aud` and, for tokens of a signed-in session, `sid` (the session, which
//! `logout` ends). Only HS256 is ever accepted here, so a token signed with any other
//! algorithm (or `none`) is refused, and RS/ES tokens go to the OIDC verifier instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use till_domain::types::{CustomerId, Role};
use uuid::Uuid;

use super::{AuthError, Principal};
use crate::secret::Secret;

/// `iss` and `aud` of Till's own tokens.
pub const ISSUER: &str = "till";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    iss: String,
    aud: String,
    iat: u64,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<Uuid>,
}

/// A token of Till's own that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Who it names, with the role it was issued with.
    pub principal: Principal,
    /// The last second (Unix time) it is accepted: its `exp` plus the clock leeway.
    pub valid_until: u64,
    /// The session it belongs to, if any.
    pub session: Option<Uuid>,
}

/// Signs and verifies access tokens.
#[derive(Clone)]
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenService {
    /// A service keyed by an HS256 secret.
    pub fn new(secret: &Secret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[ISSUER]);
        Self {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
        }
    }

    /// Mints a token for `id` with `role`, valid for `ttl`, outside any session (dev
    /// tokens, `till token`).
    pub fn mint(&self, id: CustomerId, role: Role, ttl: Duration) -> Result<String, AuthError> {
        self.mint_for(id, role, None, ttl)
    }

    /// Mints a token for `id` with `role` in `session` (ended by `logout`), valid for
    /// `ttl`.
    pub fn mint_for(
        &self,
        id: CustomerId,
        role: Role,
        session: Option<Uuid>,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            sub: id.to_string(),
            role,
            iss: ISSUER.into(),
            aud: ISSUER.into(),
            iat: now,
            exp: now + ttl.as_secs(),
            sid: session,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| AuthError::Invalid)
    }

    /// Verifies one of Till's own tokens.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_full(token).map(|v| v.principal)
    }

    /// Verifies one of Till's own tokens: who, until when, which session.
    pub fn verify_full(&self, token: &str) -> Result<Verified, AuthError> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| AuthError::Invalid)?;
        let id = Uuid::parse_str(&data.claims.sub).map_err(|_| AuthError::Invalid)?;
        Ok(Verified {
            principal: Principal::User {
                id: CustomerId(id),
                role: data.claims.role,
            },
            valid_until: data.claims.exp.saturating_add(self.validation.leeway),
            session: data.claims.sid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_tampering_is_refused() {
        let svc = TokenService::new(&Secret::new("s3cret-for-tests-only-0123456789"));
        let id = CustomerId::new();
        let token = svc
            .mint(id, Role::Staff, Duration::from_secs(60))
            .unwrap_or_default();
        let p = svc.verify(&token).ok();
        assert_eq!(
            p,
            Some(Principal::User {
                id,
                role: Role::Staff
            })
        );

        let other = TokenService::new(&Secret::new("another-secret-0123456789abcdef"));
        assert!(other.verify(&token).is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let svc = TokenService::new(&Secret::new("s3cret-for-tests-only-0123456789"));
        let claims = Claims {
            sub: Uuid::nil().to_string(),
            role: Role::Customer,
            iss: ISSUER.into(),
            aud: ISSUER.into(),
            iat: 1,
            exp: 2,
            sid: None,
        };
        let token =
            encode(&Header::new(Algorithm::HS256), &claims, &svc.encoding).unwrap_or_default();
        assert!(svc.verify(&token).is_err());
    }
}
