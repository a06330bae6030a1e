//! A global allocator that counts heap allocations, for the benchmark
//! (`bench/run.sh` builds wisp once more with `--features
//! count-allocations` and prints allocations per call and per
//! registration). Not in the default build: every allocation pays an
//! atomic increment here.
//!
//! The count is exported as `wisp_allocations_total` in /metrics.

use std::alloc::{GlobalAlloc, Layout};

use crate::allocator::Mimalloc as System;
use std::sync::atomic::{AtomicU64, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The allocator of the serving build (mimalloc), counting every `alloc`, `alloc_zeroed` and
/// `realloc` (a `realloc` that grows in place is still a call into the
/// allocator, which is what the count is for).
pub struct Counting;

// SAFETY: every method forwards to mimalloc with the caller's arguments;
// the counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations since the process started.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}
