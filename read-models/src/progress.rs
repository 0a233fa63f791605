//! How far each projection has got, and waiting for a point in the log (read your
//! writes with a consistency token).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::sync::Arc;
use till_domain::event_log::LogPoint;
use till_domain::schema::projection_checkpoints;

use tokio::sync::{broadcast, watch};

use crate::error::ReadError;
use crate::projections::{Applied, Projection};
use crate::sources::{wal_position, Lsn};

/// Checkpoints of every projection, published by the projector as it commits, and a
/// feed of the events each projection has applied (for subscriptions).
pub struct Progress {
    points: HashMap<Projection, watch::Sender<LogPoint>>,
    /// For each projection, a WAL position of the primary at or past the commit that
    /// moved it to its current point (0 when not tracked): a read replica that has
    /// replayed this far shows the projection at least there.
    wal: HashMap<Projection, AtomicU64>,
    feed: broadcast::Sender<Arc<Applied>>,
    /// The `generation` of each projection's tables last seen (a rebuild swaps in new
    /// tables and bumps it).
    generations: std::sync::Mutex<HashMap<Projection, i64>>,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// All projections at the start of the log.
    pub fn new() -> Self {
        Self {
            points: Projection::ALL
                .into_iter()
                .map(|p| (p, watch::Sender::new(LogPoint::default())))
                .collect(),
            wal: Projection::ALL
                .into_iter()
                .map(|p| (p, AtomicU64::new(0)))
                .collect(),
            feed: broadcast::channel(1024).0,
            generations: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Records the generation of `projection`'s tables; true when a different one was
    /// seen before (the tables were swapped for rebuilt ones: cached rows are stale).
    pub fn saw_generation(&self, projection: Projection, generation: i64) -> bool {
        let mut known = self
            .generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        known
            .insert(projection, generation)
            .is_some_and(|before| before != generation)
    }

    /// Events as projections apply them (after the read model and the cache reflect
    /// them). A receiver that falls more than 1024 batches behind skips ahead.
    pub fn feed(&self) -> broadcast::Receiver<Arc<Applied>> {
        self.feed.subscribe()
    }

    /// Announces applied events (no-op without subscribers).
    pub fn publish(&self, applied: Applied) {
        if !applied.events.is_empty() && self.feed.receiver_count() > 0 {
            let _ = self.feed.send(Arc::new(applied));
        }
    }

    /// Records that `projection` has applied everything up to `point`, committed on
    /// the primary at or before WAL position `wal` (0: not tracked).
    pub fn advance(&self, projection: Projection, point: LogPoint, wal: Lsn) {
        if let Some(tx) = self.points.get(&projection) {
            tx.send_if_modified(|cur| {
                if point > *cur {
                    // Before the point is published: a reader woken by it finds a
                    // position that covers it.
                    if let Some(w) = self.wal.get(&projection) {
                        w.fetch_max(wal, Ordering::AcqRel);
                    }
                    *cur = point;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// The last point `projection` is known to have applied.
    pub fn current(&self, projection: Projection) -> LogPoint {
        self.points
            .get(&projection)
            .map(|tx| *tx.borrow())
            .unwrap_or_default()
    }

    /// Loads the checkpoints from the primary (at start-up).
    pub async fn refresh(&self, conn: &mut AsyncPgConnection) -> Result<(), ReadError> {
        let points = Self::load(conn).await?;
        // Read after the checkpoints: past every commit they show.
        let wal = wal_position(conn).await?;
        for (p, point) in points {
            self.advance(p, point, wal);
        }
        Ok(())
    }

    /// A WAL position of the primary past the commits that brought every projection
    /// to where it stands (call once [`Progress::wait_for`] returned): a replica that
    /// has replayed this far shows everything up to the awaited point.
    pub fn wal_covering(&self) -> Lsn {
        self.wal
            .values()
            .map(|w| w.load(Ordering::Acquire))
            .max()
            .unwrap_or(0)
    }

    /// The checkpoints stored in the database.
    pub async fn load(
        conn: &mut AsyncPgConnection,
    ) -> Result<Vec<(Projection, LogPoint)>, ReadError> {
        let rows: Vec<(String, i64, i64)> = projection_checkpoints::table
            .select((
                projection_checkpoints::projection,
                projection_checkpoints::tx_id,
                projection_checkpoints::position,
            ))
            .load(conn)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, tx_id, position)| {
                Projection::from_name(&name).map(|p| (p, LogPoint { tx_id, position }))
            })
            .collect())
    }

    /// Waits until every projection has applied `point`, at most `timeout`.
    pub async fn wait_for(&self, point: LogPoint, timeout: Duration) -> Result<(), ReadError> {
        let all = async {
            for tx in self.points.values() {
                let mut rx = tx.subscribe();
                // The sender lives as long as `self`, so this only ends when reached.
                let _ = rx.wait_for(|cur| *cur >= point).await;
            }
        };
        tokio::time::timeout(timeout, all)
            .await
            .map_err(|_| ReadError::NotCaughtUp(timeout))
    }
}
