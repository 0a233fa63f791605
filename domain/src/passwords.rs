//! Passwords: the policy a new password must meet and argon2id hashing.
//!
//! Hashing is deliberately slow and memory-hard (19 MiB, 2 passes: the OWASP
//! recommendation for argon2id), so it runs on the blocking pool, at most
//! [`MAX_CONCURRENT_HASHES`] at a time, each in one of as many working-memory areas
//! that are kept and reused ([`HashPool`]). A burst of logins queues for those areas
//! instead of exhausting memory or starving the async workers: when each hash
//! allocated its own 19 MiB, the allocation landed in the malloc arena of whichever
//! blocking thread ran it and stayed there after it was freed, and 200 logins took a
//! server to 1.8 GiB.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

use crate::error::DomainError;
use crate::types::Email;

/// Shortest password accepted.
pub const MIN_LEN: usize = 10;
/// Longest password accepted (bounds hashing work per request).
pub const MAX_LEN: usize = 128;
/// Most argon2 computations running at once in this process, and so the most
/// working-memory areas it keeps (19 MiB each).
pub const MAX_CONCURRENT_HASHES: usize = 4;
/// Working memory of one hash, in KiB (argon2's `m`): OWASP's argon2id baseline.
pub const MEMORY_KIB: u32 = 19 * 1024;

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

fn params() -> Params {
    // 19 MiB, 2 iterations, 1 lane. Params::new only fails for out-of-range values,
    // which these are not.
    Params::new(MEMORY_KIB, 2, 1, None).unwrap_or_default()
}

fn internal(what: &str, e: impl std::fmt::Display) -> DomainError {
    DomainError::Internal(format!("password hashing: {what}: {e}"))
}

/// One hash's working memory: argon2's 1 KiB blocks.
type Area = Box<[Block]>;

/// Argon2 working memory for a fixed number of concurrent hashes: a semaphore with one
/// permit per memory area, and the areas themselves, allocated on first use and then
/// reused by every later hash, so that however many hashes a burst asks for, the
/// process holds at most `permits` areas.
pub struct HashPool {
    permits: Arc<Semaphore>,
    areas: Arc<Areas>,
}

/// The memory areas of a [`HashPool`].
struct Areas {
    free: Mutex<Vec<Area>>,
    /// Blocks in each area.
    blocks: usize,
    /// Areas alive (lent out or free).
    alive: AtomicUsize,
    /// Areas ever allocated.
    allocations: AtomicUsize,
}

impl Areas {
    /// A free area, or a new one when none is free (the caller holds a permit, so
    /// there are never more areas than permits).
    fn lend(self: &Arc<Self>) -> Lent {
        let free = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let area = free.unwrap_or_else(|| {
            self.alive.fetch_add(1, Ordering::AcqRel);
            self.allocations.fetch_add(1, Ordering::AcqRel);
            vec![Block::new(); self.blocks].into_boxed_slice()
        });
        Lent {
            areas: self.clone(),
            area,
        }
    }
}

/// An area lent to one hash; back in its pool when dropped, even by a panic.
struct Lent {
    areas: Arc<Areas>,
    area: Area,
}

impl Drop for Lent {
    fn drop(&mut self) {
        let area = std::mem::take(&mut self.area);
        self.areas
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(area);
    }
}

impl HashPool {
    /// A pool for `permits` concurrent hashes of [`MEMORY_KIB`] each (at least one).
    pub fn new(permits: usize) -> Self {
        let permits = permits.max(1);
        Self {
            permits: Arc::new(Semaphore::new(permits)),
            areas: Arc::new(Areas {
                free: Mutex::new(Vec::with_capacity(permits)),
                blocks: params().block_count(),
                alive: AtomicUsize::new(0),
                allocations: AtomicUsize::new(0),
            }),
        }
    }

    /// Memory areas this pool holds now (each [`MEMORY_KIB`] KiB).
    pub fn areas(&self) -> usize {
        self.areas.alive.load(Ordering::Acquire)
    }

    /// Memory areas this pool ever allocated.
    pub fn allocations(&self) -> usize {
        self.areas.allocations.load(Ordering::Acquire)
    }

    /// Runs `work` on the blocking pool with a memory area of its own, once a permit is
    /// free. The blocking task holds the permit and the area until `work` is done, so
    /// a caller that stops waiting (a client went away) frees neither early.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut [Block]) -> Result<T, DomainError> + Send + 'static,
    ) -> Result<T, DomainError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| internal("the pool is closed", e))?;
        let areas = self.areas.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut lent = areas.lend();
            work(&mut lent.area)
        })
        .await
        .map_err(|e| internal("the hashing task failed", e))?
    }

    /// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`).
    pub async fn hash(&self, password: &Password) -> Result<String, DomainError> {
        let plain = password.0.clone();
        self.run(move |area| hash_with(plain.as_bytes(), area))
            .await
    }

    /// True when `plain` matches `stored`. With no stored hash (unknown account, or an
    /// account without a password) a decoy is verified so the answer takes as long.
    pub async fn verify(&self, plain: &str, stored: Option<&str>) -> Result<bool, DomainError> {
        if plain.len() > MAX_LEN * 4 {
            return Ok(false);
        }
        let plain = plain.to_owned();
        let stored = stored.map(str::to_owned);
        self.run(move |area| {
            let real = stored.is_some();
            let phc = match stored {
                Some(s) => s,
                None => decoy(area)?.to_owned(),
            };
            let Ok(parsed) = PasswordHash::new(&phc) else {
                return Ok(false);
            };
            Ok(verify_with(plain.as_bytes(), &parsed, area)? && real)
        })
        .await
    }
}

