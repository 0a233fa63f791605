//! Rate-limit buckets kept per key in a bounded cache that never evicts a bucket to
//! make room: an evicted bucket would come back full, so a caller (or an attacker
//! churning keys) could empty its bucket, push it out and start again. A bucket leaves
//! only after being idle long enough to be full again; while the cache holds its soft
//! maximum, new keys share one overflow bucket per class instead.

use std::hash::Hash;
use std::time::Duration;

/// Where a key's bucket lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Slot<K> {
    /// Its own bucket.
    Own(K),
    /// A bucket shared by the newcomers of a class while the cache is full.
    Overflow(&'static str),
}

/// Buckets `V` per key `K`, at most `soft_max` of their own.
pub struct Buckets<K, V> {
    cache: moka::sync::Cache<Slot<K>, V>,
    soft_max: u64,
}

impl<K, V> Buckets<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// At most `soft_max` buckets of their own; one idle for `refill` (long enough to
    /// be full again) is forgotten.
    pub fn new(soft_max: u64, refill: Duration) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                // Room above the soft maximum (checked before every new bucket), so moka
                // itself never has to evict a bucket that is not full.
                .max_capacity(soft_max.saturating_mul(2).max(16))
                .time_to_idle(refill)
                .build(),
            soft_max,
        }
    }

    /// The bucket of `key`, made by `make` if it has none; the class's overflow bucket
    /// when it has none and the cache is full.
    pub fn get_with(&self, key: K, overflow: &'static str, make: impl FnOnce() -> V) -> V {
        let mut slot = Slot::Own(key);
        if !self.cache.contains_key(&slot) && self.cache.entry_count() >= self.soft_max {
            slot = Slot::Overflow(overflow);
        }
        self.cache.get_with(slot, make)
    }

    /// Applies moka's pending bookkeeping (entry counts are eventually consistent).
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// Filling the cache with new keys keeps the drained bucket of an old one; the
    /// newcomers share the overflow bucket.
    #[test]
    fn a_full_cache_keeps_its_buckets_and_shares_one_for_newcomers() {
        let buckets: Buckets<u32, Arc<AtomicU32>> = Buckets::new(4, Duration::from_secs(60));
        let drained = buckets.get_with(0, "class", || Arc::new(AtomicU32::new(10)));
        drained.store(0, Ordering::SeqCst);
        for key in 1..100 {
            buckets.get_with(key, "class", || Arc::new(AtomicU32::new(10)));
            buckets.run_pending_tasks();
        }
        let again = buckets.get_with(0, "class", || Arc::new(AtomicU32::new(10)));
        assert_eq!(again.load(Ordering::SeqCst), 0, "handed a fresh bucket");
        let a = buckets.get_with(500, "class", || Arc::new(AtomicU32::new(10)));
        let b = buckets.get_with(501, "class", || Arc::new(AtomicU32::new(10)));
        assert!(Arc::ptr_eq(&a, &b), "newcomers share the overflow bucket");
    }
}
