//! The in-process cache in front of read-model lookups: moka, bounded by weight
//! (approximate bytes), invalidated by the projector when a row it serves changes.
//!
//! A reader that loaded a row just before the projector changed it must not put the
//! stale row back after the invalidation: every invalidation bumps an epoch, and a
//! loaded row is only inserted if no invalidation happened while it was being read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use moka::future::Cache;
use uuid::Uuid;

use crate::error::ReadError;
use crate::projections::Change;
use crate::views::{CategoryView, OrderView, ProductView};

/// Sizing of the caches.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// Total bound in bytes, split between products (60%) and orders (40%).
    pub max_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Counters of one cache.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: AtomicU64,
    /// Lookups that went to the database.
    pub misses: AtomicU64,
    /// Entries evicted to stay within the weight bound.
    pub evictions: AtomicU64,
}

/// Which cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    /// Product views.
    Products,
    /// Order views.
    Orders,
    /// The category tree.
    Categories,
}

impl CacheKind {
    /// Its metrics label.
    pub fn name(self) -> &'static str {
        match self {
            CacheKind::Products => "products",
            CacheKind::Orders => "orders",
            CacheKind::Categories => "categories",
        }
    }
}

/// A point-in-time view of one cache, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct CacheSnapshot {
    /// Which cache.
    pub kind: CacheKind,
    /// Lookups answered from the cache, since start.
    pub hits: u64,
    /// Lookups that went to the database, since start.
    pub misses: u64,
    /// Evictions by size, since start.
    pub evictions: u64,
    /// Entries now.
    pub entries: u64,
    /// Weighted size now (approximate bytes).
    pub weighted_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    products: CacheStats,
    orders: CacheStats,
    categories: CacheStats,
}

impl Counters {
    fn of(&self, kind: CacheKind) -> &CacheStats {
        match kind {
            CacheKind::Products => &self.products,
            CacheKind::Orders => &self.orders,
            CacheKind::Categories => &self.categories,
        }
    }
}

