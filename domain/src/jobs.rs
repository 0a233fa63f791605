//! The PostgreSQL job queue: enqueue inside a command's transaction, claim with
//! `FOR UPDATE SKIP LOCKED` under a lease, finish (delete), retry later with
//! exponential backoff and full jitter, or move to the dead letters after the last
//! attempt. Idle workers wake at once on a NOTIFY of [`JOBS_CHANNEL`](crate::channels::JOBS_CHANNEL), sent after the
//! enqueuing command commits (see `wakeups`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Integer, Jsonb, Nullable, Text, Timestamptz};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use rand::Rng;
use serde_json::Value;

use crate::channels::JOBS_CHANNEL;
use crate::db::prepared::Reuse;
use crate::db::PgPool;
use crate::error::DomainError;

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Queue name.
    pub queue: &'static str,
    /// What the handler needs.
    pub payload: Value,
    /// Attempts before it becomes a dead letter.
    pub max_attempts: i32,
}

/// A claimed job.
#[derive(Debug, Clone, QueryableByName)]
pub struct Job {
    /// Id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Queue.
    #[diesel(sql_type = Text)]
    pub queue: String,
    /// Payload.
    #[diesel(sql_type = Jsonb)]
    pub payload: Value,
    /// This attempt's number (1 for the first).
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    /// Attempts allowed.
    #[diesel(sql_type = Integer)]
    pub max_attempts: i32,
    /// When it was enqueued.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

/// A dead letter as staff see it.
#[derive(Debug, Clone, QueryableByName)]
pub struct DeadLetter {
    /// Id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Queue.
    #[diesel(sql_type = Text)]
    pub queue: String,
    /// Payload.
    #[diesel(sql_type = Jsonb)]
    pub payload: Value,
    /// Attempts made.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    /// The last attempt's error.
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    /// When it was enqueued.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    /// When it died.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub dead_at: Option<DateTime<Utc>>,
}

/// Retry timing: attempt n waits a random time in [0, min(cap, base * 2^(n-1))].
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First ceiling.
    pub base: Duration,
    /// Largest ceiling.
    pub cap: Duration,
}

impl Backoff {
    /// The wait before retrying after attempt `attempt` (full jitter).
    pub fn delay(&self, attempt: i32) -> Duration {
        let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.cap);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::thread_rng().gen_range(0..=ms))
    }
}

/// What happened to a failed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// It runs again after this long.
    Retry(Duration),
    /// It is a dead letter now.
    Dead,
    /// Its lease was lost (another worker has it); nothing was recorded.
    LeaseLost,
}

