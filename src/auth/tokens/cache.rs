//! The verified-token cache: a token's signature is checked once, not on every request.
//!
//! Keyed by a digest of the whole token, never the token itself: the first 16 bytes of its
//! SHA-256. A lookup only ever hits an entry whose token verified, so a forgery would need a
//! second preimage of a token the gateway signed (with a `jti` of 128 random bits in it):
//! 2^128 work for 128 bits, where collisions (2^64) do not help, since the attacker chooses
//! neither side's text. An entry is used only until the token's `exp` (+ leeway, checked by
//! the caller); type and revocation are checked on every request outside the cache; the
//! cache belongs to one key set, so a reload that drops a key drops its entries with it.
//!
//! Bounded, with O(1) insertion and eviction: each shard is a fixed array of slots that the
//! CLOCK hand walks (an expired entry, or one not used since the hand last passed, is
//! replaced in place; a used one gets a second chance), and a table of slot numbers keyed by
//! the digest. A slot is 64 bytes (the key and a packed `Entry`); what a user's tokens share
//! (subject, roles, the roles' header value) is interned, and freed with its last token.
//!
//! A full shard admits a newcomer only if it has been asked for more often than the entry it
//! would evict (TinyLFU: a small count-min sketch of recent lookups, halved as it fills, made
//! when the shard first fills), or if that entry was already spared twice without being used
//! in between (a token nobody asks for any more, one replaced by a refresh, keeps a high count
//! for a while). More active tokens than the cache holds then keep a stable part of them
//! cached instead of each evicting the next: cycled through 200,000 tokens, CLOCK alone hits
//! none of them, with admission about half. A shard that has room, the usual case, neither
//! counts nor judges.

use super::claims::{Claims, Grants, GrantsKey, Principal};
use super::entry::Entry;
use super::intern::{Interner, PrincipalKey};
use super::sketch::Sketch;
use super::TokenType;
use hashbrown::HashTable;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

/// A cache key: the first half of the token's SHA-256.
pub(super) type TokenKey = [u8; 16];

pub(super) fn key_of(token: &str) -> TokenKey {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 16];
    for (k, d) in key.iter_mut().zip(digest.as_ref()) {
        *k = *d;
    }
    key
}

/// The key is a digest already: its first 8 bytes are the table's hash, a later one picks the
/// shard (so that a shard's keys do not share the bits its table indexes by).
fn table_hash(key: &TokenKey) -> u64 {
    let [a, b, c, d, e, f, g, h, ..] = *key;
    u64::from_le_bytes([a, b, c, d, e, f, g, h])
}

const CACHE_SHARDS: usize = 16;

pub(super) struct VerifiedCache {
    shards: Box<[RwLock<CacheShard>]>,
    per_shard: usize,
    principals: Interner<Principal>,
    grants: Interner<Grants>,
}

impl VerifiedCache {
    pub(super) fn new(capacity: usize) -> Self {
        VerifiedCache {
            shards: (0..CACHE_SHARDS)
                .map(|_| RwLock::new(CacheShard::default()))
                .collect(),
            // Slot numbers are u32.
            per_shard: capacity.div_ceil(CACHE_SHARDS).clamp(1, u32::MAX as usize),
            principals: Interner::new(),
            grants: Interner::new(),
        }
    }

    fn shard(&self, key: &TokenKey) -> &RwLock<CacheShard> {
        &self.shards[usize::from(key[15]) % CACHE_SHARDS]
    }

    pub(super) fn get(&self, key: &TokenKey) -> Option<Claims> {
        let shard = self.shard(key).read().unwrap_or_else(|p| p.into_inner());
        shard.get(key)
    }

    /// The shared principal of `sub` with these grants: the one cached tokens already hold,
    /// or a new one.
    pub(super) fn principal(&self, sub: &str, grants: GrantsKey<'_>) -> Arc<Principal> {
        let grants = self.grants.get_or_insert(grants, || Grants::new(grants));
        let key = PrincipalKey {
            sub,
            grants: Arc::as_ptr(&grants) as usize,
        };
        self.principals
            .get_or_insert(key, || Principal::new(sub, grants.clone()))
    }

