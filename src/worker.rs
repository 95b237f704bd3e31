//! Which per-core runtime the current thread runs: 0 for the first (the process's main
//! runtime), 1.. for the others (`server::cores`). Lets state that is cheapest kept per core
//! (the upstream connection pools' idle stacks) pick its part without a lookup.

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The current thread's runtime index.
pub fn index() -> usize {
    WORKER.with(Cell::get)
}

/// Marks the current thread as running per-core runtime `i`.
pub fn set_index(i: usize) {
    WORKER.with(|w| w.set(i));
}
