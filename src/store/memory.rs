//! In-process revocation store for a single instance (the quick start's default). Entries
//! expire on read and a sweep drops the rest; checks take a read lock only.

use super::{RevocationState, RotateRequest, Rotation};
use crate::auth::tokens::now_secs;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone)]
struct RefreshState {
    current: String,
    previous: Option<String>,
    rotated_at_ms: u64,
    current_token: Option<String>,
    expires: u64,
}

#[derive(Debug, Default)]
struct Inner {
    revoked_sessions: HashMap<String, u64>,
    cutoffs: HashMap<String, (u64, u64)>,
    refresh: HashMap<String, RefreshState>,
    failures: HashMap<String, (u64, u64)>,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

impl MemoryStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn read<T>(&self, f: impl FnOnce(&Inner) -> T) -> T {
        let guard = self.inner.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    fn write<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn check(&self, sid: &str, sub: &str) -> RevocationState {
        let now = now_secs();
        self.read(|i| RevocationState {
            session_revoked: i.revoked_sessions.get(sid).is_some_and(|exp| *exp > now),
            user_cutoff: i
                .cutoffs
                .get(sub)
                .filter(|(_, exp)| *exp > now)
                .map(|(c, _)| *c),
        })
    }

    pub fn revoke_session(&self, sid: &str, ttl: u64) {
        let exp = now_secs() + ttl.max(1);
        self.write(|i| {
            i.revoked_sessions.insert(sid.to_owned(), exp);
            i.refresh.remove(sid);
        });
    }

    pub fn revoke_user(&self, sub: &str, cutoff: u64, ttl: u64) {
        let exp = now_secs() + ttl.max(1);
        self.write(|i| {
            let entry = i.cutoffs.entry(sub.to_owned()).or_insert((cutoff, exp));
            *entry = (entry.0.max(cutoff), exp);
        });
    }

    pub fn start_session(&self, sid: &str, jti: &str, ttl: u64) {
        let state = RefreshState {
            current: jti.to_owned(),
            previous: None,
            rotated_at_ms: 0,
            current_token: None,
            expires: now_secs() + ttl.max(1),
        };
        self.write(|i| i.refresh.insert(sid.to_owned(), state));
    }

    pub fn rotate(&self, r: &RotateRequest<'_>) -> Rotation {
        let now = now_secs();
        self.write(|i| {
            let Some(state) = i.refresh.get_mut(r.sid).filter(|s| s.expires > now) else {
                return Rotation::Unknown;
            };
            if state.current == r.presented_jti {
                state.previous = Some(std::mem::replace(&mut state.current, r.new_jti.to_owned()));
                state.rotated_at_ms = r.now_ms;
                state.current_token = Some(r.new_token.to_owned());
                state.expires = now + r.ttl.max(1);
                return Rotation::Rotated;
            }
            let replay = r.grace_ms > 0
                && state.previous.as_deref() == Some(r.presented_jti)
                && r.now_ms.saturating_sub(state.rotated_at_ms) <= r.grace_ms;
            if replay {
                if let Some(tok) = &state.current_token {
                    return Rotation::Replay(tok.clone());
                }
            }
            i.refresh.remove(r.sid);
            i.revoked_sessions
                .insert(r.sid.to_owned(), now + r.ttl.max(1));
            Rotation::Reused
        })
    }

    pub fn failures(&self, key: &str) -> (u64, u64) {
        let now = now_secs();
        self.read(|i| match i.failures.get(key) {
            Some((n, exp)) if *exp > now => (*n, exp - now),
            _ => (0, 0),
        })
    }

    pub fn add_failure(&self, key: &str, window: u64) -> u64 {
        let now = now_secs();
        self.write(|i| {
            let entry = i
                .failures
                .entry(key.to_owned())
                .or_insert((0, now + window));
            if entry.1 <= now {
                *entry = (0, now + window);
            }
            entry.0 += 1;
            entry.0
        })
    }

    pub fn clear_failures(&self, key: &str) {
        self.write(|i| i.failures.remove(key));
    }

    /// Replaces the revoked sessions and user cut-offs wholesale (the mirror's resync).
    pub fn replace_revocations(
        &self,
        sessions: Vec<(String, u64)>,
        cutoffs: Vec<(String, u64, u64)>,
    ) {
        let now = now_secs();
        self.write(|i| {
            i.revoked_sessions = sessions
                .into_iter()
                .map(|(s, ttl)| (s, now + ttl.max(1)))
                .collect();
            i.cutoffs = cutoffs
                .into_iter()
                .map(|(u, c, ttl)| (u, (c, now + ttl.max(1))))
                .collect();
        });
    }

    /// Drops expired entries; run periodically so memory stays bounded by live sessions.
    pub fn sweep(&self) {
        let now = now_secs();
        self.write(|i| {
            i.revoked_sessions.retain(|_, exp| *exp > now);
            i.cutoffs.retain(|_, (_, exp)| *exp > now);
            i.refresh.retain(|_, s| s.expires > now);
            i.failures.retain(|_, (_, exp)| *exp > now);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(presented: &'a str, new: &'a str, now_ms: u64, grace_ms: u64) -> RotateRequest<'a> {
        RotateRequest {
            sid: "s",
            presented_jti: presented,
            new_jti: new,
            new_token: new,
            now_ms,
            grace_ms,
            ttl: 60,
        }
    }

    #[test]
    fn rotation_then_reuse_revokes_the_session() {
        let m = MemoryStore::new();
        m.start_session("s", "j1", 60);
        assert_eq!(m.rotate(&req("j1", "j2", 1000, 0)), Rotation::Rotated);
        assert_eq!(m.rotate(&req("j1", "j3", 1001, 0)), Rotation::Reused);
        assert!(m.check("s", "u").session_revoked);
        assert_eq!(m.rotate(&req("j2", "j4", 1002, 0)), Rotation::Unknown);
    }

    #[test]
    fn replay_within_grace_gets_the_current_token() {
        let m = MemoryStore::new();
        m.start_session("s", "j1", 60);
        assert_eq!(m.rotate(&req("j1", "j2", 1000, 500)), Rotation::Rotated);
        assert_eq!(
            m.rotate(&req("j1", "x", 1400, 500)),
            Rotation::Replay("j2".to_owned())
        );
        assert_eq!(m.rotate(&req("j1", "x", 1600, 500)), Rotation::Reused);
    }

    #[test]
    fn failure_counter_counts_and_clears() {
        let m = MemoryStore::new();
        assert_eq!(m.add_failure("k", 60), 1);
        assert_eq!(m.add_failure("k", 60), 2);
        let (n, ttl) = m.failures("k");
        assert_eq!(n, 2);
        assert!(ttl > 0 && ttl <= 60);
        m.clear_failures("k");
        assert_eq!(m.failures("k"), (0, 0));
    }

    #[test]
    fn user_cutoff_never_moves_back() {
        let m = MemoryStore::new();
        m.revoke_user("u", 100, 60);
        m.revoke_user("u", 50, 60);
        assert_eq!(m.check("s", "u").user_cutoff, Some(100));
        assert!(m.check("s", "u").revokes(100));
        assert!(!m.check("s", "u").revokes(101));
    }
}
