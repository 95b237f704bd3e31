//! The revocation store (revoked sessions, per-user cut-offs, refresh rotation, login failure
//! counters) behind one type with three backends: `memory` (one instance, forgets on restart),
//! `file` (one instance, durable: an embedded database) and `redis` (shared by replicas).
//! Every operation is bounded by `revocation.timeout`; past it the store is "down".
//!
//! Every store has an *epoch*: the moment its state began. A store that may have lost what it
//! knew (a restarted memory store, a Redis that lost its data) cannot tell a revoked token from
//! a good one, so tokens issued before its epoch are refused.

pub mod api_keys;
pub mod events;
mod file;
mod memory;
mod mirror;
mod redis;
mod redis_conn;
pub mod schema;
mod session_info;
mod user_factors;
pub mod users;

pub use self::file::FileStore;
pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;
pub use self::session_info::{SessionInfo, MAX_SESSIONS_PER_USER};

use crate::config::{RevocationBackend, RevocationConfig};
use crate::error::GatewayError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Why a store call failed. Every variant means "the store cannot answer now".
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the revocation store gave no answer within {0:?}")]
    Timeout(Duration),
    #[error("the revocation store is unavailable: {0}")]
    Unavailable(#[source] Arc<::redis::RedisError>),
    #[error("the revocation mirror is not in sync with Redis")]
    MirrorStale,
    #[error("the revocation store answered something unexpected: {0}")]
    Protocol(String),
    #[error("bad revocation store settings: {0}")]
    Settings(String),
    #[error("the revocation file store failed: {0}")]
    File(Arc<str>),
}

impl From<::redis::RedisError> for StoreError {
    fn from(e: ::redis::RedisError) -> Self {
        StoreError::Unavailable(Arc::new(e))
    }
}

/// A store that cannot answer is a 503 to the client (fail closed).
impl From<StoreError> for GatewayError {
    fn from(_: StoreError) -> Self {
        GatewayError::Unavailable("the revocation store is unavailable")
    }
}

/// What the store says about one token's session and user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RevocationState {
    pub session_revoked: bool,
    /// Tokens of this user issued at or before this second are revoked.
    pub user_cutoff: Option<u64>,
    /// The second the store's state began: tokens issued before it are refused.
    pub epoch: u64,
}

/// Why the store refuses a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its session was ended, or its user's cut-off covers it.
    Revoked,
    /// It was issued before the store's epoch (the store may have forgotten its revocation).
    BeforeEpoch,
}

impl RevocationState {
    pub fn refusal(&self, iat: u64) -> Option<Refusal> {
        if self.session_revoked || self.user_cutoff.is_some_and(|c| iat <= c) {
            Some(Refusal::Revoked)
        } else if iat < self.epoch {
            Some(Refusal::BeforeEpoch)
        } else {
            None
        }
    }

    pub fn revokes(&self, iat: u64) -> bool {
        self.refusal(iat).is_some()
    }
}

/// Outcome of presenting a refresh token for rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was current; the new one is now current.
    Rotated,
    /// A just-rotated token replayed within the grace: here is the session's current one.
    Replay(String),
    /// An old token came back: the session has been revoked.
    Reused,
    /// The store knows no such session (expired, revoked, or the store lost its data).
    Unknown,
}

#[derive(Clone)]
pub enum Store {
    Memory(Arc<MemoryStore>),
    File(Arc<FileStore>),
    Redis(Box<RedisStore>),
}

impl Store {
    pub fn new(cfg: &RevocationConfig) -> Result<Store, StoreError> {
        match &cfg.backend {
            RevocationBackend::Memory => Ok(Store::Memory(MemoryStore::new())),
            RevocationBackend::File(path) => FileStore::open(path).map(Store::File),
            RevocationBackend::Redis(settings) => {
                let mirror = cfg.mirror.then_some(cfg.mirror_staleness);
                RedisStore::new(settings, &cfg.key_prefix, cfg.timeout, mirror)
                    .map(|r| Store::Redis(Box::new(r)))
            }
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::File(_) => "file",
            Store::Redis(_) => "redis",
        }
    }

