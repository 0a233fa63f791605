//! Recently verified access tokens of Till's own, so a client that sends the same
//! bearer token on every request pays for the signature check and the claim parsing
//! once per minute instead of on each request (on the cached `product(id:)` read that
//! was about 6% of the server's CPU).
//!
//! Only tokens that verified are kept (garbage cannot fill the cache), the entry keeps
//! the token's own expiry and is refused after it exactly as the verifier would, and
//! the cache is bounded in entries and in age, so a changed signing secret or any other
//! reason to stop trusting a token takes effect within `MAX_AGE` at the latest. Access
//! tokens are not revocable before expiry anyway (see docs/security.md).

use std::time::Duration;

use super::Principal;

/// Most tokens kept (one per active client; about 400 bytes each).
const MAX_TOKENS: u64 = 10_000;
/// Longest a verification is reused.
const MAX_AGE: Duration = Duration::from_secs(60);

/// Tokens verified in the last minute, with the principal they carry.
#[derive(Clone)]
pub(super) struct VerifiedTokens {
    cache: moka::sync::Cache<String, (Principal, u64)>,
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

    /// The principal of `token` when it was verified recently and is still valid at
    /// `now` (Unix seconds).
    pub(super) fn get(&self, token: &str, now: u64) -> Option<Principal> {
        self.cache
            .get(token)
            .and_then(|(principal, valid_until)| (now <= valid_until).then_some(principal))
    }

    /// Remembers that `token` verified as `principal`, accepted until `valid_until`.
    pub(super) fn insert(&self, token: &str, principal: Principal, valid_until: u64) {
        self.cache
            .insert(token.to_owned(), (principal, valid_until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use till_domain::types::{CustomerId, Role};

    #[test]
    fn a_remembered_token_expires_when_the_token_does() {
        let tokens = VerifiedTokens::new();
        let p = Principal::User {
            id: CustomerId::new(),
            role: Role::Customer,
        };
        tokens.insert("t", p, 100);
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
