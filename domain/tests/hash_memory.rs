//! Password hashing under a login storm reuses a fixed set of argon2 working-memory
//! areas instead of allocating 19 MiB per hash. Each fresh allocation used to land in
//! whichever thread's malloc arena ran it and stay there after it was freed, so a storm
//! took the process far past its memory limit; counting the allocations is the
//! deterministic form of that: a burst of hashes and verifications makes at most one
//! large allocation per concurrent hash, however many it runs.
//!
//! A test binary of its own: the counting allocator sees the whole process.

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use till_domain::passwords::{self, Password, MAX_CONCURRENT_HASHES};
use till_domain::types::Email;

/// Allocations at least this large are argon2 working memory (19 MiB); nothing else in
/// this process allocates a block of a mebibyte.
const LARGE: usize = 1 << 20;

struct Counting;

static LARGE_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator unchanged; counting is a
// relaxed atomic increment, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE {
            LARGE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE {
            LARGE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= LARGE && layout.size() < LARGE {
            LARGE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// 24 sign-ins (right, wrong and unknown-account passwords) and 8 new passwords, 32 at
/// once: every one answers correctly, and argon2's memory was allocated at most once per
/// concurrent hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_hashes_reuses_a_fixed_set_of_memory_areas() {
    let email = Email::parse("storm@example.com").unwrap();
    let password = Password::new_for("correct horse battery", &email).unwrap();
    let stored = passwords::hash(&password).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let stored = stored.clone();
        let email = email.clone();
        tasks.push(tokio::spawn(async move {
            match i % 4 {
                0 => passwords::verify("correct horse battery", Some(&stored)).await,
                1 => passwords::verify("wrong horse battery", Some(&stored))
                    .await
                    .map(|ok| !ok),
                2 => passwords::verify("correct horse battery", None)
                    .await
                    .map(|ok| !ok),
                _ => {
                    let new = Password::new_for(&format!("another password {i}"), &email)?;
                    let phc = passwords::hash(&new).await?;
                    passwords::verify(&format!("another password {i}"), Some(&phc)).await
                }
            }
        }));
    }
    for task in tasks {
        let answered = task.await.unwrap();
        assert!(
            matches!(answered, Ok(true)),
            "a hash answered wrongly: {answered:?}"
        );
    }
    let large = LARGE_ALLOCATIONS.load(Ordering::Relaxed);
    assert!(
        large <= MAX_CONCURRENT_HASHES,
        "{large} argon2 memory allocations for 41 hashes; at most {MAX_CONCURRENT_HASHES} \
         (one per concurrent hash) expected"
    );
}
