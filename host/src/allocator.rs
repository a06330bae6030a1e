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
//!
//! A thread that asks for it ([`cache_this_thread`]: the receiving
//! threads) keeps the blocks it frees in a small cache per size class and
//! hands them out again last in, first out. mimalloc allocates from a
//! page's free list and puts freed blocks on a second list it takes up
//! only when the first runs out, so a page's blocks come round in turn:
//! with a message's allocations spread over some twenty size classes,
//! that is more memory than the core's cache holds, and 85% of the
//! samples in mimalloc's allocation fast path fell on its read of the
//! next free block, 50–80 ns an allocation (issue #15). The block a
//! thread freed last is the one most likely still in its cache.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::ptr;

use libmimalloc_sys as mi;

/// The alignment every block of `mi_malloc` has, from 16 bytes up
/// (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

/// mimalloc as the global allocator (`#[global_allocator]` in `main.rs`).
pub struct Mimalloc;

/// Sizes up to this are rounded up to a multiple of [`SMALL_STEP`].
const SMALL_MAX: usize = 256;
const SMALL_STEP: usize = 16;
/// Sizes above [`SMALL_MAX`] up to this (a message's copy, its index) are
/// rounded up to a multiple of [`LARGE_STEP`]; larger ones are not cached.
const CACHED_MAX: usize = 2048;
const LARGE_STEP: usize = 128;
const CLASSES: usize = SMALL_MAX / SMALL_STEP + (CACHED_MAX - SMALL_MAX) / LARGE_STEP;
/// Blocks a thread keeps per size class: 30 classes of up to 2 KiB, at
/// most ~150 KiB a thread when every class is full.
const DEPTH: usize = 8;

/// The size class of a plain block of `size` bytes, and the size every
/// block of that class is made with, so that any of them serves any size
/// of the class: `None` for sizes not cached.
#[inline(always)]
fn class(size: usize) -> Option<(usize, usize)> {
    if size == 0 {
        None
    } else if size <= SMALL_MAX {
        let steps = size.div_ceil(SMALL_STEP);
        Some((steps - 1, steps * SMALL_STEP))
    } else if size <= CACHED_MAX {
        let steps = (size - SMALL_MAX).div_ceil(LARGE_STEP);
        Some((
            SMALL_MAX / SMALL_STEP - 1 + steps,
            SMALL_MAX + steps * LARGE_STEP,
        ))
    } else {
        None
    }
}

/// The size class of a block of `size` bytes aligned to `align`, when a
/// plain block of its class has that alignment.
#[inline(always)]
fn cached_class(size: usize, align: usize) -> Option<(usize, usize)> {
    if align <= PLAIN_ALIGN {
        class(size)
    } else {
        None
    }
}

/// One thread's freed blocks, by size class, last freed on top.
struct Cache {
    on: bool,
    len: [u8; CLASSES],
    blocks: [[*mut u8; DEPTH]; CLASSES],
}

impl Cache {
    const OFF: Cache = Cache {
        on: false,
        len: [0; CLASSES],
        blocks: [[ptr::null_mut(); DEPTH]; CLASSES],
    };

    #[inline(always)]
    fn pop(&mut self, class: usize) -> *mut u8 {
        match self.len[class] {
            0 => ptr::null_mut(),
            n => {
                self.len[class] = n - 1;
                self.blocks[class][n as usize - 1]
            }
        }
    }

    /// Keeps `block`, or false when the thread does not cache or the
    /// class is full.
    #[inline(always)]
    fn push(&mut self, class: usize, block: *mut u8) -> bool {
        let n = self.len[class] as usize;
        if !self.on || n == DEPTH {
            return false;
        }
        self.blocks[class][n] = block;
        self.len[class] = n as u8 + 1;
        true
    }

    /// Gives every kept block back to mimalloc and stops keeping them.
    fn flush(&mut self) {
        self.on = false;
        for class in 0..CLASSES {
            loop {
                let block = self.pop(class);
                if block.is_null() {
                    break;
                }
                // SAFETY: a kept block is a live mimalloc block nobody else holds.
                unsafe { mi::mi_free(block.cast()) };
            }
        }
    }
}

thread_local! {
    /// No destructor of its own (the allocator may run while threads end);
    /// [`FLUSH`] empties it when a caching thread ends.
    static CACHE: UnsafeCell<Cache> = const { UnsafeCell::new(Cache::OFF) };
    static FLUSH: Flush = const { Flush };
}

struct Flush;

impl Drop for Flush {
    fn drop(&mut self) {
        // SAFETY: this thread's cache; no reference to it outlives a call.
        CACHE.with(|cache| unsafe { (*cache.get()).flush() });
    }
}

/// Makes the calling thread keep the blocks it frees for its next
/// allocations (see the module's documentation); they go back to mimalloc
/// when the thread ends.
pub fn cache_this_thread() {
    FLUSH.with(|_| {});
    // SAFETY: this thread's cache; no reference to it outlives a call.
    CACHE.with(|cache| unsafe { (*cache.get()).on = true });
}

