//! The token cache's frequency sketch (TinyLFU): how often each key was asked for lately,
//! for a full shard's admission (`cache.rs`).

use super::cache::TokenKey;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

/// Rows of the count-min sketch.
const DEPTH: usize = 2;
/// Counters saturate here (TinyLFU's 4-bit counters).
pub(super) const MOST: u8 = 15;

/// How often each key was asked for lately, approximately: a count-min sketch of byte
/// counters, `DEPTH` rows of a power of two at least the shard's capacity, indexed by
/// bits of the key (a digest already). Every counter is halved once the lookups counted reach
/// ten times the capacity, so that what was popular an hour ago does not keep today's users
/// out. Counts are relaxed atomics bumped under the shard's read lock: a lost bump under a
/// race only makes the estimate a little lower.
pub(super) struct Sketch {
    counters: Box<[AtomicU8]>,
    mask: usize,
    counted: AtomicU32,
    halve_at: u32,
}

impl Sketch {
    pub(super) fn new(capacity: usize) -> Sketch {
        let width = capacity.next_power_of_two().max(16);
        Sketch {
            counters: (0..width * DEPTH).map(|_| AtomicU8::new(0)).collect(),
            mask: width - 1,
            counted: AtomicU32::new(0),
            halve_at: u32::try_from(capacity.saturating_mul(10)).unwrap_or(u32::MAX),
        }
    }

    fn cells(&self, key: &TokenKey) -> [usize; DEPTH] {
        let [_, _, _, _, _, _, _, _, a, b, c, d, e, f, g, h] = *key;
        let x = u64::from_le_bytes([a, b, c, d, e, f, g, h]);
        let width = self.mask + 1;
        // Bytes 8-15 of the key, the half the table's hash does not use.
        [
            (x as usize) & self.mask,
            width + ((x >> 32) as usize & self.mask),
        ]
    }

    pub(super) fn record(&self, key: &TokenKey) {
        for i in self.cells(key) {
            if let Some(c) = self.counters.get(i) {
                let n = c.load(Ordering::Relaxed);
                if n < MOST {
                    c.store(n + 1, Ordering::Relaxed);
                }
            }
        }
        if self.counted.fetch_add(1, Ordering::Relaxed) + 1 >= self.halve_at {
            self.counted.store(0, Ordering::Relaxed);
            for c in self.counters.iter() {
                c.store(c.load(Ordering::Relaxed) / 2, Ordering::Relaxed);
            }
        }
    }

    pub(super) fn estimate(&self, key: &TokenKey) -> u8 {
        self.cells(key)
            .into_iter()
            .map(|i| {
                self.counters
                    .get(i)
                    .map_or(0, |c| c.load(Ordering::Relaxed))
            })
            .min()
            .unwrap_or(0)
    }
}
