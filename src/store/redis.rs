//! Redis backend: one auto-reconnecting multiplexed connection (commands from concurrent
//! requests are pipelined on it); multi-step changes are Lua scripts so they are atomic.
//! A protected request costs exactly one round trip: `MGET sid:<sid> cut:<user> epoch`.
//!
//! The store's epoch is one key, written once (by whichever gateway first finds it missing):
//! a Redis that restarts without persistence, or is flushed, loses it with every revocation,
//! and the next check writes a new one, so every token issued before the loss is refused.

use super::mirror::{self, Mirror};
use super::redis_conn::{self, Conn, Subscriber};
use super::schema::{Keys, RevocationEvent};
use super::{
    bounded, ttl_secs, Attempt, AttemptRequest, RevocationState, RotateRequest, Rotation,
    StoreError,
};
use crate::clock::now_millis;
use crate::config::RedisSettings;
use crate::metrics::{Latencies, StoreOp};
use redis::{AsyncCommands, Script};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const ROTATE: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'cur')
if not cur then return {'unknown'} end
if cur == ARGV[1] then
  redis.call('HSET', KEYS[1], 'cur', ARGV[2], 'prev', ARGV[1], 'at', ARGV[3], 'tok', ARGV[6])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return {'rotated'}
end
local prev = redis.call('HGET', KEYS[1], 'prev')
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '0')
if tonumber(ARGV[4]) > 0 and prev == ARGV[1] and (tonumber(ARGV[3]) - at) <= tonumber(ARGV[4]) then
  local tok = redis.call('HGET', KEYS[1], 'tok')
  if tok then return {'replay', tok} end
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[5])
redis.call('PUBLISH', ARGV[8], ARGV[7])
return {'reused'}
"#;

/// The new cut-off is now, or one past the old one when that is not earlier: logins after the
/// old cut-off were issued at old + 1 (see `Sessions::issue_time`), and a cut-off must cover
/// every token issued before it was written, even within the same second.
const CUTOFF: &str = r#"
local old = tonumber(redis.call('GET', KEYS[1]) or '-1')
local new = tonumber(ARGV[1])
if old >= new then new = old + 1 end
redis.call('SET', KEYS[1], new, 'EX', ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[3] .. string.format('%d', new))
return new
"#;

/// Refuses when either counter is at its limit (answering the seconds until it resets), else
/// counts the attempt on both: atomic, so parallel attempts cannot slip past a limit.
const RESERVE_ATTEMPT: &str = r#"
for i = 1, 2 do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n >= tonumber(ARGV[i]) then
    local ttl = redis.call('TTL', KEYS[i])
    if ttl < 0 then ttl = tonumber(ARGV[3]) end
    return ttl
  end
end
for i = 1, 2 do
  local n = redis.call('INCR', KEYS[i])
  if n == 1 or redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[3]) end
end
return -1
"#;

/// One counter of `RESERVE_ATTEMPT`, for a Cluster (the user's and the address's counters live
/// in different slots): each is atomic on its own, so neither limit can be exceeded.
const RESERVE_ONE: &str = r#"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then
  local ttl = redis.call('TTL', KEYS[1])
  if ttl < 0 then ttl = tonumber(ARGV[2]) end
  return ttl
end
n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return -1
"#;

/// Revokes a session: marks it, drops its refresh state, tells the mirrors. (A script, not a
/// MULTI: the channel is an argument, so a Cluster routes it by the user's slot.)
const REVOKE_SESSION: &str = r#"
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"#;

/// Starts a session's refresh rotation state.
const START_SESSION: &str = r#"
redis.call('HSET', KEYS[1], 'cur', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// The store's epoch: read, or written now when missing (a new or emptied Redis).
const EPOCH: &str = r#"
local e = redis.call('GET', KEYS[1])
if not e then
  e = ARGV[1]
  redis.call('SET', KEYS[1], e)
end
return tonumber(e)
"#;

/// Reads the epoch, writing it when missing (also used by the mirror on every resync).
pub(super) async fn read_epoch(conn: &mut Conn, keys: &Keys) -> redis::RedisResult<u64> {
    Script::new(EPOCH)
        .key(keys.epoch())
        .arg(crate::clock::now_secs())
        .invoke_async(conn)
        .await
}

/// Takes back one attempt, never below zero.
const FORGET_ATTEMPT: &str = r#"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECR', KEYS[1]) end
return 0
"#;

#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    subscriber: Subscriber,
    /// Local copy of the revocation set, when `revocation.mirror` is on.
    mirror: Option<Arc<Mirror>>,
    keys: Keys,
    timeout: Duration,
    rotate: Arc<Script>,
    cutoff: Arc<Script>,
    reserve_attempt: Arc<Script>,
    reserve_one: Arc<Script>,
    forget_attempt: Arc<Script>,
    revoke_session: Arc<Script>,
    start_session: Arc<Script>,
    /// `authgate_store_duration_seconds`, once `App::start` hands it over.
    latency: Arc<std::sync::OnceLock<Latencies<StoreOp>>>,
    /// The epoch as last read (0 until Redis first answered).
    epoch: Arc<AtomicU64>,
}

