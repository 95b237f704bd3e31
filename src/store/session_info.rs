//! What the sessions page and the operator see of each login session: when it started and was
//! last refreshed, where it signed in from (address, user agent) and how (password, a
//! provider). Kept by the revocation store beside the refresh session, at most
//! `MAX_SESSIONS_PER_USER` per user (the newest), each record living as long as its session's
//! revocation record. A record is only *listed* while its session is alive: its refresh state
//! exists (a revoke or a reuse drops it), it is not revoked, and it started after the user's
//! cut-off and the store's epoch, so a logout never leaves a ghost on the page.
//!
//! Redis keeps, per user (one `{user}` hash tag, one Cluster slot): a sorted set of sids by
//! start time (`sess`), a hash sid -> JSON record and `r:<sid>` -> last refresh (`sinfo`),
//! and one key per sid naming its user (`sown`, for a revoke given only the sid).

use super::memory::MemoryStore;
use super::{ttl_secs, RedisStore, Store, StoreError};
use crate::clock::now_secs;
use redis::{AsyncCommands, Script};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Sessions remembered per user; a newer login pushes out the oldest record (the session
/// itself lives on: `logout?all` or `sessions revoke --user` ends every session).
pub const MAX_SESSIONS_PER_USER: usize = 50;

/// One login session as the sessions page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionInfo {
    pub sid: String,
    /// The session's first `iat` (seconds).
    pub started: u64,
    /// The last refresh (seconds), if any.
    #[serde(default)]
    pub last_refresh: Option<u64>,
    /// The client address at sign-in ("" when unknown).
    pub ip: String,
    /// The `User-Agent` at sign-in, truncated and header-safe ("" when none).
    pub user_agent: String,
    /// `password` or `oidc:<provider>`.
    pub method: String,
    /// When this record goes (the session's revocation lifetime), seconds.
    pub expires: u64,
}

/// Is the session of `info` still alive, by what the store knows of it?
fn alive(info: &SessionInfo, a: Liveness, now: u64) -> bool {
    info.expires > now
        && a.has_refresh
        && !a.revoked
        && a.cutoff.is_none_or(|c| info.started > c)
        && info.started >= a.epoch
}

#[derive(Debug, Clone, Copy)]
struct Liveness {
    has_refresh: bool,
    revoked: bool,
    cutoff: Option<u64>,
    epoch: u64,
}

/// The in-process table (memory and file backends): user -> records, oldest first.
#[derive(Debug, Default)]
pub(super) struct SessionTable(Mutex<HashMap<String, Vec<SessionInfo>>>);

impl SessionTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<SessionInfo>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn record(&self, user: &str, info: SessionInfo) {
        let now = now_secs();
        let mut t = self.lock();
        let list = t.entry(user.to_owned()).or_default();
        list.retain(|s| s.expires > now && s.sid != info.sid);
        list.push(info);
        let extra = list.len().saturating_sub(MAX_SESSIONS_PER_USER);
        list.drain(..extra);
    }

    /// Sets the last refresh of `sid`; false when no record has it.
    pub(super) fn touch(&self, user: &str, sid: &str, at: u64) -> bool {
        let mut t = self.lock();
        match t
            .get_mut(user)
            .and_then(|l| l.iter_mut().find(|s| s.sid == sid))
        {
            Some(s) => {
                s.last_refresh = Some(at);
                true
            }
            None => false,
        }
    }

    /// The user's unexpired records, oldest first.
    pub(super) fn entries(&self, user: &str) -> Vec<SessionInfo> {
        let now = now_secs();
        self.lock()
            .get(user)
            .map(|l| l.iter().filter(|s| s.expires > now).cloned().collect())
            .unwrap_or_default()
    }

    fn owner(&self, sid: &str) -> Option<String> {
        let now = now_secs();
        self.lock()
            .iter()
            .find(|(_, l)| l.iter().any(|s| s.sid == sid && s.expires > now))
            .map(|(u, _)| u.clone())
    }

    pub(super) fn load(&self, user: String, list: Vec<SessionInfo>) {
        self.lock().insert(user, list);
    }

    pub(super) fn sweep(&self) {
        let now = now_secs();
        self.lock().retain(|_, l| {
            l.retain(|s| s.expires > now);
            !l.is_empty()
        });
    }
}

/// The user's live sessions in a memory or file store, newest first.
fn local_sessions(m: &MemoryStore, user: &str) -> Vec<SessionInfo> {
    let now = now_secs();
    let mut live: Vec<SessionInfo> = m
        .session_info
        .entries(user)
        .into_iter()
        .filter(|s| {
            let state = m.check(&s.sid, user);
            let a = Liveness {
                has_refresh: m.refresh_state(&s.sid).is_some_and(|r| r.expires() > now),
                revoked: state.session_revoked,
                cutoff: state.user_cutoff,
                epoch: state.epoch,
            };
            alive(s, a, now)
        })
        .collect();
    live.reverse();
    live
}

