//! Durable embedded store for one instance (`revocation.backend = "file"`): the memory store's
//! tables, written through to a redb database file (crash-safe, copy-on-write, no server), so a
//! restart keeps every revocation, cut-off and refresh session and logs no one out.
//!
//! Checks read the in-process tables only (no I/O on the request path); every change is applied
//! there first (this process sees it at once) and then committed to the file before the caller
//! is answered. Commits run on the blocking pool, one at a time, each writing the in-process
//! state of the keys it touched as it is at commit time, so a later commit never loses to an
//! earlier one. Login-failure counters stay in memory (a restart resets them).
//!
//! The epoch is written once, when the file is created: deleting the file starts a new epoch
//! (and logs everyone out), like a memory store's restart.

use super::memory::{MemoryStore, RefreshState};
use super::{RotateRequest, Rotation, SessionInfo, StoreError};
use crate::clock::now_secs;
use redb::{Database, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// sid -> expiry of its revocation.
const SESSIONS: TableDefinition<&str, u64> = TableDefinition::new("revoked_sessions");
/// user -> (cut-off, expiry).
const CUTOFFS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("cutoffs");
/// sid -> refresh-rotation state (JSON).
const REFRESH: TableDefinition<&str, &[u8]> = TableDefinition::new("refresh_sessions");
/// link key -> [(member, expiry)] (JSON): `Store::link`.
const LINKS: TableDefinition<&str, &[u8]> = TableDefinition::new("links");
/// "epoch" -> the second this store's state began.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub struct FileStore {
    mem: Arc<MemoryStore>,
    db: Arc<Database>,
    /// One commit at a time (see the module head).
    commit: Arc<Mutex<()>>,
    path: PathBuf,
}

/// What one commit writes: the current in-process state of these keys.
enum Touch {
    Session(String),
    Cutoff(String),
    Refresh(String),
    Link(String),
    /// A user's session records (`session_info`).
    SessionInfo(String),
}

fn file_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::File(e.to_string().into())
}

impl FileStore {
    /// Opens (or creates) the database at `path`, creating its directory; loads what it holds.
    pub fn open(path: &Path) -> Result<Arc<FileStore>, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| file_error(format!("cannot create {}: {e}", dir.display())))?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => file_error(format!(
                "{} is open in another process (a running gateway?): the file backend serves one \
                 process; stop it first, or revoke through the running gateway \
                 (POST /auth/logout?all=true)",
                path.display()
            )),
            e => file_error(format!("cannot open {}: {e}", path.display())),
        })?;
        let mem = MemoryStore::new();
        let epoch = load(&db, &mem).map_err(file_error)?;
        mem.set_epoch(epoch);
        Ok(Arc::new(FileStore {
            mem,
            db: Arc::new(db),
            commit: Arc::default(),
            path: path.to_path_buf(),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn epoch(&self) -> u64 {
        self.mem.epoch()
    }

    pub(super) fn memory(&self) -> &MemoryStore {
        &self.mem
    }

    pub async fn revoke_session(&self, sid: &str, ttl: Duration) -> Result<(), StoreError> {
        self.mem.revoke_session(sid, ttl);
        self.persist(vec![
            Touch::Session(sid.to_owned()),
            Touch::Refresh(sid.to_owned()),
        ])
        .await
    }

    pub async fn revoke_user(
        &self,
        sub: &str,
        cutoff: u64,
        ttl: Duration,
    ) -> Result<u64, StoreError> {
        let new = self.mem.revoke_user(sub, cutoff, ttl);
        self.persist(vec![Touch::Cutoff(sub.to_owned())]).await?;
        Ok(new)
    }

    pub async fn start_session(
        &self,
        sid: &str,
        jti: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.mem.start_session(sid, jti, ttl);
        self.persist(vec![Touch::Refresh(sid.to_owned())]).await
    }

    pub async fn rotate(&self, r: &RotateRequest<'_>) -> Result<Rotation, StoreError> {
        let rotation = self.mem.rotate(r);
        let mut touched = vec![Touch::Refresh(r.sid.to_owned())];
        if rotation == Rotation::Reused {
            touched.push(Touch::Session(r.sid.to_owned()));
        }
        if rotation != Rotation::Unknown {
            self.persist(touched).await?;
        }
        Ok(rotation)
    }

    /// Links are durable (a restart keeps back-channel logout working for old sessions);
    /// single-use marks are not (each lives minutes; see `Store::mark_once`).
    pub async fn link(&self, key: &str, member: &str, ttl: Duration) -> Result<(), StoreError> {
        self.mem.link(key, member, ttl);
        self.persist(vec![Touch::Link(key.to_owned())]).await
    }

    pub async fn record_session(&self, user: &str, info: SessionInfo) -> Result<(), StoreError> {
        self.mem.session_info.record(user, info);
        self.persist(vec![Touch::SessionInfo(user.to_owned())])
            .await
    }

    pub async fn touch_session(&self, user: &str, sid: &str, at: u64) -> Result<(), StoreError> {
        if !self.mem.session_info.touch(user, sid, at) {
            return Ok(());
        }
        self.persist(vec![Touch::SessionInfo(user.to_owned())])
            .await
    }

    /// Drops expired entries from memory and from the file.
    pub async fn sweep(&self) -> Result<(), StoreError> {
        self.mem.sweep();
        let db = self.db.clone();
        let commit = self.commit.clone();
        run_blocking(move || {
            let _one = commit
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = now_secs();
            let tx = db.begin_write().map_err(file_error)?;
            {
                let mut t = tx.open_table(SESSIONS).map_err(file_error)?;
                t.retain(|_, exp| exp > now).map_err(file_error)?;
                let mut t = tx.open_table(CUTOFFS).map_err(file_error)?;
                t.retain(|_, (_, exp)| exp > now).map_err(file_error)?;
                let mut t = tx.open_table(REFRESH).map_err(file_error)?;
                t.retain(|_, v| {
                    serde_json::from_slice::<RefreshState>(v).is_ok_and(|s| s.expires() > now)
                })
                .map_err(file_error)?;
                let mut t = tx.open_table(LINKS).map_err(file_error)?;
                t.retain(|_, v| {
                    serde_json::from_slice::<Vec<(String, u64)>>(v)
                        .is_ok_and(|m| m.iter().any(|(_, exp)| *exp > now))
                })
                .map_err(file_error)?;
                super::session_info::sweep_file(&tx, now).map_err(file_error)?;
            }
            tx.commit().map_err(file_error)
        })
        .await
    }

    /// Commits the in-process state of `touched` to the file.
    async fn persist(&self, touched: Vec<Touch>) -> Result<(), StoreError> {
        let db = self.db.clone();
        let mem = self.mem.clone();
        let commit = self.commit.clone();
        run_blocking(move || {
            let _one = commit
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let tx = db.begin_write().map_err(file_error)?;
            for t in &touched {
                write_one(&tx, &mem, t).map_err(file_error)?;
            }
            tx.commit().map_err(file_error)
        })
        .await
        .inspect_err(|e| tracing::error!(error = %e, "revocation file store write failed"))
    }
}

async fn run_blocking(
    work: impl FnOnce() -> Result<(), StoreError> + Send + 'static,
) -> Result<(), StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| file_error(format!("the write task failed: {e}")))?
}

