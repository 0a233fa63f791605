//! Job workers: one loop per queue claims due jobs (SKIP LOCKED, under a lease), runs
//! each with a timeout on at most `concurrency` tasks, and records the outcome: done
//! (deleted), retry later (exponential backoff, full jitter) or dead letter. Idle loops
//! wake on NOTIFY from `enqueue`, or poll every second as a fallback.
//!
//! Why over 400 lines: the one worker loop every queue shares (claim, lease, run,
//! retry, dead letter) and its start-up; the queues' handlers are in their own files.

pub mod egress;
pub mod expiry;
pub mod payments;
pub mod webhook_delivery;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use till_domain::channels::{EVENTS_CHANNEL, JOBS_CHANNEL};
use till_domain::db::listen::Listener;
use till_domain::db::PgPool;
use till_domain::jobs::{self, Backoff, Failed, Job};
use tokio::sync::{watch, Semaphore};
use tracing::Instrument;

/// Runs `step` (one chunk of a backlog, at most `chunk` rows) until it handles less
/// than a full chunk or `stop` turns true, so that a backlog never holds up shutdown;
/// returns how many rows it handled. What is left is there for the next run.
pub(crate) async fn in_chunks<F, Fut>(
    chunk: usize,
    stop: &watch::Receiver<bool>,
    mut step: F,
) -> Result<usize, till_domain::error::DomainError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<usize, till_domain::error::DomainError>>,
{
    let mut total = 0;
    loop {
        let n = step().await?;
        total += n;
        if n < chunk || *stop.borrow() {
            return Ok(total);
        }
    }
}

/// Why a job failed.
#[derive(Debug, Clone)]
pub struct JobError {
    /// True when retrying cannot help (the job goes to the dead letters at once).
    pub permanent: bool,
    /// What went wrong (kept with the dead letter).
    pub message: String,
}

impl JobError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            permanent: false,
            message: message.into(),
        }
    }

    /// A failure retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            permanent: true,
            message: message.into(),
        }
    }
}

/// Starts the job workers and order expiry for `till serve` and `till worker`.
/// `provider_url` is where payments are captured; without one the payments queue is
/// not served here.
pub fn start(
    commands: till_domain::commands::Commands,
    listener: &Listener,
    cfg: &crate::config::JobsConfig,
    provider_url: Option<String>,
    stop: watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let pool = commands.pool().clone();
    let mut workers = Vec::new();
    match provider_url {
        Some(url) => {
            let client = payments::ProviderClient::new(
                &url,
                Duration::from_millis(cfg.payment_connect_timeout_ms),
                Duration::from_millis(cfg.payment_read_timeout_ms),
            )
            .map_err(|e| format!("payment provider client: {e}"))?;
            tracing::info!(provider = %url, "capturing payments");
            workers.push(QueueWorker {
                queue: till_domain::commands::PAYMENTS_QUEUE,
                concurrency: cfg.payments_concurrency.max(1),
                handler: payments::capture_handler(commands.clone(), client.clone()),
                give_up: Some(payments::give_up_handler(commands.clone())),
            });
            workers.push(QueueWorker {
                queue: till_domain::commands::REFUNDS_QUEUE,
                concurrency: cfg.payments_concurrency.max(1),
                handler: payments::refund_handler(commands.clone(), client),
                give_up: None,
            });
        }
        None => tracing::warn!("no TILL_PAYMENT_PROVIDER_URL: this process captures no payments"),
    }
    if cfg.webhook_allow_private {
        tracing::warn!(
            "TILL_WEBHOOK_ALLOW_PRIVATE is on: webhook deliveries may reach internal addresses"
        );
    }
    let webhook_http = egress::client(
        cfg.webhook_allow_private,
        Duration::from_millis(cfg.payment_connect_timeout_ms),
        Duration::from_millis(cfg.payment_read_timeout_ms),
    )
    .map_err(|e| format!("webhook HTTP client: {e}"))?;
    workers.push(QueueWorker {
        queue: till_domain::webhooks::WEBHOOKS_QUEUE,
        concurrency: cfg.webhooks_concurrency.max(1),
        handler: webhook_delivery::delivery_handler(
            pool.clone(),
            webhook_http,
            cfg.webhook_allow_private,
        ),
        give_up: None,
    });
    let settings = RunnerSettings::new(
        Duration::from_secs(cfg.job_lease_s),
        Duration::from_secs(cfg.job_timeout_s),
        Backoff {
            base: Duration::from_millis(cfg.job_backoff_base_ms.max(1)),
            cap: Duration::from_secs(cfg.job_backoff_cap_s.max(1)),
        },
    )?;
    let mut handles = spawn(pool.clone(), listener, workers, settings, stop.clone());
    handles.push(tokio::spawn(webhook_delivery::fan_out(
        pool,
        listener.subscribe(&[EVENTS_CHANNEL]),
        cfg.webhook_max_attempts.max(1),
        webhook_delivery::FAN_OUT_BATCH,
        stop.clone(),
    )));
    handles.push(tokio::spawn(expiry::run(
        commands,
        Duration::from_secs(cfg.order_expiry_min.max(1) * 60),
        Duration::from_secs(cfg.expiry_interval_s.max(1)),
        expiry::CHUNK,
        stop,
    )));
    Ok(handles)
}

