//! Who is calling: bearer tokens are either Till's own HS256 access tokens or RS256 /
//! ES256 tokens from a configured external OIDC issuer. The token's header picks the
//! verifier, and each verifier accepts only its own algorithms, so neither `alg: none`
//! nor key confusion (an RS token "signed" with a public key as an HMAC secret) can pass.

pub mod access;
pub mod oidc;
pub mod sign_in;
pub mod tokens;
mod verified;

use std::sync::Arc;

use jsonwebtoken::{decode_header, get_current_timestamp, Algorithm};
use thiserror::Error;
use till_domain::types::{CustomerId, Role};

pub use access::AccessCheck;
pub use oidc::OidcVerifier;
pub use tokens::{TokenService, Verified};
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
    /// The token's session ended (logout) or its account is gone.
    #[error("the session of this access token has ended; sign in again")]
    Revoked,
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
    access: Option<AccessCheck>,
}

/// A caller whose token verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authenticated {
    /// Who, with the role that applies now.
    pub principal: Principal,
    /// The last second (Unix time) the token is accepted (`None` when anonymous).
    pub valid_until: Option<u64>,
    /// The session the token belongs to, if any.
    pub session: Option<uuid::Uuid>,
}

impl Authenticator {
    /// Till's own tokens, plus an external issuer's when configured; with `access`,
    /// Till's own tokens also answer to their session and their account's current role.
    pub fn new(
        own: TokenService,
        oidc: Option<Arc<OidcVerifier>>,
        access: Option<AccessCheck>,
    ) -> Self {
        Self {
            own,
            oidc,
            verified: VerifiedTokens::new(),
            access,
        }
    }

    /// The check of sessions and current roles, when there is one.
    pub fn access(&self) -> Option<&AccessCheck> {
        self.access.as_ref()
    }

    /// Till's own token service (to mint tokens).
    pub fn own(&self) -> &TokenService {
        &self.own
    }

    /// Reads the principal from an `Authorization` header value.
    pub async fn principal(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        self.authenticate(header).await.map(|a| a.principal)
    }

    /// Reads the caller from an `Authorization` header value: who, until when, which
    /// session. Till's own tokens are refused once their session ended and carry the
    /// account's current role (a demotion applies at once).
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Authenticated, AuthError> {
        let Some(value) = header else {
            return Ok(Authenticated {
                principal: Principal::Anonymous,
                valid_until: None,
                session: None,
            });
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 8192)
            .ok_or(AuthError::Malformed)?;
        let now = get_current_timestamp();
        let own = match self.verified.get(token, now) {
            Some(v) => v,
            None => {
                // `alg: none` and unknown algorithms fail here: the header does not parse.
                let head = decode_header(token).map_err(|_| AuthError::Invalid)?;
                match head.alg {
                    Algorithm::HS256 => {
                        let v = self.own.verify_full(token)?;
                        self.verified.insert(token, v);
                        v
                    }
                    Algorithm::RS256 | Algorithm::ES256 => {
                        let v = match &self.oidc {
                            Some(oidc) => oidc.verify(token, &head).await?,
                            None => return Err(AuthError::Invalid),
                        };
                        return Ok(Authenticated {
                            principal: v.principal,
                            valid_until: Some(v.valid_until),
                            session: None,
                        });
                    }
                    _ => return Err(AuthError::Invalid),
                }
            }
        };
        let principal = match (own.principal, &self.access) {
            (Principal::User { id, .. }, Some(access)) => {
                match access.current_role(id, own.session).await? {
                    Some(role) => Principal::User { id, role },
                    None => return Err(AuthError::Revoked),
                }
            }
            (p, _) => p,
        };
        Ok(Authenticated {
            principal,
            valid_until: Some(own.valid_until),
            session: own.session,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::secret::Secret;

    #[tokio::test]
    async fn verified_tokens_are_remembered_and_others_still_refused() {
        let own = TokenService::new(&Secret::new("s3cret-for-tests-only-0123456789"));
        let auth = Authenticator::new(own.clone(), None, None);
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
        assert_eq!(
            auth.verified.get(&token, now).map(|v| v.principal),
            Some(expected)
        );
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
