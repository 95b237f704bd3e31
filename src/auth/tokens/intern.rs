//! Interning of what many cached tokens share (a user's `Principal`, a set of `Grants`): one
//! `Arc` per distinct value for as long as some cached token holds it. Taken only when a
//! token is admitted to or evicted from the cache (after a signature check), never on a hit.

use hashbrown::HashTable;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

/// A value that can be interned: looked up by a borrowed key without building the value.
pub(super) trait Interned {
    type Key<'a>: Hash
    where
        Self: 'a;
    fn key(&self) -> Self::Key<'_>;
    fn matches(&self, key: &Self::Key<'_>) -> bool;
}

const SHARDS: usize = 16;
/// A shard sweeps out values no token holds any more when it has grown to this many, then
/// at twice what survived (amortized O(1) per insert). Eviction releases most values at
/// once; the sweep catches the ones a request still held at that moment.
const MIN_SWEEP: usize = 64;

pub(super) struct Interner<T> {
    shards: Box<[Mutex<Shard<T>>]>,
    /// Keyed at random: the values come from tokens that verified, but subjects and role
    /// names are chosen by whoever manages users.
    hasher: RandomState,
}

struct Shard<T> {
    table: HashTable<Arc<T>>,
    sweep_at: usize,
}

impl<T: Interned> Interner<T> {
    pub(super) fn new() -> Self {
        Interner {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        table: HashTable::new(),
                        sweep_at: MIN_SWEEP,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard<T>> {
        // Bits the table does not use for its buckets (low) or tags (top 7).
        let i = (hash >> 40) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The interned value for `key`, made by `make` when there is none.
    pub(super) fn get_or_insert(&self, key: T::Key<'_>, make: impl FnOnce() -> T) -> Arc<T> {
        let hash = self.hasher.hash_one(&key);
        let mut shard = self.shard(hash);
        if let Some(found) = shard.table.find(hash, |t| t.matches(&key)) {
            return found.clone();
        }
        let made = Arc::new(make());
        let hasher = &self.hasher;
        shard
            .table
            .insert_unique(hash, made.clone(), |t| hasher.hash_one(t.key()));
        if shard.table.len() >= shard.sweep_at {
            shard.table.retain(|t| Arc::strong_count(t) > 1);
            shard.sweep_at = (2 * shard.table.len()).max(MIN_SWEEP);
        }
        made
    }

    /// Drops the table's reference when `value` was the last other one; returns the value
    /// itself then (for releasing what it holds in turn).
    pub(super) fn release(&self, value: Arc<T>) -> Option<T> {
        // The table's and ours, nobody else's: no token holds it any more. (A count read
        // stale only ever makes this keep a value, left to the next sweep.)
        if Arc::strong_count(&value) != 2 {
            return None;
        }
        let hash = self.hasher.hash_one(value.key());
        {
            let mut shard = self.shard(hash);
            if Arc::strong_count(&value) != 2 {
                return None;
            }
            let entry = shard
                .table
                .find_entry(hash, |t| Arc::ptr_eq(t, &value))
                .ok()?;
            entry.remove();
        }
        Arc::into_inner(value)
    }

    /// How many values are interned (for tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.table.len()))
            .sum()
    }

    /// Bytes of the tables themselves (buckets and control bytes), for the memory test.
    #[cfg(test)]
    pub(super) fn table_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| table_bytes(&s.table)))
            .sum()
    }
}

/// A hashbrown table's allocation: a bucket plus one control byte per bucket (and a group of
/// trailing control bytes); its item capacity is 7/8 of the buckets from 8 buckets up.
#[cfg(test)]
pub(super) fn table_bytes<T>(table: &HashTable<T>) -> usize {
    let cap = table.capacity();
    if cap == 0 {
        return 0;
    }
    let buckets = if cap < 8 {
        (cap + 1).next_power_of_two()
    } else {
        (cap * 8 / 7).next_power_of_two()
    };
    buckets * (std::mem::size_of::<T>() + 1) + 16
}

impl Interned for super::claims::Principal {
    type Key<'a> = PrincipalKey<'a>;

    fn key(&self) -> PrincipalKey<'_> {
        PrincipalKey {
            sub: self.sub(),
            grants: Arc::as_ptr(self.grants()) as usize,
        }
    }

    fn matches(&self, key: &PrincipalKey<'_>) -> bool {
        self.key() == *key
    }
}

/// A principal is its subject and its (interned, so compared by address) grants.
#[derive(PartialEq, Eq, Hash)]
pub(super) struct PrincipalKey<'a> {
    pub sub: &'a str,
    pub grants: usize,
}

impl Interned for super::claims::Grants {
    type Key<'a> = super::claims::GrantsKey<'a>;

    fn key(&self) -> Self::Key<'_> {
        super::claims::Grants::key(self)
    }

    fn matches(&self, key: &Self::Key<'_>) -> bool {
        super::claims::Grants::key(self) == *key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(PartialEq)]
    struct S(String);
    impl Interned for S {
        type Key<'a> = &'a str;
        fn key(&self) -> &str {
            &self.0
        }
        fn matches(&self, key: &&str) -> bool {
            self.0 == *key
        }
    }

    #[test]
    fn one_arc_per_value_released_with_its_last_holder() {
        let i = Interner::<S>::new();
        let a = i.get_or_insert("a", || S("a".into()));
        let a2 = i.get_or_insert("a", || S("other".into()));
        assert!(Arc::ptr_eq(&a, &a2));
        assert!(i.release(a).is_none(), "a2 still holds it");
        assert_eq!(i.len(), 1);
        assert!(i.release(a2).is_some_and(|s| s.0 == "a"));
        assert_eq!(i.len(), 0);
    }

    #[test]
    fn values_nobody_holds_are_swept_as_the_table_grows() {
        let i = Interner::<S>::new();
        for n in 0..100_000 {
            let s = n.to_string();
            drop(i.get_or_insert(&s, || S(s.clone())));
        }
        assert!(i.len() <= 2 * MIN_SWEEP * SHARDS, "{}", i.len());
    }
}
