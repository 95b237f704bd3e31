//! Live reload: SIGHUP, or a change to any file the config names (the config itself, the
//! users file, signing keys, the TLS pair; a file replaced by rename or a Kubernetes
//! ConfigMap/Secret volume's symlink swap counts), rebuilds routes, upstreams, users, keys and
//! tokens from the files and swaps the whole gateway in one step. A request in flight
//! finishes on the gateway it started with. A config that does not load is logged, counted
//! (`authgate_config_reloads_total{result="error"}`) and the running one kept. Settings that
//! need a restart (listeners, workers, connection limits and timeouts, TLS on or off, the
//! store) are logged as such and keep their running values.
//!
//! A reload that finds a user of the users file removed, or their roles or password changed,
//! writes a cut-off for that user before the new gateway takes over: their tokens stop working
//! at once (a demoted admin signs in again and gets the new roles).

use crate::auth::keys::{Generate, KeySet};
use crate::auth::Auth;
use crate::body::Body;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::metrics::{Metrics, ReloadResult};
use crate::server::tls::ReloadableCert;
use crate::server::{ConnInfo, Handler};
use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How often the files a config names are looked at.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The public listener's handler: whichever gateway is current when a request arrives.
pub struct Switch {
    current: ArcSwap<Gateway>,
    metrics: Arc<Metrics>,
}

impl Switch {
    pub fn new(gateway: Gateway, metrics: Arc<Metrics>) -> Switch {
        Switch {
            current: ArcSwap::from_pointee(gateway),
            metrics,
        }
    }
}

impl Handler for Switch {
    /// The current gateway's own future, not one wrapping it: a request's state machine is
    /// a few KiB, and every level of `async` around it is one more copy of it per request.
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> impl std::future::Future<Output = Response<Body>> + Send {
        // The request keeps this gateway (and its config) alive until it has finished.
        let gateway = self.current.load_full();
        gateway.handle(req, conn)
    }

    fn connections_changed(&self, delta: i64) {
        self.metrics.open_connections.inc_by(delta);
    }

