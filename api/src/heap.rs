//! Handing freed heap back to the operating system after load.
//!
//! glibc's allocator keeps the memory a thread freed in that thread's arena for
//! reuse. After a burst of reads fills the caches and they empty again (entries
//! expire or are invalidated), most of that memory sits free inside the HTTP
//! workers' arenas and stays resident (the memory scenario, benches/HISTORY.md, load
//! run 15). `malloc_trim` gives the free pages of every arena back.
//!
//! A trim is not free (it walks each arena under its lock, and the pages fault back
//! in when reused), so the housekeeping trims only when the allocator holds at
//! least [`TRIM_FLOOR`] free and that figure has grown by [`TRIM_STEP`] since its
//! lowest point after the last trim: when load has ended and memory was let go, not
//! on every tick of an idle or a steady process. A cache that empties over several
//! ticks (entries expire at different times) gets a trim for each step. Before the
//! first trim the low is zero (a process starts with nothing free), so the first tick
//! that sees the floor trims, even when the load it follows ended before any tick.
//!
//! Only glibc has these calls; on other targets [`Heap::tick`] does nothing.

/// Free bytes the allocator must hold before the housekeeping trims.
pub const TRIM_FLOOR: usize = 8 << 20;
/// Growth of the free bytes since their low after the last trim that trims again.
pub const TRIM_STEP: usize = 4 << 20;

/// Decides when to trim from the allocator's free bytes seen at each tick.
#[derive(Debug, Clone)]
pub struct TrimPolicy {
    floor: usize,
    step: usize,
    /// The lowest free figure since the last trim (zero before the first).
    low: usize,
}

impl TrimPolicy {
    pub fn new(floor: usize, step: usize) -> Self {
        Self {
            floor,
            step,
            low: 0,
        }
    }

    /// Takes the free bytes seen now; true when they are at least the floor and
    /// have grown by the step above their lowest point since the last trim.
    pub fn should_trim(&mut self, free: usize) -> bool {
        self.low = self.low.min(free);
        free >= self.floor && free - self.low >= self.step
    }

    /// Records the free bytes after a trim: growth is counted from here on.
    /// (Pages a trim hands back inside an arena still count as free there, so the
    /// figure after a trim is usually close to the one before.)
    pub fn trimmed(&mut self, free_after: usize) {
        self.low = free_after;
    }
}

/// The process's heap as the housekeeping sees it.
#[derive(Debug)]
pub struct Heap {
    policy: TrimPolicy,
}

impl Default for Heap {
    fn default() -> Self {
        Self {
            policy: TrimPolicy::new(TRIM_FLOOR, TRIM_STEP),
        }
    }
}

impl Heap {
    /// One housekeeping tick: exports the allocator's free bytes and trims when
    /// the policy says so.
    pub fn tick(&mut self) {
        let Some(free) = sys::free_bytes() else {
            return;
        };
        metrics::gauge!("till_heap_free_bytes").set(free as f64);
        if !self.policy.should_trim(free) {
            return;
        }
        let before = crate::metrics::resident_bytes();
        sys::trim();
        let after = sys::free_bytes().unwrap_or(free);
        self.policy.trimmed(after);
        metrics::counter!("till_heap_trims_total").increment(1);
        tracing::debug!(
            free_bytes = free,
            resident_before = before,
            resident_after = crate::metrics::resident_bytes(),
            "returned free heap to the system"
        );
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod sys {
    /// Bytes the allocator holds free across all arenas (`mallinfo2().fordblks`).
    pub fn free_bytes() -> Option<usize> {
        // SAFETY: mallinfo2 takes no arguments and only reads the allocator's
        // bookkeeping under its own locks (glibc 2.33 and later).
        let info = unsafe { libc::mallinfo2() };
        Some(info.fordblks)
    }

    pub fn trim() {
        // SAFETY: malloc_trim(0) takes each arena's lock and releases free pages;
        // it never touches memory in use.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod sys {
    pub fn free_bytes() -> Option<usize> {
        None
    }

    pub fn trim() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn trims_once_free_bytes_are_above_the_floor_and_grew_by_a_step() {
        let mut p = TrimPolicy::new(8 * MIB, 4 * MIB);
        assert!(!p.should_trim(MIB), "under the floor");
        assert!(!p.should_trim(7 * MIB), "still under the floor");
        assert!(
            p.should_trim(9 * MIB),
            "over the floor, nothing trimmed yet"
        );
        p.trimmed(9 * MIB);
        assert!(!p.should_trim(12 * MIB), "3 MiB of growth is under a step");
        assert!(
            p.should_trim(13 * MIB),
            "a step above the figure after the trim"
        );
    }

    /// A rebuild that ends before the first tick leaves 30 MiB free: the first tick
    /// trims (it used to take that figure as its low and never trim).
    #[test]
    fn a_first_figure_over_the_floor_trims() {
        let mut p = TrimPolicy::new(8 * MIB, 4 * MIB);
        assert!(p.should_trim(30 * MIB));
    }

    #[test]
    fn a_dip_under_load_lowers_the_low() {
        let mut p = TrimPolicy::new(8 * MIB, 4 * MIB);
        assert!(p.should_trim(10 * MIB));
        p.trimmed(10 * MIB);
        assert!(
            !p.should_trim(13 * MIB),
            "3 MiB above the figure after the trim"
        );
        assert!(!p.should_trim(9 * MIB), "memory reused");
        assert!(p.should_trim(13 * MIB), "4 MiB above the new low");
    }

    #[test]
    fn growth_counts_from_the_figure_after_the_last_trim() {
        let mut p = TrimPolicy::new(8 * MIB, 4 * MIB);
        assert!(!p.should_trim(2 * MIB));
        assert!(p.should_trim(14 * MIB), "half the cache expired");
        p.trimmed(14 * MIB);
        assert!(
            !p.should_trim(14 * MIB),
            "idle after a trim does not trim again"
        );
        assert!(!p.should_trim(17 * MIB));
        assert!(p.should_trim(20 * MIB), "the rest of the cache expired");
    }

    #[test]
    fn a_steady_figure_trims_once() {
        let mut p = TrimPolicy::new(8 * MIB, 4 * MIB);
        assert!(p.should_trim(40 * MIB));
        p.trimmed(40 * MIB);
        for _ in 0..100 {
            assert!(!p.should_trim(40 * MIB));
        }
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freeing_a_large_heap_shows_as_free_bytes_and_a_trim_returns_it() {
        // Many blocks below the mmap threshold so that they live in an arena; every
        // 64th stays alive, as a long-lived cache entry would, so that the freed
        // space cannot merge into the arena's top and be returned by free itself.
        let mut blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![(i % 251) as u8; 8192]).collect();
        let before = sys::free_bytes().unwrap_or(0);
        let kept: Vec<Vec<u8>> = blocks.drain(..).step_by(64).collect();
        drop(blocks);
        let freed = sys::free_bytes().unwrap_or(0);
        assert!(
            freed >= before + 16 * MIB,
            "31 MiB freed should show as free bytes: {before} -> {freed}"
        );
        let resident = crate::metrics::resident_bytes().unwrap_or(0);
        sys::trim();
        let trimmed = crate::metrics::resident_bytes().unwrap_or(u64::MAX);
        assert!(
            trimmed.saturating_add(16 * MIB as u64) <= resident,
            "a trim hands the freed pages back: resident {resident} -> {trimmed}"
        );
        assert_eq!(kept.len(), 64);
    }
}
