//! Idempotency keys: a command run under a key claims `(principal, key)` as the first
//! statement of its transaction and records its outcome (the key's row) before commit,
//! so the key and the effect commit (or roll back) together. A duplicate blocks on the
//! claim until the first transaction ends; then it is told to replay (same request) or
//! that the key was reused for a different request. A failed command stores nothing;
//! an expired key that is not purged yet counts as absent.
//!
//! The claim is a transaction-scoped advisory lock, not a row: it takes no transaction
//! id, so a keyed command gets its id at its first real write, like any other command,
//! and its events sort after those of every transaction it waited for (the log's
//! order is the order of transaction ids).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::sql_types::{Jsonb, Nullable, Text, Timestamptz};
use diesel::OptionalExtension;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::db::prepared::Reuse;
use crate::db::PgPool;
use crate::error::DomainError;

/// Why a claim was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimConflict {
    /// The same request already ran under this key: replay its result.
    Replay,
    /// The key was used for a different request.
    KeyReused,
}

/// A request's claim on an idempotency key, handed to the command that runs it.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    /// Who sent the request (keys are per principal).
    pub principal: String,
    /// The client's key.
    pub key: String,
    /// Hash of the request (operation and variables).
    pub fingerprint: String,
    /// How long the key is kept.
    pub ttl: Duration,
    used: Arc<AtomicBool>,
    conflict: Arc<Mutex<Option<ClaimConflict>>>,
}

impl IdempotencyClaim {
    /// A claim for one request.
    pub fn new(principal: String, key: String, fingerprint: String, ttl: Duration) -> Self {
        Self {
            principal,
            key,
            fingerprint,
            ttl,
            used: Arc::new(AtomicBool::new(false)),
            conflict: Arc::new(Mutex::new(None)),
        }
    }

    /// Marks the claim as taken by a command; false if one already took it (a key
    /// covers one command).
    pub fn take(&self) -> bool {
        !self.used.swap(true, Ordering::AcqRel)
    }

    /// The conflict met by the command, if any.
    pub fn conflict(&self) -> Option<ClaimConflict> {
        self.conflict.lock().ok().and_then(|c| *c)
    }

    pub(crate) fn set_conflict(&self, c: ClaimConflict) {
        if let Ok(mut slot) = self.conflict.lock() {
            *slot = Some(c);
        }
    }
}

#[derive(diesel::QueryableByName)]
struct FingerprintRow {
    #[diesel(sql_type = Text)]
    fingerprint: String,
}

/// The first key of the advisory lock that claims a key (the second is the principal
/// and key hashed; a collision only makes two keys wait for each other).
const CLAIM_LOCK_CLASS: i32 = 0x7112;

/// Claims the key inside the command's transaction (its first statements): waits for
/// any transaction holding the same key, then looks for its stored row.
pub async fn claim(
    mut conn: &AsyncPgConnection,
    claim: &IdempotencyClaim,
) -> Result<(), DomainError> {
    diesel::sql_query("SELECT pg_advisory_xact_lock($1, hashtext($2 || chr(31) || $3))")
        .bind::<diesel::sql_types::Integer, _>(CLAIM_LOCK_CLASS)
        .bind::<Text, _>(&claim.principal)
        .bind::<Text, _>(&claim.key)
        .prepared()
        .execute(&mut conn)
        .await?;
    // A statement of its own, so its snapshot sees what the holder of the lock committed.
    let existing: Option<FingerprintRow> = diesel::sql_query(
        "SELECT fingerprint FROM idempotency_keys \
         WHERE principal = $1 AND key = $2 AND expires_at > now()",
    )
    .bind::<Text, _>(&claim.principal)
    .bind::<Text, _>(&claim.key)
    .prepared()
    .get_result(&mut conn)
    .await
    .optional()?;
    let Some(existing) = existing else {
        return Ok(());
    };
    let conflict = if existing.fingerprint == claim.fingerprint {
        ClaimConflict::Replay
    } else {
        ClaimConflict::KeyReused
    };
    claim.set_conflict(conflict);
    Err(DomainError::IdempotencyConflict)
}

#[derive(diesel::QueryableByName)]
struct StoredFingerprint {
    #[diesel(sql_type = Text)]
    principal: String,
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Text)]
    fingerprint: String,
}