/// The file store's table: user -> JSON list of records.
pub(super) const SESSION_INFO: redb::TableDefinition<&str, &[u8]> =
    redb::TableDefinition::new("session_info");

/// Writes the user's records as `mem` holds them now.
pub(super) fn write_user(
    tx: &redb::WriteTransaction,
    mem: &MemoryStore,
    user: &str,
) -> Result<(), redb::Error> {
    let mut table = tx.open_table(SESSION_INFO)?;
    let list = mem.session_info.entries(user);
    if list.is_empty() {
        table.remove(user)?;
    } else {
        let bytes = serde_json::to_vec(&list).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
        table.insert(user, bytes.as_slice())?;
    }
    Ok(())
}

/// Loads every user's records (unreadable ones are dropped: only the listing loses them).
pub(super) fn load_all(tx: &redb::WriteTransaction, mem: &MemoryStore) -> Result<(), redb::Error> {
    let t = tx.open_table(SESSION_INFO)?;
    for row in redb::ReadableTable::iter(&t)? {
        let (k, v) = row?;
        if let Ok(list) = serde_json::from_slice::<Vec<SessionInfo>>(v.value()) {
            mem.session_info.load(k.value().to_owned(), list);
        }
    }
    Ok(())
}

/// Drops users whose every record expired.
pub(super) fn sweep_file(tx: &redb::WriteTransaction, now: u64) -> Result<(), redb::Error> {
    let mut t = tx.open_table(SESSION_INFO)?;
    t.retain(|_, v| {
        serde_json::from_slice::<Vec<SessionInfo>>(v)
            .is_ok_and(|l| l.iter().any(|s| s.expires > now))
    })?;
    Ok(())
}

/// Adds a record, drops the oldest past the bound, and keeps both keys alive at least as
/// long as this record (never shortening them).
const RECORD: &str = r#"
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[5])
if extra > 0 then
  local old = redis.call('ZRANGE', KEYS[1], 0, extra - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1)
  for _, sid in ipairs(old) do redis.call('HDEL', KEYS[2], sid, 'r:' .. sid) end
end
for i = 1, 2 do
  if redis.call('TTL', KEYS[i]) < tonumber(ARGV[4]) then redis.call('EXPIRE', KEYS[i], ARGV[4]) end
end
return 1
"#;

/// The last refresh of a recorded session (a session whose record was pushed out stays out).
const TOUCH: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], ARGV[2])
end
return 1
"#;

impl RedisStore {
    async fn record_session(&self, user: &str, info: &SessionInfo) -> Result<(), StoreError> {
        let ttl = ttl_secs(Duration::from_secs(info.expires.saturating_sub(now_secs())));
        let json = serde_json::to_string(info).map_err(|e| StoreError::Protocol(e.to_string()))?;
        let keys = self.keys();
        let script = Script::new(RECORD);
        let mut inv = script.key(keys.session_index(user));
        inv.key(keys.session_info(user))
            .arg(info.started)
            .arg(&info.sid)
            .arg(json)
            .arg(ttl)
            .arg(MAX_SESSIONS_PER_USER);
        let mut c = self.connection();
        self.timed("record_session", inv.invoke_async::<i64>(&mut c))
            .await?;
        // The owner key lives in the sid's own slot: a second command.
        let owner = keys.session_owner(&info.sid);
        self.timed("record_session", c.set_ex::<_, _, ()>(owner, user, ttl))
            .await
    }

    async fn touch_session(&self, user: &str, sid: &str, at: u64) -> Result<(), StoreError> {
        let script = Script::new(TOUCH);
        let mut inv = script.key(self.keys().session_info(user));
        inv.arg(sid).arg(at);
        let mut c = self.connection();
        self.timed("touch_session", inv.invoke_async::<i64>(&mut c))
            .await
            .map(|_| ())
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let keys = self.keys();
        let mut c = self.connection();
        let (sids, fields, cutoff): (Vec<String>, HashMap<String, String>, Option<u64>) = self
            .timed(
                "sessions_of",
                ::redis::pipe()
                    .zrevrange(keys.session_index(user), 0, -1)
                    .hgetall(keys.session_info(user))
                    .get(keys.cutoff(user))
                    .query_async(&mut c),
            )
            .await?;
        if sids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for sid in &sids {
            pipe.exists(keys.refresh(user, sid))
                .exists(keys.revoked_session(user, sid));
        }
        let flags: Vec<bool> = self.timed("sessions_of", pipe.query_async(&mut c)).await?;
        let epoch = self.epoch();
        let now = now_secs();
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (i, sid) in sids.iter().enumerate() {
            let info = fields
                .get(sid)
                .and_then(|j| serde_json::from_str::<SessionInfo>(j).ok());
            let a = Liveness {
                has_refresh: flags.get(2 * i).copied().unwrap_or(false),
                revoked: flags.get(2 * i + 1).copied().unwrap_or(true),
                cutoff,
                epoch,
            };
            match info {
                Some(mut s) if alive(&s, a, now) => {
                    s.last_refresh = fields
                        .get(&format!("r:{sid}"))
                        .and_then(|r| r.parse().ok())
                        .or(s.last_refresh);
                    live.push(s);
                }
                _ => dead.push(sid.clone()),
            }
        }
        if !dead.is_empty() {
            // Tidying only: a failure here leaves records the next listing skips again.
            let mut pipe = ::redis::pipe();
            pipe.zrem(keys.session_index(user), &dead).ignore();
            let fields: Vec<String> = dead
                .iter()
                .flat_map(|s| [s.clone(), format!("r:{s}")])
                .collect();
            pipe.hdel(keys.session_info(user), fields).ignore();
            let _ = self
                .timed("sessions_of", pipe.query_async::<()>(&mut c))
                .await;
        }
        Ok(live)
    }

