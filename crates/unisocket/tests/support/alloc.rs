//! A global allocator that counts: the bytes in use, their peak since
//! [`reset_peak`], and the allocations. A test binary that measures declares
//! it as its own:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: Counting = Counting;
//! ```
//!
//! Standalone, so that a binary that must not run the codec's tests beside
//! its measurements can include it alone with `#[path]`.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};

/// The system allocator, counting.
pub struct Counting;

/// Bytes allocated and not yet freed.
static IN_USE: AtomicIsize = AtomicIsize::new(0);
/// The most `IN_USE` has been since [`reset_peak`].
static PEAK: AtomicIsize = AtomicIsize::new(0);
/// Allocations, and reallocations (a buffer that grows or shrinks).
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

/// Bytes allocated and not yet freed.
pub fn in_use() -> isize {
    IN_USE.load(Relaxed)
}

/// The most bytes in use at once since the last [`reset_peak`].
pub fn peak() -> isize {
    PEAK.load(Relaxed)
}

/// Starts the peak again from the bytes in use now, and returns them.
pub fn reset_peak() -> isize {
    let now = in_use();
    PEAK.store(now, Relaxed);
    now
}

/// Allocations and reallocations so far.
pub fn allocations() -> usize {
    ALLOCATIONS.load(Relaxed)
}

fn grew(bytes: isize) {
    let now = IN_USE.fetch_add(bytes, Relaxed) + bytes;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; the counters are
// only updated after it succeeded.
#[allow(
    unsafe_code,
    reason = "a global allocator is an unsafe trait: tests measure the heap the client uses and its allocations"
)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size() as isize);
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size() as isize);
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size() as isize, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            grew(new_size as isize - layout.size() as isize);
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        p
    }
}
