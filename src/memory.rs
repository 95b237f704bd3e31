//! The process's memory allocator, and giving freed memory back to the system.
//!
//! The binary allocates with mimalloc (`#[global_allocator]` in `main.rs`). With glibc's
//! malloc, allocation was 15% of a protected request's user time on the real CPU (`perf`):
//! a request's larger blocks (hyper's header slots, its read buffer, the request's future,
//! 3-8 KiB each) are beyond glibc's per-thread cache (1,032 bytes) and went through its bins
//! (`_int_malloc`, `unlink_chunk`, `malloc_consolidate`) every time. mimalloc serves them
//! from per-thread free lists; docs/benchmarks.md (session 12) has the figures.
//!
//! Both allocators keep freed memory for reuse. `give_back` hands it to the system: mimalloc's
//! (for the calling thread's heap, and whatever its arenas have waiting to be purged) and
//! glibc's (which the C libraries still use). It is called where a lot was just freed: after
//! the startup's dummy password hash (19 MiB with the default parameters), by a hashing
//! thread giving its argon2 memory back, and after many connections parked or closed
//! (`server::trim`).

/// The binary's allocator: mimalloc, called as C's `malloc` is whenever the alignment asked
/// for is one every block has anyway.
///
/// The `mimalloc` crate's own `GlobalAlloc` calls `mi_malloc_aligned` for every allocation.
/// Its fast path covers blocks up to 1 KiB only; a larger one (the read buffers, hyper's
/// header slots, the request's future: about five a request) went through mimalloc's
/// generic aligned path (`mi_theap_malloc_zero_aligned_at_generic`, then `_overalloc`) at
/// about 200 instructions each, where `mi_malloc` takes its size class's page directly.
/// The rule is the one Rust's `System` allocator applies to glibc's `malloc`.
pub struct Allocator;

/// The alignment mimalloc gives every block of at least this size (`MI_MAX_ALIGN_SIZE`;
/// 16 on the 64-bit targets built here). A smaller block is aligned to its size's class (8).
const MIN_ALIGN: usize = 16;

/// True when a plain allocation of `size` bytes is aligned to `align` already.
fn plain(size: usize, align: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

#[allow(unsafe_code)]
// SAFETY: every pointer handed out comes from mimalloc (plain or aligned; `mi_free` and
// `mi_realloc*` take either) and is freed or resized only there; the alignment asked for is
// honoured: by `plain`'s rule, else by the aligned calls.
unsafe impl std::alloc::GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if plain(layout.size(), layout.align()) {
            libmimalloc_sys::mi_malloc(layout.size()).cast()
        } else {
            libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if plain(layout.size(), layout.align()) {
            libmimalloc_sys::mi_zalloc(layout.size()).cast()
        } else {
            libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if plain(new_size, layout.align()) {
            libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
        } else {
            libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

/// Returns the allocators' free memory to the system, as far as the calling thread can.
#[allow(unsafe_code)]
pub fn give_back() {
    // SAFETY: `mi_collect` takes a flag and works on mimalloc's own structures (the calling
    // thread's heap, the arenas under their own locks); no pointer of ours is involved.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes a size (0: trim everything possible) and touches only the
    // allocator's own free lists, under its own locks; no pointer of ours is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    /// Every size and alignment a program asks for comes back aligned, zeroed when asked,
    /// and keeps its bytes through a resize either way (plain and aligned).
    #[test]
    #[allow(unsafe_code)]
    fn blocks_are_aligned_as_asked_and_keep_their_bytes() {
        let a = super::Allocator;
        for size in [
            1usize, 7, 8, 15, 16, 24, 100, 1024, 1025, 4224, 8192, 70_000,
        ] {
            for align in [1usize, 2, 8, 16, 32, 64, 128, 4096] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: a non-zero size; each block is used within its size and freed
                // once, with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "{size} {align}");
                    std::ptr::write_bytes(p, 0xa5, size);
                    let grown = a.realloc(p, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "{size} {align} grown");
                    assert!((0..size).all(|i| *grown.add(i) == 0xa5));
                    let shrunk = a.realloc(
                        grown,
                        Layout::from_size_align_unchecked(size * 3, align),
                        size / 2 + 1,
                    );
                    assert_eq!(shrunk as usize % align, 0, "{size} {align} shrunk");
                    assert!((0..size / 2 + 1).all(|i| *shrunk.add(i) == 0xa5));
                    a.dealloc(
                        shrunk,
                        Layout::from_size_align_unchecked(size / 2 + 1, align),
                    );
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "{size} {align} zeroed");
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }

    /// Runs whichever allocator the test binary has (the system's; mimalloc's heap is then
    /// empty): it must be safe to call at any time, from any thread, any number of times.
    #[test]
    fn give_back_is_safe_anywhere() {
        let big = vec![7u8; 4 << 20];
        drop(big);
        super::give_back();
        std::thread::spawn(super::give_back).join().unwrap();
        super::give_back();
    }
}