    async fn session_owner(&self, sid: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.connection();
        self.timed("session_owner", c.get(self.keys().session_owner(sid)))
            .await
    }
}

impl Store {
    /// Keeps `info` with the session it describes (before the session starts, so a live
    /// session always has its record).
    pub async fn record_session(&self, user: &str, info: &SessionInfo) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.session_info.record(user, info.clone());
                Ok(())
            }
            Store::File(f) => f.record_session(user, info.clone()).await,
            Store::Redis(r) => r.record_session(user, info).await,
        }
    }

    /// Notes a refresh of session `sid` at `at` (seconds).
    pub async fn touch_session(&self, user: &str, sid: &str, at: u64) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.session_info.touch(user, sid, at);
                Ok(())
            }
            Store::File(f) => f.touch_session(user, sid, at).await,
            Store::Redis(r) => r.touch_session(user, sid, at).await,
        }
    }

    /// The user's live sessions, newest first.
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>, StoreError> {
        match self {
            Store::Redis(r) => r.sessions_of(user).await,
            local => Ok(local
                .local()
                .map(|m| local_sessions(m, user))
                .unwrap_or_default()),
        }
    }

    /// Whose session `sid` is, if its record is still kept.
    pub async fn session_owner(&self, sid: &str) -> Result<Option<String>, StoreError> {
        match self {
            Store::Redis(r) => r.session_owner(sid).await,
            local => Ok(local.local().and_then(|m| m.session_info.owner(sid))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn info(sid: &str, started: u64) -> SessionInfo {
        SessionInfo {
            sid: sid.to_owned(),
            started,
            last_refresh: None,
            ip: "192.0.2.1".to_owned(),
            user_agent: "test".to_owned(),
            method: "password".to_owned(),
            expires: now_secs() + 3600,
        }
    }

    #[tokio::test]
    async fn only_live_sessions_are_listed_newest_first_and_bounded() {
        let m = MemoryStore::new();
        let store = Store::Memory(m.clone());
        let t = m.epoch();
        for (i, sid) in ["a", "b", "c"].iter().enumerate() {
            store
                .record_session("u", &info(sid, t + i as u64))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            m.start_session(sid, "j", HOUR);
        }
        store.touch_session("u", "b", t + 9).await.ok();
        let sids = |l: Vec<SessionInfo>| l.into_iter().map(|s| s.sid).collect::<Vec<_>>();
        let list = store.sessions_of("u").await.unwrap_or_default();
        assert_eq!(list.get(1).and_then(|s| s.last_refresh), Some(t + 9));
        assert_eq!(sids(list), ["c", "b", "a"]);
        m.revoke_session("b", HOUR);
        assert_eq!(
            sids(store.sessions_of("u").await.unwrap_or_default()),
            ["c", "a"]
        );
        assert_eq!(
            store.session_owner("a").await.ok().flatten().as_deref(),
            Some("u")
        );
        assert!(store
            .sessions_of("someone else")
            .await
            .unwrap_or_default()
            .is_empty());
        // A cut-off ends every session that started at or before it.
        m.revoke_user("u", t + 1, HOUR);
        assert_eq!(
            sids(store.sessions_of("u").await.unwrap_or_default()),
            ["c"]
        );
        for i in 0..(MAX_SESSIONS_PER_USER + 5) {
            let sid = format!("n{i}");
            m.session_info.record("v", info(&sid, t + 10));
            m.start_session(&sid, "j", HOUR);
        }
        let list = store.sessions_of("v").await.unwrap_or_default();
        assert_eq!(list.len(), MAX_SESSIONS_PER_USER);
        assert_eq!(list.first().map(|s| s.sid.as_str()), Some("n54"));
    }
}