    /// The store's epoch as last seen (0 while unknown, e.g. before Redis first answered).
    pub fn epoch(&self) -> u64 {
        match self {
            Store::Memory(m) => m.epoch(),
            Store::File(f) => f.epoch(),
            Store::Redis(r) => r.epoch(),
        }
    }

    /// The epoch, read from the store when not yet known (before the first token is issued:
    /// a token issued before the epoch is first written would be refused by it).
    pub async fn known_epoch(&self) -> Result<u64, StoreError> {
        match self {
            Store::Redis(r) if r.epoch() == 0 => r.refresh_epoch().await,
            other => Ok(other.epoch()),
        }
    }

    /// The in-process table every check reads (memory and file backends).
    fn local(&self) -> Option<&MemoryStore> {
        match self {
            Store::Memory(m) => Some(m),
            Store::File(f) => Some(f.memory()),
            Store::Redis(_) => None,
        }
    }

    pub fn redis(&self) -> Option<&RedisStore> {
        match self {
            Store::Redis(r) => Some(r.as_ref()),
            Store::Memory(_) | Store::File(_) => None,
        }
    }

    pub async fn check(&self, sid: &str, sub: &str) -> Result<RevocationState, StoreError> {
        match self {
            // Boxed: the Redis exchange's state is ~2 KiB, and inline it would be part of
            // (and copied with) every protected request's future, a memory store's included.
            Store::Redis(r) => Box::pin(r.check(sid, sub)).await,
            local => Ok(local.local().map(|m| m.check(sid, sub)).unwrap_or_default()),
        }
    }

    pub async fn user_cutoff(&self, sub: &str) -> Result<Option<u64>, StoreError> {
        match self {
            Store::Redis(r) => r.user_cutoff(sub).await,
            local => Ok(local.local().and_then(|m| m.check("", sub).user_cutoff)),
        }
    }

    /// Revokes one login session of `sub` for `ttl`.
    pub async fn revoke_session(
        &self,
        sub: &str,
        sid: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let done = self.revoke_session_in(sub, sid, ttl).await;
        if done.is_ok() {
            events::publish(events::Revoked::Session(sid.to_owned()));
        }
        done
    }

