//! Recently verified access tokens of Till's own, so a client that sends the same
//! bearer token on every request pays for the signature check and the claim parsing
//! once per minute instead of on each request (a visible share of a cached read's CPU;
//! benches/HISTORY.md).
//!
//! Only tokens that verified are kept (garbage cannot fill the cache), the entry keeps
//! the token's own expiry and is refused after it exactly as the verifier would, and
//! the cache is bounded in entries and in age, so a changed signing secret or any other
//! reason to stop trusting a token takes effect within `MAX_AGE` at the latest. Whether
//! its session is still open and which role its account has now is checked on every
//! request all the same (`access`).

use std::time::Duration;

use super::tokens::Verified;

/// Most tokens kept (one per active client; about 400 bytes each).
const MAX_TOKENS: u64 = 10_000;
/// Longest a verification is reused.
const MAX_AGE: Duration = Duration::from_secs(60);

/// Tokens verified in the last minute, with the principal they carry.
#[derive(Clone)]
pub(super) struct VerifiedTokens {
    cache: moka::sync::Cache<String, Verified>,
}

impl VerifiedTokens {
    pub(super) fn new() -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(MAX_TOKENS)
                .time_to_live(MAX_AGE)
                .build(),
        }
    }

    /// What `token` verified as, when that was recently and it is still valid at `now`
    /// (Unix seconds).
    pub(super) fn get(&self, token: &str, now: u64) -> Option<Verified> {
        self.cache.get(token).filter(|v| now <= v.valid_until)
    }

    /// Remembers that `token` verified.
    pub(super) fn insert(&self, token: &str, verified: Verified) {
        self.cache.insert(token.to_owned(), verified);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;
    use till_domain::types::{CustomerId, Role};

    #[test]
    fn a_remembered_token_expires_when_the_token_does() {
        let tokens = VerifiedTokens::new();
        let p = Verified {
            principal: Principal::User {
                id: CustomerId::new(),
                role: Role::Customer,
            },
            valid_until: 100,
            session: None,
        };
        tokens.insert("t", p);
        assert_eq!(tokens.get("t", 99), Some(p));
        assert_eq!(tokens.get("t", 100), Some(p));
        assert_eq!(
            tokens.get("t", 101),
            None,
            "expired, whatever the cache's age"
        );
        assert_eq!(tokens.get("other", 50), None);
    }
}