impl RedisStore {
    /// Does not connect: the first command does, so the gateway starts (not ready) while
    /// Redis is down and becomes ready when it answers.
    pub fn new(
        settings: &RedisSettings,
        prefix: &str,
        timeout: Duration,
        mirror: Option<Duration>,
    ) -> Result<Self, StoreError> {
        let (conn, subscriber) = redis_conn::connect(settings, timeout)
            .map_err(|e| StoreError::Settings(format!("redis: {e}")))?;
        let keys = if conn.is_cluster() {
            Keys::clustered(prefix)
        } else {
            Keys::new(prefix)
        };
        Ok(RedisStore {
            conn,
            subscriber,
            mirror: mirror.map(Mirror::new),
            keys,
            timeout,
            rotate: Arc::new(Script::new(ROTATE)),
            cutoff: Arc::new(Script::new(CUTOFF)),
            reserve_attempt: Arc::new(Script::new(RESERVE_ATTEMPT)),
            reserve_one: Arc::new(Script::new(RESERVE_ONE)),
            forget_attempt: Arc::new(Script::new(FORGET_ATTEMPT)),
            revoke_session: Arc::new(Script::new(REVOKE_SESSION)),
            start_session: Arc::new(Script::new(START_SESSION)),
            latency: Arc::default(),
            epoch: Arc::default(),
        })
    }

    /// The names of every key and channel.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Starts keeping the mirror in sync (needs a runtime; called once by `App::start`).
    /// Messages the mirror cannot decode are counted on `undecodable`.
    pub fn start_mirror(&self, undecodable: prometheus_client::metrics::counter::Counter) {
        if let Some(m) = &self.mirror {
            tokio::spawn(mirror::run(
                m.clone(),
                self.subscriber.clone(),
                self.conn.clone(),
                self.keys.clone(),
                undecodable,
            ));
        }
    }

    /// Round trips are timed into `latency`, by operation, from now on.
    pub fn start_metrics(&self, latency: Latencies<StoreOp>) {
        let _ = self.latency.set(latency);
    }

    /// One bounded round trip, timed as `op`.
    pub(crate) async fn timed<T, E: Into<StoreError>>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, StoreError> {
        let start = std::time::Instant::now();
        let result = bounded(self.timeout, fut).await;
        if let Some(l) = self.latency.get() {
            l.get_or_create(&StoreOp {
                op: std::borrow::Cow::Borrowed(op),
            })
            .observe(start.elapsed().as_secs_f64());
        }
        result
    }

