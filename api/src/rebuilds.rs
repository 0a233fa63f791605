//! Projection rebuilds started from the back office (`rebuildProjection`): each runs in
//! the background of the process that accepted it, stops with the process (its row then
//! says so, and the live tables stay as they were), and reports its progress in
//! `projection_rebuilds`, which every replica reads for `projections`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use till_read_models::{Projection, ReadError, Rebuild, RebuildProgress, RebuildSettings};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Starts rebuilds; cheap to clone.
#[derive(Clone)]
pub struct Rebuilds {
    database_url: String,
    settings: RebuildSettings,
    stop: watch::Receiver<bool>,
    /// The runtime of the process's background work: a resolver runs on an HTTP
    /// worker's runtime, which ends when the server stops draining, and would take the
    /// rebuild and its connection with it.
    runtime: tokio::runtime::Handle,
    running: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Rebuilds {
    /// Rebuilds on `database_url` that stop when `stop` turns true, run on the runtime
    /// this is called on.
    pub fn new(database_url: String, stop: watch::Receiver<bool>) -> Self {
        Self {
            database_url,
            settings: RebuildSettings::default(),
            stop,
            runtime: tokio::runtime::Handle::current(),
            running: Arc::default(),
        }
    }

    /// Starts rebuilding `projection` in the background once it holds the projection's
    /// rebuild lock; [`ReadError::Conflict`] when a rebuild of it already runs anywhere.
    pub async fn start(&self, projection: Projection) -> Result<(), ReadError> {
        if *self.stop.borrow() {
            return Err(ReadError::Interrupted);
        }
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (url, settings, stop) = (
            self.database_url.clone(),
            self.settings.clone(),
            self.stop.clone(),
        );
        let task = self.runtime.spawn(async move {
            match Rebuild::start(&url, projection, settings).await {
                Ok(rebuild) => {
                    let _ = started_tx.send(Ok(()));
                    let name = projection.name();
                    let events =
                        metrics::gauge!("till_projection_rebuild_events", "projection" => name);
                    events.set(0.0);
                    let mut on_progress = |p: RebuildProgress| events.set(p.applied as f64);
                    // The rebuild logs and records its outcome itself; counted here.
                    let outcome = match rebuild.run(&mut on_progress, &stop).await {
                        Ok(_) => "done",
                        Err(_) => "failed",
                    };
                    metrics::counter!("till_projection_rebuilds_total",
                        "projection" => name, "outcome" => outcome)
                    .increment(1);
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            }
        });
        {
            let mut running = self
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            running.retain(|t| !t.is_finished());
            running.push(task);
        }
        started.await.unwrap_or(Err(ReadError::Interrupted))
    }

    /// Waits (at most `timeout`) for running rebuilds to stop after `stop` turned true.
    pub async fn wait(&self, timeout: Duration) {
        let tasks = std::mem::take(
            &mut *self
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for task in tasks {
            if tokio::time::timeout(timeout, task).await.is_err() {
                tracing::warn!("a projection rebuild did not stop in time");
            }
        }
    }
}
