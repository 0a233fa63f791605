//! The in-process cache in front of read-model lookups: moka, bounded by weight
//! (approximate bytes), invalidated by the projector when a row it serves changes.
//!
//! A reader that loaded a row just before the projector changed it must not put the
//! stale row back after the invalidation: every invalidation bumps an epoch, and a
//! loaded row is only inserted if no invalidation happened while it was being read. The
//! check and the insert are one compute operation of moka (serialized per key), and the
//! projector removes a changed key with one too, so no reader can slip a row read before
//! a change in between the change's invalidation and its own check (where a reader
//! after the change, one holding a consistency token, would be served it). A check
//! after the insert covers whole-cache drops (`invalidate_all` is not serialized with
//! per-key operations).
//!
//! List pages (a storefront's `products` page, a customer's `myOrders` page) are cached
//! as the ids and cursors of their items, not the items: the items come from the row
//! caches above, which the projector keeps exact, so a stock change never has to drop a
//! page. A product page is dropped when something that decides membership or order
//! changes (a product created, updated or archived: [`Change::Listing`]); pages that
//! depend on stock or popularity (`inStock`, `POPULAR`) are not cached. A customer's
//! order pages are dropped when any of their orders changes. Each kind of page has its
//! own epoch, so a stream of stock changes does not keep pages from being cached. A
//! cached product page keeps the listing epoch it was read at and is only served while
//! the epoch still has that value. A customer's page list is read, extended and written
//! back in one compute operation that first checks the new page's epoch (the list holds
//! only pages whose check passed before the customer's last invalidation), so a page
//! read before a change of the customer's orders cannot be copied into the list of a
//! reader who came after it.
//!
//! With read replicas a reader can load a row after its invalidation and still get the
//! old one, from a replica that has not replayed the change yet: the epoch check does
//! not see that. So every invalidation also raises a floor, the primary's WAL position
//! past the change ([`crate::sources`]), for the keys it touched (kept per stripe of
//! keys, a fixed array); a loaded value is kept only when its source had replayed at
//! least the floor of its key, checked in the same compute operation as the epoch. The
//! primary passes every floor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use moka::ops::compute::Op;
use uuid::Uuid;

use crate::error::ReadError;
use crate::pages::{OrderCursor, Page, ProductCursor, ProductFilter, ProductSort};
use crate::projections::Change;
use crate::sources::Lsn;
use crate::views::{CategoryView, Identified, OrderView, ProductView};

/// Sizing of the caches.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// Total bound in bytes, split between product rows (50%), order rows (30%),
    /// product list pages (10%) and customers' order pages (10%).
    pub max_bytes: u64,
    /// Entries not read for this long are dropped, so the memory a burst of traffic
    /// filled the cache with is given back after it (the bound alone would keep it).
    pub idle: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            idle: Duration::from_secs(600),
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
    /// Pages of `products` (ids and cursors).
    ProductPages,
    /// Pages of a customer's orders (ids and cursors).
    OrderPages,
}

impl CacheKind {
    /// Its metrics label.
    pub fn name(self) -> &'static str {
        match self {
            CacheKind::Products => "products",
            CacheKind::Orders => "orders",
            CacheKind::Categories => "categories",
            CacheKind::ProductPages => "product_pages",
            CacheKind::OrderPages => "order_pages",
        }
    }
}

/// The ids of one page of a list, in order, with the cursor after each.
#[derive(Debug)]
pub(crate) struct IdPage<C> {
    pub(crate) items: Vec<(C, Uuid)>,
    pub(crate) has_next_page: bool,
}

impl<C: Clone> IdPage<C> {
    fn weight(&self, per_cursor: usize) -> usize {
        std::mem::size_of::<Self>() + self.items.len() * (per_cursor + 16)
    }

    /// The page with its items from `found` (ids no longer found are left out).
    pub(crate) fn hydrate<V>(
        &self,
        mut found: HashMap<Uuid, Arc<V>>,
        has_previous_page: bool,
    ) -> Page<Arc<V>, C> {
        Page {
            items: self
                .items
                .iter()
                .filter_map(|(c, id)| found.remove(id).map(|v| (c.clone(), v)))
                .collect(),
            has_next_page: self.has_next_page,
            has_previous_page,
        }
    }
}

/// What identifies a page of `products`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ProductPageKey {
    pub(crate) filter: ProductFilter,
    pub(crate) sort: ProductSort,
    pub(crate) after: Option<ProductCursor>,
    pub(crate) first: i64,
}

impl ProductPageKey {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.filter.search.as_ref().map_or(0, String::len)
            + self
                .filter
                .statuses
                .iter()
                .map(|s| s.len() + 24)
                .sum::<usize>()
    }
}