    async fn revoke_session_in(
        &self,
        sub: &str,
        sid: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.revoke_session(sid, ttl);
                Ok(())
            }
            Store::File(f) => f.revoke_session(sid, ttl).await,
            Store::Redis(r) => r.revoke_session(sub, sid, ttl).await,
        }
    }

    /// Raises the cut-off of `sub` to at least `cutoff` (it never moves back); returns the
    /// cut-off now in force.
    pub async fn revoke_user(
        &self,
        sub: &str,
        cutoff: u64,
        ttl: Duration,
    ) -> Result<u64, StoreError> {
        let done = match self {
            Store::Memory(m) => Ok(m.revoke_user(sub, cutoff, ttl)),
            Store::File(f) => f.revoke_user(sub, cutoff, ttl).await,
            Store::Redis(r) => r.revoke_user(sub, cutoff, ttl).await,
        };
        if done.is_ok() {
            events::publish(events::Revoked::User(sub.to_owned()));
        }
        done
    }

    pub async fn start_session(
        &self,
        sub: &str,
        sid: &str,
        jti: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.start_session(sid, jti, ttl);
                Ok(())
            }
            Store::File(f) => f.start_session(sid, jti, ttl).await,
            Store::Redis(r) => r.start_session(sub, sid, jti, ttl).await,
        }
    }

    /// Atomically: if `presented` is the session's current refresh jti, make `new_jti` current.
    pub async fn rotate(&self, r: RotateRequest<'_>) -> Result<Rotation, StoreError> {
        let rotation = match self {
            Store::Memory(m) => Ok(m.rotate(&r)),
            Store::File(f) => f.rotate(&r).await,
            Store::Redis(s) => s.rotate(&r).await,
        };
        if matches!(rotation, Ok(Rotation::Reused)) {
            events::publish(events::Revoked::Session(r.sid.to_owned()));
        }
        rotation
    }

    /// Reserves one password check against the failure counters (per user, per address) in
    /// one atomic step: refused when either is at its limit, else both count the attempt now,
    /// before the check runs, so that parallel attempts can never exceed a limit.
    pub async fn reserve_attempt(&self, a: AttemptRequest<'_>) -> Result<Attempt, StoreError> {
        match self {
            Store::Redis(r) => r.reserve_attempt(&a).await,
            local => Ok(local
                .local()
                .map_or(Attempt::Reserved, |m| m.reserve_attempt(&a))),
        }
    }

    /// Takes back one reserved attempt (the check succeeded: it was no failure).
    pub async fn forget_attempt(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Store::Redis(r) => r.forget_attempt(key).await,
            local => {
                if let Some(m) = local.local() {
                    m.forget_attempt(key);
                }
                Ok(())
            }
        }
    }

    pub async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Store::Redis(r) => r.clear_failures(key).await,
            local => {
                if let Some(m) = local.local() {
                    m.clear_failures(key);
                }
                Ok(())
            }
        }
    }

    /// True the first time `key` is marked within `ttl` (on every replica, with Redis): an
    /// OIDC state or a logout token's `jti` is accepted once. The file store keeps marks in
    /// memory (each lives minutes, and what it guards is also bounded by time).
    pub async fn mark_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            Store::Redis(r) => r.mark_once(key, ttl).await,
            local => Ok(local.local().is_none_or(|m| m.mark_once(key, ttl))),
        }
    }

    /// Links `member` to `key` for `ttl` (an identity provider's session -> the gateway's
    /// sessions it started), at most 64 members per key in memory.
    pub async fn link(&self, key: &str, member: &str, ttl: Duration) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.link(key, member, ttl);
                Ok(())
            }
            Store::File(f) => f.link(key, member, ttl).await,
            Store::Redis(r) => r.link(key, member, ttl).await,
        }
    }

    /// The live members linked to `key`.
    pub async fn linked(&self, key: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Redis(r) => r.linked(key).await,
            local => Ok(local.local().map(|m| m.linked(key)).unwrap_or_default()),
        }
    }

    /// When API key `name` was last used (Unix seconds), for `keys list`: kept in Redis only
    /// (a memory or file store belongs to the running process alone).
    pub async fn note_key_use(&self, name: &str, at: u64) -> Result<(), StoreError> {
        match self {
            Store::Redis(r) => r.note_key_use(name, at).await,
            _ => Ok(()),
        }
    }

    pub async fn key_last_used(&self, name: &str) -> Result<Option<u64>, StoreError> {
        match self {
            Store::Redis(r) => r.key_last_used(name).await,
            _ => Ok(None),
        }
    }

    /// Readiness: does the store answer?
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) | Store::File(_) => Ok(()),
            Store::Redis(r) => r.ping().await,
        }
    }
}

/// Arguments of `Store::rotate`.
#[derive(Debug)]
pub struct RotateRequest<'a> {
    pub sub: &'a str,
    pub sid: &'a str,
    pub presented_jti: &'a str,
    pub new_jti: &'a str,
    /// The new refresh token, kept so a replay within the grace can be answered with it.
    pub new_token: &'a str,
    /// A replay of the just-rotated token this soon gets the current one (zero: never).
    pub grace: Duration,
    /// How long the session (and so this state) lives on.
    pub ttl: Duration,
}

/// Arguments of `Store::reserve_attempt`: two counters and their limits.
#[derive(Debug, Clone, Copy)]
pub struct AttemptRequest<'a> {
    pub counters: [&'a str; 2],
    pub limits: [u64; 2],
    /// A counter lives this long from its first attempt.
    pub window: Duration,
}

/// The answer of `Store::reserve_attempt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Counted; go ahead and check the password.
    Reserved,
    /// A counter is at its limit; it resets in this many seconds.
    Refused { retry_after: u64 },
}

/// Whole seconds for a record's lifetime, at least one (Redis refuses `EX 0`).
pub(crate) fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}

/// Bounds a store call; a timeout counts as the store being down.
pub(crate) async fn bounded<T, E: Into<StoreError>>(
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(StoreError::Timeout(limit)),
    }
}