    /// Caches `claims` (whose principal came from `principal`) under `key`; claims that do
    /// not pack exactly are not cached.
    pub(super) fn insert(&self, key: TokenKey, claims: Claims, now: u64) {
        let (entry, typ) = match Entry::pack(claims) {
            Ok(packed) => packed,
            Err(claims) => return self.release(claims.into_principal()),
        };
        let replaced = {
            let mut shard = self.shard(&key).write().unwrap_or_else(|p| p.into_inner());
            shard.insert(key, entry, typ, now, self.per_shard, Admission::Frequency)
        };
        if let Some(old) = replaced {
            self.release(old.into_user());
        }
    }

    /// Lets a user's interned record (and its grants) go when this was its last token.
    fn release(&self, user: Arc<Principal>) {
        if let Some(principal) = self.principals.release(user) {
            self.grants.release(principal.into_grants());
        }
    }
}

/// One cached verification: 64 bytes.
struct Slot {
    key: TokenKey,
    entry: Entry,
}

/// A slot's flag byte: CLOCK's reference bit (set when used since the hand last passed)...
const USED: u8 = 1;
/// ...the token's type, which fits no padding in the slot...
const REFRESH: u8 = 2;
/// ...and how often admission spared the entry (its count beat a newcomer's) since it was
/// last used: two bits, cleared when the hand finds it used.
const SPARED: u8 = 0b1100;
const SPARED_ONE: u8 = 0b0100;
/// An entry spared this often without being used in between goes to the next newcomer,
/// however high its count: the count of a token nobody asks for any more (one replaced by
/// a refresh, a user gone) would otherwise keep the newcomers out until the sketch halves.
/// An entry of a loop through more tokens than the cache holds is used between the hand's
/// visits and keeps its place.
const SPARED_ENOUGH: u8 = 2 * SPARED_ONE;

/// A shard: the slots, their flag bytes (kept apart from the slots so that a hit writes no
/// slot), the index by key, and, once full, how often keys were asked for.
#[derive(Default)]
struct CacheShard {
    index: HashTable<u32>,
    slots: Vec<Slot>,
    flags: Vec<AtomicU8>,
    hand: usize,
    sketch: Option<Box<Sketch>>,
}

/// Whether a full shard judges a newcomer against its victim.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// TinyLFU: admitted only if asked for more often than the victim.
    Frequency,
    /// Always admitted (CLOCK alone; for tests of the eviction order).
    #[cfg(test)]
    Always,
}

