//! The guest's global allocator: free lists of small blocks in front of the system
//! allocator (wasi-libc's dlmalloc).
//!
//! A plugin step allocates a dozen small blocks decoding the state and frees them when it
//! replies; in a component every one of those is a call into dlmalloc, which was about a
//! fifth of a pass-through step. Here a small allocation pops a block of its size class
//! and a free pushes it back: a few instructions each. Freed small blocks are kept for
//! reuse rather than returned, so a plugin's memory is its high-water mark per class,
//! which the host's memory limit bounds like any other.
//!
//! Sound only where there is one thread: wasm32 without the atomics feature.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// Blocks up to this size go through the free lists.
const SMALL: usize = 1024;
/// Class `c` holds blocks of `(c + 1) * GRAIN` bytes.
const GRAIN: usize = 16;
const CLASSES: usize = SMALL / GRAIN;

/// Small-block free lists over [`System`].
pub(crate) struct Bins {
    heads: UnsafeCell<[*mut u8; CLASSES]>,
}

// SAFETY: only compiled for single-threaded wasm (see the module docs and the `cfg` on
// the static in lib.rs), where no two threads can reach `heads`.
unsafe impl Sync for Bins {}

impl Bins {
    pub(crate) const fn new() -> Bins {
        Bins {
            heads: UnsafeCell::new([ptr::null_mut(); CLASSES]),
        }
    }

    /// The class of a layout the free lists serve.
    #[inline]
    fn class(layout: Layout) -> Option<usize> {
        (layout.size() <= SMALL && layout.align() <= GRAIN && layout.size() != 0)
            .then(|| (layout.size() - 1) / GRAIN)
    }

    #[inline]
    fn block(class: usize) -> Layout {
        // SAFETY: a non-zero multiple of 16 with alignment 16 never overflows isize.
        unsafe { Layout::from_size_align_unchecked((class + 1) * GRAIN, GRAIN) }
    }
}

unsafe impl GlobalAlloc for Bins {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = Self::class(layout) else {
            // SAFETY: forwarded as given.
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: single-threaded (see `Sync`); a head is null or a freed block of this
        // class whose first word links to the next.
        unsafe {
            let heads = &mut *self.heads.get();
            let head = heads[class];
            if head.is_null() {
                System.alloc(Self::block(class))
            } else {
                heads[class] = *head.cast::<*mut u8>();
                head
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match Self::class(layout) {
            // SAFETY: `ptr` is a block of this class (allocated with the same layout), at
            // least 16 bytes and 16-aligned: room for the link.
            Some(class) => unsafe {
                let heads = &mut *self.heads.get();
                *ptr.cast::<*mut u8>() = heads[class];
                heads[class] = ptr;
            },
            // SAFETY: it came from `System` with this layout.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract; `new_size` is valid for `layout.align()`.
        unsafe {
            let new = Layout::from_size_align_unchecked(new_size, layout.align());
            match (Self::class(layout), Self::class(new)) {
                // Still fits its block.
                (Some(a), Some(b)) if a == b => ptr,
                (None, None) => System.realloc(ptr, layout, new_size),
                _ => {
                    let out = self.alloc(new);
                    if !out.is_null() {
                        ptr::copy_nonoverlapping(ptr, out, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    out
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A local `Bins`, used from the one test thread that owns it.

    #[test]
    fn a_freed_small_block_is_reused_by_its_class_only() {
        let bins = Bins::new();
        let l24 = Layout::from_size_align(24, 8).unwrap();
        let l40 = Layout::from_size_align(40, 8).unwrap();
        unsafe {
            let a = bins.alloc(l24);
            assert!(!a.is_null() && (a as usize).is_multiple_of(GRAIN));
            bins.dealloc(a, l24);
            // Another class does not get it; the same class does (17..=32 share one).
            let b = bins.alloc(l40);
            assert_ne!(a, b);
            let c = bins.alloc(Layout::from_size_align(32, 4).unwrap());
            assert_eq!(a, c);
            bins.dealloc(b, l40);
            bins.dealloc(c, Layout::from_size_align(32, 4).unwrap());
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_across_classes_and_sizes() {
        let bins = Bins::new();
        unsafe {
            let mut layout = Layout::from_size_align(10, 1).unwrap();
            let mut p = bins.alloc(layout);
            for i in 0..10 {
                *p.add(i) = i as u8;
            }
            // Within its block, through several classes, past the small limit, and back.
            for size in [16, 200, 1024, 5000, 40, 10] {
                let q = bins.realloc(p, layout, size);
                assert!(!q.is_null());
                if size == 16 {
                    assert_eq!(p, q, "16 bytes still fit the block");
                }
                for i in 0..10 {
                    assert_eq!(*q.add(i), i as u8, "after growing to {size}");
                }
                p = q;
                layout = Layout::from_size_align(size, 1).unwrap();
            }
            bins.dealloc(p, layout);
        }
    }

    #[test]
    fn large_and_over_aligned_blocks_go_to_the_system() {
        let bins = Bins::new();
        unsafe {
            for layout in [
                Layout::from_size_align(SMALL + 1, 8).unwrap(),
                Layout::from_size_align(64, 64).unwrap(),
            ] {
                let p = bins.alloc(layout);
                assert!(!p.is_null() && (p as usize).is_multiple_of(layout.align()));
                bins.dealloc(p, layout);
                assert!((*bins.heads.get()).iter().all(|h| h.is_null()));
            }
        }
    }
}