/// argon2id of `plain` with a fresh salt and [`params`], in `area`.
fn hash_with(plain: &[u8], area: &mut [Block]) -> Result<String, DomainError> {
    let params = params();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| internal("salt", e))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(plain, salt_bytes, &mut out, &mut *area)
        .map_err(|e| internal("argon2", e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| internal("parameters", e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| internal("output", e))?),
    };
    Ok(phc.to_string())
}

/// Recomputes `stored` for `plain` in `area`; constant-time comparison. A hash with
/// parameters this process would not write (more memory than an area holds, another
/// algorithm) is an internal error rather than a reason to allocate more.
fn verify_with(
    plain: &[u8],
    stored: &PasswordHash<'_>,
    area: &mut [Block],
) -> Result<bool, DomainError> {
    let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else {
        return Ok(false);
    };
    let algorithm = Algorithm::try_from(stored.algorithm).map_err(|e| internal("algorithm", e))?;
    let version = stored
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| internal("version", e))?
        .unwrap_or_default();
    let params = Params::try_from(stored).map_err(|e| internal("parameters", e))?;
    if params.block_count() > area.len() {
        return Err(DomainError::Internal(format!(
            "password hashing: a stored hash needs {} KiB, more than the {} KiB this \
             process hashes with",
            params.m_cost(),
            area.len()
        )));
    }
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| internal("salt", e))?;
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = out
        .get_mut(..expected.len())
        .ok_or_else(|| DomainError::Internal("password hashing: output too long".into()))?;
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(plain, salt_bytes, out, &mut *area)
        .map_err(|e| internal("argon2", e))?;
    // `Output`'s equality is constant-time.
    Ok(Output::new(out).map_err(|e| internal("output", e))? == *expected)
}

/// A hash of a random password with the same parameters, verified against when the
/// account does not exist so that unknown emails cost as much time as wrong passwords.
/// Made once, in the working memory of the first hash that needs it.
fn decoy(area: &mut [Block]) -> Result<&'static str, DomainError> {
    static DECOY: OnceLock<String> = OnceLock::new();
    if let Some(made) = DECOY.get() {
        return Ok(made);
    }
    let made = hash_with(uuid::Uuid::new_v4().to_string().as_bytes(), area)?;
    Ok(DECOY.get_or_init(|| made))
}

/// The process's pool: every hash and verification in this process shares it.
fn pool() -> &'static HashPool {
    static POOL: OnceLock<HashPool> = OnceLock::new();
    POOL.get_or_init(|| HashPool::new(MAX_CONCURRENT_HASHES))
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`) with the
/// process's [`HashPool`].
pub async fn hash(password: &Password) -> Result<String, DomainError> {
    pool().hash(password).await
}

/// True when `plain` matches `stored`, with the process's [`HashPool`]. With no stored
/// hash (unknown account, or an account without a password) a decoy is verified so the
/// answer takes as long.
pub async fn verify(plain: &str, stored: Option<&str>) -> Result<bool, DomainError> {
    pool().verify(plain, stored).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

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

    /// Hashes from the pool are ordinary argon2id PHC strings, and hashes written by
    /// the argon2 crate's own API (every hash stored before the pool) verify.
    #[tokio::test]
    async fn pool_hashes_are_standard_argon2id() -> Result<(), DomainError> {
        let pool = HashPool::new(1);
        let pw = Password::new_for("correct horse battery", &Email::parse("ann@example.com")?)?;
        let phc = pool.hash(&pw).await?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params());
        let parsed = PasswordHash::new(&phc).map_err(|e| internal("parse", e))?;
        assert!(argon2
            .verify_password(b"correct horse battery", &parsed)
            .is_ok());
        let salt = SaltString::generate(&mut OsRng);
        let before = argon2
            .hash_password(b"correct horse battery", &salt)
            .map_err(|e| internal("hash", e))?
            .to_string();
        assert!(pool.verify("correct horse battery", Some(&before)).await?);
        assert!(!pool.verify("correct horse batter", Some(&before)).await?);
        // More memory than an area holds: refused, not allocated.
        let big = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(MEMORY_KIB * 2, 1, 1, None).map_err(|e| internal("params", e))?,
        )
        .hash_password(b"correct horse battery", &salt)
        .map_err(|e| internal("hash", e))?
        .to_string();
        assert!(pool
            .verify("correct horse battery", Some(&big))
            .await
            .is_err());
        assert_eq!(pool.allocations(), 1);
        Ok(())
    }

    /// However many hashes a burst asks for, the pool allocates one area per permit
    /// and every hash gets its answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_uses_one_memory_area_per_permit() -> Result<(), DomainError> {
        let pool = std::sync::Arc::new(HashPool::new(2));
        let pw = Password::new_for("correct horse battery", &Email::parse("ann@example.com")?)?;
        let stored = pool.hash(&pw).await?;
        let mut tasks = Vec::new();
        for i in 0..12 {
            let pool = pool.clone();
            let stored = stored.clone();
            tasks.push(tokio::spawn(async move {
                let guess = if i % 2 == 0 {
                    "correct horse battery"
                } else {
                    "wrong horse battery"
                };
                pool.verify(guess, Some(&stored))
                    .await
                    .map(|ok| ok == (i % 2 == 0))
            }));
        }
        for task in tasks {
            let right = task
                .await
                .map_err(|e| DomainError::Internal(e.to_string()))??;
            assert!(right);
        }
        assert_eq!(pool.allocations(), 2, "one area per permit");
        assert_eq!(pool.areas(), 2);
        Ok(())
    }
}
