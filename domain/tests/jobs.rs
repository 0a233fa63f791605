//! The job queue against real PostgreSQL: concurrent workers share jobs through SKIP
//! LOCKED (each job runs exactly once), lost workers' jobs are reclaimed after their
//! lease, failures retry with backoff and end as dead letters that can be retried.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel_async::AsyncConnection;
use serde_json::json;
use till_domain::db::testing::TestDb;
use till_domain::jobs::{self, Backoff, Failed, NewJob};
use till_domain::DomainError;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(1),
    cap: Duration::from_millis(5),
};

async fn enqueue(db: &TestDb, n: usize, max_attempts: i32) {
    let mut conn = ok(db.pool.get().await);
    let batch: Vec<NewJob> = (0..n)
        .map(|i| NewJob {
            queue: "test",
            payload: json!({ "n": i }),
            max_attempts,
        })
        .collect();
    ok(conn
        .transaction::<_, DomainError, _>(async |c| jobs::enqueue(c, &batch).await)
        .await);
}

#[tokio::test]
async fn concurrent_workers_run_every_job_exactly_once() {
    let db = TestDb::with_pool_size(12).await;
    enqueue(&db, 300, 3).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for w in 0..6 {
        let pool = db.pool.clone();
        let seen = seen.clone();
        workers.push(tokio::spawn(async move {
            let me = format!("w{w}");
            loop {
                let batch = ok(jobs::claim(&pool, "test", 7, Duration::from_secs(30), &me).await);
                if batch.is_empty() {
                    break;
                }
                for job in batch {
                    if let Ok(mut s) = seen.lock() {
                        s.push(job.id);
                    }
                    assert!(ok(jobs::complete(&pool, &job, &me).await));
                }
            }
        }));
    }
    for w in workers {
        ok(w.await);
    }
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(seen.len(), 300, "every job claimed once");
    assert_eq!(unique.len(), 300, "no job claimed twice");
    assert!(
        ok(jobs::depths(&db.pool).await).is_empty(),
        "finished jobs are deleted"
    );
}

#[tokio::test]
async fn a_lost_workers_job_is_reclaimed_after_its_lease() {
    let db = TestDb::new().await;
    enqueue(&db, 1, 3).await;
    let first = ok(jobs::claim(&db.pool, "test", 1, Duration::from_millis(200), "dies").await);
    assert_eq!(first.len(), 1);
    // Within the lease nobody else gets it.
    assert!(
        ok(jobs::claim(&db.pool, "test", 1, Duration::from_secs(30), "other").await).is_empty()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = ok(jobs::claim(&db.pool, "test", 1, Duration::from_secs(30), "other").await);
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (first[0].id, 2));
    // The dead worker can no longer finish or fail it.
    assert!(!ok(jobs::complete(&db.pool, &first[0], "dies").await));
    assert!(ok(jobs::complete(&db.pool, &again[0], "other").await));
}

#[tokio::test]
async fn failures_retry_then_dead_letter_and_a_dead_letter_can_be_retried() {
    let db = TestDb::new().await;
    enqueue(&db, 1, 2).await;
    let job = ok(jobs::claim(&db.pool, "test", 1, Duration::from_secs(30), "w").await).remove(0);
    let outcome = ok(jobs::fail(&db.pool, &job, "w", "provider 503", false, BACKOFF).await);
    assert!(matches!(outcome, Failed::Retry(d) if d <= Duration::from_millis(5)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let job = ok(jobs::claim(&db.pool, "test", 1, Duration::from_secs(30), "w").await).remove(0);
    assert_eq!(job.attempts, 2);
    assert_eq!(
        ok(jobs::fail(&db.pool, &job, "w", "provider 503 again", false, BACKOFF).await),
        Failed::Dead
    );
    // Dead letters are not claimed.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(ok(jobs::claim(&db.pool, "test", 1, Duration::from_secs(30), "w").await).is_empty());
    let dead = ok(jobs::dead_letters(&db.pool, Some("test"), None, 10).await);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("provider 503 again"));
    assert_eq!(dead[0].attempts, 2);

    ok(jobs::retry_dead(&db.pool, dead[0].id).await);
    let job = ok(jobs::claim(&db.pool, "test", 1, Duration::from_secs(30), "w").await).remove(0);
    assert_eq!(job.attempts, 1, "a retried dead letter gets fresh attempts");
    // A permanent failure goes straight to the dead letters.
    assert_eq!(
        ok(jobs::fail(&db.pool, &job, "w", "bad token", true, BACKOFF).await),
        Failed::Dead
    );
    ok(jobs::discard_dead(&db.pool, job.id).await);
    assert!(matches!(
        jobs::discard_dead(&db.pool, job.id).await,
        Err(DomainError::NotFound { .. })
    ));
}
