//! Who is calling: bearer tokens are either Till's own HS256 access tokens or RS256 /
//! ES256 tokens from a configured external OIDC issuer. The token's header picks the
//! verifier, and each verifier accepts only its own algorithms, so neither `alg: none`
//! nor key confusion (an RS token "signed" with a public key as an HMAC secret) can pass.

pub mod oidc;
pub mod tokens;
mod verified;

use std::sync::Arc;

use jsonwebtoken::{decode_header, get_current_timestamp, Algorithm};
use thiserror::Error;
use till_domain::types::{CustomerId, Role};

pub use oidc::OidcVerifier;
pub use tokens::TokenService;
use verified::VerifiedTokens;

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

    /// True for ADMIN.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Principal::User {
                role: Role::Admin,
                ..
            }
        )
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
    /// Signature, algorithm, expiry or claims are wrong.
    #[error("the access token is invalid or expired")]
    Invalid,
    /// The token may be fine but could not be checked (issuer keys or database down).
    #[error("the access token cannot be verified right now; retry shortly")]
    Unavailable,
}

/// Verifies bearer tokens.
#[derive(Clone)]
pub struct Authenticator {
    own: TokenService,
    oidc: Option<Arc<OidcVerifier>>,
    verified: VerifiedTokens,
}

impl Authenticator {
    /// Till's own tokens, plus an external issuer's when configured.
    pub fn new(own: TokenService, oidc: Option<Arc<OidcVerifier>>) -> Self {
        Self {
            own,
            oidc,
            verified: VerifiedTokens::new(),
        }
    }

    /// Till's own token service (to mint tokens).
    pub fn own(&self) -> &TokenService {
        &self.own
    }

    /// Reads the principal from an `Authorization` header value.
    pub async fn principal(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let Some(value) = header else {
            return Ok(Principal::Anonymous);
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 8192)
            .ok_or(AuthError::Malformed)?;
        let now = get_current_timestamp();
        if let Some(principal) = self.verified.get(token, now) {
            return Ok(principal);
        }
        // `alg: none` and unknown algorithms fail here: the header does not parse.
        let head = decode_header(token).map_err(|_| AuthError::Invalid)?;
        match head.alg {
            Algorithm::HS256 => {
                let (principal, valid_until) = self.own.verify_until(token)?;
                self.verified.insert(token, principal, valid_until);
                Ok(principal)
            }
            Algorithm::RS256 | Algorithm::ES256 => match &self.oidc {
                Some(oidc) => oidc.verify(token, &head).await,
                None => Err(AuthError::Invalid),
            },
            _ => Err(AuthError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Secret;

    #[tokio::test]
    async fn verified_tokens_are_remembered_and_others_still_refused() {
        let own = TokenService::new(&Secret::new("s3cret-for-tests-only-0123456789"));
        let auth = Authenticator::new(own.clone(), None);
        let id = CustomerId::new();
        let token = own
            .mint(id, Role::Customer, Duration::from_secs(60))
            .unwrap_or_default();
        let header = format!("Bearer {token}");
        let expected = Principal::User {
            id,
            role: Role::Customer,
        };
        for _ in 0..2 {
            assert_eq!(auth.principal(Some(&header)).await.ok(), Some(expected));
        }
        let now = get_current_timestamp();
        assert_eq!(auth.verified.get(&token, now), Some(expected));
        // A remembered token is not accepted past its expiry.
        assert_eq!(auth.verified.get(&token, now + 60 + 6), None);
        // A token whose signature does not match is never remembered.
        let forged = TokenService::new(&Secret::new("another-secret-0123456789abcdef"))
            .mint(id, Role::Admin, Duration::from_secs(60))
            .unwrap_or_default();
        assert!(auth
            .principal(Some(&format!("Bearer {forged}")))
            .await
            .is_err());
        assert_eq!(auth.verified.get(&forged, now), None);
    }
}
