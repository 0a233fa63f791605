//! A pool shard per HTTP worker thread, for commands.
//!
//! A connection's protocol driver is a task on the runtime that opened it, and every
//! actix-web worker runs a runtime of its own on its own thread. On one shared pool most
//! statements of a request therefore cross to another thread and back (two wake-ups per
//! round trip). Each HTTP worker adopts a shard of its own when it starts
//! ([`adopt`]); commands run on that thread take their connections from it
//! ([`current`]), so a command and its connection's driver share a thread. Elsewhere
//! (jobs, the CLI, tests without a server) commands use their own pool.

use std::cell::OnceCell;
use std::sync::{Arc, Mutex};

use super::PgPool;

thread_local! {
    static SHARD: OnceCell<PgPool> = const { OnceCell::new() };
}

/// The shards of one server, for its metrics.
#[derive(Clone, Default)]
pub struct Shards(Arc<Mutex<Vec<PgPool>>>);

impl Shards {
    /// Every shard adopted so far.
    pub fn all(&self) -> Vec<PgPool> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Gives the current thread `pool` as its shard (once: a thread keeps its first) and
/// records it in `shards`.
pub fn adopt(pool: PgPool, shards: &Shards) {
    let adopted = SHARD.with(|s| s.set(pool.clone()).is_ok());
    if adopted {
        if let Ok(mut all) = shards.0.lock() {
            all.push(pool);
        }
    }
}

/// The current thread's shard, if it adopted one.
pub fn current() -> Option<PgPool> {
    SHARD.with(|s| s.get().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> PgPool {
        super::super::pool(
            "postgres://nobody@127.0.0.1:1/none",
            &super::super::PoolSettings::default(),
        )
    }

    #[tokio::test]
    async fn a_shard_belongs_to_the_thread_that_adopted_it() {
        let shards = Shards::default();
        assert!(current().is_none());
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = {
            let shards = shards.clone();
            // Built here: a pool starts its reaper on the current runtime.
            let (first, second) = (pool(), pool());
            std::thread::spawn(move || {
                adopt(first, &shards);
                // A second adoption keeps the first shard.
                adopt(second, &shards);
                let _ = tx.send(current().is_some());
            })
        };
        assert_eq!(rx.recv().ok(), Some(true));
        assert!(worker.join().is_ok());
        assert!(current().is_none(), "other threads have no shard");
        assert_eq!(shards.all().len(), 1);
    }
}
