//! The job runner's lease against real PostgreSQL: a running job's lease is renewed, so
//! a job that outlives its lease (a stalled attempt) is not started beside itself by
//! another runner; and a timeout not below the lease is refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::AsyncConnection;
use serde_json::json;
use till_api::jobs::{self, Handler, JobError, QueueWorker, RunnerSettings};
use till_domain::db::listen::Listener;
use till_domain::db::testing::TestDb;
use till_domain::jobs::{Backoff, NewJob};
use till_domain::DomainError;

use crate::support::ok;

const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(10),
    cap: Duration::from_millis(50),
};

#[derive(Default)]
struct Runs {
    running: AtomicUsize,
    most_at_once: AtomicUsize,
    started: AtomicUsize,
}

fn slow_handler(runs: Arc<Runs>, takes: Duration) -> Handler {
    Arc::new(move |_job| {
        let runs = runs.clone();
        Box::pin(async move {
            let now = runs.running.fetch_add(1, Ordering::SeqCst) + 1;
            runs.most_at_once.fetch_max(now, Ordering::SeqCst);
            runs.started.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(takes).await;
            runs.running.fetch_sub(1, Ordering::SeqCst);
            Ok::<(), JobError>(())
        })
    })
}

#[tokio::test]
async fn a_job_that_outlives_its_lease_is_not_run_twice_at_once() {
    let db = TestDb::new().await;
    let mut conn = ok(db.pool.get().await);
    ok(conn
        .transaction::<_, DomainError, _>(async |c| {
            till_domain::jobs::enqueue(
                c,
                &[NewJob {
                    queue: "slow",
                    payload: json!({}),
                    max_attempts: 3,
                }],
            )
            .await
        })
        .await);
    drop(conn);
    // A lease far shorter than the attempt: what a stalled attempt looks like (the
    // configuration itself refuses a timeout that is not below the lease).
    let settings = RunnerSettings {
        lease: Duration::from_millis(300),
        timeout: Duration::from_secs(10),
        backoff: BACKOFF,
    };
    let runs = Arc::new(Runs::default());
    let listener = Listener::new(db.url.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut handles = Vec::new();
    // Two runners (as two replicas would), each with its own worker id.
    for _ in 0..2 {
        handles.extend(jobs::spawn(
            db.pool.clone(),
            &listener,
            vec![QueueWorker {
                queue: "slow",
                concurrency: 1,
                handler: slow_handler(runs.clone(), Duration::from_millis(2500)),
                give_up: None,
            }],
            settings,
            stop_rx.clone(),
        ));
    }
    let started = Instant::now();
    while ok(till_domain::jobs::depths(&db.pool).await)
        .iter()
        .any(|d| d.queue == "slow")
    {
        assert!(
            runs.most_at_once.load(Ordering::SeqCst) <= 1,
            "ran beside itself"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the job never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ok(stop_tx.send(true));
    for h in handles {
        ok(h.await);
    }
    assert_eq!(
        runs.most_at_once.load(Ordering::SeqCst),
        1,
        "ran beside itself"
    );
    assert_eq!(runs.started.load(Ordering::SeqCst), 1, "ran twice");
}

#[test]
fn a_job_timeout_not_below_the_lease_is_refused() {
    let lease = Duration::from_secs(30);
    assert!(RunnerSettings::new(lease, Duration::from_secs(30), BACKOFF).is_err());
    assert!(RunnerSettings::new(lease, Duration::from_secs(45), BACKOFF).is_err());
    assert!(RunnerSettings::new(lease, Duration::ZERO, BACKOFF).is_err());
    assert!(RunnerSettings::new(lease, Duration::from_secs(29), BACKOFF).is_ok());
}
