//! In-process store for a single instance (the quick start's default). Three independent
//! tables, each behind its own lock, so that unrelated work never waits on each other: the
//! revocation set (read on every protected request: a read lock), the refresh sessions
//! (written on login and refresh) and the login-failure counters (written by every failed
//! login: a password spray must not slow token checks). Entries expire on read and a
//! periodic sweep drops the rest. Its epoch is the moment it was made: a restart forgets every
//! revocation, so every token issued before it is refused (a restart logs everyone out).

use super::{ttl_secs, Attempt, AttemptRequest, RevocationState, RotateRequest, Rotation};
use crate::clock::{now_millis, now_secs};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct RefreshState {
    current: String,
    previous: Option<String>,
    rotated_at_ms: u64,
    current_token: Option<String>,
    expires: u64,
}

impl RefreshState {
    pub(super) fn expires(&self) -> u64 {
        self.expires
    }
}

/// Revoked sessions (sid -> expiry) and user cut-offs (user -> (cut-off, expiry)).
#[derive(Debug, Default)]
struct Revocations {
    sessions: HashMap<String, u64>,
    cutoffs: HashMap<String, (u64, u64)>,
}

#[derive(Debug)]
pub struct MemoryStore {
    /// The second this state began (see the module head); settable for the mirror and the
    /// file store, whose state began elsewhere.
    epoch: AtomicU64,
    revocations: RwLock<Revocations>,
    refresh: Mutex<HashMap<String, RefreshState>>,
    /// Failure counters: key -> (count, expiry).
    failures: Mutex<HashMap<String, (u64, u64)>>,
    /// Single-use marks (`Store::mark_once`): key -> expiry.
    once: Mutex<HashMap<String, u64>>,
    /// Links (`Store::link`): key -> (member, expiry), at most `MAX_LINKS` per key.
    links: Mutex<HashMap<String, Vec<(String, u64)>>>,
    /// What the sessions page shows of each session (`session_info`).
    pub(super) session_info: super::session_info::SessionTable,
}

/// Members one link key holds at most (the oldest go first).
pub const MAX_LINKS: usize = 64;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn expiry(ttl: Duration) -> u64 {
    now_secs() + ttl_secs(ttl)
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            epoch: AtomicU64::new(now_secs()),
            revocations: RwLock::default(),
            refresh: Mutex::default(),
            failures: Mutex::default(),
            once: Mutex::default(),
            links: Mutex::default(),
            session_info: Default::default(),
        }
    }
}

