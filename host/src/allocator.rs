//! The heap allocator of the `wisp` binary: mimalloc, asked for plain
//! blocks whenever the alignment is one a plain block already has.
//!
//! glibc's malloc and free were 6–9% of wisp's CPU per call
//! (`bench/bench.py --profile`); mimalloc's per-thread pages are cheaper
//! for the many short-lived allocations of a message's life. The
//! `mimalloc` crate's `GlobalAlloc` asks `mi_malloc_aligned` for every
//! block, whose fast path covers blocks of at most 1 KiB only: a message,
//! its serialized copy and its header index are larger, and each went
//! through the generic aligned path (over-allocate, then align), 26 times
//! per call. Every mimalloc block is aligned to 16 bytes (to its size
//! below that), as `std::alloc::System` assumes of `malloc`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every block of `mi_malloc` has, from 16 bytes up
/// (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

/// mimalloc as the global allocator (`#[global_allocator]` in `main.rs`).
pub struct Mimalloc;

/// Whether a plain block of `size` bytes has alignment `align`.
#[inline(always)]
fn is_plain(align: usize, size: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

/// A block of `size` bytes aligned to `align`: from `plain` (`mi_malloc`,
/// `mi_zalloc`) when a plain block of that size has that alignment, else
/// from `aligned`.
#[inline(always)]
unsafe fn block(
    size: usize,
    align: usize,
    plain: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    // SAFETY: mimalloc's allocation calls take any size and alignment.
    unsafe {
        if is_plain(align, size) {
            plain(size).cast()
        } else {
            aligned(size, align).cast()
        }
    }
}

// SAFETY: each method returns a block of mimalloc's with at least the
// size and alignment asked (a plain block where it has that alignment, an
// aligned one otherwise), or null; `mi_free` and `mi_realloc*` take any
// block of mimalloc's, however it was made.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` asks.
        unsafe {
            block(
                layout.size(),
                layout.align(),
                mi::mi_malloc,
                mi::mi_malloc_aligned,
            )
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        unsafe {
            block(
                layout.size(),
                layout.align(),
                mi::mi_zalloc,
                mi::mi_zalloc_aligned,
            )
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new
        // block keeps `layout.align()` either way.
        unsafe {
            if is_plain(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks have the alignment asked for, whichever path made them, and
    /// keep it and their contents through a realloc.
    #[test]
    fn blocks_are_aligned_as_asked() {
        let a = Mimalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 3, 8, 15, 16, 24, 100, 1024, 1500, 70_000] {
                let layout = Layout::from_size_align(size, align).expect("layout");
                // SAFETY: non-zero sizes; each block is freed with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "alloc {size} bytes, align {align}");
                    p.write_bytes(0xab, size);
                    let grown = a.realloc(p, layout, size * 3);
                    assert!(!grown.is_null());
                    assert_eq!(grown as usize % align, 0, "realloc {size}, align {align}");
                    assert!((0..size).all(|i| *grown.add(i) == 0xab), "contents kept");
                    a.dealloc(
                        grown,
                        Layout::from_size_align(size * 3, align).expect("layout"),
                    );
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {size}, align {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0), "zeroed");
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