/// A cached product page and the listing epoch its read started at.
#[derive(Debug)]
pub(crate) struct EpochPage<C> {
    epoch: u64,
    page: Arc<IdPage<C>>,
}

impl<C> Clone for EpochPage<C> {
    fn clone(&self) -> Self {
        Self {
            epoch: self.epoch,
            page: self.page.clone(),
        }
    }
}

/// One customer's cached order pages: (after, first) -> page. Replaced whole on change
/// (copy on write), at most [`ORDER_PAGES_PER_CUSTOMER`] pages.
pub(crate) type CustomerOrderPages = Vec<((Option<OrderCursor>, i64), Arc<IdPage<OrderCursor>>)>;

/// Pages kept per customer (the first few pages are what a customer looks at).
pub(crate) const ORDER_PAGES_PER_CUSTOMER: usize = 8;

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
    product_pages: CacheStats,
    order_pages: CacheStats,
}

impl Counters {
    fn of(&self, kind: CacheKind) -> &CacheStats {
        match kind {
            CacheKind::Products => &self.products,
            CacheKind::Orders => &self.orders,
            CacheKind::Categories => &self.categories,
            CacheKind::ProductPages => &self.product_pages,
            CacheKind::OrderPages => &self.order_pages,
        }
    }
}

/// An eviction listener counting evictions caused by the weight bound.
fn count_evictions<K, V>(
    stats: Arc<Counters>,
    kind: CacheKind,
) -> impl Fn(Arc<K>, V, moka::notification::RemovalCause) + Send + Sync + 'static {
    move |_k, _v, cause| {
        if cause == moka::notification::RemovalCause::Size {
            stats.of(kind).evictions.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Removes `key` with a compute operation (serialized with other compute operations on
/// the key).
async fn remove<V>(cache: &Cache<Uuid, V>, key: Uuid)
where
    V: Clone + Send + Sync + 'static,
{
    cache
        .entry(key)
        .and_compute_with(|_| std::future::ready(Op::Remove))
        .await;
}

/// (kind, entries, weighted size) of one cache.
fn sized<K, V>(kind: CacheKind, cache: &Cache<K, V>) -> (CacheKind, u64, u64)
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    (kind, cache.entry_count(), cache.weighted_size())
}

/// Points between the steps of a cache write where a test can hold the writer, to
/// replay a race between readers and the projector in a chosen order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seam {
    /// A row has been written, before the writer checks for a racing invalidation.
    RowWritten,
    /// A product page has been written, before that check.
    ProductPageWritten,
    /// A customer's list of order pages has been read, to add a page to it.
    OrderPagesRead,
    /// A customer's list of order pages has been written, before that check.
    OrderPagesWritten,
}

#[cfg(test)]
mod seams {
    use std::sync::{Mutex, PoisonError};

    use tokio::sync::oneshot;

    use super::Seam;

    /// A stop at a seam: the writer tells the test it got there, then waits to go on.
    struct Stop {
        at: Seam,
        reached: oneshot::Sender<()>,
        go: oneshot::Receiver<()>,
    }

    /// Stops a test has set: the next writer to pass a stop's seam tells the test it
    /// got there, then waits until the test lets it go.
    #[derive(Default)]
    pub(super) struct Seams(Mutex<Vec<Stop>>);

    impl Seams {
        /// Sets a stop at `at`; returns (got there, go on).
        pub(super) fn stop_at(&self, at: Seam) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
            let (reached_tx, reached_rx) = oneshot::channel();
            let (go_tx, go_rx) = oneshot::channel();
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Stop {
                    at,
                    reached: reached_tx,
                    go: go_rx,
                });
            (reached_rx, go_tx)
        }

        pub(super) async fn pass(&self, at: Seam) {
            let stop = {
                let mut stops = self.0.lock().unwrap_or_else(PoisonError::into_inner);
                let i = stops.iter().position(|s| s.at == at);
                i.map(|i| stops.remove(i))
            };
            if let Some(stop) = stop {
                let _ = stop.reached.send(());
                let _ = stop.go.await;
            }
        }
    }
}

/// Stripes of keys whose floors are kept apart (8 bytes each).
const STRIPES: usize = 1024;

/// The lowest WAL position a source must have replayed for what it returns to be
/// cached: raised by every invalidation, never lowered (see the module's notes).
struct Floors {
    /// Rows (products and orders) by stripe of their id.
    rows: Box<[AtomicU64]>,
    /// A customer's order pages, by stripe of the customer's id.
    customers: Box<[AtomicU64]>,
    /// Product list pages.
    listing: AtomicU64,
    /// The category tree.
    categories: AtomicU64,
    /// Everything (whole-cache drops).
    everything: AtomicU64,
}

