//! The job queue against real PostgreSQL: concurrent workers share jobs through SKIP
//! LOCKED (each job runs exactly once), lost workers' jobs are reclaimed after their
//! lease, failures retry with backoff and end as dead letters that can be retried.

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]

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

/// These subscribers are never delivered to; a loopback URL keeps it so.
const LOCAL: till_domain::webhooks::UrlPolicy = till_domain::webhooks::UrlPolicy {
    require_https: false,
    allow_private: true,
};

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

/// The fan-out's checkpoint.
async fn fan_out_checkpoint(db: &TestDb) -> till_domain::event_log::LogPoint {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use till_domain::schema::projection_checkpoints as pc;
    let mut conn = ok(db.pool.get().await);
    let point: (i64, i64) = ok(pc::table
        .find("webhooks")
        .select((pc::tx_id, pc::position))
        .first(&mut conn)
        .await);
    point.into()
}

/// Appends one category event per slug in one transaction; returns the last point.
async fn append_categories(db: &TestDb, slugs: &[&str]) -> till_domain::event_log::LogPoint {
    use till_domain::event_log::{self, EventMeta};
    use till_domain::events::DomainEvent;
    let events: Vec<DomainEvent> = slugs
        .iter()
        .map(|s| DomainEvent::CategoryCreated {
            category_id: uuid::Uuid::now_v7(),
            slug: (*s).into(),
            name: (*s).into(),
            parent_id: None,
        })
        .collect();
    let mut conn = ok(db.pool.get().await);
    ok(event_log::append(&mut conn, &EventMeta::system("test"), &events).await)
}

/// Runs the fan-out until its checkpoint reaches `point` (the log shows events only
/// once every older transaction of the cluster has ended); returns the events it read.
async fn fan_out_to(db: &TestDb, point: till_domain::event_log::LogPoint) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut read = 0;
    while fan_out_checkpoint(db).await < point {
        assert!(
            std::time::Instant::now() < deadline,
            "the fan-out never got there"
        );
        read += ok(till_domain::webhooks::fan_out(&db.pool, 500, 3).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    read
}

/// With no active subscriber the fan-out moves past the log without reading its events;
/// a subscriber registered afterwards gets a delivery (and its job) for each event that
/// follows, and none for the events before it.
#[tokio::test]
async fn the_fan_out_skips_events_nobody_subscribes_to() {
    use till_domain::webhooks;
    let db = TestDb::new().await;
    // The first run starts at the head of the log.
    assert_eq!(ok(webhooks::fan_out(&db.pool, 500, 3).await), 0);

    let unsubscribed = append_categories(&db, &["a", "b", "c"]).await;
    assert_eq!(fan_out_to(&db, unsubscribed).await, 0, "no event read");

    let (sub, _) =
        ok(webhooks::subscribe(&db.pool, "http://127.0.0.1:9/hook", &["*".into()], LOCAL).await);
    let subscribed = append_categories(&db, &["d", "e"]).await;
    assert_eq!(fan_out_to(&db, subscribed).await, 2);
    let mut delivered: Vec<(i64, i64)> = ok(webhooks::deliveries(&db.pool, sub.id, None, 10).await)
        .iter()
        .map(|d| (d.event_tx_id, d.event_position))
        .collect();
    delivered.sort();
    assert_eq!(
        delivered,
        [
            (subscribed.tx_id, subscribed.position - 1),
            (subscribed.tx_id, subscribed.position)
        ]
    );
    let depths = ok(jobs::depths(&db.pool).await);
    assert_eq!(
        depths
            .iter()
            .map(|d| (d.queue.as_str(), d.status.as_str(), d.jobs))
            .collect::<Vec<_>>(),
        [(webhooks::WEBHOOKS_QUEUE, "queued", 2)],
        "{depths:?}"
    );
}

/// Outcomes are fenced per claim: when a job's lease runs out and the same worker
/// (process) claims it again, the older attempt can neither finish, fail nor renew it.
#[tokio::test]
async fn a_stale_attempt_cannot_end_or_renew_a_newer_claim_of_the_same_worker() {
    let db = TestDb::new().await;
    enqueue(&db, 1, 5).await;
    let lease = Duration::from_millis(200);
    let first = ok(jobs::claim(&db.pool, "test", 1, lease, "w").await).remove(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = ok(jobs::claim(&db.pool, "test", 1, Duration::from_secs(30), "w").await).remove(0);
    assert_eq!((second.id, second.attempts), (first.id, 2));

    assert!(!ok(jobs::complete(&db.pool, &first, "w").await));
    assert!(!ok(jobs::renew(&db.pool, &first, "w", lease).await));
    assert_eq!(
        ok(jobs::fail(&db.pool, &first, "w", "stale", true, BACKOFF).await),
        Failed::LeaseLost
    );
    assert!(ok(jobs::renew(&db.pool, &second, "w", lease).await));
    assert!(ok(jobs::complete(&db.pool, &second, "w").await));
}

/// The fan-out's first run starts at the gap-safe horizon: an event of a transaction
/// still in flight (with a lower id than events that committed before the run) is
/// delivered once it commits.
#[tokio::test]
async fn the_fan_outs_first_run_does_not_skip_a_transaction_in_flight() {
    use diesel_async::SimpleAsyncConnection;
    use till_domain::event_log::{self, EventMeta};
    use till_domain::events::DomainEvent;
    use till_domain::webhooks;
    let db = TestDb::new().await;
    let (sub, _) =
        ok(webhooks::subscribe(&db.pool, "http://127.0.0.1:9/hook", &["*".into()], LOCAL).await);
    let mut in_flight = ok(db.pool.get().await);
    ok(in_flight.batch_execute("BEGIN").await);
    let early = ok(event_log::append(
        &mut in_flight,
        &EventMeta::system("test"),
        &[DomainEvent::CategoryCreated {
            category_id: uuid::Uuid::now_v7(),
            slug: "early".into(),
            name: "early".into(),
            parent_id: None,
        }],
    )
    .await);
    let later = append_categories(&db, &["later"]).await;
    assert!(early < later, "the open transaction has the lower id");

    assert_eq!(
        ok(webhooks::fan_out(&db.pool, 500, 3).await),
        0,
        "first run"
    );
    ok(in_flight.batch_execute("COMMIT").await);
    fan_out_to(&db, later).await;
    let delivered: Vec<(i64, i64)> = ok(webhooks::deliveries(&db.pool, sub.id, None, 10).await)
        .iter()
        .map(|d| (d.event_tx_id, d.event_position))
        .collect();
    assert!(
        delivered.contains(&(early.tx_id, early.position)),
        "the in-flight event was skipped: {delivered:?}"
    );
}
