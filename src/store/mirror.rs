//! Opt-in local mirror of the Redis revocation set (`revocation.mirror = true`): protected
//! requests are checked in memory, with no round trip. Changes arrive by pub/sub (every writer
//! publishes them); every (re)connect subscribes first and then copies the whole set, so
//! nothing published in between is lost. A heartbeat is published through the same channel
//! and must come back: when nothing has been heard for `staleness`, checks fail (and the
//! gateway fails closed per `on_store_error`) until the mirror is in sync again.

use super::memory::MemoryStore;
use super::redis_conn::{Conn, Subscriber};
use super::schema::{Keys, RevocationEvent};
use super::{RevocationState, StoreError};
use futures_util::StreamExt;
use prometheus_client::metrics::counter::Counter;
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
        let set = MemoryStore::new();
        // Redis's epoch, read on every sync (checks fail until the first one).
        set.set_epoch(0);
        Arc::new(Mirror {
            set,
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

    /// A newer epoch seen by a direct read (the mirror's copy keeps its revocations anyway).
    pub(super) fn raise_epoch(&self, epoch: u64) {
        if epoch > self.set.epoch() {
            self.set.set_epoch(epoch);
        }
    }

    fn mark_stale(&self) {
        self.last_heard.store(0, Ordering::Release);
    }

    pub fn check(&self, sid: &str, sub: &str) -> Result<RevocationState, StoreError> {
        let heard = self.last_heard.load(Ordering::Acquire);
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let limit = u64::try_from(self.staleness.as_millis()).unwrap_or(u64::MAX);
        if heard == 0 || now.saturating_sub(heard) > limit {
            return Err(StoreError::MirrorStale);
        }
        Ok(self.set.check(sid, sub))
    }

    /// Applies one change: published by any gateway, or written by this one (so that this
    /// gateway reads its own revocations at once, before the channel brings them back).
    pub(super) fn apply(&self, event: RevocationEvent) {
        match event {
            RevocationEvent::Session { sid, ttl } => {
                self.set.revoke_session(&sid, Duration::from_secs(ttl));
                super::events::publish(super::events::Revoked::Session(sid));
            }
            RevocationEvent::Cutoff { user, cutoff, ttl } => {
                self.set
                    .revoke_user(&user, cutoff, Duration::from_secs(ttl));
                super::events::publish(super::events::Revoked::User(user));
            }
            RevocationEvent::Beat => {}
        }
    }
}

/// Why one sync of the mirror ended.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("pub/sub connect timed out")]
    ConnectTimeout,
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("pub/sub connection closed")]
    Closed,
    #[error("heartbeat publish failed")]
    Heartbeat,
}

/// Keeps `mirror` in sync for as long as the process runs.
pub async fn run(
    mirror: Arc<Mirror>,
    subscriber: Subscriber,
    conn: Conn,
    keys: Keys,
    undecodable: Counter,
) {
    loop {
        if let Err(e) = sync_once(&mirror, &subscriber, conn.clone(), &keys, &undecodable).await {
            tracing::warn!(error = %e, "revocation mirror lost Redis; failing closed until it resyncs");
        }
        mirror.mark_stale();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sync_once(
    mirror: &Mirror,
    subscriber: &Subscriber,
    mut conn: Conn,
    keys: &Keys,
    undecodable: &Counter,
) -> Result<(), SyncError> {
    let channel = keys.channel();
    let client = subscriber.client().await?;
    let mut pubsub = tokio::time::timeout(mirror.staleness, client.get_async_pubsub())
        .await
        .map_err(|_| SyncError::ConnectTimeout)??;
    pubsub.subscribe(&channel).await?;
    // Subscribed first, so that changes made during the copy arrive as messages too.
    let snapshot = snapshot(&mut conn, keys).await?;
    mirror.set.replace_revocations(snapshot.0, snapshot.1);
    // After the copy: a Redis that came back empty gets a new epoch now, before any check.
    let epoch = super::redis::read_epoch(&mut conn, keys).await?;
    mirror.set.set_epoch(epoch);
    mirror.touch();
    tracing::info!(epoch, "revocation mirror in sync");
    let mut messages = pubsub.on_message();
    let mut beat = tokio::time::interval(mirror.staleness / 4);
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { return Err(SyncError::Closed) };
                let text: String = msg.get_payload().unwrap_or_default();
                match RevocationEvent::decode(&text) {
                    Ok(event) => mirror.apply(event),
                    Err(e) => {
                        undecodable.inc();
                        tracing::warn!(error = %e, "revocation mirror: ignoring an undecodable message");
                    }
                }
                mirror.touch();
            }
            _ = beat.tick() => {
                let sent = tokio::time::timeout(
                    mirror.staleness,
                    redis::cmd("PUBLISH")
                        .arg(&channel)
                        .arg(RevocationEvent::Beat.encode())
                        .query_async::<i64>(&mut conn),
                )
                .await;
                if !matches!(sent, Ok(Ok(_))) {
                    return Err(SyncError::Heartbeat);
                }
            }
        }
    }
}

type Snapshot = (Vec<(String, u64)>, Vec<(String, u64, u64)>);

/// Every revoked session (with TTL) and user cut-off (with value and TTL) in Redis.
async fn snapshot(conn: &mut Conn, keys: &Keys) -> Result<Snapshot, SyncError> {
    let sids: Vec<(String, String)> = scan(conn, &keys.revoked_session_pattern())
        .await?
        .into_iter()
        .filter_map(|k| keys.id_of(&k, "sid").map(str::to_owned).map(|id| (k, id)))
        .collect();
    let cuts: Vec<(String, String)> = scan(conn, &keys.cutoff_pattern())
        .await?
        .into_iter()
        .filter_map(|k| keys.id_of(&k, "cut").map(str::to_owned).map(|id| (k, id)))
        .collect();
    let mut pipe = redis::pipe();
    for (k, _) in &sids {
        pipe.cmd("TTL").arg(k);
    }
    for (k, _) in &cuts {
        pipe.cmd("GET").arg(k).cmd("TTL").arg(k);
    }
    let values: Vec<redis::Value> = if sids.is_empty() && cuts.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(conn).await?
    };
    let as_u64 = |v: &redis::Value| -> Option<u64> {
        <i64 as redis::FromRedisValue>::from_redis_value_ref(v)
            .ok()
            .and_then(|n| u64::try_from(n).ok())
    };
    let mut sessions = Vec::new();
    for ((_, id), v) in sids.iter().zip(&values) {
        if let Some(ttl) = as_u64(v) {
            sessions.push((id.clone(), ttl));
        }
    }
    let mut cutoffs = Vec::new();
    for (i, (_, user)) in cuts.iter().enumerate() {
        let base = sids.len() + 2 * i;
        if let (Some(c), Some(t)) = (
            values.get(base).and_then(as_u64),
            values.get(base + 1).and_then(as_u64),
        ) {
            cutoffs.push((user.clone(), c, t));
        }
    }
    Ok((sessions, cutoffs))
}

/// Key names found by SCAN.
type KeyNames = Vec<String>;

async fn scan(conn: &mut Conn, pattern: &str) -> Result<KeyNames, SyncError> {
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
            .await?;
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
        for text in ["sid 60 s", "cut 60 some user 100"] {
            m.apply(RevocationEvent::decode(text).unwrap_or(RevocationEvent::Beat));
        }
        assert!(m.check("s", "u").is_ok_and(|st| st.session_revoked));
        assert_eq!(
            m.check("x", "some user").ok().and_then(|st| st.user_cutoff),
            Some(100)
        );
        m.mark_stale();
        assert!(m.check("s", "u").is_err());
    }
}