/// An eviction listener counting evictions caused by the weight bound.
fn count_evictions<V>(
    stats: Arc<Counters>,
    kind: CacheKind,
) -> impl Fn(Arc<Uuid>, V, moka::notification::RemovalCause) + Send + Sync + 'static {
    move |_k, _v, cause| {
        if cause == moka::notification::RemovalCause::Size {
            stats.of(kind).evictions.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The caches of one process.
#[derive(Clone)]
pub struct ReadCache {
    pub(crate) products: Cache<Uuid, Arc<ProductView>>,
    pub(crate) orders: Cache<Uuid, Arc<OrderView>>,
    pub(crate) categories: Cache<(), Arc<Vec<CategoryView>>>,
    epoch: Arc<AtomicU64>,
    stats: Arc<Counters>,
}

impl ReadCache {
    /// Builds the caches with their weight bounds.
    pub fn new(settings: CacheSettings) -> Self {
        let product_bytes = settings.max_bytes / 10 * 6;
        let order_bytes = settings.max_bytes / 10 * 4;
        let stats = Arc::new(Counters::default());
        Self {
            products: Cache::builder()
                .name("products")
                .max_capacity(product_bytes)
                .weigher(|_k, v: &Arc<ProductView>| v.weight())
                .eviction_listener(count_evictions(stats.clone(), CacheKind::Products))
                .build(),
            orders: Cache::builder()
                .name("orders")
                .max_capacity(order_bytes)
                .weigher(|_k, v: &Arc<OrderView>| v.weight())
                .eviction_listener(count_evictions(stats.clone(), CacheKind::Orders))
                .build(),
            categories: Cache::builder().name("categories").max_capacity(1).build(),
            epoch: Arc::new(AtomicU64::new(0)),
            stats,
        }
    }

    /// Counters and sizes of every cache.
    pub fn snapshot(&self) -> Vec<CacheSnapshot> {
        let sizes = [
            (
                CacheKind::Products,
                self.products.entry_count(),
                self.products.weighted_size(),
            ),
            (
                CacheKind::Orders,
                self.orders.entry_count(),
                self.orders.weighted_size(),
            ),
            (
                CacheKind::Categories,
                self.categories.entry_count(),
                self.categories.weighted_size(),
            ),
        ];
        sizes
            .into_iter()
            .map(|(kind, entries, weighted_bytes)| {
                let s = self.stats.of(kind);
                CacheSnapshot {
                    kind,
                    hits: s.hits.load(Ordering::Relaxed),
                    misses: s.misses.load(Ordering::Relaxed),
                    evictions: s.evictions.load(Ordering::Relaxed),
                    entries,
                    weighted_bytes,
                }
            })
            .collect()
    }

    /// Current invalidation epoch; take it before reading the database.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn hit(&self, kind: CacheKind) {
        self.stats.of(kind).hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn miss(&self, kind: CacheKind) {
        self.stats.of(kind).misses.fetch_add(1, Ordering::Relaxed);
    }

    /// A row by id from `cache`, or from `load` (then cached). A row loaded while an
    /// invalidation happened is dropped again right after insertion: it may be stale.
    pub(crate) async fn through<V>(
        &self,
        kind: CacheKind,
        cache: &Cache<Uuid, Arc<V>>,
        id: Uuid,
        load: impl AsyncFnOnce() -> Result<Option<V>, ReadError>,
    ) -> Result<Option<Arc<V>>, ReadError>
    where
        V: Send + Sync + 'static,
    {
        if let Some(hit) = cache.get(&id).await {
            self.hit(kind);
            return Ok(Some(hit));
        }
        self.miss(kind);
        let epoch = self.epoch();
        let Some(value) = load().await? else {
            return Ok(None);
        };
        let value = Arc::new(value);
        self.put(cache, id, epoch, value.clone()).await;
        Ok(Some(value))
    }

    /// Inserts a row loaded at `epoch` unless something was invalidated since.
    pub(crate) async fn put<V>(
        &self,
        cache: &Cache<Uuid, Arc<V>>,
        id: Uuid,
        epoch: u64,
        value: Arc<V>,
    ) where
        V: Send + Sync + 'static,
    {
        cache.insert(id, value).await;
        if self.epoch() != epoch {
            // An invalidation raced with our read: drop what may be stale.
            cache.invalidate(&id).await;
        }
    }

    /// Inserts the category list loaded at `epoch`.
    pub(crate) async fn put_categories(&self, epoch: u64, list: Arc<Vec<CategoryView>>) {
        self.categories.insert((), list).await;
        if self.epoch() != epoch {
            self.categories.invalidate_all();
        }
    }

    /// Drops every entry a batch of changes touched.
    pub async fn invalidate(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for change in changes {
            match change {
                Change::Product(id) => self.products.invalidate(id).await,
                Change::Order { order, .. } => self.orders.invalidate(order).await,
                Change::Categories => self.categories.invalidate_all(),
                Change::Customer(_) | Change::Sales => {}
            }
        }
    }

    /// Drops every entry (for a process whose projections run elsewhere and only
    /// learns that something changed, not what).
    pub fn invalidate_everything(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.products.invalidate_all();
        self.orders.invalidate_all();
        self.categories.invalidate_all();
    }

    /// Entry counts and weighted sizes: (products entries, bytes, orders entries, bytes).
    pub fn sizes(&self) -> (u64, u64, u64, u64) {
        (
            self.products.entry_count(),
            self.products.weighted_size(),
            self.orders.entry_count(),
            self.orders.weighted_size(),
        )
    }

    /// Runs moka's pending housekeeping (evictions), for tests and metrics.
    pub async fn run_pending_tasks(&self) {
        self.products.run_pending_tasks().await;
        self.orders.run_pending_tasks().await;
    }
}
