//! Identity for now: HS256 JWT bearer tokens with `sub` (account id) and `role`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use till_domain::types::{CustomerId, Role};
use uuid::Uuid;

use crate::config::Secret;

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// No token.
    Anonymous,
    /// A valid token.
    User {
        /// The account.
        id: CustomerId,
        /// Its role.
        role: Role,
    },
}

impl Principal {
    /// True for STAFF and ADMIN.
    pub fn is_staff(&self) -> bool {
        matches!(self, Principal::User { role, .. } if role.is_staff())
    }

    /// The account id, if signed in.
    pub fn user_id(&self) -> Option<CustomerId> {
        match self {
            Principal::User { id, .. } => Some(*id),
            Principal::Anonymous => None,
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Error)]
pub enum AuthError {
    /// Not `Bearer <token>`.
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    /// Signature, expiry or claims are wrong.
    #[error("the access token is invalid or expired")]
    Invalid,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    iat: u64,
    exp: u64,
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
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
        }
    }

    /// Mints a token for `id` with `role`, valid for `ttl`.
    pub fn mint(&self, id: CustomerId, role: Role, ttl: Duration) -> Result<String, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            sub: id.to_string(),
            role,
            iat: now,
            exp: now + ttl.as_secs(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| AuthError::Invalid)
    }

    /// Reads the principal from an `Authorization` header value.
    pub fn principal(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let Some(value) = header else {
            return Ok(Principal::Anonymous);
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Malformed)?;
        let data = decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| AuthError::Invalid)?;
        let id = Uuid::parse_str(&data.claims.sub).map_err(|_| AuthError::Invalid)?;
        Ok(Principal::User {
            id: CustomerId(id),
            role: data.claims.role,
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
        let p = svc.principal(Some(&format!("Bearer {token}"))).ok();
        assert_eq!(
            p,
            Some(Principal::User {
                id,
                role: Role::Staff
            })
        );

        let other = TokenService::new(&Secret::new("another-secret-0123456789abcdef"));
        assert!(other.principal(Some(&format!("Bearer {token}"))).is_err());
        assert!(svc.principal(Some("Basic abc")).is_err());
        assert_eq!(svc.principal(None).ok(), Some(Principal::Anonymous));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let svc = TokenService::new(&Secret::new("s3cret-for-tests-only-0123456789"));
        let claims = Claims {
            sub: Uuid::nil().to_string(),
            role: Role::Customer,
            iat: 1,
            exp: 2,
        };
        let token =
            encode(&Header::new(Algorithm::HS256), &claims, &svc.encoding).unwrap_or_default();
        assert!(svc.principal(Some(&format!("Bearer {token}"))).is_err());
    }
}
