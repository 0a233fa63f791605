//! Who is calling: bearer tokens are either Till's own HS256 access tokens or RS256 /
//! ES256 tokens from a configured external OIDC issuer. The token's header picks the
//! verifier, and each verifier accepts only its own algorithms, so neither `alg: none`
//! nor key confusion (an RS token "signed" with a public key as an HMAC secret) can pass.

pub mod oidc;
pub mod tokens;

use std::sync::Arc;

use jsonwebtoken::{decode_header, Algorithm};
use thiserror::Error;
use till_domain::types::{CustomerId, Role};

pub use oidc::OidcVerifier;
pub use tokens::TokenService;

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
}

impl Authenticator {
    /// Till's own tokens, plus an external issuer's when configured.
    pub fn new(own: TokenService, oidc: Option<Arc<OidcVerifier>>) -> Self {
        Self { own, oidc }
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
        // `alg: none` and unknown algorithms fail here: the header does not parse.
        let head = decode_header(token).map_err(|_| AuthError::Invalid)?;
        match head.alg {
            Algorithm::HS256 => self.own.verify(token),
            Algorithm::RS256 | Algorithm::ES256 => match &self.oidc {
                Some(oidc) => oidc.verify(token, &head).await,
                None => Err(AuthError::Invalid),
            },
            _ => Err(AuthError::Invalid),
        }
    }
}