/// A job handler.
pub type Handler =
    Arc<dyn Fn(Job) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>> + Send + Sync>;

/// What a queue does when one of its jobs fails for good (permanently, or out of
/// attempts), before the job becomes a dead letter: given the job and the last error.
/// It must be idempotent (a worker that dies after it and before the dead letter is
/// recorded leaves the job to be claimed again and given up again). When it fails, the
/// job is left to its lease and given up on its next claim.
pub type GiveUp = Arc<
    dyn Fn(Job, String) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>> + Send + Sync,
>;

/// One queue's worker settings.
pub struct QueueWorker {
    /// Queue name.
    pub queue: &'static str,
    /// Jobs of this queue running at once in this process.
    pub concurrency: usize,
    /// Runs one job.
    pub handler: Handler,
    /// Runs when a job fails for good (see [`GiveUp`]).
    pub give_up: Option<GiveUp>,
}

/// Settings shared by every queue.
#[derive(Debug, Clone, Copy)]
pub struct RunnerSettings {
    /// How long a claimed job is reserved for its worker; renewed every third of it
    /// while the job runs.
    pub lease: Duration,
    /// Longest one attempt may run (below the lease).
    pub timeout: Duration,
    /// Retry timing.
    pub backoff: Backoff,
}

impl RunnerSettings {
    /// Settings whose attempt timeout is below the lease (else a slow attempt could
    /// outlive its lease and run beside the next claim's).
    pub fn new(lease: Duration, timeout: Duration, backoff: Backoff) -> Result<Self, String> {
        if timeout.is_zero() || timeout >= lease {
            return Err(format!(
                "the job timeout ({} s, TILL_JOB_TIMEOUT_S) must be above zero and below the \
                 job lease ({} s, TILL_JOB_LEASE_S)",
                timeout.as_secs_f64(),
                lease.as_secs_f64()
            ));
        }
        Ok(Self {
            lease,
            timeout,
            backoff,
        })
    }
}

/// Starts one loop per queue, woken through `listener`; they stop when `stop` turns
/// true, after their running jobs finish.
pub fn spawn(
    pool: PgPool,
    listener: &Listener,
    workers: Vec<QueueWorker>,
    settings: RunnerSettings,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let wake_rx = listener.subscribe(&[JOBS_CHANNEL]);
    let mut handles = Vec::new();
    let worker_id = format!(
        "{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    for w in workers {
        handles.push(tokio::spawn(run_queue(
            pool.clone(),
            w,
            settings,
            worker_id.clone(),
            wake_rx.clone(),
            stop.clone(),
        )));
    }
    handles
}

async fn run_queue(
    pool: PgPool,
    worker: QueueWorker,
    settings: RunnerSettings,
    worker_id: String,
    mut wake: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(worker.concurrency.max(1)));
    let mut failures: u32 = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        let free = permits.available_permits();
        let claimed = if free == 0 {
            Vec::new()
        } else {
            match jobs::claim(&pool, worker.queue, free as i64, settings.lease, &worker_id).await {
                Ok(jobs) => {
                    failures = 0;
                    jobs
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(queue = worker.queue, error = %e, "claiming jobs failed");
                    Vec::new()
                }
            }
        };
        let got = claimed.len();
        for job in claimed {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let pool = pool.clone();
            let handler = worker.handler.clone();
            let give_up = worker.give_up.clone();
            let worker_id = worker_id.clone();
            tokio::spawn(async move {
                run_one(&pool, handler, give_up, job, settings, &worker_id).await;
                drop(permit);
            });
        }
        if got > 0 && got == free {
            // Maybe more are due: claim again once a slot frees up.
            tokio::select! {
                _ = permits.clone().acquire_owned() => {}
                _ = stop.changed() => break,
            }
            continue;
        }
        let idle = if failures > 0 {
            Duration::from_millis(100u64 << failures.min(5))
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = wake.changed() => {}
            _ = tokio::time::sleep(idle) => {}
            _ = stop.changed() => break,
        }
    }
    // Let running jobs finish (bounded by their timeout).
    let _ = tokio::time::timeout(
        settings.timeout + Duration::from_secs(1),
        permits.acquire_many(u32::try_from(worker.concurrency.max(1)).unwrap_or(1)),
    )
    .await;
}