impl MemoryStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Revocations> {
        self.revocations
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Revocations> {
        self.revocations
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn check(&self, sid: &str, sub: &str) -> RevocationState {
        let now = now_secs();
        let r = self.read();
        RevocationState {
            session_revoked: r.sessions.get(sid).is_some_and(|exp| *exp > now),
            user_cutoff: r
                .cutoffs
                .get(sub)
                .filter(|(_, exp)| *exp > now)
                .map(|(c, _)| *c),
            epoch: self.epoch(),
        }
    }

    /// The expiry of session `sid`'s revocation, if revoked (what the file store persists).
    pub(super) fn session_revocation(&self, sid: &str) -> Option<u64> {
        self.read().sessions.get(sid).copied()
    }

    /// The user's (cut-off, expiry), if any.
    pub(super) fn cutoff_entry(&self, sub: &str) -> Option<(u64, u64)> {
        self.read().cutoffs.get(sub).copied()
    }

    /// The refresh-rotation state of session `sid`, if any.
    pub(super) fn refresh_state(&self, sid: &str) -> Option<RefreshState> {
        lock(&self.refresh).get(sid).cloned()
    }

    /// Loads what the file store kept (expired entries are dropped).
    pub(super) fn load(
        &self,
        sessions: Vec<(String, u64)>,
        cutoffs: Vec<(String, (u64, u64))>,
        refresh: Vec<(String, RefreshState)>,
    ) {
        let now = now_secs();
        {
            let mut r = self.write();
            r.sessions = sessions.into_iter().filter(|(_, e)| *e > now).collect();
            r.cutoffs = cutoffs.into_iter().filter(|(_, (_, e))| *e > now).collect();
        }
        *lock(&self.refresh) = refresh
            .into_iter()
            .filter(|(_, s)| s.expires > now)
            .collect();
    }

    pub fn revoke_session(&self, sid: &str, ttl: Duration) {
        let exp = expiry(ttl);
        self.write().sessions.insert(sid.to_owned(), exp);
        lock(&self.refresh).remove(sid);
    }

    /// Sets the user's cut-off to `cutoff`, or one past the old one when that is not earlier
    /// (it never moves back, and always covers tokens issued after the old one); returns it.
    pub fn revoke_user(&self, sub: &str, cutoff: u64, ttl: Duration) -> u64 {
        let exp = expiry(ttl);
        let now = now_secs();
        let mut r = self.write();
        let old = r
            .cutoffs
            .get(sub)
            .filter(|(_, e)| *e > now)
            .map(|(c, _)| *c);
        let new = match old {
            Some(old) if old >= cutoff => old + 1,
            _ => cutoff,
        };
        r.cutoffs.insert(sub.to_owned(), (new, exp));
        new
    }

    pub fn start_session(&self, sid: &str, jti: &str, ttl: Duration) {
        let state = RefreshState {
            current: jti.to_owned(),
            previous: None,
            rotated_at_ms: 0,
            current_token: None,
            expires: expiry(ttl),
        };
        lock(&self.refresh).insert(sid.to_owned(), state);
    }

    pub fn rotate(&self, r: &RotateRequest<'_>) -> Rotation {
        let now = now_secs();
        let now_ms = now_millis();
        let grace_ms = u64::try_from(r.grace.as_millis()).unwrap_or(u64::MAX);
        let mut sessions = lock(&self.refresh);
        let Some(state) = sessions.get_mut(r.sid).filter(|s| s.expires > now) else {
            return Rotation::Unknown;
        };
        if state.current == r.presented_jti {
            state.previous = Some(std::mem::replace(&mut state.current, r.new_jti.to_owned()));
            state.rotated_at_ms = now_ms;
            state.current_token = Some(r.new_token.to_owned());
            state.expires = expiry(r.ttl);
            return Rotation::Rotated;
        }
        let replay = grace_ms > 0
            && state.previous.as_deref() == Some(r.presented_jti)
            && now_ms.saturating_sub(state.rotated_at_ms) <= grace_ms;
        if replay {
            if let Some(tok) = &state.current_token {
                return Rotation::Replay(tok.clone());
            }
        }
        sessions.remove(r.sid);
        drop(sessions);
        self.write()
            .sessions
            .insert(r.sid.to_owned(), expiry(r.ttl));
        Rotation::Reused
    }

    pub fn failures(&self, key: &str) -> (u64, u64) {
        let now = now_secs();
        match lock(&self.failures).get(key) {
            Some((n, exp)) if *exp > now => (*n, exp - now),
            _ => (0, 0),
        }
    }

    /// Checks both counters and counts the attempt on both, in one critical section.
    pub fn reserve_attempt(&self, a: &AttemptRequest<'_>) -> Attempt {
        let now = now_secs();
        let window = ttl_secs(a.window);
        let mut failures = lock(&self.failures);
        for (key, limit) in a.counters.iter().zip(a.limits) {
            if let Some((n, exp)) = failures.get(*key).filter(|(_, exp)| *exp > now) {
                if *n >= limit {
                    return Attempt::Refused {
                        retry_after: exp - now,
                    };
                }
            }
        }
        for key in a.counters {
            let entry = failures.entry(key.to_owned()).or_insert((0, now + window));
            if entry.1 <= now {
                *entry = (0, now + window);
            }
            entry.0 += 1;
        }
        Attempt::Reserved
    }

    pub fn forget_attempt(&self, key: &str) {
        if let Some(entry) = lock(&self.failures).get_mut(key) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }

    pub fn clear_failures(&self, key: &str) {
        lock(&self.failures).remove(key);
    }

    /// Replaces the revoked sessions and user cut-offs wholesale (the mirror's resync).
    /// Lifetimes are in seconds, as Redis reports them.
    pub fn replace_revocations(
        &self,
        sessions: Vec<(String, u64)>,
        cutoffs: Vec<(String, u64, u64)>,
    ) {
        let now = now_secs();
        let fresh = Revocations {
            sessions: sessions
                .into_iter()
                .map(|(s, ttl)| (s, now + ttl.max(1)))
                .collect(),
            cutoffs: cutoffs
                .into_iter()
                .map(|(u, c, ttl)| (u, (c, now + ttl.max(1))))
                .collect(),
        };
        *self.write() = fresh;
    }

    /// Drops expired entries; run periodically so memory stays bounded by live sessions.
    pub fn sweep(&self) {
        let now = now_secs();
        {
            let mut r = self.write();
            r.sessions.retain(|_, exp| *exp > now);
            r.cutoffs.retain(|_, (_, exp)| *exp > now);
        }
        lock(&self.refresh).retain(|_, s| s.expires > now);
        lock(&self.failures).retain(|_, (_, exp)| *exp > now);
        lock(&self.once).retain(|_, exp| *exp > now);
        lock(&self.links).retain(|_, members| {
            members.retain(|(_, exp)| *exp > now);
            !members.is_empty()
        });
        self.session_info.sweep();
    }

    /// True the first time `key` is marked within `ttl`.
    pub fn mark_once(&self, key: &str, ttl: Duration) -> bool {
        let now = now_secs();
        let mut once = lock(&self.once);
        match once.get(key) {
            Some(exp) if *exp > now => false,
            _ => {
                once.insert(key.to_owned(), expiry(ttl));
                true
            }
        }
    }

    /// Adds `member` to the links of `key` for `ttl` (a member linked again lives on).
    pub fn link(&self, key: &str, member: &str, ttl: Duration) {
        let now = now_secs();
        let exp = expiry(ttl);
        let mut links = lock(&self.links);
        let members = links.entry(key.to_owned()).or_default();
        members.retain(|(m, e)| *e > now && m != member);
        if members.len() >= MAX_LINKS {
            members.remove(0);
        }
        members.push((member.to_owned(), exp));
    }

    /// The live members linked to `key`.
    pub fn linked(&self, key: &str) -> Vec<String> {
        let now = now_secs();
        lock(&self.links)
            .get(key)
            .map(|m| {
                m.iter()
                    .filter(|(_, e)| *e > now)
                    .map(|(m, _)| m.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every live (member, expiry) of `key` (the file store persists them).
    pub(super) fn link_entries(&self, key: &str) -> Vec<(String, u64)> {
        let now = now_secs();
        lock(&self.links)
            .get(key)
            .map(|m| m.iter().filter(|(_, e)| *e > now).cloned().collect())
            .unwrap_or_default()
    }

    /// Loads persisted links (the file store at open).
    pub(super) fn load_links(&self, key: String, members: Vec<(String, u64)>) {
        lock(&self.links).insert(key, members);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn req<'a>(presented: &'a str, new: &'a str, grace: Duration) -> RotateRequest<'a> {
        RotateRequest {
            sub: "u",
            sid: "s",
            presented_jti: presented,
            new_jti: new,
            new_token: new,
            grace,
            ttl: MINUTE,
        }
    }

    #[test]
    fn rotation_then_reuse_revokes_the_session() {
        let m = MemoryStore::new();
        m.start_session("s", "j1", MINUTE);
        assert_eq!(
            m.rotate(&req("j1", "j2", Duration::ZERO)),
            Rotation::Rotated
        );
        assert_eq!(m.rotate(&req("j1", "j3", Duration::ZERO)), Rotation::Reused);
        assert!(m.check("s", "u").session_revoked);
        assert_eq!(
            m.rotate(&req("j2", "j4", Duration::ZERO)),
            Rotation::Unknown
        );
    }

    #[test]
    fn replay_within_grace_gets_the_current_token() {
        let m = MemoryStore::new();
        m.start_session("s", "j1", MINUTE);
        assert_eq!(m.rotate(&req("j1", "j2", MINUTE)), Rotation::Rotated);
        assert_eq!(
            m.rotate(&req("j1", "x", MINUTE)),
            Rotation::Replay("j2".to_owned())
        );
        // Outside the grace (here: none at all) the same replay kills the session.
        assert_eq!(m.rotate(&req("j1", "x", Duration::ZERO)), Rotation::Reused);
    }

    #[test]
    fn failure_counter_counts_and_clears() {
        let m = MemoryStore::new();
        let a = AttemptRequest {
            counters: ["k", "ip"],
            limits: [2, 100],
            window: MINUTE,
        };
        assert_eq!(m.reserve_attempt(&a), Attempt::Reserved);
        assert_eq!(m.reserve_attempt(&a), Attempt::Reserved);
        let (n, ttl) = m.failures("k");
        assert_eq!(n, 2);
        assert!(ttl > 0 && ttl <= 60);
        assert!(
            matches!(m.reserve_attempt(&a), Attempt::Refused { retry_after } if retry_after > 0)
        );
        assert_eq!(m.failures("ip").0, 2, "a refused attempt counts nowhere");
        m.forget_attempt("ip");
        assert_eq!(m.failures("ip").0, 1);
        m.clear_failures("k");
        assert_eq!(m.failures("k"), (0, 0));
        assert_eq!(m.reserve_attempt(&a), Attempt::Reserved);
    }

    /// Regression: after a restart of the memory store, a token revoked before it got 200.
    #[test]
    fn tokens_from_before_the_epoch_are_refused() {
        let m = MemoryStore::new();
        let epoch = m.epoch();
        assert!(epoch >= now_secs().saturating_sub(5));
        let state = m.check("s", "u");
        assert_eq!(
            state.refusal(epoch - 1),
            Some(super::super::Refusal::BeforeEpoch)
        );
        assert_eq!(state.refusal(epoch), None);
        m.revoke_session("s", MINUTE);
        assert_eq!(
            m.check("s", "u").refusal(epoch + 10),
            Some(super::super::Refusal::Revoked)
        );
    }

    #[test]
    fn user_cutoff_never_moves_back() {
        let m = MemoryStore::new();
        m.set_epoch(0);
        assert_eq!(m.revoke_user("u", 100, MINUTE), 100);
        // A second cut-off at or before the first one moves it one past (it must cover what
        // was issued after the first).
        assert_eq!(m.revoke_user("u", 50, MINUTE), 101);
        assert_eq!(m.check("s", "u").user_cutoff, Some(101));
        assert!(m.check("s", "u").revokes(101));
        assert!(!m.check("s", "u").revokes(102));
        assert_eq!(m.revoke_user("u", 500, MINUTE), 500);
    }
}
