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
