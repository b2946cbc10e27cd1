//! A global allocator that keeps absurd allocation requests from aborting
//! the process.
//!
//! Why: `kafka-protocol` 0.18 decodes an array by calling
//! `Vec::with_capacity(n)` with the element count `n` read from the wire,
//! before checking that the frame holds `n` elements (upstream PRs #152,
//! #161, #200 propose the fix). A 10-byte request declaring two billion
//! topics asks for hundreds of gigabytes; the system allocator refuses, and
//! Rust aborts the process — a remote crash. The decoder itself then fails
//! cleanly on the first missing element, so the allocation only has to
//! *succeed* without being *used*.
//!
//! How: requests of at least [`HUGE_BYTES`] are served by an anonymous
//! `mmap` with `MAP_NORESERVE`, which reserves address space without
//! committing memory; untouched pages cost nothing and are returned by
//! `munmap` when the vector is dropped. Everything else goes to the system
//! allocator. The broker never legitimately allocates anywhere near that
//! size (frames are capped at `max_request_bytes`).
//!
//! Limits: on a kernel with `vm.overcommit_memory=2` the kernel ignores
//! `MAP_NORESERVE` and such a request still fails.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// Allocations at least this large are reserved lazily with `mmap`.
pub const HUGE_BYTES: usize = 1 << 30;
const PAGE_BYTES: usize = 4096;

pub struct GuardedAlloc;

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE_BYTES && layout.align() <= PAGE_BYTES
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no
    // preconditions; failure is reported as MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p as *mut u8
    }
}

// SAFETY: every pointer handed out is either from `System` (and returned to
// it) or from `map` (and returned with `munmap` of the same size); which one
// is decided by `is_huge(layout)`, and callers pass the same layout back.
unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            // SAFETY: see `map`.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            // SAFETY: anonymous mappings are zero-filled.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            // SAFETY: `ptr` came from `map` with this size.
            unsafe { libc::munmap(ptr as *mut libc::c_void, layout.size()) };
        } else {
            // SAFETY: `ptr` came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        match (is_huge(&layout), is_huge(&new_layout)) {
            // SAFETY: both small: the system allocator owns `ptr`.
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: allocate, copy the common prefix, free the old
                // block; each step uses the matching allocator.
                unsafe {
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_allocation_is_reserved_not_committed() {
        let a = GuardedAlloc;
        // 512 GiB: far more than any test machine has.
        let layout = Layout::from_size_align(512 << 30, 8).unwrap();
        // SAFETY: the layout is non-zero; the block is freed with it below.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null(), "MAP_NORESERVE should reserve address space");
            *p = 7; // touching one page commits only that page
            assert_eq!(*p, 7);
            a.dealloc(p, layout);
        }
    }

    #[test]
    fn small_allocations_round_trip_through_realloc() {
        let a = GuardedAlloc;
        let layout = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: standard alloc/realloc/dealloc sequence with matching layouts.
        unsafe {
            let p = a.alloc(layout);
            *p = 42;
            let q = a.realloc(p, layout, 4096);
            assert_eq!(*q, 42);
            a.dealloc(q, Layout::from_size_align(4096, 8).unwrap());
        }
    }
}
