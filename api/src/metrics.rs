//! Prometheus metrics (`metrics` facade + `metrics-exporter-prometheus`), rendered at
//! `/metrics`. Counters and histograms are recorded where things happen; gauges of
//! shared state (pool, caches, projections, queues, memory) are refreshed at scrape.
//!
//! Label cardinality is bounded: routes are actix route patterns; GraphQL operation
//! names beyond the first [`MAX_OPERATION_NAMES`] distinct ones share the label
//! `other`, and unnamed operations are `anonymous`.
//!
//! Why over 400 lines: every metric Till exports is described here, the one list the
//! dashboards, alerts and docs/operations.md refer to.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use till_domain::db::PgPool;
use till_read_models::{Applied, ReadModels};
use tokio::sync::{broadcast, watch};

use crate::local_commits::CommitTimes;

/// Most distinct GraphQL operation names given their own label.
pub const MAX_OPERATION_NAMES: usize = 200;

const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Finer around the 100 ms that read-your-writes aims for.
const VISIBLE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Records, for every event this process sees applied (by its own projector or,
/// following another process, when it learns of it), until `shutdown`:
/// - `till_projection_visible_seconds`: from the writing transaction's start
///   (`events.occurred_at`, the database clock) to now (this host's clock), so it
///   includes the command's own transaction (its waits for locks and for the CPU) and
///   any clock skew between the hosts; never negative. Every event, whoever wrote it.
/// - `till_projection_commit_visible_seconds`: from the commit of a command this
///   process ran to now, both on this host's monotonic clock; once per transaction.
pub async fn observe_visibility(
    mut feed: broadcast::Receiver<Arc<Applied>>,
    commits: Arc<CommitTimes>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let applied = tokio::select! {
            next = feed.recv() => next,
            _ = shutdown.changed() => return,
        };
        match applied {
            Ok(applied) => {
                let now = chrono::Utc::now();
                let histogram = metrics::histogram!(
                    "till_projection_visible_seconds",
                    "projection" => applied.projection.name()
                );
                for ev in applied.events.iter() {
                    let delay = (now - ev.occurred_at).to_std().unwrap_or_default();
                    histogram.record(delay.as_secs_f64());
                }
                let since_commit = commits.since(
                    applied.events.iter().map(|ev| ev.tx_id),
                    std::time::Instant::now(),
                );
                if !since_commit.is_empty() {
                    let histogram = metrics::histogram!(
                        "till_projection_commit_visible_seconds",
                        "projection" => applied.projection.name()
                    );
                    for delay in since_commit {
                        histogram.record(delay.as_secs_f64());
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The process-wide recorder (installed on first use).
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full("till_projection_visible_seconds".into()),
                    VISIBLE_BUCKETS,
                )
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full("till_projection_commit_visible_seconds".into()),
                    VISIBLE_BUCKETS,
                )
                .ok()?
                .install_recorder()
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    describe_counter!(
        "till_http_requests_total",
        "HTTP requests by route and status."
    );
    describe_histogram!(
        "till_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by route."
    );
    describe_counter!(
        "till_graphql_operations_total",
        "GraphQL operations by name, type and outcome."
    );
    describe_histogram!(
        "till_graphql_operation_duration_seconds",
        Unit::Seconds,
        "GraphQL execution time by name and type."
    );
    describe_gauge!(
        "till_db_pool_connections",
        "Pooled connections by state (idle, in_use)."
    );
    describe_gauge!("till_db_pool_max_connections", "Pool size limit.");
    describe_counter!(
        "till_db_pool_waits_total",
        "Connection checkouts that had to wait."
    );
    describe_counter!(
        "till_db_pool_acquire_timeouts_total",
        "Checkouts that gave up waiting (answered 503)."
    );
    describe_counter!(
        "till_order_batches_total",
        "Transactions that placed a batch of coalesced placeOrder commands."
    );
    describe_counter!(
        "till_order_batch_orders_total",
        "placeOrder commands that went through a batch (placed or refused)."
    );
    describe_counter!(
        "till_order_batch_refused_total",
        "placeOrder commands refused before their batch: queue full or waited too long (SERVICE_UNAVAILABLE)."
    );
    describe_counter!(
        "till_order_batch_fallbacks_total",
        "Batches that failed as a whole and placed their orders one by one."
    );
    describe_gauge!(
        "till_order_queue_waiting",
        "placeOrder commands waiting for a batch now."
    );
    describe_counter!("till_cache_hits_total", "Read-model cache hits by cache.");
    describe_counter!(
        "till_read_queries_total",
        "Read-model queries by where they ran: the primary or a read replica (replica-N)."
    );
    describe_gauge!(
        "till_replica_replay_lag_seconds",
        "How long ago the primary was at the WAL position a read replica has replayed (0 when caught up)."
    );
    describe_gauge!(
        "till_replica_in_rotation",
        "1 while a read replica serves reads; 0 when it lags past TILL_REPLICA_MAX_LAG_MS or fails."
    );
    describe_gauge!(
        "till_replica_up",
        "1 when the last poll of a read replica succeeded and it is a streaming standby."
    );
    describe_counter!(
        "till_replica_fallbacks_total",
        "Reads the primary served instead of a replica: none had replayed far enough in time (lagging) or one failed under the read (error)."
    );
    describe_counter!(
        "till_cache_misses_total",
        "Read-model cache misses by cache."
    );
    describe_counter!(
        "till_cache_evictions_total",
        "Entries evicted to honour the weight bound, by cache."
    );
    describe_gauge!(
        "till_cache_weighted_bytes",
        "Weighted size (approximate bytes) by cache."
    );
    describe_gauge!("till_cache_entries", "Entries by cache.");
    describe_gauge!(
        "till_heap_free_bytes",
        "Bytes the allocator holds free for reuse (glibc mallinfo2 fordblks)."
    );
    describe_counter!(
        "till_heap_trims_total",
        "Times the housekeeping handed free heap back to the system (malloc_trim)."
    );
    describe_gauge!(
        "till_projection_rebuild_events",
        "Events replayed by the projection rebuild this process runs (reset when one starts)."
    );
    describe_counter!(
        "till_projection_rebuilds_total",
        "Projection rebuilds this process ran, by projection and outcome (done, failed)."
    );
    describe_gauge!(
        "till_projection_position",
        "Last applied log position by projection."
    );
    describe_gauge!(
        "till_projection_lag_events",
        "Events not yet applied by projection."
    );
    describe_gauge!(
        "till_projection_lag_seconds",
        "Age of the oldest unapplied event by projection."
    );
    describe_histogram!(
        "till_projection_visible_seconds",
        Unit::Seconds,
        "From the start of the transaction that wrote an event to the event being \
         visible in this process's read model, by projection."
    );
    describe_histogram!(
        "till_projection_commit_visible_seconds",
        Unit::Seconds,
        "From the commit of a command this process ran to its events being visible in \
         this process's read model, by projection (once per transaction)."
    );
    describe_gauge!(
        "till_db_horizon_age_seconds",
        Unit::Seconds,
        "Age of the oldest transaction on the database cluster holding a transaction id \
         (running or prepared); projections wait for it to end (0 when none)."
    );
    describe_gauge!(
        "till_jobs",
        "Jobs by queue and status (queued, running, dead)."
    );
    describe_histogram!(
        "till_job_duration_seconds",
        Unit::Seconds,
        "Job attempt time by queue and outcome."
    );
    describe_counter!(
        "till_job_retries_total",
        "Failed attempts that will be retried, by queue."
    );
    describe_counter!("till_job_failures_total", "Failed attempts, by queue.");
    describe_counter!(
        "till_job_dead_letters_total",
        "Jobs moved to the dead letters, by queue."
    );
    describe_counter!(
        "till_throttled_requests_total",
        "Requests refused by the rate limiter, by principal class."
    );
    describe_counter!(
        "till_idempotent_replays_total",
        "Responses replayed for a repeated Idempotency-Key."
    );
    describe_gauge!(
        "till_api_replicas",
        "API replicas alive (heartbeats in the last 3 s) sharing each client's rate budget."
    );
    describe_counter!(
        "till_job_leases_lost_total",
        "Job attempts stopped because another claim took their job, by queue."
    );
    describe_counter!(
        "till_ws_refused_total",
        "WebSocket connections or subscriptions refused by their caps, by reason."
    );
    describe_counter!(
        "till_ws_closed_total",
        "WebSockets closed because their token expired or their session or role changed, by reason."
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "Resident set size of the process."
    );
}

/// The label for a GraphQL operation name (bounded set).
pub fn operation_label(name: Option<&str>) -> String {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let Some(name) = name.filter(|n| !n.is_empty() && n.len() <= 128) else {
        return "anonymous".to_owned();
    };
    let Ok(mut seen) = SEEN.get_or_init(|| Mutex::new(HashSet::new())).lock() else {
        return "other".to_owned();
    };
    if seen.contains(name) {
        return name.to_owned();
    }
    if seen.len() < MAX_OPERATION_NAMES {
        seen.insert(name.to_owned());
        return name.to_owned();
    }
    "other".to_owned()
}

/// What a scrape reads besides the recorded series.
#[derive(Clone)]
pub struct Scrape {
    /// The pool whose state is reported.
    pub pool: PgPool,
    /// Its configured size.
    pub pool_max: u32,
    /// The HTTP workers' shards of the commands' connections, reported with it.
    pub shards: till_domain::db::shard::Shards,
    /// Connections of one shard.
    pub shard_max: u32,
    /// Caches and projections.
    pub reads: ReadModels,
    /// What the `placeOrder` batches did (`None`: batching off or no commands here).
    pub order_batches: Option<Arc<till_domain::commands::BatchStats>>,
}

impl Scrape {
    /// Refreshes the scrape-time gauges and renders the exposition text.
    pub async fn render(&self) -> String {
        let Some(handle) = handle() else {
            return String::new();
        };
        let shards = self.shards.all();
        let (mut idle, mut total, mut waited, mut timed_out) = (0.0, 0.0, 0, 0);
        for pool in std::iter::once(&self.pool).chain(&shards) {
            let state = pool.state();
            idle += f64::from(state.idle_connections);
            total += f64::from(state.connections);
            waited += state.statistics.get_waited;
            timed_out += state.statistics.get_timed_out;
        }
        let max = u64::from(self.pool_max) + u64::from(self.shard_max) * shards.len() as u64;
        gauge!("till_db_pool_connections", "state" => "idle").set(idle);
        gauge!("till_db_pool_connections", "state" => "in_use").set((total - idle).max(0.0));
        gauge!("till_db_pool_max_connections").set(max as f64);
        counter!("till_db_pool_waits_total").absolute(waited);
        counter!("till_db_pool_acquire_timeouts_total").absolute(timed_out);
        if let Some(b) = &self.order_batches {
            use std::sync::atomic::Ordering::Relaxed;
            counter!("till_order_batches_total").absolute(b.batches.load(Relaxed));
            counter!("till_order_batch_orders_total").absolute(b.orders.load(Relaxed));
            counter!("till_order_batch_refused_total").absolute(b.refused.load(Relaxed));
            counter!("till_order_batch_fallbacks_total").absolute(b.fallbacks.load(Relaxed));
            gauge!("till_order_queue_waiting").set(b.waiting.load(Relaxed) as f64);
        }

        let sources = self.reads.sources();
        let counts = sources.counts();
        counter!("till_read_queries_total", "source" => "primary").absolute(counts.primary_queries);
        for r in sources.status() {
            let replica = r.replica.to_string();
            counter!("till_read_queries_total", "source" => format!("replica-{replica}"))
                .absolute(r.queries);
            gauge!("till_replica_replay_lag_seconds", "replica" => replica.clone())
                .set(r.lag_seconds);
            gauge!("till_replica_in_rotation", "replica" => replica.clone())
                .set(f64::from(u8::from(r.in_rotation)));
            gauge!("till_replica_up", "replica" => replica).set(f64::from(u8::from(r.up)));
        }
        if sources.has_replicas() {
            counter!("till_replica_fallbacks_total", "reason" => "lagging")
                .absolute(counts.fallbacks_lagging);
            counter!("till_replica_fallbacks_total", "reason" => "error")
                .absolute(counts.fallbacks_error);
        }

        for c in self.reads.cache().snapshot() {
            let name = c.kind.name();
            counter!("till_cache_hits_total", "cache" => name).absolute(c.hits);
            counter!("till_cache_misses_total", "cache" => name).absolute(c.misses);
            counter!("till_cache_evictions_total", "cache" => name).absolute(c.evictions);
            gauge!("till_cache_weighted_bytes", "cache" => name).set(c.weighted_bytes as f64);
            gauge!("till_cache_entries", "cache" => name).set(c.entries as f64);
        }

        let db = async {
            if let Ok(status) = self.reads.projection_status().await {
                for s in status {
                    gauge!("till_projection_position", "projection" => s.name)
                        .set(s.position as f64);
                    gauge!("till_projection_lag_events", "projection" => s.name)
                        .set(s.lag_events as f64);
                    gauge!("till_projection_lag_seconds", "projection" => s.name)
                        .set(s.lag_seconds);
                }
            }
            if let Ok(age) = self.reads.horizon_age().await {
                gauge!("till_db_horizon_age_seconds").set(age);
            }
            if let Ok(depths) = till_domain::jobs::depths(&self.pool).await {
                for q in ["payments", "webhooks"] {
                    for st in ["queued", "running", "dead"] {
                        let n = depths
                            .iter()
                            .find(|d| d.queue == q && d.status == st)
                            .map_or(0, |d| d.jobs);
                        gauge!("till_jobs", "queue" => q, "status" => st).set(n as f64);
                    }
                }
            }
        };
        // A slow or absent database must not hang the scrape.
        let _ = tokio::time::timeout(Duration::from_secs(3), db).await;

        if let Some(rss) = resident_bytes() {
            gauge!("process_resident_memory_bytes").set(rss as f64);
        }
        handle.render()
    }
}

/// Resident set size from `/proc/self/statm` (Linux); None elsewhere.
pub(crate) fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_labels_stay_bounded() {
        let labels: HashSet<String> = (0..1000)
            .map(|i| operation_label(Some(&format!("Op{i}"))))
            .collect();
        assert!(labels.len() <= MAX_OPERATION_NAMES + 1, "{}", labels.len());
        assert!(labels.contains("other"));
        assert_eq!(operation_label(None), "anonymous");
        assert_eq!(operation_label(Some("Op0")), "Op0");
    }
}