impl CacheShard {
    fn find(&self, key: &TokenKey) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(table_hash(key), |&i| {
                slots.get(i as usize).is_some_and(|s| s.key == *key)
            })
            .map(|&i| i as usize)
    }

    fn get(&self, key: &TokenKey) -> Option<Claims> {
        if let Some(sketch) = &self.sketch {
            sketch.record(key);
        }
        let i = self.find(key)?;
        let flags = self.flags.get(i)?;
        // A relaxed store under the read lock: hits never take the write lock, and the load
        // first keeps the line shared when the bit is already set. The type bit changes only
        // under the write lock.
        let seen = flags.load(Ordering::Relaxed);
        if seen & USED == 0 {
            flags.store(seen | USED, Ordering::Relaxed);
        }
        let typ = if seen & REFRESH != 0 {
            TokenType::Refresh
        } else {
            TokenType::Access
        };
        self.slots.get(i)?.entry.unpack(typ)
    }

    /// Caches `entry` under `key`; returns the entry no longer cached: the one it replaced
    /// (the same key's, or the one evicted to make room), or `entry` itself when a full shard
    /// did not admit it.
    fn insert(
        &mut self,
        key: TokenKey,
        entry: Entry,
        typ: TokenType,
        now: u64,
        capacity: usize,
        admission: Admission,
    ) -> Option<Entry> {
        let flags = match typ {
            TokenType::Access => 0,
            TokenType::Refresh => REFRESH,
        };
        if let Some(i) = self.find(&key) {
            let (slot, old_flags) = (self.slots.get_mut(i)?, self.flags.get(i)?);
            old_flags.store(flags, Ordering::Relaxed);
            return Some(std::mem::replace(&mut slot.entry, entry));
        }
        let slot = Slot { key, entry };
        let len = self.slots.len();
        if len < capacity {
            if len == self.slots.capacity() {
                // Grown in steps up to exactly the capacity, never past it.
                let more = len.max(16).min(capacity - len);
                self.slots.reserve_exact(more);
                self.flags.reserve_exact(more);
            }
            self.slots.push(slot);
            self.flags.push(AtomicU8::new(flags));
            self.index_slot(len);
            if len + 1 == capacity && admission == Admission::Frequency && self.sketch.is_none() {
                self.sketch = Some(Box::new(Sketch::new(capacity)));
            }
            return None;
        }
        let i = self.victim(now);
        if let (Admission::Frequency, Some(sketch)) = (admission, &self.sketch) {
            // The lookup that missed was counted by `get`; an expired victim goes anyway,
            // and so does one spared enough times without being used.
            let victim = self.slots.get(i);
            let victim_flags = self.flags.get(i);
            let spared = victim_flags.map_or(0, |f| f.load(Ordering::Relaxed) & SPARED);
            let keep = spared < SPARED_ENOUGH
                && victim.is_some_and(|v| {
                    v.entry.exp() >= now && sketch.estimate(&v.key) >= sketch.estimate(&slot.key)
                });
            if keep {
                if let Some(f) = victim_flags {
                    f.fetch_add(SPARED_ONE, Ordering::Relaxed);
                }
                return Some(slot.entry);
            }
        }
        let old = std::mem::replace(self.slots.get_mut(i)?, slot);
        if let Ok(entry) = self
            .index
            .find_entry(table_hash(&old.key), |&j| j as usize == i)
        {
            entry.remove();
        }
        if let Some(f) = self.flags.get(i) {
            f.store(flags, Ordering::Relaxed);
        }
        self.index_slot(i);
        Some(old.entry)
    }

    fn index_slot(&mut self, i: usize) {
        let CacheShard { index, slots, .. } = self;
        let Some(slot) = slots.get(i) else {
            return;
        };
        let rehash = |&j: &u32| slots.get(j as usize).map_or(0, |s| table_hash(&s.key));
        index.insert_unique(table_hash(&slot.key), i as u32, rehash);
    }

    /// CLOCK: the first slot from the hand on that is expired or was not used since the hand
    /// last passed, clearing the bits it passes. O(1) amortized: each pass clears what it
    /// passes, so within two passes some slot qualifies. A scan for the best victim on every
    /// insert made a gateway with more active users than the cache holds a third as fast.
    fn victim(&mut self, now: u64) -> usize {
        let n = self.slots.len().max(1);
        for _ in 0..=2 * n {
            let i = self.hand % n;
            self.hand = (i + 1) % n;
            let expired = self.slots.get(i).is_some_and(|s| s.entry.exp() < now);
            // Used since the hand last passed: a second chance, and its spared count
            // starts again. (The shard is write-locked: no `get` sets a bit meanwhile.)
            let used = self.flags.get(i).is_some_and(|f| {
                let seen = f.load(Ordering::Relaxed);
                if seen & USED != 0 {
                    f.store(seen & !(USED | SPARED), Ordering::Relaxed);
                }
                seen & USED != 0
            });
            if expired || !used {
                return i;
            }
        }
        self.hand
    }
}

#[cfg(test)]
mod tests {
    use super::super::sketch::MOST;
    use super::*;

    /// An id as the gateway makes them (22 base64url characters), so that entries pack.
    const ID: &str = "AAAAAAAAAAAAAAAAAAAAAA";
    /// The latest `exp` an entry holds.
    const FOREVER: u64 = u32::MAX as u64;