fn write_one(tx: &redb::WriteTransaction, mem: &MemoryStore, t: &Touch) -> Result<(), redb::Error> {
    match t {
        Touch::Session(sid) => {
            let mut table = tx.open_table(SESSIONS)?;
            match mem.session_revocation(sid) {
                Some(exp) => table.insert(sid.as_str(), exp)?,
                None => table.remove(sid.as_str())?,
            };
        }
        Touch::Cutoff(sub) => {
            let mut table = tx.open_table(CUTOFFS)?;
            match mem.cutoff_entry(sub) {
                Some(entry) => table.insert(sub.as_str(), entry)?,
                None => table.remove(sub.as_str())?,
            };
        }
        Touch::Refresh(sid) => {
            let mut table = tx.open_table(REFRESH)?;
            match mem.refresh_state(sid) {
                Some(state) => {
                    let bytes = serde_json::to_vec(&state)
                        .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
                    table.insert(sid.as_str(), bytes.as_slice())?
                }
                None => table.remove(sid.as_str())?,
            };
        }
        Touch::Link(key) => {
            let mut table = tx.open_table(LINKS)?;
            let members = mem.link_entries(key);
            if members.is_empty() {
                table.remove(key.as_str())?;
            } else {
                let bytes = serde_json::to_vec(&members)
                    .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
                table.insert(key.as_str(), bytes.as_slice())?;
            }
        }
        Touch::SessionInfo(user) => super::session_info::write_user(tx, mem, user)?,
    }
    Ok(())
}