    fn connections_parked(&self, delta: i64) {
        self.metrics.idle_connections.inc_by(delta);
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error("signing keys: {0}")]
    Keys(#[from] crate::auth::keys::KeyError),
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthError),
    #[error("{0}")]
    Rng(#[from] crate::ids::RngError),
    #[error("TLS certificate: {0}")]
    Tls(#[from] crate::certs::TlsError),
    #[error("the reload task failed: {0}")]
    Task(String),
}

/// Users (name -> roles and password hash) present before and missing or different after.
fn changed_users(
    old: &Option<std::collections::HashMap<String, (Vec<String>, String)>>,
    new: &Option<std::collections::HashMap<String, (Vec<String>, String)>>,
) -> Vec<String> {
    let (Some(old), Some(new)) = (old, new) else {
        return Vec::new();
    };
    let mut out: Vec<String> = old
        .iter()
        .filter(|(name, before)| {
            new.get(*name).is_none_or(|after| {
                let mut a = before.0.clone();
                let mut b = after.0.clone();
                a.sort();
                b.sort();
                a != b || before.1 != after.1
            })
        })
        .map(|(name, _)| name.clone())
        .collect();
    out.sort();
    out
}

pub struct Reloader {
    path: PathBuf,
    switch: Arc<Switch>,
    auth: Arc<Auth>,
    metrics: Arc<Metrics>,
    certs: Option<Arc<ReloadableCert>>,
    running: Mutex<Arc<Config>>,
    /// One reload at a time (SIGHUP and the watcher may both ask).
    busy: tokio::sync::Mutex<()>,
    /// Runs once when the next reload has read its files (a test writes a file "during" it).
    #[cfg(test)]
    after_load: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

/// A loaded config, ready to take over.
struct Prepared {
    config: Arc<Config>,
    gateway: Gateway,
    /// Users whose tokens must stop working (removed, or roles or password changed).
    cut_off: Vec<String>,
}

impl Reloader {
    pub fn new(
        config: Arc<Config>,
        switch: Arc<Switch>,
        auth: Arc<Auth>,
        metrics: Arc<Metrics>,
        certs: Option<Arc<ReloadableCert>>,
    ) -> Reloader {
        Reloader {
            path: config.source.clone(),
            switch,
            auth,
            metrics,
            certs,
            running: Mutex::new(config),
            busy: tokio::sync::Mutex::new(()),
            #[cfg(test)]
            after_load: Mutex::default(),
        }
    }

    /// Reloads everything from the files; on any error the running gateway stays.
    pub async fn reload(self: &Arc<Self>, why: &str) -> bool {
        let _one = self.busy.lock().await;
        let me = self.clone();
        // Reading files and hashing the unknown-user dummy: off the request threads.
        let prepared = match tokio::task::spawn_blocking(move || me.prepare()).await {
            Ok(p) => p,
            Err(e) => Err(ReloadError::Task(e.to_string())),
        };
        match prepared {
            Ok(p) => {
                self.take_over(p).await;
                self.metrics.reload(ReloadResult::ok);
                tracing::info!(why, config = %self.path.display(), "configuration reloaded");
                crate::audit!("reload_ok", why, config = %self.path.display());
                true
            }
            Err(e) => {
                self.metrics.reload(ReloadResult::error);
                tracing::error!(why, config = %self.path.display(), error = %e, "reload failed; keeping the running configuration");
                crate::audit!("reload_failed", why, config = %self.path.display(), error = %e);
                false
            }
        }
    }

    fn prepare(&self) -> Result<Prepared, ReloadError> {
        let new = Config::load(&self.path)?;
        let old = self.running();
        for what in restart_needed(&old, &new) {
            tracing::warn!(
                setting = what,
                "changed in the file; it needs a restart (the running value stays)"
            );
        }
        let keys = KeySet::load(&new.tokens, Generate::No)?;
        let sessions = self.auth.sessions();
        // The store and the hashing pool are the process's: kept across reloads.
        let auth = Auth::with_hasher(
            &new,
            Arc::new(keys),
            sessions.store().clone(),
            self.metrics.clone(),
            sessions.hasher(),
        )?;
        let cut_off = changed_users(
            &self
                .switch
                .current
                .load()
                .auth()
                .sessions()
                .users()
                .snapshot(),
            &auth.sessions().users().snapshot(),
        );
        let new = Arc::new(new);
        let gateway = Gateway::new(new.clone(), Arc::new(auth), self.metrics.clone())?;
        if let Some(certs) = &self.certs {
            certs.reload()?;
        }
        #[cfg(test)]
        if let Some(hook) = self
            .after_load
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            hook();
        }
        Ok(Prepared {
            config: new,
            gateway,
            cut_off,
        })
    }

    /// Ends the sessions of changed users, then swaps the new gateway in.
    async fn take_over(&self, p: Prepared) {
        let sessions = p.gateway.auth().sessions();
        for user in &p.cut_off {
            match sessions.end_all(user).await {
                Ok(()) => {
                    tracing::warn!(
                        user = %user,
                        "user removed, or roles or password changed: their sessions are ended"
                    );
                    crate::audit!("users_changed", user = %user);
                }
                Err(e) => tracing::error!(
                    user = %user,
                    error = %e,
                    "user removed or changed, but their sessions could not be ended (store unavailable)"
                ),
            }
        }
        self.switch.current.store(Arc::new(p.gateway));
        crate::cert_expiry::record(&self.metrics, self.certs.as_deref(), &p.config.upstreams);
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = p.config;
    }

    fn running(&self) -> Arc<Config> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every file the running config names.
    pub fn watched(&self) -> Vec<PathBuf> {
        watched_files(&self.running())
    }

    /// Looks at the watched files every `every` and reloads when one changed.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut seen = fingerprint(&self.watched());
        loop {
            tokio::time::sleep(every).await;
            self.look(&mut seen).await;
        }
    }

    /// One look at the watched files: reloads when they changed since `seen`.
    async fn look(self: &Arc<Self>, seen: &mut Vec<Print>) {
        let now = fingerprint(&self.watched());
        if now != *seen {
            self.reload("a watched file changed").await;
            // What was seen BEFORE loading: a change written while the reload ran differs
            // from it and triggers another (taken after, it would never be loaded). A new
            // config naming other files costs one more reload, nothing worse.
            *seen = now;
        }
    }
}

/// The files a config depends on.
pub fn watched_files(c: &Config) -> Vec<PathBuf> {
    use crate::config::{KeySource, UsersBackend};
    let mut files = vec![c.source.clone()];
    if let UsersBackend::File(p) = &c.users.backend {
        files.push(p.clone());
    }
    for k in std::iter::once(&c.tokens.key).chain(c.tokens.previous.iter()) {
        if let KeySource::Pem { path, .. } = k {
            files.push(path.clone());
        }
    }
    files.extend(c.tokens.secret_files.iter().cloned());
    if let Some(t) = &c.server.tls {
        files.push(t.cert.clone());
        files.push(t.key.clone());
    }
    // A renewed upstream client certificate is taken up (and its expiry metric moves) without
    // a signal.
    for c in c.upstreams.iter().filter_map(|u| u.client_cert.as_ref()) {
        files.push(c.cert.clone());
        files.push(c.key.clone());
    }
    files
}

/// What identifies a file's contents without reading it: where its path leads (a symlink
/// swap changes it), its inode, size and modification time. A missing file is `None`.
type Print = Option<(PathBuf, u64, u64, i64, i64)>;

fn fingerprint(files: &[PathBuf]) -> Vec<Print> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|f: &PathBuf| {
            let target = std::fs::canonicalize(f).ok()?;
            let m = std::fs::metadata(&target).ok()?;
            Some((target, m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

/// The settings that only a restart applies.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.server, &new.server);
    let mut out = Vec::new();
    let checks: [(&'static str, bool); 12] = [
        ("server.listen", a.listen != b.listen),
        ("server.workers", a.workers != b.workers),
        (
            "server.tls (on or off, or its file paths)",
            a.tls.as_ref().map(|t| (&t.cert, &t.key)) != b.tls.as_ref().map(|t| (&t.cert, &t.key)),
        ),
        (
            "server.max_connections",
            a.max_connections != b.max_connections,
        ),
        ("server.idle_timeout", a.idle_timeout != b.idle_timeout),
        (
            "server.header_read_timeout",
            a.header_read_timeout != b.header_read_timeout,
        ),
        (
            "server.shutdown_grace",
            a.shutdown_grace != b.shutdown_grace,
        ),
        ("admin.listen", old.admin.listen != new.admin.listen),
        (
            "admin.token_file",
            old.admin.token_file != new.admin.token_file,
        ),
        (
            "revocation (the store)",
            old.revocation.backend != new.revocation.backend
                || old.revocation.mirror != new.revocation.mirror,
        ),
        (
            "login.max_concurrent_hashes",
            old.login.max_concurrent_hashes != new.login.max_concurrent_hashes,
        ),
        ("tracing (the span export)", old.tracing != new.tracing),
    ];
    for (name, changed) in checks {
        if changed {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (red team, low): a change written while a reload ran was never loaded (the
    /// fingerprint was taken after loading), so a removed user could still sign in.
    #[tokio::test]
    async fn a_change_written_during_a_reload_is_loaded_next() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let hash = crate::auth::passwords::hash_password(b"pw").unwrap_or_default();
        let user = |n: &str| format!("[[user]]\nname = \"{n}\"\npassword_hash = \"{hash}\"\n");
        std::fs::write(dir.path().join("users.toml"), user("a")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.path().join("s"),
            "secret-one-0123456789-abcdefghijklmnop",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let text = "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                    [tokens]\nalgorithm = \"HS256\"\nsecret_file = \"s\"\n\
                    [users]\nfile = \"users.toml\"\n[forward_auth]\nonly = true\n\
                    [[routes]]\npath = \"/**\"\nauth = \"public\"\n";
        let path = dir.path().join("authgate.toml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        let config = Arc::new(Config::load(&path).unwrap_or_else(|e| panic!("{e}")));
        let metrics = Arc::new(Metrics::new());
        let keys =
            Arc::new(KeySet::load(&config.tokens, Generate::No).unwrap_or_else(|e| panic!("{e}")));
        let store = crate::store::Store::Memory(crate::store::MemoryStore::new());
        let auth = Arc::new(
            Auth::new(&config, keys, store, metrics.clone()).unwrap_or_else(|e| panic!("{e}")),
        );
        let gateway = Gateway::new(config.clone(), auth.clone(), metrics.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let switch = Arc::new(Switch::new(gateway, metrics.clone()));
        let reloader = Arc::new(Reloader::new(config, switch.clone(), auth, metrics, None));
        let users = || {
            let mut n: Vec<String> = switch
                .current
                .load()
                .auth()
                .sessions()
                .users()
                .snapshot()
                .unwrap_or_default()
                .into_keys()
                .collect();
            n.sort();
            n
        };
        let mut seen = fingerprint(&reloader.watched());
        // Change 1 (user b added); while its reload runs, change 2 (user a removed). The
        // rewrite is a new file (rename), so the fingerprint differs even within one tick.
        let file = dir.path().join("users.toml");
        std::fs::write(&file, format!("{}{}", user("a"), user("b")))
            .unwrap_or_else(|e| panic!("{e}"));
        let during = file.clone();
        let b_only = user("b");
        *reloader
            .after_load
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(move || {
            let tmp = during.with_extension("tmp");
            std::fs::write(&tmp, b_only).unwrap_or_else(|e| panic!("{e}"));
            std::fs::rename(&tmp, &during).unwrap_or_else(|e| panic!("{e}"));
        }));
        reloader.look(&mut seen).await;
        // That reload loaded change 1 (a and b); the next look must see change 2.
        reloader.look(&mut seen).await;
        assert_eq!(users(), ["b"], "a change written during a reload was lost");
        // And a look with nothing changed does nothing more.
        let before = fingerprint(&reloader.watched());
        reloader.look(&mut seen).await;
        assert_eq!(fingerprint(&reloader.watched()), before);
    }

    /// Every file the config names is watched: the config, the users file, HS256 secret files
    /// (current and previous) and, for PEM keys, the key files.
    #[test]
    fn watches_every_file_the_config_names() {
        let dir = std::env::temp_dir().join(format!("authgate-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        for (f, text) in [
            ("s1", "secret-one-0123456789-abcdefghijklmnop"),
            ("s0", "secret-old-0123456789-abcdefghijklmnop"),
            ("users.toml", ""),
        ] {
            std::fs::write(dir.join(f), text).unwrap_or_else(|e| panic!("{e}"));
        }
        let text = "[tokens]\nalgorithm = \"HS256\"\nsecret_file = \"s1\"\nprevious_secret_files = [\"s0\"]\n\
                    [users]\nfile = \"users.toml\"\n[forward_auth]\nonly = true\n\
                    [[routes]]\npath = \"/**\"\nauth = \"public\"\n";
        let mut config =
            Config::from_str(&dir.join("authgate.toml"), text).unwrap_or_else(|e| panic!("{e}"));
        config.source = dir.join("authgate.toml");
        let watched = watched_files(&config);
        for f in ["authgate.toml", "users.toml", "s1", "s0"] {
            assert!(
                watched.contains(&dir.join(f)),
                "{f} not watched: {watched:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