    fn claims(cache: &VerifiedCache, sub: &str, exp: u64) -> Claims {
        let roles = ["user".to_owned()];
        let grants = GrantsKey {
            roles: Some(&roles),
            idp: None,
            amr: None,
        };
        let user = cache.principal(sub, grants);
        Claims::new(user, 0, exp, ID, ID, TokenType::Access)
    }

    fn total(cache: &VerifiedCache) -> usize {
        cache
            .shards
            .iter()
            .map(|s| s.read().map_or(0, |m| m.slots.len()))
            .sum()
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = VerifiedCache::new(32);
        for i in 0..10_000 {
            let c = claims(&cache, "u", FOREVER);
            cache.insert(key_of(&format!("token-{i}")), c, 0);
        }
        assert!(total(&cache) <= 32 + CACHE_SHARDS, "{}", total(&cache));
        // Eviction replaces single entries, never a whole shard: every shard is still full.
        assert!(total(&cache) >= 32, "{}", total(&cache));
        // One principal for one user, however many tokens came and went.
        assert_eq!(cache.principals.len(), 1);
    }

    /// A token whose claims do not pack is verified every time, and leaves no user behind.
    #[test]
    fn claims_that_do_not_pack_are_not_cached() {
        let cache = VerifiedCache::new(64);
        let c = claims(&cache, "u", u64::MAX);
        cache.insert(key_of("t"), c, 0);
        assert!(cache.get(&key_of("t")).is_none());
        assert_eq!((total(&cache), cache.principals.len()), (0, 0));
    }

    /// The type travels in the flag byte: a refresh token comes back a refresh token, also
    /// after its reference bit was set and cleared.
    #[test]
    fn cached_claims_keep_their_type() {
        let cache = VerifiedCache::new(CACHE_SHARDS);
        for (name, typ) in [("a", TokenType::Access), ("r", TokenType::Refresh)] {
            let c = claims(&cache, name, FOREVER);
            let c = Claims::new(c.into_principal(), 7, FOREVER, ID, ID, typ);
            cache.insert(key_of(name), c.clone(), 0);
            for _ in 0..2 {
                assert_eq!(cache.get(&key_of(name)), Some(c.clone()));
            }
            let mut shard = cache
                .shard(&key_of(name))
                .write()
                .unwrap_or_else(|p| p.into_inner());
            shard.victim(0);
            drop(shard);
            assert_eq!(cache.get(&key_of(name)).map(|c| c.typ), Some(typ));
        }
    }

    /// CLOCK: an entry used since the hand last passed survives one more round; an unused one
    /// goes first; an expired one goes whatever its bit; a new entry takes the victim's slot,
    /// the one the hand reaches last.
    #[test]
    fn eviction_order_gives_used_entries_a_second_chance() {
        let cache = VerifiedCache::new(3 * CACHE_SHARDS);
        let mut shard = CacheShard::default();
        let k = |name: &str| {
            let mut key = [0u8; 16];
            key[0] = name.as_bytes()[0];
            key
        };
        let insert = |shard: &mut CacheShard, name: &str, exp: u64, now: u64| {
            let Ok((entry, typ)) = Entry::pack(claims(&cache, name, exp)) else {
                panic!("does not pack");
            };
            shard
                .insert(k(name), entry, typ, now, 3, Admission::Always)
                .map(|e| e.into_user().sub().to_owned())
        };
        for name in ["a", "b", "c"] {
            assert_eq!(insert(&mut shard, name, 100, 50), None);
        }
        assert!(shard.get(&k("a")).is_some());
        // a is passed (bit cleared), b goes.
        assert_eq!(insert(&mut shard, "d", 100, 50).as_deref(), Some("b"));
        // c (unused) goes before a, which was passed already.
        assert_eq!(insert(&mut shard, "e", 100, 50).as_deref(), Some("c"));
        // Used again, and expired: it goes first all the same.
        assert!(shard.get(&k("a")).is_some());
        assert!(shard.get(&k("d")).is_some() && shard.get(&k("e")).is_some());
        assert_eq!(insert(&mut shard, "f", 100, 1000).as_deref(), Some("a"));
        // Slots f, d, e with the hand at d, both used: each gets its second chance and f
        // goes; then d, its chance spent.
        for n in ["d", "e"] {
            assert!(shard.get(&k(n)).is_some());
        }
        assert_eq!(insert(&mut shard, "g", 100, 50).as_deref(), Some("f"));
        assert_eq!(insert(&mut shard, "h", 100, 50).as_deref(), Some("d"));
        for n in ["e", "g", "h"] {
            assert!(shard.get(&k(n)).is_some(), "{n}");
        }
        assert!(shard.get(&k("a")).is_none() && shard.get(&k("f")).is_none());
    }