/// Enqueues jobs inside the caller's transaction. Inside a command the workers are
/// woken after it commits (`wakeups`: a notifying transaction commits under a
/// database-wide lock); elsewhere (the webhook fan-out) the transaction notifies them.
pub async fn enqueue(conn: &mut AsyncPgConnection, jobs: &[NewJob]) -> Result<(), DomainError> {
    for job in jobs {
        diesel::sql_query("INSERT INTO jobs (queue, payload, max_attempts) VALUES ($1, $2, $3)")
            .bind::<Text, _>(job.queue)
            .bind::<Jsonb, _>(&job.payload)
            .bind::<Integer, _>(job.max_attempts.max(1))
            .prepared()
            .execute(conn)
            .await?;
    }
    if let Some(job) = jobs.first() {
        if !crate::wakeups::enqueued() {
            diesel::sql_query("SELECT pg_notify($1, $2)")
                .bind::<Text, _>(JOBS_CHANNEL)
                .bind::<Text, _>(job.queue)
                .prepared()
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

/// Claims up to `limit` due jobs of `queue` (or jobs whose lease expired) for `worker`.
pub async fn claim(
    pool: &PgPool,
    queue: &str,
    limit: i64,
    lease: Duration,
    worker: &str,
) -> Result<Vec<Job>, DomainError> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
           locked_until = now() + $3 * interval '1 millisecond', locked_by = $4, updated_at = now() \
         WHERE id IN ( \
           SELECT id FROM jobs WHERE queue = $1 AND ( \
             (status = 'queued' AND run_at <= now()) OR (status = 'running' AND locked_until < now())) \
           ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         RETURNING id, queue, payload, attempts, max_attempts, created_at",
    )
    .bind::<Text, _>(queue)
    .bind::<BigInt, _>(limit)
    .bind::<BigInt, _>(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
    .bind::<Text, _>(worker)
    .prepared()
    .load(&mut conn)
    .await?)
}

/// Extends the lease of a running job by `lease` from now. False when this claim no
/// longer holds the job (its lease ran out and another claim took it, or it ended).
pub async fn renew(
    pool: &PgPool,
    job: &Job,
    worker: &str,
    lease: Duration,
) -> Result<bool, DomainError> {
    let mut conn = pool.get().await?;
    let n = diesel::sql_query(
        "UPDATE jobs SET locked_until = now() + $4 * interval '1 millisecond', updated_at = now() \
         WHERE id = $1 AND locked_by = $2 AND attempts = $3 AND status = 'running'",
    )
    .bind::<BigInt, _>(job.id)
    .bind::<Text, _>(worker)
    .bind::<Integer, _>(job.attempts)
    .bind::<BigInt, _>(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
    .prepared()
    .execute(&mut conn)
    .await?;
    Ok(n == 1)
}

/// A job finished: it is deleted. False when the lease was lost meanwhile. Every
/// outcome write is fenced by the claim (`locked_by` and the attempt number the claim
/// set), so a stale attempt of the same process cannot end a newer claim's run.
pub async fn complete(pool: &PgPool, job: &Job, worker: &str) -> Result<bool, DomainError> {
    let mut conn = pool.get().await?;
    let n = diesel::sql_query(
        "DELETE FROM jobs WHERE id = $1 AND locked_by = $2 AND attempts = $3 AND status = 'running'",
    )
    .bind::<BigInt, _>(job.id)
    .bind::<Text, _>(worker)
    .bind::<Integer, _>(job.attempts)
    .prepared()
    .execute(&mut conn)
    .await?;
    Ok(n == 1)
}

/// A job failed: retry later, or dead-letter it when out of attempts (or when the
/// failure is permanent).
pub async fn fail(
    pool: &PgPool,
    job: &Job,
    worker: &str,
    error: &str,
    permanent: bool,
    backoff: Backoff,
) -> Result<Failed, DomainError> {
    let error: String = error.chars().take(2000).collect();
    let mut conn = pool.get().await?;
    let dead = permanent || job.attempts >= job.max_attempts;
    let (sql, outcome) = if dead {
        (
            "UPDATE jobs SET status = 'dead', last_error = $3, locked_until = NULL, \
               locked_by = NULL, dead_at = now(), updated_at = now() \
             WHERE id = $1 AND locked_by = $2 AND attempts = $5 AND status = 'running'",
            Failed::Dead,
        )
    } else {
        let delay = backoff.delay(job.attempts);
        (
            "UPDATE jobs SET status = 'queued', last_error = $3, locked_until = NULL, \
               locked_by = NULL, run_at = now() + $4 * interval '1 millisecond', updated_at = now() \
             WHERE id = $1 AND locked_by = $2 AND attempts = $5 AND status = 'running'",
            Failed::Retry(delay),
        )
    };
    let delay_ms = match outcome {
        Failed::Retry(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        _ => 0,
    };
    let n = diesel::sql_query(sql)
        .bind::<BigInt, _>(job.id)
        .bind::<Text, _>(worker)
        .bind::<Text, _>(&error)
        .bind::<BigInt, _>(delay_ms)
        .bind::<Integer, _>(job.attempts)
        .execute(&mut conn)
        .await?;
    Ok(if n == 1 { outcome } else { Failed::LeaseLost })
}

/// Dead letters, newest first, after the cursor `before` (an id), optionally of one queue.
pub async fn dead_letters(
    pool: &PgPool,
    queue: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<DeadLetter>, DomainError> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "SELECT id, queue, payload, attempts, last_error, created_at, dead_at FROM jobs \
         WHERE status = 'dead' AND ($1::text IS NULL OR queue = $1) AND ($2::bigint IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3",
    )
    .bind::<Nullable<Text>, _>(queue)
    .bind::<Nullable<BigInt>, _>(before)
    .bind::<BigInt, _>(limit)
    .prepared()
    .load(&mut conn)
    .await?)
}

/// The queue and payload of a dead letter. NOT_FOUND when it is not one.
pub async fn dead_letter_payload(pool: &PgPool, id: i64) -> Result<(String, Value), DomainError> {
    let mut conn = pool.get().await?;
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        queue: String,
        #[diesel(sql_type = Jsonb)]
        payload: Value,
    }
    let row: Option<Row> =
        diesel::sql_query("SELECT queue, payload FROM jobs WHERE id = $1 AND status = 'dead'")
            .bind::<BigInt, _>(id)
            .prepared()
            .get_result(&mut conn)
            .await
            .optional()?;
    let row = row.ok_or_else(|| DomainError::not_found("dead letter", id))?;
    Ok((row.queue, row.payload))
}

/// Puts a dead letter back on its queue with fresh attempts. NOT_FOUND when it is not
/// (or no longer) a dead letter. The back office goes through
/// `Commands::retry_dead_letter`, which refuses what must not run again.
pub async fn retry_dead(pool: &PgPool, id: i64) -> Result<String, DomainError> {
    let mut conn = pool.get().await?;
    #[derive(QueryableByName)]
    struct Q {
        #[diesel(sql_type = Text)]
        queue: String,
    }
    let row: Option<Q> = diesel::sql_query(
        "UPDATE jobs SET status = 'queued', attempts = 0, run_at = now(), dead_at = NULL, \
           updated_at = now() WHERE id = $1 AND status = 'dead' RETURNING queue",
    )
    .bind::<BigInt, _>(id)
    .prepared()
    .get_result(&mut conn)
    .await
    .optional()?;
    let q = row.ok_or_else(|| DomainError::not_found("dead letter", id))?;
    diesel::sql_query("SELECT pg_notify($1, $2)")
        .bind::<Text, _>(JOBS_CHANNEL)
        .bind::<Text, _>(&q.queue)
        .prepared()
        .execute(&mut conn)
        .await?;
    Ok(q.queue)
}

/// Deletes a dead letter. NOT_FOUND when it is not one.
pub async fn discard_dead(pool: &PgPool, id: i64) -> Result<(), DomainError> {
    let mut conn = pool.get().await?;
    let n = diesel::sql_query("DELETE FROM jobs WHERE id = $1 AND status = 'dead'")
        .bind::<BigInt, _>(id)
        .prepared()
        .execute(&mut conn)
        .await?;
    if n == 1 {
        Ok(())
    } else {
        Err(DomainError::not_found("dead letter", id))
    }
}

/// Jobs per queue and status (for metrics and status pages).
#[derive(Debug, Clone, QueryableByName)]
pub struct QueueDepth {
    /// Queue.
    #[diesel(sql_type = Text)]
    pub queue: String,
    /// queued, running or dead.
    #[diesel(sql_type = Text)]
    pub status: String,
    /// How many.
    #[diesel(sql_type = BigInt)]
    pub jobs: i64,
}

/// Counts jobs per queue and status.
pub async fn depths(pool: &PgPool) -> Result<Vec<QueueDepth>, DomainError> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "SELECT queue, status, count(*) AS jobs FROM jobs GROUP BY queue, status ORDER BY queue, status",
    )
    .prepared()
    .load(&mut conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        for _ in 0..100 {
            assert!(b.delay(1) <= Duration::from_millis(100));
            assert!(b.delay(3) <= Duration::from_millis(400));
            assert!(b.delay(30) <= Duration::from_secs(1));
        }
    }
}