    pub fn connection(&self) -> Conn {
        self.conn.clone()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub async fn check(&self, sid: &str, sub: &str) -> Result<RevocationState, StoreError> {
        if let Some(m) = &self.mirror {
            return m.check(sid, sub);
        }
        let mut c = self.conn.clone();
        let (revoked, cutoff, epoch): (Option<String>, Option<u64>, Option<u64>) =
            if self.conn.is_cluster() {
                // The epoch key lives in its own slot: a second command, sent alongside.
                let keys = [self.keys.revoked_session(sub, sid), self.keys.cutoff(sub)];
                let mut c2 = self.conn.clone();
                let epoch_key = self.keys.epoch();
                let (user, epoch) = tokio::join!(
                    self.timed("check", c.mget::<_, (Option<String>, Option<u64>)>(&keys)),
                    self.timed("check", c2.get::<_, Option<u64>>(&epoch_key)),
                );
                let (revoked, cutoff) = user?;
                (revoked, cutoff, epoch?)
            } else {
                let keys = [
                    self.keys.revoked_session(sub, sid),
                    self.keys.cutoff(sub),
                    self.keys.epoch(),
                ];
                self.timed("check", c.mget(&keys)).await?
            };
        let epoch = match epoch {
            Some(e) => {
                self.epoch.store(e, Ordering::Relaxed);
                e
            }
            None => self.refresh_epoch().await?,
        };
        Ok(RevocationState {
            session_revoked: revoked.is_some(),
            user_cutoff: cutoff,
            epoch,
        })
    }

    /// The epoch as last read (0 until Redis first answered).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Reads the epoch, writing a new one when it is missing (Redis lost its data).
    pub async fn refresh_epoch(&self) -> Result<u64, StoreError> {
        let mut c = self.conn.clone();
        let e = self.timed("epoch", read_epoch(&mut c, &self.keys)).await?;
        if let Some(m) = &self.mirror {
            m.raise_epoch(e);
        }
        let before = self.epoch.swap(e, Ordering::Relaxed);
        if before != 0 && before != e {
            tracing::warn!(
                epoch = e,
                "the revocation store's epoch changed (Redis lost its data?): tokens issued before it are refused"
            );
        }
        Ok(e)
    }

    pub async fn user_cutoff(&self, sub: &str) -> Result<Option<u64>, StoreError> {
        let mut c = self.conn.clone();
        self.timed("user_cutoff", c.get(self.keys.cutoff(sub)))
            .await
    }

    pub async fn revoke_session(
        &self,
        sub: &str,
        sid: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let ttl = ttl_secs(ttl);
        let event = RevocationEvent::Session {
            sid: sid.to_owned(),
            ttl,
        };
        let mut inv = self.revoke_session.key(self.keys.revoked_session(sub, sid));
        inv.key(self.keys.refresh(sub, sid))
            .arg(ttl)
            .arg(self.keys.channel())
            .arg(event.encode());
        self.timed("revoke_session", inv.invoke_async::<i64>(&mut c))
            .await?;
        if let Some(m) = &self.mirror {
            m.apply(event);
        }
        Ok(())
    }

    pub async fn revoke_user(
        &self,
        sub: &str,
        cutoff: u64,
        ttl: Duration,
    ) -> Result<u64, StoreError> {
        let mut c = self.conn.clone();
        let ttl = ttl_secs(ttl);
        let mut inv = self.cutoff.key(self.keys.cutoff(sub));
        inv.arg(cutoff)
            .arg(ttl)
            .arg(RevocationEvent::cutoff_prefix(sub, ttl))
            .arg(self.keys.channel());
        let cutoff = self
            .timed("revoke_user", inv.invoke_async::<u64>(&mut c))
            .await?;
        if let Some(m) = &self.mirror {
            m.apply(RevocationEvent::Cutoff {
                user: sub.to_owned(),
                cutoff,
                ttl,
            });
        }
        Ok(cutoff)
    }

    pub async fn start_session(
        &self,
        sub: &str,
        sid: &str,
        jti: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let mut inv = self.start_session.key(self.keys.refresh(sub, sid));
        inv.arg(jti).arg(ttl_secs(ttl));
        self.timed("start_session", inv.invoke_async::<i64>(&mut c))
            .await
            .map(|_| ())
    }

    pub async fn rotate(&self, r: &RotateRequest<'_>) -> Result<Rotation, StoreError> {
        let mut c = self.conn.clone();
        let ttl = ttl_secs(r.ttl);
        let reused = RevocationEvent::Session {
            sid: r.sid.to_owned(),
            ttl,
        };
        let mut inv = self.rotate.key(self.keys.refresh(r.sub, r.sid));
        inv.key(self.keys.revoked_session(r.sub, r.sid))
            .arg(r.presented_jti)
            .arg(r.new_jti)
            .arg(now_millis())
            .arg(u64::try_from(r.grace.as_millis()).unwrap_or(u64::MAX))
            .arg(ttl)
            .arg(r.new_token)
            .arg(reused.encode())
            .arg(self.keys.channel());
        let out: Vec<String> = self.timed("rotate", inv.invoke_async(&mut c)).await?;
        Ok(match out.first().map(String::as_str) {
            Some("rotated") => Rotation::Rotated,
            Some("replay") => out
                .get(1)
                .cloned()
                .map_or(Rotation::Reused, Rotation::Replay),
            Some("reused") => {
                if let Some(m) = &self.mirror {
                    m.apply(reused);
                }
                Rotation::Reused
            }
            _ => Rotation::Unknown,
        })
    }

    pub async fn reserve_attempt(&self, a: &AttemptRequest<'_>) -> Result<Attempt, StoreError> {
        if self.conn.is_cluster() {
            return self.reserve_each(a).await;
        }
        let mut c = self.conn.clone();
        let mut inv = self.reserve_attempt.key(self.keys.failures(a.counters[0]));
        inv.key(self.keys.failures(a.counters[1]))
            .arg(a.limits[0])
            .arg(a.limits[1])
            .arg(ttl_secs(a.window));
        let answer: i64 = self
            .timed("reserve_attempt", inv.invoke_async(&mut c))
            .await?;
        Ok(match u64::try_from(answer) {
            Ok(retry_after) => Attempt::Refused { retry_after },
            Err(_) => Attempt::Reserved,
        })
    }

    /// Cluster: the user's counter, then the address's; a refusal by the second gives back
    /// the first. Each limit holds on its own counter, atomically.
    async fn reserve_each(&self, a: &AttemptRequest<'_>) -> Result<Attempt, StoreError> {
        for (i, counter) in a.counters.iter().enumerate() {
            let mut c = self.conn.clone();
            let mut inv = self.reserve_one.key(self.keys.failures(counter));
            inv.arg(a.limits.get(i).copied().unwrap_or(0))
                .arg(ttl_secs(a.window));
            let answer: i64 = self
                .timed("reserve_attempt", inv.invoke_async(&mut c))
                .await?;
            if let Ok(retry_after) = u64::try_from(answer) {
                for earlier in a.counters.iter().take(i) {
                    self.forget_attempt(earlier).await?;
                }
                return Ok(Attempt::Refused { retry_after });
            }
        }
        Ok(Attempt::Reserved)
    }

    pub async fn forget_attempt(&self, key: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let inv = self.forget_attempt.key(self.keys.failures(key));
        self.timed("forget_attempt", inv.invoke_async::<i64>(&mut c))
            .await
            .map(|_| ())
    }

    pub async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        self.timed("clear_failures", c.del::<_, ()>(self.keys.failures(key)))
            .await
    }

