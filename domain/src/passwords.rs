//! Passwords: the policy a new password must meet and argon2id hashing.
//!
//! Hashing is deliberately slow and memory-hard (19 MiB, 2 passes: the OWASP
//! recommendation for argon2id), so it runs on the blocking pool and at most
//! [`MAX_CONCURRENT_HASHES`] at a time: a burst of logins queues instead of exhausting
//! memory or starving the async workers.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::error::DomainError;
use crate::types::Email;

/// Shortest password accepted.
pub const MIN_LEN: usize = 10;
/// Longest password accepted (bounds hashing work per request).
pub const MAX_LEN: usize = 128;
/// Most argon2 computations running at once in this process.
pub const MAX_CONCURRENT_HASHES: usize = 4;

/// A few of the most common passwords that pass the length rule.
const COMMON: &[&str] = &[
    "1234567890",
    "12345678910",
    "0123456789",
    "qwertyuiop",
    "password123",
    "password1234",
    "iloveyou123",
    "qwerty12345",
    "1q2w3e4r5t",
    "administrator",
];

/// A password that meets the policy (never printed).
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// Checks a new password: 10 to 128 characters, at least 5 different characters,
    /// not a well-known password, not the email address.
    pub fn new_for(raw: &str, email: &Email) -> Result<Self, DomainError> {
        let bad = |message: &str| DomainError::Validation {
            field: "password",
            message: message.to_owned(),
        };
        let chars = raw.chars().count();
        if chars < MIN_LEN {
            return Err(bad("must be at least 10 characters long"));
        }
        if chars > MAX_LEN {
            return Err(bad("must be at most 128 characters long"));
        }
        let mut distinct: Vec<char> = raw.chars().collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < 5 {
            return Err(bad("must use at least 5 different characters"));
        }
        let lower = raw.to_lowercase();
        if COMMON.contains(&lower.as_str()) {
            return Err(bad("is too common; choose another"));
        }
        let email = email.as_str().to_lowercase();
        let local = email.split('@').next().unwrap_or_default();
        if lower == email || lower == local {
            return Err(bad("must not be your email address"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The password text; call only where it is hashed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn argon2() -> Argon2<'static> {
    // 19 MiB, 2 iterations, 1 lane: OWASP's argon2id baseline. Params::new only fails
    // for out-of-range values, which these are not.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| Semaphore::new(MAX_CONCURRENT_HASHES))
}

async fn on_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DomainError> {
    let _permit = permits()
        .acquire()
        .await
        .map_err(|_| DomainError::Internal("password hashing pool closed".into()))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| DomainError::Internal(format!("password hashing task failed: {e}")))
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`).
pub async fn hash(password: &Password) -> Result<String, DomainError> {
    let plain = password.0.clone();
    on_blocking_pool(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(plain.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| DomainError::Internal(format!("password hashing failed: {e}")))
    })
    .await?
}

/// A hash of a random password with the same parameters, verified against when the
/// account does not exist so that unknown emails cost as much time as wrong passwords.
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        let random = uuid::Uuid::new_v4().to_string();
        argon2()
            .hash_password(random.as_bytes(), &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// True when `plain` matches `stored`. With no stored hash (unknown account, or an
/// account without a password) a decoy is verified so the answer takes as long.
pub async fn verify(plain: &str, stored: Option<&str>) -> Result<bool, DomainError> {
    if plain.len() > MAX_LEN * 4 {
        return Ok(false);
    }
    let plain = plain.to_owned();
    let stored = stored.map(str::to_owned);
    on_blocking_pool(move || {
        let (phc, real) = match &stored {
            Some(s) => (s.as_str(), true),
            None => (decoy(), false),
        };
        let ok = PasswordHash::new(phc)
            .map(|parsed| argon2().verify_password(plain.as_bytes(), &parsed).is_ok())
            .unwrap_or(false);
        ok && real
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_explains_what_is_wrong() -> Result<(), DomainError> {
        let email = Email::parse("ann@example.com")?;
        let msg = |p: &str| Password::new_for(p, &email).err().map(|e| e.to_string());
        assert_eq!(
            msg("short").as_deref(),
            Some("password: must be at least 10 characters long")
        );
        assert!(msg(&"ab1!x".repeat(30)).is_some_and(|m| m.contains("at most 128")));
        assert!(msg("aaaaaaaaaaaa").is_some_and(|m| m.contains("5 different")));
        assert!(msg("Password123").is_some_and(|m| m.contains("too common")));
        assert!(msg("ann@example.com").is_some_and(|m| m.contains("email")));
        assert!(msg("correct horse battery").is_none());
        Ok(())
    }

    #[tokio::test]
    async fn hashes_verify_and_decoys_never_match() -> Result<(), DomainError> {
        let pw = Password::new_for("correct horse battery", &Email::parse("ann@example.com")?)?;
        let phc = hash(&pw).await?;
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(matches!(
            verify("correct horse battery", Some(&phc)).await,
            Ok(true)
        ));
        assert!(matches!(
            verify("correct horse batter", Some(&phc)).await,
            Ok(false)
        ));
        assert!(matches!(
            verify("correct horse battery", None).await,
            Ok(false)
        ));
        assert!(matches!(
            verify("x", Some("not a phc string")).await,
            Ok(false)
        ));
        Ok(())
    }
}