async fn run_one(
    pool: &PgPool,
    handler: Handler,
    give_up: Option<GiveUp>,
    job: Job,
    settings: RunnerSettings,
    worker: &str,
) {
    let span = tracing::info_span!("job", queue = %job.queue, id = job.id, attempt = job.attempts);
    run_one_in_span(pool, handler, give_up, job, settings, worker)
        .instrument(span)
        .await
}

/// How one attempt ended, before its outcome is recorded.
enum Attempt {
    /// The handler returned.
    Ran(Result<(), JobError>),
    /// The lease could not be renewed: another claim holds the job now, so this one
    /// stopped and records nothing.
    LeaseLost,
}

/// Runs the handler under the attempt timeout while renewing the job's lease every
/// third of it; stops the handler when a renewal finds the claim gone.
async fn attempt(
    pool: &PgPool,
    handler: &Handler,
    job: &Job,
    settings: RunnerSettings,
    worker: &str,
) -> Attempt {
    let run = tokio::time::timeout(settings.timeout, handler(job.clone()));
    tokio::pin!(run);
    let every = (settings.lease / 3).max(Duration::from_millis(10));
    let mut renewals = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ran = &mut run => {
                return Attempt::Ran(ran.unwrap_or_else(|_| Err(JobError::transient(format!(
                    "timed out after {} ms",
                    settings.timeout.as_millis()
                )))));
            }
            _ = renewals.tick() => match jobs::renew(pool, job, worker, settings.lease).await {
                Ok(true) => {}
                Ok(false) => return Attempt::LeaseLost,
                // The database is briefly away: keep running; the next tick tries again
                // and the outcome write is fenced by the claim anyway.
                Err(e) => tracing::warn!(error = %e, "could not renew the job's lease"),
            }
        }
    }
}

async fn run_one_in_span(
    pool: &PgPool,
    handler: Handler,
    give_up: Option<GiveUp>,
    job: Job,
    settings: RunnerSettings,
    worker: &str,
) {
    let started = std::time::Instant::now();
    let result = if job.attempts > job.max_attempts {
        // Claimed again after its worker died during the last attempt.
        Err(JobError::permanent(
            "the worker running the last attempt was lost",
        ))
    } else {
        match attempt(pool, &handler, &job, settings, worker).await {
            Attempt::Ran(r) => r,
            Attempt::LeaseLost => {
                metrics::counter!("till_job_leases_lost_total", "queue" => job.queue.clone())
                    .increment(1);
                tracing::warn!("the job's lease was lost while it ran; stopped it");
                return;
            }
        }
    };
    let took_ms = started.elapsed().as_millis() as u64;
    let queue = job.queue.clone();
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::histogram!("till_job_duration_seconds", "queue" => queue.clone(), "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    if result.is_err() {
        metrics::counter!("till_job_failures_total", "queue" => queue.clone()).increment(1);
    }
    match result {
        Ok(()) => match jobs::complete(pool, &job, worker).await {
            Ok(true) => tracing::info!(took_ms, "job done"),
            Ok(false) => tracing::warn!("job done but its lease was lost"),
            Err(e) => tracing::warn!(error = %e, "could not record a finished job"),
        },
        Err(err) => {
            let last = err.permanent || job.attempts >= job.max_attempts;
            if let (true, Some(give_up)) = (last, &give_up) {
                if let Err(e) = give_up(job.clone(), err.message.clone()).await {
                    // Left to its lease: the next claim gives it up again.
                    tracing::error!(error = %e.message, "could not give the job up; it is claimed again after its lease");
                    return;
                }
            }
            match jobs::fail(
                pool,
                &job,
                worker,
                &err.message,
                err.permanent,
                settings.backoff,
            )
            .await
            {
                Ok(Failed::Retry(after)) => {
                    metrics::counter!("till_job_retries_total", "queue" => queue).increment(1);
                    tracing::warn!(
                        error = %err.message,
                        retry_in_ms = after.as_millis() as u64,
                        "job failed; will retry"
                    )
                }
                Ok(Failed::Dead) => {
                    metrics::counter!("till_job_dead_letters_total", "queue" => queue).increment(1);
                    tracing::error!(error = %err.message, "job moved to the dead letters")
                }
                Ok(Failed::LeaseLost) => tracing::warn!("job failed but its lease was lost"),
                Err(e) => tracing::warn!(error = %e, "could not record a failed job"),
            }
        }
    }
}