/// A block of this thread's cache for `class`, or null.
#[inline(always)]
fn cached(class: usize) -> *mut u8 {
    // SAFETY: this thread's cache; no reference to it outlives the call.
    CACHE.with(|cache| unsafe { (*cache.get()).pop(class) })
}

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
        if let Some((class, size)) = cached_class(layout.size(), layout.align()) {
            let block = cached(class);
            if !block.is_null() {
                return block;
            }
            // SAFETY: any size.
            return unsafe { mi::mi_malloc(size).cast() };
        }
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
        if cached_class(layout.size(), layout.align()).is_some() {
            // A block of a cached class is 2 KiB at most: zeroed here,
            // whether it was kept or new.
            // SAFETY: the caller's layout, as `GlobalAlloc::alloc` asks.
            let block = unsafe { self.alloc(layout) };
            if !block.is_null() {
                // SAFETY: the block holds at least `layout.size()` bytes.
                unsafe { block.write_bytes(0, layout.size()) };
            }
            return block;
        }
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
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some((class, _)) = cached_class(layout.size(), layout.align()) {
            // SAFETY: this thread's cache; no reference to it outlives the call.
            if CACHE.with(|cache| unsafe { (*cache.get()).push(class, ptr) }) {
                return;
            }
        }
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_class = cached_class(new_size, layout.align());
        let old_class = cached_class(layout.size(), layout.align());
        if let (Some((old, _)), Some((new, _))) = (old_class, new_class) {
            if old == new {
                return ptr; // the block was made for any size of its class
            }
        }
        // A block of a cached class is made with its class's size, as
        // `alloc` makes it.
        let new_size = new_class.map_or(new_size, |(_, size)| size);
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

    extern "C" {
        fn mi_usable_size(p: *const c_void) -> usize;
    }

    /// Blocks this thread's cache holds, every class together.
    fn kept() -> usize {
        // SAFETY: this thread's cache, read within the call.
        CACHE.with(|cache| unsafe { (*cache.get()).len.iter().map(|&n| n as usize).sum() })
    }

    /// Gives this thread's kept blocks back and stops keeping them.
    fn flush() {
        // SAFETY: this thread's cache.
        CACHE.with(|cache| unsafe { (*cache.get()).flush() });
    }

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).expect("layout")
    }

    /// A caching thread's next allocation of a class is the block of that
    /// class it freed last; any size of the class fits the block.
    #[test]
    fn a_caching_thread_gets_back_the_block_it_freed_last() {
        let a = Mimalloc;
        cache_this_thread();
        // SAFETY: each block is freed once, with a layout of its class.
        unsafe {
            let first = a.alloc(layout(100));
            let second = a.alloc(layout(100));
            a.dealloc(first, layout(100));
            a.dealloc(second, layout(100));
            assert_eq!(kept(), 2);
            // 97 and 112 bytes are of the class of 100 (97..=112).
            let again = a.alloc(layout(112));
            assert_eq!(again, second, "last freed, first out");
            again.write_bytes(0x5a, 112);
            let zeroed = a.alloc_zeroed(layout(97));
            assert_eq!(zeroed, first);
            assert!((0..97).all(|i| *zeroed.add(i) == 0), "zeroed");
            // Another class does not take them.
            let other = a.alloc(layout(113));
            assert!(other != first && other != second);
            a.dealloc(other, layout(113));
            a.dealloc(again, layout(112));
            a.dealloc(zeroed, layout(97));
        }
        flush();
        assert_eq!(kept(), 0);
    }

    /// A class keeps `DEPTH` blocks at most; the rest go back to mimalloc.
    #[test]
    fn a_class_keeps_a_bounded_number_of_blocks() {
        let a = Mimalloc;
        cache_this_thread();
        // SAFETY: each block is freed once, with its layout.
        unsafe {
            let blocks: Vec<*mut u8> = (0..DEPTH + 5).map(|_| a.alloc(layout(40))).collect();
            for block in blocks {
                a.dealloc(block, layout(40));
            }
        }
        assert_eq!(kept(), DEPTH);
        flush();
    }

    /// A thread that did not ask keeps nothing.
    #[test]
    fn a_thread_that_did_not_ask_keeps_nothing() {
        std::thread::spawn(|| {
            let a = Mimalloc;
            // SAFETY: freed once, with its layout.
            unsafe {
                let block = a.alloc(layout(64));
                a.dealloc(block, layout(64));
            }
            assert_eq!(kept(), 0);
        })
        .join()
        .expect("thread");
    }

    /// Every block of a cached class is made with the class's size, so
    /// that a cached block serves the largest size of its class; a
    /// realloc within the class keeps the block.
    #[test]
    fn blocks_of_a_class_hold_its_largest_size() {
        let a = Mimalloc;
        for size in 1..=CACHED_MAX + 1 {
            // SAFETY: non-zero sizes, each block freed once with its layout.
            unsafe {
                let block = a.alloc(layout(size));
                let usable = mi_usable_size(block.cast());
                if let Some((_, class_size)) = class(size) {
                    assert!(
                        usable >= class_size,
                        "{size} bytes: {usable} < {class_size}"
                    );
                    let grown = a.realloc(block, layout(size), class_size);
                    assert_eq!(grown, block, "{size} bytes grown within the class");
                    a.dealloc(grown, layout(class_size));
                } else {
                    a.dealloc(block, layout(size));
                }
            }
        }
        assert_eq!(class(256), Some((15, 256)));
        assert_eq!(class(257), Some((16, 384)));
        assert_eq!(class(CACHED_MAX), Some((CLASSES - 1, CACHED_MAX)));
    }

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