    /// What `Tokens::verify` does: a lookup, then on a miss the verified claims inserted.
    /// True on a hit.
    fn lookup(cache: &VerifiedCache, token: &str, exp: u64, now: u64) -> bool {
        let key = key_of(token);
        if cache.get(&key).is_some() {
            return true;
        }
        cache.insert(key, claims(cache, "u", exp), now);
        false
    }

    /// More active tokens than the cache holds, asked for in turn (the worst case for any
    /// recency policy: each is evicted just before it comes back): a full shard admits no
    /// newcomer asked for no more often than its victim, so about half stay cached and hit.
    /// CLOCK alone (every newcomer admitted) hits none.
    #[test]
    fn more_tokens_than_the_cache_holds_keep_a_stable_part_cached() {
        let capacity = 100 * CACHE_SHARDS;
        let cache = VerifiedCache::new(capacity);
        let tokens: Vec<String> = (0..2 * capacity).map(|i| format!("token-{i}")).collect();
        let mut hits = 0;
        let rounds = 8;
        for round in 0..rounds {
            for t in &tokens {
                let hit = lookup(&cache, t, FOREVER, 0);
                if round >= rounds / 2 && hit {
                    hits += 1;
                }
            }
        }
        let ratio = hits as f64 / (tokens.len() * rounds / 2) as f64;
        assert!(ratio >= 0.35, "hit ratio {ratio:.2}");
        assert!(total(&cache) >= capacity * 9 / 10, "{}", total(&cache));
        assert_eq!(
            cache.principals.len(),
            1,
            "rejected newcomers release their user"
        );

        // The same cycle with every newcomer admitted: no hit at all.
        let mut shard = CacheShard::default();
        let mut clock_hits = 0;
        for round in 0..4 {
            for t in tokens.iter().take(200) {
                let key = key_of(t);
                if shard.get(&key).is_some() {
                    clock_hits += usize::from(round > 0);
                    continue;
                }
                let Ok((entry, typ)) = Entry::pack(claims(&cache, "u", FOREVER)) else {
                    panic!("does not pack");
                };
                shard.insert(key, entry, typ, 0, 100, Admission::Always);
            }
        }
        assert_eq!(clock_hits, 0);
    }