/// Reads every table into `mem`; returns the epoch (written now when the file is new).
fn load(db: &Database, mem: &MemoryStore) -> Result<u64, redb::Error> {
    let tx = db.begin_write()?;
    let epoch = {
        let mut meta = tx.open_table(META)?;
        let known = meta.get("epoch")?.map(|v| v.value());
        match known {
            Some(e) => e,
            None => {
                let now = now_secs();
                meta.insert("epoch", now)?;
                now
            }
        }
    };
    let mut sessions = Vec::new();
    let mut cutoffs = Vec::new();
    let mut refresh = Vec::new();
    {
        let t = tx.open_table(SESSIONS)?;
        for row in t.iter()? {
            let (k, v) = row?;
            sessions.push((k.value().to_owned(), v.value()));
        }
        let t = tx.open_table(CUTOFFS)?;
        for row in t.iter()? {
            let (k, v) = row?;
            cutoffs.push((k.value().to_owned(), v.value()));
        }
        let t = tx.open_table(REFRESH)?;
        for row in t.iter()? {
            let (k, v) = row?;
            // A record this version cannot read is dropped: its session ends, nothing opens.
            if let Ok(state) = serde_json::from_slice::<RefreshState>(v.value()) {
                refresh.push((k.value().to_owned(), state));
            }
        }
    }
    {
        let t = tx.open_table(LINKS)?;
        for row in t.iter()? {
            let (k, v) = row?;
            if let Ok(members) = serde_json::from_slice::<Vec<(String, u64)>>(v.value()) {
                mem.load_links(k.value().to_owned(), members);
            }
        }
    }
    super::session_info::load_all(&tx, mem)?;
    tx.commit()?;
    mem.load(sessions, cutoffs, refresh);
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RevocationState;

    const HOUR: Duration = Duration::from_secs(3600);

    fn rotate<'a>(presented: &'a str, new: &'a str) -> RotateRequest<'a> {
        RotateRequest {
            sub: "u",
            sid: "s1",
            presented_jti: presented,
            new_jti: new,
            new_token: new,
            grace: Duration::ZERO,
            ttl: HOUR,
        }
    }

    /// What a restart keeps: revoked sessions, cut-offs, refresh sessions and the epoch.
    #[tokio::test]
    async fn a_reopened_file_remembers_everything() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("state/revocations.redb");
        let first = FileStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let epoch = first.epoch();
        first
            .revoke_session("gone", HOUR)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let cut = first
            .revoke_user("bob", 1000, HOUR)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        first
            .start_session("s1", "j1", HOUR)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            first.rotate(&rotate("j1", "j2")).await.ok(),
            Some(Rotation::Rotated)
        );
        drop(first);

        let again = FileStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            again.epoch(),
            epoch,
            "the epoch is the file's, not the process's"
        );
        let m = again.memory();
        assert!(m.check("gone", "x").session_revoked);
        assert_eq!(m.check("s", "bob").user_cutoff, Some(cut));
        // The rotation survived: the old token is a reuse, the current one rotates.
        assert_eq!(
            again.rotate(&rotate("j2", "j3")).await.ok(),
            Some(Rotation::Rotated)
        );
        assert_eq!(
            again.rotate(&rotate("j1", "j4")).await.ok(),
            Some(Rotation::Reused)
        );
        drop(again);
        let third = FileStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            third.memory().check("s1", "u").session_revoked,
            "a reuse's revocation is durable too"
        );
        assert_eq!(
            third.rotate(&rotate("j3", "j5")).await.ok(),
            Some(Rotation::Unknown)
        );
    }

    #[tokio::test]
    async fn a_new_file_starts_a_new_epoch_and_sweeping_keeps_live_entries() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("r.redb");
        let store = FileStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let state: RevocationState = store.memory().check("a", "b");
        assert!(state.epoch >= now_secs().saturating_sub(5));
        assert!(
            state.revokes(state.epoch.saturating_sub(1)),
            "older tokens are refused"
        );
        assert!(!state.revokes(state.epoch));
        store
            .revoke_session("live", HOUR)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store.sweep().await.unwrap_or_else(|e| panic!("{e}"));
        drop(store);
        let again = FileStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(again.memory().check("live", "x").session_revoked);
    }

    /// The sessions page's records survive a restart, with their last refresh.
    #[tokio::test]
    async fn session_records_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("r.redb");
        let first = FileStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let info = SessionInfo {
            sid: "s1".to_owned(),
            started: first.epoch(),
            last_refresh: None,
            ip: "192.0.2.1".to_owned(),
            user_agent: "ua".to_owned(),
            method: "oidc:corp".to_owned(),
            expires: now_secs() + 3600,
        };
        first
            .record_session("u", info.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        first
            .start_session("s1", "j1", HOUR)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        first
            .touch_session("u", "s1", 42)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        drop(first);
        let again =
            crate::store::Store::File(FileStore::open(&path).unwrap_or_else(|e| panic!("{e}")));
        let listed = again.sessions_of("u").await.unwrap_or_default();
        assert_eq!(
            listed,
            [SessionInfo {
                last_refresh: Some(42),
                ..info
            }]
        );
        assert_eq!(
            again.session_owner("s1").await.ok().flatten().as_deref(),
            Some("u")
        );
    }

    /// Two processes must not share one file (each would overwrite the other's state).
    #[test]
    fn a_file_already_open_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("r.redb");
        let _first = FileStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let second = FileStore::open(&path);
        assert!(second.is_err());
    }
}