/// [`claim`]'s lock for the keys of several commands that run in one transaction (a
/// batch of orders): takes every key's lock in one statement, in one global order (so two
/// batches cannot deadlock). The claims must be of distinct keys: a second claim of a key
/// in the same transaction would not wait for the first. [`stored_conflicts`], in a
/// statement after this one, completes the claims.
pub(crate) async fn lock_keys(
    mut conn: &AsyncPgConnection,
    claims: &[&IdempotencyClaim],
) -> Result<(), DomainError> {
    use diesel::sql_types::Array;
    if claims.is_empty() {
        return Ok(());
    }
    let principals: Vec<&str> = claims.iter().map(|c| c.principal.as_str()).collect();
    let keys: Vec<&str> = claims.iter().map(|c| c.key.as_str()).collect();
    // A volatile function in the select list runs after the sort, lock by lock in order.
    diesel::sql_query(
        "SELECT pg_advisory_xact_lock($1, h) FROM ( \
           SELECT DISTINCT hashtext(t.p || chr(31) || t.k) AS h \
           FROM unnest($2::text[], $3::text[]) AS t(p, k)) s \
         ORDER BY h",
    )
    .bind::<diesel::sql_types::Integer, _>(CLAIM_LOCK_CLASS)
    .bind::<Array<Text>, _>(&principals)
    .bind::<Array<Text>, _>(&keys)
    .prepared()
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// After [`lock_keys`], in a statement of its own (so its snapshot sees what the
/// locks' earlier holders committed): claim by claim, the conflict its stored row makes
/// (`None`: the key is free); marks each claim with it.
pub(crate) async fn stored_conflicts(
    mut conn: &AsyncPgConnection,
    claims: &[&IdempotencyClaim],
) -> Result<Vec<Option<ClaimConflict>>, DomainError> {
    use diesel::sql_types::Array;
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let principals: Vec<&str> = claims.iter().map(|c| c.principal.as_str()).collect();
    let keys: Vec<&str> = claims.iter().map(|c| c.key.as_str()).collect();
    let stored: Vec<StoredFingerprint> = diesel::sql_query(
        "SELECT k.principal, k.key, k.fingerprint FROM idempotency_keys k \
         JOIN unnest($1::text[], $2::text[]) AS t(p, k) ON k.principal = t.p AND k.key = t.k \
         WHERE k.expires_at > now()",
    )
    .bind::<Array<Text>, _>(&principals)
    .bind::<Array<Text>, _>(&keys)
    .prepared()
    .load(&mut conn)
    .await?;
    Ok(claims
        .iter()
        .map(|claim| {
            let row = stored
                .iter()
                .find(|r| r.principal == claim.principal && r.key == claim.key)?;
            let conflict = if row.fingerprint == claim.fingerprint {
                ClaimConflict::Replay
            } else {
                ClaimConflict::KeyReused
            };
            claim.set_conflict(conflict);
            Some(conflict)
        })
        .collect())
}

/// When a stored outcome of a key claimed now expires.
pub(crate) fn expiry(claim: &IdempotencyClaim) -> DateTime<Utc> {
    Utc::now()
        + chrono::Duration::from_std(claim.ttl).unwrap_or_else(|_| chrono::Duration::hours(24))
}

/// Stores the key with the command's outcome before its transaction commits (over
/// an expired row of the same key that was not purged yet).
pub async fn record_outcome(
    mut conn: &AsyncPgConnection,
    claim: &IdempotencyClaim,
    outcome: serde_json::Value,
) -> Result<(), DomainError> {
    let expires = expiry(claim);
    let stored = diesel::sql_query(
        "INSERT INTO idempotency_keys (principal, key, fingerprint, outcome, expires_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (principal, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, \
           outcome = EXCLUDED.outcome, response = NULL, created_at = now(), \
           expires_at = EXCLUDED.expires_at \
         WHERE idempotency_keys.expires_at <= now()",
    )
    .bind::<Text, _>(&claim.principal)
    .bind::<Text, _>(&claim.key)
    .bind::<Text, _>(&claim.fingerprint)
    .bind::<Jsonb, _>(outcome)
    .bind::<Timestamptz, _>(expires)
    .prepared()
    .execute(&mut conn)
    .await?;
    if stored == 1 {
        Ok(())
    } else {
        // The claim holds the key's lock and saw no live row: this cannot happen.
        Err(DomainError::Internal(
            "an idempotency key's row appeared under its claim".into(),
        ))
    }
}

/// A stored key.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct StoredKey {
    /// Hash of the request that first used it.
    #[diesel(sql_type = Text)]
    pub fingerprint: String,
    /// The command's outcome (`{"at": token, "value": ...}`).
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub outcome: Option<serde_json::Value>,
    /// The full response, once stored.
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub response: Option<serde_json::Value>,
    /// When it stops counting.
    #[diesel(sql_type = Timestamptz)]
    pub expires_at: DateTime<Utc>,
}

/// Looks a key up (expired keys count as absent).
pub async fn lookup(
    pool: &PgPool,
    principal: &str,
    key: &str,
) -> Result<Option<StoredKey>, DomainError> {
    let mut conn = pool.get().await?;
    let row: Option<StoredKey> = diesel::sql_query(
        "SELECT fingerprint, outcome, response, expires_at FROM idempotency_keys \
         WHERE principal = $1 AND key = $2 AND expires_at > now()",
    )
    .bind::<Text, _>(principal)
    .bind::<Text, _>(key)
    .prepared()
    .get_result(&mut conn)
    .await
    .map(Some)
    .or_else(|e| match e {
        diesel::result::Error::NotFound => Ok(None),
        other => Err(other),
    })?;
    Ok(row)
}

/// Stores the full response of the request that owns the key (first writer wins).
pub async fn store_response(
    pool: &PgPool,
    principal: &str,
    key: &str,
    fingerprint: &str,
    response: serde_json::Value,
) -> Result<(), DomainError> {
    let mut conn = pool.get().await?;
    diesel::sql_query(
        "UPDATE idempotency_keys SET response = $4 \
         WHERE principal = $1 AND key = $2 AND fingerprint = $3 AND response IS NULL",
    )
    .bind::<Text, _>(principal)
    .bind::<Text, _>(key)
    .bind::<Text, _>(fingerprint)
    .bind::<Jsonb, _>(response)
    .prepared()
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// Deletes up to `limit` expired keys; returns how many went.
pub async fn purge_expired(pool: &PgPool, limit: i64) -> Result<usize, DomainError> {
    let mut conn = pool.get().await?;
    let n = diesel::sql_query(
        "DELETE FROM idempotency_keys WHERE ctid IN \
         (SELECT ctid FROM idempotency_keys WHERE expires_at < now() LIMIT $1)",
    )
    .bind::<diesel::sql_types::BigInt, _>(limit)
    .prepared()
    .execute(&mut conn)
    .await?;
    Ok(n)
}