    /// `SET NX EX`: true when this call made the mark.
    pub async fn mark_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(self.keys.once(key))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl_secs(ttl));
        let set: Option<String> = self.timed("mark_once", cmd.query_async(&mut c)).await?;
        Ok(set.is_some())
    }

    /// Members are stored as `<expiry>\t<member>`; the set lives as long as its longest
    /// member (`EXPIRE ... GT`, never shortened), and expired members go when it is read.
    pub async fn link(&self, key: &str, member: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let k = self.keys.link(key);
        let secs = ttl_secs(ttl);
        let entry = format!("{}\t{member}", crate::clock::now_secs() + secs);
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("SADD")
            .arg(&k)
            .arg(entry)
            .ignore()
            .cmd("EXPIRE")
            .arg(&k)
            .arg(secs)
            .arg("NX")
            .ignore()
            .cmd("EXPIRE")
            .arg(&k)
            .arg(secs)
            .arg("GT")
            .ignore();
        self.timed("link", pipe.query_async::<()>(&mut c)).await
    }

    pub async fn linked(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn.clone();
        let k = self.keys.link(key);
        let entries: Vec<String> = self.timed("linked", c.smembers(&k)).await?;
        let now = crate::clock::now_secs();
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for e in entries {
            match e.split_once('\t') {
                Some((exp, m)) if exp.parse::<u64>().is_ok_and(|x| x > now) => {
                    live.push(m.to_owned())
                }
                _ => dead.push(e),
            }
        }
        if !dead.is_empty() {
            let _ = self.timed("linked", c.srem::<_, _, i64>(&k, dead)).await;
        }
        Ok(live)
    }

    pub async fn note_key_use(&self, name: &str, at: u64) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(self.keys.key_used(name))
            .arg(at)
            .arg("EX")
            .arg(400 * 86_400);
        self.timed("key_used", cmd.query_async::<()>(&mut c)).await
    }

    pub async fn key_last_used(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let mut c = self.conn.clone();
        self.timed("key_used", c.get(self.keys.key_used(name)))
            .await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        if let Some(m) = &self.mirror {
            m.check("", "")?;
        }
        // Reading the epoch is the ping: it also notices a Redis that lost its data.
        self.refresh_epoch().await.map(|_| ())
    }
}