    /// Admission does not keep new users out: in a cache full of tokens nobody asks for any
    /// more, a new token is cached at its first lookup once the old ones' counts have been
    /// halved away, and at once when the victim has expired; one asked for again and again
    /// gets in even against victims still warm.
    #[test]
    fn newcomers_get_in_past_idle_warm_and_expired_entries() {
        let capacity = 100 * CACHE_SHARDS;
        let cache = VerifiedCache::new(capacity);
        let old: Vec<String> = (0..capacity).map(|i| format!("old-{i}")).collect();
        for t in &old {
            lookup(&cache, t, 100, 0);
        }
        assert!(total(&cache) >= capacity * 9 / 10);
        // Warm: each old token asked for twice more.
        for _ in 0..2 {
            for t in &old {
                lookup(&cache, t, 100, 0);
            }
        }
        // A new token asked for repeatedly gets in within a few lookups.
        let mut tries = 0;
        while !lookup(&cache, "hot-newcomer", 100, 0) {
            tries += 1;
            assert!(tries < 20, "never admitted");
        }
        // Expired victims are replaced by newcomers at their first lookup.
        let admitted = (0..50)
            .filter(|i| {
                let t = format!("new-{i}");
                lookup(&cache, &t, 10_000, 200);
                cache.get(&key_of(&t)).is_some()
            })
            .count();
        assert_eq!(admitted, 50);
        // The old tokens were asked for a few times, then not for twelve times the
        // capacity's lookups: their counts are halved away, and most new users get in at
        // their first lookup (the sketch's noise from the lookups between decides), all
        // within three.
        let warmed = |times: u8| {
            let cache = VerifiedCache::new(capacity);
            for _ in 0..times {
                for t in &old {
                    lookup(&cache, t, FOREVER, 0);
                }
            }
            cache
        };
        let cache = warmed(2);
        for i in 0..capacity * 12 {
            cache.get(&key_of(&format!("stranger-{i}")));
        }
        let first = (0..50)
            .filter(|i| {
                let t = format!("later-{i}");
                lookup(&cache, &t, FOREVER, 0);
                cache.get(&key_of(&t)).is_some()
            })
            .count();
        assert!(first >= 30, "{first} of 50 cached at their first lookup");
        for i in 0..50 {
            let t = format!("later-{i}");
            assert!(
                (0..3).any(|_| lookup(&cache, &t, FOREVER, 0)),
                "{t} not cached"
            );
        }
        // Against victims as popular as a count goes, a newcomer asked for again and again
        // gets in once its count passes theirs.
        let cache = warmed(MOST + 2);
        for i in 0..20 {
            let t = format!("persistent-{i}");
            let tries = (0..=MOST + 2).find(|_| lookup(&cache, &t, FOREVER, 0));
            assert!(tries.is_some_and(|n| n <= MOST + 2), "{t}: {tries:?}");
        }
    }

    /// Tokens asked for often and then never again (replaced by a refresh, their users
    /// gone) keep high counts until the sketch halves them. They do not keep the newcomers
    /// out that long: an entry spared twice by admission without being used in between goes
    /// to the next newcomer, whatever its count.
    #[test]
    fn tokens_nobody_asks_for_any_more_give_way_to_newcomers() {
        let capacity = 100 * CACHE_SHARDS;
        let cache = VerifiedCache::new(capacity);
        let old: Vec<String> = (0..capacity).map(|i| format!("old-{i}")).collect();
        for _ in 0..usize::from(MOST) + 2 {
            for t in &old {
                lookup(&cache, t, FOREVER, 0);
            }
        }
        let cached = |tokens: &[String]| {
            tokens
                .iter()
                .filter(|t| {
                    let key = key_of(t);
                    let shard = cache.shard(&key).read().unwrap_or_else(|p| p.into_inner());
                    shard.find(&key).is_some()
                })
                .count()
        };
        assert!(cached(&old) >= capacity * 9 / 10, "{}", cached(&old));
        // New tokens, each asked for once: fewer lookups than would halve the old counts
        // away, and too few to raise a newcomer's count to theirs.
        let new: Vec<String> = (0..4 * capacity).map(|i| format!("new-{i}")).collect();
        for t in &new {
            lookup(&cache, t, FOREVER, 0);
        }
        let (old_left, new_in) = (cached(&old), cached(&new));
        // (Admission by count alone leaves 381 old tokens here, and caches 1,219 new.)
        assert!(
            old_left <= capacity / 20,
            "{old_left} old tokens still cached"
        );
        assert!(new_in >= capacity * 19 / 20, "{new_in} new tokens cached");
    }