impl Floors {
    fn new() -> Self {
        let stripes = || (0..STRIPES).map(|_| AtomicU64::new(0)).collect();
        Self {
            rows: stripes(),
            customers: stripes(),
            listing: AtomicU64::new(0),
            categories: AtomicU64::new(0),
            everything: AtomicU64::new(0),
        }
    }

    fn stripe(stripes: &[AtomicU64], id: Uuid) -> &AtomicU64 {
        let (hi, lo) = id.as_u64_pair();
        &stripes[((hi ^ lo) % STRIPES as u64) as usize]
    }

    fn raise(floor: &AtomicU64, wal: Lsn) {
        floor.fetch_max(wal, Ordering::AcqRel);
    }

    /// Whether a value read from a source at `at` may be kept under `floor`.
    fn passes(&self, floor: &AtomicU64, at: Lsn) -> bool {
        at >= floor
            .load(Ordering::Acquire)
            .max(self.everything.load(Ordering::Acquire))
    }
}

/// The caches of one process.
#[derive(Clone)]
pub struct ReadCache {
    pub(crate) products: Cache<Uuid, Arc<ProductView>>,
    pub(crate) orders: Cache<Uuid, Arc<OrderView>>,
    pub(crate) categories: Cache<(), Arc<Vec<CategoryView>>>,
    pub(crate) product_pages: Cache<ProductPageKey, EpochPage<ProductCursor>>,
    pub(crate) order_pages: Cache<Uuid, Arc<CustomerOrderPages>>,
    epoch: Arc<AtomicU64>,
    listing_epoch: Arc<AtomicU64>,
    order_list_epoch: Arc<AtomicU64>,
    floors: Arc<Floors>,
    stats: Arc<Counters>,
    #[cfg(test)]
    seams: Arc<seams::Seams>,
}

impl ReadCache {
    /// Builds the caches with their weight bounds.
    pub fn new(settings: CacheSettings) -> Self {
        let product_bytes = settings.max_bytes / 10 * 5;
        let order_bytes = settings.max_bytes / 10 * 3;
        let page_bytes = settings.max_bytes / 10;
        let weight = |w: usize| u32::try_from(w).unwrap_or(u32::MAX);
        let stats = Arc::new(Counters::default());
        Self {
            products: Cache::builder()
                .name("products")
                .time_to_idle(settings.idle)
                .max_capacity(product_bytes)
                .weigher(|_k, v: &Arc<ProductView>| v.weight())
                .eviction_listener(count_evictions(stats.clone(), CacheKind::Products))
                .build(),
            orders: Cache::builder()
                .name("orders")
                .time_to_idle(settings.idle)
                .max_capacity(order_bytes)
                .weigher(|_k, v: &Arc<OrderView>| v.weight())
                .eviction_listener(count_evictions(stats.clone(), CacheKind::Orders))
                .build(),
            categories: Cache::builder().name("categories").max_capacity(1).build(),
            product_pages: Cache::builder()
                .name("product_pages")
                .time_to_idle(settings.idle)
                .max_capacity(page_bytes)
                .weigher(move |k: &ProductPageKey, v: &EpochPage<ProductCursor>| {
                    weight(k.weight() + v.page.weight(std::mem::size_of::<ProductCursor>()))
                })
                .eviction_listener(count_evictions(stats.clone(), CacheKind::ProductPages))
                .build(),
            order_pages: Cache::builder()
                .name("order_pages")
                .time_to_idle(settings.idle)
                .max_capacity(page_bytes)
                .weigher(move |_k, v: &Arc<CustomerOrderPages>| {
                    weight(
                        v.iter()
                            .map(|(_, p)| 64 + p.weight(std::mem::size_of::<OrderCursor>()))
                            .sum(),
                    )
                })
                .eviction_listener(count_evictions(stats.clone(), CacheKind::OrderPages))
                .build(),
            epoch: Arc::new(AtomicU64::new(0)),
            listing_epoch: Arc::new(AtomicU64::new(0)),
            order_list_epoch: Arc::new(AtomicU64::new(0)),
            floors: Arc::new(Floors::new()),
            stats,
            #[cfg(test)]
            seams: Arc::default(),
        }
    }

    /// Holds this writer at `at` when a test asked for it (see [`Seam`]); nothing
    /// otherwise.
    async fn seam(&self, at: Seam) {
        #[cfg(test)]
        self.seams.pass(at).await;
        #[cfg(not(test))]
        let _ = at;
    }

