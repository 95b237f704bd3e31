//! Opt-in local mirror of the Redis revocation set (`revocation.mirror = true`): protected
//! requests are checked in memory, with no round trip. Changes arrive by pub/sub (every writer
//! publishes them); every (re)connect subscribes first and then copies the whole set, so
//! nothing published in between is lost. A heartbeat is published through the same channel
//! and must come back: when nothing has been heard for `staleness`, checks fail (and the
//! gateway fails closed per `on_store_error`) until the mirror is in sync again.

use super::memory::MemoryStore;
use super::{RevocationState, StoreError};
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Mirror {
    set: Arc<MemoryStore>,
    /// Milliseconds since `epoch` when the mirror last heard from Redis; 0 = never in sync.
    last_heard: AtomicU64,
    epoch: Instant,
    staleness: Duration,
}

impl Mirror {
    pub fn new(staleness: Duration) -> Arc<Self> {
        Arc::new(Mirror {
            set: MemoryStore::new(),
            last_heard: AtomicU64::new(0),
            epoch: Instant::now(),
            staleness,
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.last_heard.store(ms, Ordering::Release);
    }

    fn mark_stale(&self) {
        self.last_heard.store(0, Ordering::Release);
    }

    pub fn check(&self, sid: &str, sub: &str) -> Result<RevocationState, StoreError> {
        let heard = self.last_heard.load(Ordering::Acquire);
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let limit = u64::try_from(self.staleness.as_millis()).unwrap_or(u64::MAX);
        if heard == 0 || now.saturating_sub(heard) > limit {
            return Err(StoreError(
                "the revocation mirror is not in sync with Redis".to_owned(),
            ));
        }
        Ok(self.set.check(sid, sub))
    }

    /// Applies one published change: `sid <ttl> <sid>` or `cut <cutoff> <ttl> <user>`.
    fn apply(&self, msg: &str) {
        let mut parts = msg.splitn(4, ' ');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("sid"), Some(ttl), Some(sid), None) => {
                if let Ok(ttl) = ttl.parse() {
                    self.set.revoke_session(sid, ttl);
                }
            }
            (Some("cut"), Some(cutoff), Some(ttl), Some(user)) => {
                if let (Ok(c), Ok(t)) = (cutoff.parse(), ttl.parse()) {
                    self.set.revoke_user(user, c, t);
                }
            }
            _ => {}
        }
    }
}

/// The message a session revocation publishes. (User cut-offs are published by the CUTOFF
/// script in redis.rs as `cut <cutoff> <ttl> <user>`, after it has applied the maximum.)
pub fn session_event(sid: &str, ttl: u64) -> String {
    format!("sid {ttl} {sid}")
}

/// Keeps `mirror` in sync for as long as the process runs.
pub async fn run(
    mirror: Arc<Mirror>,
    client: redis::Client,
    conn: ConnectionManager,
    prefix: Arc<str>,
) {
    loop {
        if let Err(e) = sync_once(&mirror, &client, conn.clone(), &prefix).await {
            tracing::warn!(error = %e, "revocation mirror lost Redis; failing closed until it resyncs");
        }
        mirror.mark_stale();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sync_once(
    mirror: &Mirror,
    client: &redis::Client,
    mut conn: ConnectionManager,
    prefix: &str,
) -> Result<(), String> {
    let channel = format!("{prefix}revocations");
    let mut pubsub = tokio::time::timeout(mirror.staleness, client.get_async_pubsub())
        .await
        .map_err(|_| "pub/sub connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    pubsub
        .subscribe(&channel)
        .await
        .map_err(|e| e.to_string())?;
    // Subscribed first, so that changes made during the copy arrive as messages too.
    let snapshot = snapshot(&mut conn, prefix).await?;
    mirror.set.replace_revocations(snapshot.0, snapshot.1);
    mirror.touch();
    tracing::info!("revocation mirror in sync");
    let mut messages = pubsub.on_message();
    let mut beat = tokio::time::interval(mirror.staleness / 4);
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { return Err("pub/sub connection closed".to_owned()) };
                let text: String = msg.get_payload().unwrap_or_default();
                if !text.starts_with("beat") {
                    mirror.apply(&text);
                }
                mirror.touch();
            }
            _ = beat.tick() => {
                let sent = tokio::time::timeout(
                    mirror.staleness,
                    redis::cmd("PUBLISH").arg(&channel).arg("beat").query_async::<i64>(&mut conn),
                )
                .await;
                if !matches!(sent, Ok(Ok(_))) {
                    return Err("heartbeat publish failed".to_owned());
                }
            }
        }
    }
}

type Snapshot = (Vec<(String, u64)>, Vec<(String, u64, u64)>);

/// Every revoked session (with TTL) and user cut-off (with value and TTL) in Redis.
async fn snapshot(conn: &mut ConnectionManager, prefix: &str) -> Result<Snapshot, String> {
    let sid_keys = scan(conn, &format!("{prefix}sid:*")).await?;
    let cut_keys = scan(conn, &format!("{prefix}cut:*")).await?;
    let mut pipe = redis::pipe();
    for k in &sid_keys {
        pipe.cmd("TTL").arg(k);
    }
    for k in &cut_keys {
        pipe.cmd("GET").arg(k).cmd("TTL").arg(k);
    }
    let values: Vec<redis::Value> = if sid_keys.is_empty() && cut_keys.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(conn).await.map_err(|e| e.to_string())?
    };
    let as_u64 = |v: &redis::Value| -> Option<u64> {
        <i64 as redis::FromRedisValue>::from_redis_value_ref(v)
            .ok()
            .and_then(|n| u64::try_from(n).ok())
    };
    let mut sids = Vec::new();
    for (k, v) in sid_keys.iter().zip(&values) {
        if let (Some(id), Some(ttl)) = (k.strip_prefix(&format!("{prefix}sid:")), as_u64(v)) {
            sids.push((id.to_owned(), ttl));
        }
    }
    let mut cuts = Vec::new();
    for (i, k) in cut_keys.iter().enumerate() {
        let base = sid_keys.len() + 2 * i;
        let (Some(c), Some(t)) = (
            values.get(base).and_then(as_u64),
            values.get(base + 1).and_then(as_u64),
        ) else {
            continue;
        };
        if let Some(user) = k.strip_prefix(&format!("{prefix}cut:")) {
            cuts.push((user.to_owned(), c, t));
        }
    }
    Ok((sids, cuts))
}

async fn scan(conn: &mut ConnectionManager, pattern: &str) -> Result<Vec<String>, String> {
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(|e| e.to_string())?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_until_heard_then_applies_events() {
        let m = Mirror::new(Duration::from_secs(5));
        assert!(
            m.check("s", "u").is_err(),
            "a mirror that never synced must not answer"
        );
        m.touch();
        assert_eq!(m.check("s", "u").ok(), Some(RevocationState::default()));
        m.apply(&session_event("s", 60));
        m.apply("cut 100 60 some user");
        m.apply("garbage");
        assert!(m.check("s", "u").is_ok_and(|st| st.session_revoked));
        assert_eq!(
            m.check("x", "some user").ok().and_then(|st| st.user_cutoff),
            Some(100)
        );
        m.mark_stale();
        assert!(m.check("s", "u").is_err());
    }
}