    #[test]
    fn tokens_differing_anywhere_are_told_apart() {
        let cache = VerifiedCache::new(64);
        let tail = ".sig-sig-sig-sig-sig";
        let (a, b) = (format!("aaa{tail}"), format!("bbb{tail}"));
        cache.insert(key_of(&a), claims(&cache, "a", FOREVER), 0);
        cache.insert(key_of(&b), claims(&cache, "b", FOREVER), 0);
        let sub = |t: &str| cache.get(&key_of(t)).map(|c| c.sub().to_owned());
        assert_eq!(sub(&a).as_deref(), Some("a"));
        assert_eq!(sub(&b).as_deref(), Some("b"));
        assert_eq!(sub(&format!("ccc{tail}")), None);
        assert_eq!(sub(""), None);
    }

    #[test]
    fn evicted_users_leave_the_intern_tables() {
        let cache = VerifiedCache::new(CACHE_SHARDS);
        for i in 0..1000 {
            let c = claims(&cache, &format!("user-{i}"), FOREVER);
            cache.insert(key_of(&format!("token-{i}")), c, 0);
        }
        assert!(
            cache.principals.len() <= CACHE_SHARDS,
            "{}",
            cache.principals.len()
        );
        assert_eq!(cache.grants.len(), 1);
    }

    /// glibc's chunk for an allocation of `n` bytes (x86_64: 8 bytes of header, 16-byte
    /// steps, 32 at least).
    fn chunk(n: usize) -> usize {
        ((n + 8 + 15) & !15).max(32)
    }

    /// Bytes per cached token and per user, and in all, of a full cache at the default
    /// capacity after eviction churn, with `tokens_per_user` tokens of each user.
    fn measure(tokens_per_user: usize) -> (usize, usize, usize) {
        let capacity = 100_000;
        let cache = VerifiedCache::new(capacity);
        let users = capacity / tokens_per_user;
        for i in 0..capacity * 3 / 2 {
            let user = format!("user-{:06}", i / tokens_per_user % users);
            cache.insert(
                key_of(&format!("token-{i}")),
                claims(&cache, &user, FOREVER),
                0,
            );
        }
        let (tokens, index) = cache.shards.iter().fold((0, 0), |(n, b), s| {
            let s = s.read().unwrap_or_else(|p| p.into_inner());
            (
                n + s.slots.len(),
                b + super::super::intern::table_bytes(&s.index),
            )
        });
        let users = cache.principals.len();
        assert!(
            tokens >= capacity * 9 / 10 && tokens <= capacity,
            "{tokens}"
        );
        let per_token =
            std::mem::size_of::<Slot>() + std::mem::size_of::<AtomicU8>() + index / tokens;
        // The subject ("user-000000") is inline in the principal's one allocation.
        let per_user =
            chunk(16 + std::mem::size_of::<Principal>()) + cache.principals.table_bytes() / users;
        let total = tokens * per_token + users * per_user;
        eprintln!(
            "{tokens} tokens of {users} users: {per_token} B per token + {per_user} B per user \
             = {} B per token, {:.1} MiB",
            total / tokens,
            total as f64 / f64::from(1 << 20)
        );
        (per_token, per_user, total)
    }

    /// Memory per cached token, pinned: the slot, its flag byte and its share of the index
    /// (~76 B), plus the user's share of the principal (its one allocation and its intern
    /// table bucket, ~75 B). 100,000 tokens take ~9 MiB with 4 tokens per user (the last
    /// hour's 15-minute access tokens) and ~14.4 MiB with one token per user (150 B a token;
    /// it was 263 B with a `HeaderValue` per user and 8-byte times and 22-byte ids inline).
    /// bench/cache_memory.py measures the RSS.
    #[test]
    fn memory_per_entry_is_pinned() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        for (tokens_per_user, most) in [(4, 10), (1, 15)] {
            let (per_token, per_user, total) = measure(tokens_per_user);
            assert!(per_token <= 80, "{per_token} B per token");
            assert!(per_user <= 80, "{per_user} B per user");
            assert!(total <= most << 20, "{total} B");
        }
    }
}