    /// Counters and sizes of every cache.
    pub fn snapshot(&self) -> Vec<CacheSnapshot> {
        let sizes = [
            sized(CacheKind::Products, &self.products),
            sized(CacheKind::Orders, &self.orders),
            sized(CacheKind::Categories, &self.categories),
            sized(CacheKind::ProductPages, &self.product_pages),
            sized(CacheKind::OrderPages, &self.order_pages),
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

    /// A row by id from `cache`, or from `load` (then cached), which reads a source
    /// that has replayed `at`. A row loaded while an invalidation happened, or from a
    /// source behind the key's floor, is not kept: it may be stale.
    pub(crate) async fn through<V>(
        &self,
        kind: CacheKind,
        cache: &Cache<Uuid, Arc<V>>,
        id: Uuid,
        at: Lsn,
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
        self.put(cache, id, epoch, at, value.clone()).await;
        Ok(Some(value))
    }

    /// Rows by id: those in `cache`, the rest from one `load` of the missing ids (then
    /// cached). Ids that exist nowhere are absent from the map.
    pub(crate) async fn through_many<V>(
        &self,
        kind: CacheKind,
        cache: &Cache<Uuid, Arc<V>>,
        ids: &[Uuid],
        at: Lsn,
        load: impl AsyncFnOnce(Vec<Uuid>) -> Result<Vec<V>, ReadError>,
    ) -> Result<HashMap<Uuid, Arc<V>>, ReadError>
    where
        V: Identified + Send + Sync + 'static,
    {
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match cache.get(id).await {
                Some(v) => {
                    self.hit(kind);
                    found.insert(*id, v);
                }
                None => missing.push(*id),
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let epoch = self.epoch();
        for value in load(missing).await? {
            self.miss(kind);
            let id = value.id();
            let value = Arc::new(value);
            self.put(cache, id, epoch, at, value.clone()).await;
            found.insert(id, value);
        }
        Ok(found)
    }

    /// Rows just read for a page (at row epoch `epoch`, from a source that had
    /// replayed `at`): each is cached unless an invalidation raced with the read or its
    /// floor is past `at`; returns the page as ids (to cache as the page) and the page
    /// to answer with.
    pub(crate) async fn keep_page_rows<C: Clone, V: Identified + Send + Sync + 'static>(
        &self,
        cache: &Cache<Uuid, Arc<V>>,
        (epoch, at): (u64, Lsn),
        rows: Vec<(C, V)>,
        has_next_page: bool,
        has_previous_page: bool,
    ) -> (Arc<IdPage<C>>, Page<Arc<V>, C>) {
        let mut ids = Vec::with_capacity(rows.len());
        let mut items = Vec::with_capacity(rows.len());
        for (cursor, value) in rows {
            let id = value.id();
            let value = Arc::new(value);
            self.put(cache, id, epoch, at, value.clone()).await;
            ids.push((cursor.clone(), id));
            items.push((cursor, value));
        }
        let ids = Arc::new(IdPage {
            items: ids,
            has_next_page,
        });
        let page = Page {
            items,
            has_next_page,
            has_previous_page,
        };
        (ids, page)
    }

    /// Inserts a row loaded at `epoch` from a source that had replayed `at`, unless
    /// something was invalidated since or the key's floor is past `at`: checked and
    /// inserted in one compute operation, which the projector's removal of the key
    /// ([`ReadCache::invalidate`]) cannot come between.
    pub(crate) async fn put<V>(
        &self,
        cache: &Cache<Uuid, Arc<V>>,
        id: Uuid,
        epoch: u64,
        at: Lsn,
        value: Arc<V>,
    ) where
        V: Send + Sync + 'static,
    {
        let floor = Floors::stripe(&self.floors.rows, id);
        cache
            .entry(id)
            .and_compute_with(|_| {
                std::future::ready(if self.epoch() == epoch && self.floors.passes(floor, at) {
                    Op::Put(value)
                } else {
                    Op::Nop
                })
            })
            .await;
        self.seam(Seam::RowWritten).await;
        if self.epoch() != epoch {
            // A whole-cache drop may have come between the check and the insert.
            cache.invalidate(&id).await;
        }
    }

    /// Current epoch of product list pages; take it before reading a page.
    pub(crate) fn listing_epoch(&self) -> u64 {
        self.listing_epoch.load(Ordering::Acquire)
    }

    /// Current epoch of customers' order pages; take it before reading a page.
    pub(crate) fn order_list_epoch(&self) -> u64 {
        self.order_list_epoch.load(Ordering::Acquire)
    }

    /// Inserts a product page read at listing epoch `epoch` from a source that had
    /// replayed `at`, unless a listing changed since or past `at`.
    pub(crate) async fn put_product_page(
        &self,
        key: ProductPageKey,
        (epoch, at): (u64, Lsn),
        page: Arc<IdPage<ProductCursor>>,
    ) {
        if self.listing_epoch() == epoch && self.floors.passes(&self.floors.listing, at) {
            self.product_pages
                .insert(key.clone(), EpochPage { epoch, page })
                .await;
        }
        self.seam(Seam::ProductPageWritten).await;
        if self.listing_epoch() != epoch {
            self.product_pages.invalidate(&key).await;
        }
    }

    /// A cached product page (counted as a hit or a miss). A page read before the last
    /// listing change is not served, even in the moment before its writer drops it.
    pub(crate) async fn product_page(
        &self,
        key: &ProductPageKey,
    ) -> Option<Arc<IdPage<ProductCursor>>> {
        let epoch = self.listing_epoch();
        let page = self
            .product_pages
            .get(key)
            .await
            .filter(|p| p.epoch == epoch)
            .map(|p| p.page);
        self.count(CacheKind::ProductPages, page.is_some());
        page
    }

    /// One of a customer's cached order pages (counted as a hit or a miss).
    pub(crate) async fn order_page(
        &self,
        customer: Uuid,
        after: Option<&OrderCursor>,
        first: i64,
    ) -> Option<Arc<IdPage<OrderCursor>>> {
        let page = self.order_pages.get(&customer).await.and_then(|pages| {
            pages
                .iter()
                .find(|((a, f), _)| a.as_ref() == after && *f == first)
                .map(|(_, p)| p.clone())
        });
        self.count(CacheKind::OrderPages, page.is_some());
        page
    }

    fn count(&self, kind: CacheKind, hit: bool) {
        if hit {
            self.hit(kind);
        } else {
            self.miss(kind);
        }
    }

    /// Adds a page read at order-list epoch `epoch` to a customer's pages unless one of
    /// their orders (or any order: the epoch is shared) changed since.
    ///
    /// The list is read, extended and written back in one compute operation that first
    /// checks the epoch; the projector removes a customer's list with one too. So the
    /// list only ever holds pages whose check passed before the last removal: a page
    /// read before a change cannot be copied into the list of a reader who read after
    /// it (with separate steps, the second reader could copy it in the moment between
    /// its writer's insert and the check that dropped it, and write it back for good).
    pub(crate) async fn put_order_page(
        &self,
        customer: Uuid,
        after: Option<OrderCursor>,
        first: i64,
        (epoch, at): (u64, Lsn),
        page: Arc<IdPage<OrderCursor>>,
    ) {
        let floor = Floors::stripe(&self.floors.customers, customer);
        self.order_pages
            .entry(customer)
            .and_compute_with(|existing| async move {
                if self.order_list_epoch() != epoch || !self.floors.passes(floor, at) {
                    return Op::Nop;
                }
                let mut pages: CustomerOrderPages = existing
                    .map(|e| e.into_value().iter().cloned().collect())
                    .unwrap_or_default();
                self.seam(Seam::OrderPagesRead).await;
                pages.retain(|((a, f), _)| !(a == &after && *f == first));
                if pages.len() >= ORDER_PAGES_PER_CUSTOMER {
                    pages.remove(0);
                }
                pages.push(((after, first), page));
                Op::Put(Arc::new(pages))
            })
            .await;
        self.seam(Seam::OrderPagesWritten).await;
        if self.order_list_epoch() != epoch {
            // A whole-cache drop may have come between the check and the write.
            self.order_pages.invalidate(&customer).await;
        }
    }

    /// Inserts the category list loaded at `epoch` from a source that had replayed
    /// `at`, unless the categories changed past `at`.
    pub(crate) async fn put_categories(
        &self,
        (epoch, at): (u64, Lsn),
        list: Arc<Vec<CategoryView>>,
    ) {
        if !self.floors.passes(&self.floors.categories, at) {
            return;
        }
        self.categories.insert((), list).await;
        if self.epoch() != epoch {
            self.categories.invalidate_all();
        }
    }

    /// Drops every entry a batch of changes touched; `wal` is the primary's WAL
    /// position past their commit (0 without read replicas): from now on only what a
    /// source that has replayed that far returns is kept for those keys.
    pub async fn invalidate(&self, changes: &[Change], wal: Lsn) {
        if changes.is_empty() {
            return;
        }
        // The floors first: a reader that checks after the epoch's bump (or sees no
        // bump) finds them raised.
        let floors = &self.floors;
        for change in changes {
            match change {
                Change::Product(id) => Floors::raise(Floors::stripe(&floors.rows, *id), wal),
                Change::Listing => Floors::raise(&floors.listing, wal),
                Change::Order { order, customer } => {
                    Floors::raise(Floors::stripe(&floors.rows, *order), wal);
                    Floors::raise(Floors::stripe(&floors.customers, *customer), wal);
                }
                Change::Categories => Floors::raise(&floors.categories, wal),
                Change::Customer(_) | Change::Sales => {}
            }
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if changes.contains(&Change::Listing) {
            self.listing_epoch.fetch_add(1, Ordering::AcqRel);
        }
        if changes.iter().any(|c| matches!(c, Change::Order { .. })) {
            self.order_list_epoch.fetch_add(1, Ordering::AcqRel);
        }
        // Per key through compute operations: serialized with a reader's check and
        // insert of the same key (see `put`).
        for change in changes {
            match change {
                Change::Product(id) => remove(&self.products, *id).await,
                Change::Listing => self.product_pages.invalidate_all(),
                Change::Order { order, customer } => {
                    remove(&self.orders, *order).await;
                    remove(&self.order_pages, *customer).await;
                }
                Change::Categories => self.categories.invalidate_all(),
                Change::Customer(_) | Change::Sales => {}
            }
        }
    }

    /// Drops every entry (for a process whose projections run elsewhere and only
    /// learns that something changed, not what), with `wal` as in
    /// [`ReadCache::invalidate`].
    pub fn invalidate_everything(&self, wal: Lsn) {
        Floors::raise(&self.floors.everything, wal);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.listing_epoch.fetch_add(1, Ordering::AcqRel);
        self.order_list_epoch.fetch_add(1, Ordering::AcqRel);
        self.products.invalidate_all();
        self.orders.invalidate_all();
        self.categories.invalidate_all();
        self.product_pages.invalidate_all();
        self.order_pages.invalidate_all();
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
        self.product_pages.run_pending_tasks().await;
        self.order_pages.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::PRIMARY;

    fn key() -> ProductPageKey {
        ProductPageKey {
            filter: ProductFilter::default(),
            sort: ProductSort::Price,
            after: None,
            first: 20,
        }
    }

    fn page<C>() -> Arc<IdPage<C>> {
        Arc::new(IdPage {
            items: Vec::new(),
            has_next_page: false,
        })
    }

    #[tokio::test]
    async fn a_page_read_across_a_listing_change_is_not_kept() {
        let cache = ReadCache::new(CacheSettings::default());
        let epoch = cache.listing_epoch();
        cache.invalidate(&[Change::Product(Uuid::nil())], 0).await;
        cache
            .put_product_page(key(), (epoch, PRIMARY), page())
            .await;
        assert!(
            cache.product_pages.get(&key()).await.is_some(),
            "a stock change does not spoil a page"
        );

        let epoch = cache.listing_epoch();
        cache.invalidate(&[Change::Listing], 0).await;
        cache
            .put_product_page(key(), (epoch, PRIMARY), page())
            .await;
        assert!(cache.product_pages.get(&key()).await.is_none());
    }

    #[tokio::test]
    async fn a_customers_pages_are_dropped_with_their_orders_and_bounded() {
        let cache = ReadCache::new(CacheSettings::default());
        let ann = Uuid::now_v7();
        let epoch = cache.order_list_epoch();
        cache
            .put_order_page(ann, None, 10, (epoch, PRIMARY), page())
            .await;
        assert!(cache.order_page(ann, None, 10).await.is_some());
        cache
            .invalidate(
                &[Change::Order {
                    order: Uuid::now_v7(),
                    customer: ann,
                }],
                0,
            )
            .await;
        assert!(cache.order_page(ann, None, 10).await.is_none());

        let stale = cache.order_list_epoch();
        cache
            .invalidate(
                &[Change::Order {
                    order: Uuid::now_v7(),
                    customer: Uuid::now_v7(),
                }],
                0,
            )
            .await;
        cache
            .put_order_page(ann, None, 10, (stale, PRIMARY), page())
            .await;
        assert!(
            cache.order_page(ann, None, 10).await.is_none(),
            "read across an order change: not kept"
        );

        let epoch = cache.order_list_epoch();
        for first in 1..=(ORDER_PAGES_PER_CUSTOMER as i64 + 3) {
            cache
                .put_order_page(ann, None, first, (epoch, PRIMARY), page())
                .await;
        }
        let kept = cache.order_pages.get(&ann).await.map_or(0, |p| p.len());
        assert_eq!(kept, ORDER_PAGES_PER_CUSTOMER);
        assert!(
            cache.order_page(ann, None, 1).await.is_none(),
            "oldest dropped"
        );
    }

    fn page_after(first: i64) -> ProductPageKey {
        ProductPageKey { first, ..key() }
    }

    #[tokio::test]
    async fn pages_stay_within_their_share_of_the_bound_and_idle_ones_are_dropped() {
        let cache = ReadCache::new(CacheSettings {
            max_bytes: 40_000,
            idle: Duration::from_millis(300),
        });
        let epoch = cache.listing_epoch();
        for first in 1..=200 {
            cache
                .put_product_page(page_after(first), (epoch, PRIMARY), page())
                .await;
        }
        cache.run_pending_tasks().await;
        let pages = cache.product_pages.weighted_size();
        assert!(
            pages > 0 && pages <= 4_000,
            "pages weigh {pages} of a 4,000-byte share"
        );
        let evicted = cache
            .stats
            .of(CacheKind::ProductPages)
            .evictions
            .load(Ordering::Relaxed);
        assert!(evicted > 0, "the bound evicted pages");

        tokio::time::sleep(Duration::from_millis(600)).await;
        cache.run_pending_tasks().await;
        assert_eq!(cache.product_pages.entry_count(), 0, "idle pages dropped");
        assert_eq!(cache.product_pages.weighted_size(), 0);
    }

    fn product(id: Uuid, name: &str) -> ProductView {
        ProductView {
            id,
            sku: "SKU-1".into(),
            name: name.into(),
            description: String::new(),
            price_minor: 100,
            status: "ACTIVE".into(),
            category_id: Uuid::nil(),
            category_path: Vec::new(),
            on_hand: 1,
            reserved: 0,
            available: 1,
            popularity: 0,
            version: 1,
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn order_page(order: Uuid) -> Arc<IdPage<OrderCursor>> {
        Arc::new(IdPage {
            items: vec![(OrderCursor { t: 1, id: order }, order)],
            has_next_page: true,
        })
    }

    fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits for a writer to stop at a seam (a guard against a hang, not a timing
    /// check: the writers here do nothing slow).
    async fn reached(stop: tokio::sync::oneshot::Receiver<()>) {
        match tokio::time::timeout(Duration::from_secs(30), stop).await {
            Ok(Ok(())) => {}
            _ => panic!("the writer never reached its seam"),
        }
    }

    /// A reader loads a product, the projector changes it and invalidates it, then the
    /// reader writes what it loaded; a second reader, who came after the invalidation
    /// (with a consistency token, say), looks the product up while the first is between
    /// its write and its check. It must get the new row, never the one loaded before
    /// the change.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_row_loaded_before_an_invalidation_is_never_served_after_it() {
        let cache = ReadCache::new(CacheSettings::default());
        let id = Uuid::now_v7();
        let (loading_tx, loading_rx) = tokio::sync::oneshot::channel::<()>();
        let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel::<()>();
        let (written, go) = cache.seams.stop_at(Seam::RowWritten);
        let stale = tokio::spawn({
            let cache = cache.clone();
            async move {
                let rows = &cache.products;
                cache
                    .through(CacheKind::Products, rows, id, PRIMARY, async || {
                        // The database answers with the row as it was; the change
                        // commits and is invalidated before this reader goes on.
                        let _ = loading_tx.send(());
                        let _ = loaded_rx.await;
                        Ok(Some(product(id, "before")))
                    })
                    .await
            }
        });
        ok(loading_rx.await);
        cache.invalidate(&[Change::Product(id)], 0).await;
        let _ = loaded_tx.send(());
        reached(written).await;

        let fresh = ok(cache
            .through(
                CacheKind::Products,
                &cache.products,
                id,
                PRIMARY,
                async || Ok(Some(product(id, "after"))),
            )
            .await);
        let _ = go.send(());
        let _ = ok(ok(stale.await));
        assert_eq!(fresh.map(|p| p.name.clone()).as_deref(), Some("after"));
        let cached = cache.products.get(&id).await;
        assert!(
            cached.is_none_or(|p| p.name == "after"),
            "the row loaded before the change stayed cached"
        );
    }

    /// A product page read before a listing change is written after it; a reader after
    /// the change must not be answered with it, even while its writer has not yet
    /// checked for the race.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_product_page_read_before_a_listing_change_is_never_served_after_it() {
        let cache = ReadCache::new(CacheSettings::default());
        let stale_epoch = cache.listing_epoch();
        cache.invalidate(&[Change::Listing], 0).await;
        let (written, go) = cache.seams.stop_at(Seam::ProductPageWritten);
        let stale = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .put_product_page(key(), (stale_epoch, PRIMARY), page())
                    .await
            }
        });
        reached(written).await;
        let seen = cache.product_page(&key()).await;
        let _ = go.send(());
        ok(stale.await);
        assert!(
            seen.is_none(),
            "a reader after the change got the page read before it"
        );
        assert!(cache.product_page(&key()).await.is_none());
    }

    /// Two readers of one customer's orders interleave with the projector: the first
    /// read page 1 before one of the customer's orders changed, the second read page 2
    /// after. The first writes the customer's page list and is held before its race
    /// check; the second reads that list to add its page; the first then drops the list
    /// (its check fails); the second writes its list. Page 1 as read before the change
    /// must not come back with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_order_page_does_not_come_back_with_a_fresh_readers_page() {
        let cache = ReadCache::new(CacheSettings::default());
        let ann = Uuid::now_v7();
        let (old_order, later_order) = (Uuid::now_v7(), Uuid::now_v7());
        let stale_epoch = cache.order_list_epoch();
        cache
            .invalidate(
                &[Change::Order {
                    order: old_order,
                    customer: ann,
                }],
                0,
            )
            .await;
        let fresh_epoch = cache.order_list_epoch();
        let page_2_after = Some(OrderCursor {
            t: 2,
            id: later_order,
        });

        let (stale_written, stale_go) = cache.seams.stop_at(Seam::OrderPagesWritten);
        let stale = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .put_order_page(ann, None, 10, (stale_epoch, PRIMARY), order_page(old_order))
                    .await
            }
        });
        reached(stale_written).await;
        let (fresh_read, fresh_go) = cache.seams.stop_at(Seam::OrderPagesRead);
        let fresh = tokio::spawn({
            let (cache, after) = (cache.clone(), page_2_after.clone());
            async move {
                cache
                    .put_order_page(
                        ann,
                        after,
                        10,
                        (fresh_epoch, PRIMARY),
                        order_page(later_order),
                    )
                    .await
            }
        });
        reached(fresh_read).await;
        let _ = stale_go.send(());
        ok(stale.await);
        let _ = fresh_go.send(());
        ok(fresh.await);

        assert!(
            cache.order_page(ann, None, 10).await.is_none(),
            "page 1 read before the change came back"
        );
        assert!(
            cache
                .order_page(ann, page_2_after.as_ref(), 10)
                .await
                .is_some(),
            "page 2, read after the change, is kept"
        );
    }

    /// A replica that has not replayed the change that invalidated a key returns the
    /// row as it was before: after the invalidation, such a row must not be kept
    /// (the epoch alone would let it in, the read started after the change).
    #[tokio::test]
    async fn rows_pages_and_categories_from_a_source_behind_their_floor_are_not_kept() {
        let cache = ReadCache::new(CacheSettings::default());
        let id = Uuid::now_v7();
        let ann = Uuid::now_v7();
        cache
            .invalidate(
                &[
                    Change::Product(id),
                    Change::Listing,
                    Change::Categories,
                    Change::Order {
                        order: id,
                        customer: ann,
                    },
                ],
                1_000,
            )
            .await;
        let behind = 999;
        let load = async || Ok(Some(product(id, "before the change")));
        let rows = &cache.products;
        let got = cache
            .through(CacheKind::Products, rows, id, behind, load)
            .await;
        assert!(matches!(got, Ok(Some(_))), "the reader gets its answer");
        assert!(
            rows.get(&id).await.is_none(),
            "a row from behind the floor was kept"
        );
        let epoch = cache.listing_epoch();
        cache.put_product_page(key(), (epoch, behind), page()).await;
        assert!(
            cache.product_page(&key()).await.is_none(),
            "a page from behind the floor was kept"
        );
        let epoch = cache.order_list_epoch();
        cache
            .put_order_page(ann, None, 10, (epoch, behind), page())
            .await;
        assert!(
            cache.order_page(ann, None, 10).await.is_none(),
            "an order page from behind the floor was kept"
        );
        cache
            .put_categories((cache.epoch(), behind), Arc::new(Vec::new()))
            .await;
        assert!(
            cache.categories.get(&()).await.is_none(),
            "categories from behind the floor were kept"
        );

        // A source that has replayed the change may fill every one of them.
        let caught_up = 1_000;
        let load = async || Ok(Some(product(id, "after the change")));
        let _ = cache
            .through(CacheKind::Products, rows, id, caught_up, load)
            .await;
        assert!(
            rows.get(&id).await.is_some(),
            "a row from a caught-up source was not kept"
        );
        let epoch = cache.listing_epoch();
        cache
            .put_product_page(key(), (epoch, caught_up), page())
            .await;
        assert!(cache.product_page(&key()).await.is_some());
        let epoch = cache.order_list_epoch();
        cache
            .put_order_page(ann, None, 10, (epoch, caught_up), page())
            .await;
        assert!(cache.order_page(ann, None, 10).await.is_some());

        // Other keys' floors are their own (a different stripe, most of the time).
        let other = (0..64).map(|_| Uuid::now_v7()).find(|o| {
            !std::ptr::eq(
                Floors::stripe(&cache.floors.rows, *o),
                Floors::stripe(&cache.floors.rows, id),
            )
        });
        if let Some(other) = other {
            let load = async || Ok(Some(product(other, "untouched")));
            let _ = cache
                .through(CacheKind::Products, rows, other, behind, load)
                .await;
            assert!(
                rows.get(&other).await.is_some(),
                "an untouched key was held to another key's floor"
            );
        }

        // A whole-cache drop holds every key to its floor.
        cache.invalidate_everything(2_000);
        let load = async || Ok(Some(product(id, "after the drop")));
        let _ = cache
            .through(CacheKind::Products, rows, id, 1_500, load)
            .await;
        assert!(
            rows.get(&id).await.is_none(),
            "a row from behind the whole-cache floor was kept"
        );
    }
}
