//! Start-up and drain: builds the shared state from a validated `Config`, binds the public
//! and admin listeners, and owns the lifecycle (SIGTERM -> not ready -> stop accepting ->
//! drain within `shutdown_grace` -> exit 0; a second signal exits at once; SIGHUP, or a change
//! to a file the config names, reloads it: `reload`).

use crate::admin::Admin;
use crate::auth::keys::{Generate, KeySet};
use crate::auth::Auth;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::reload::{Reloader, Switch, WATCH_EVERY};
use crate::server::cores::{reuseport_listener, Cores};
use crate::server::tls::{self, ReloadableCert};
use crate::server::{serve, ServeOptions};
use crate::store::Store;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

/// A running gateway.
pub struct App {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    /// The admin listener outlives the public drain, so probes see an explicit 503.
    admin_shutdown: watch::Sender<bool>,
    shutting_down: Arc<AtomicBool>,
    reloader: Arc<Reloader>,
    /// The task watching the config's files (stopped with the app).
    watcher: JoinHandle<()>,
    public_task: JoinHandle<()>,
    /// The workers other than this runtime (`server.workers`).
    cores: Cores,
    admin_task: JoinHandle<()>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })
}

/// The public listener: shared by port with the other workers when there are any.
async fn bind_public(addr: SocketAddr, workers: usize) -> Result<TcpListener, AppError> {
    if workers == 1 {
        return bind(addr).await;
    }
    reuseport_listener(addr)
        .and_then(TcpListener::from_std)
        .map_err(|source| AppError::Bind { addr, source })
}

/// Per-core runtimes to run: `server.workers`, or one per core the process may use (its
/// cgroup's CPU quota counts) when 0.
fn workers(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

impl App {
    pub async fn start(config: Config) -> Result<App, AppError> {
        let config = Arc::new(config);
        // Only here (serve) may a missing development key be generated.
        let keys = KeySet::load(&config.tokens, Generate::Yes)
            .map_err(|e| AppError::Setup(e.to_string()))?;
        let store = Store::new(&config.revocation).map_err(|e| AppError::Setup(e.to_string()))?;
        spawn_sweeper(&store);
        let metrics = Arc::new(Metrics::new());
        if let Some(redis) = store.redis() {
            redis.start_mirror(metrics.mirror_undecodable.clone());
            redis.start_metrics(metrics.store_latency.clone());
        }
        let auth = Arc::new(
            Auth::new(&config, Arc::new(keys), store, metrics.clone())
                .map_err(|e| AppError::Setup(e.to_string()))?,
        );
        let certs = config
            .server
            .tls
            .as_ref()
            .map(|t| ReloadableCert::new(t.loaded.clone(), &t.cert, &t.key));
        crate::cert_expiry::record(&metrics, certs.as_deref(), &config.upstreams);
        let acceptor = match &certs {
            Some(c) => Some(tokio_rustls::TlsAcceptor::from(
                tls::server_config(c.clone()).map_err(|e| AppError::Setup(e.to_string()))?,
            )),
            None => None,
        };
        let workers = workers(config.server.workers);
        let public = bind_public(config.server.listen, workers).await?;
        let admin = bind(config.admin.listen).await?;
        let public_addr = public
            .local_addr()
            .map_err(|e| AppError::Setup(e.to_string()))?;
        let admin_addr = admin
            .local_addr()
            .map_err(|e| AppError::Setup(e.to_string()))?;
        let (shutdown, rx) = watch::channel(false);
        let (admin_shutdown, admin_rx) = watch::channel(false);
        let shutting_down = Arc::new(AtomicBool::new(false));
        let opts = serve_options(&config.server);
        let admin_opts = ServeOptions {
            max_connections: 256,
            ..opts.clone()
        };
        let gateway = Gateway::new(config.clone(), auth.clone(), metrics.clone())
            .map_err(|e| AppError::Setup(e.to_string()))?;
        let switch = Arc::new(Switch::new(gateway, metrics.clone()));
        let reloader = Arc::new(Reloader::new(
            config.clone(),
            switch.clone(),
            auth.clone(),
            metrics.clone(),
            certs.clone(),
        ));
        let watcher = tokio::spawn(reloader.clone().watch(WATCH_EVERY));
        let admin_handler = Arc::new(Admin {
            auth: auth.clone(),
            metrics: metrics.clone(),
            shutting_down: shutting_down.clone(),
            ready_requires_store: config.admin.ready_requires_store,
            token_file: config.admin.token_file.clone(),
            readiness: crate::admin::Readiness::default(),
        });
        let permits = Arc::new(Semaphore::new(opts.max_connections));
        let cores = Cores::start(
            workers,
            public_addr,
            acceptor.clone(),
            &opts,
            &switch,
            &rx,
            &permits,
        )
        .map_err(|e| AppError::Setup(format!("cannot start the workers: {e}")))?;
        let public_task = tokio::spawn(serve(public, acceptor, opts, switch, rx, permits));
        let admin_permits = Arc::new(Semaphore::new(admin_opts.max_connections));
        let admin_task = tokio::spawn(serve(
            admin,
            None,
            admin_opts,
            admin_handler,
            admin_rx,
            admin_permits,
        ));
        tracing::info!(addr = %public_addr, tls = certs.is_some(), workers, "public listener ready");
        tracing::info!(addr = %admin_addr, "admin listener ready");
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            config = %config.source.display(),
            revocation = auth.sessions().store().backend_name(),
            users = auth.sessions().users().snapshot().map_or(-1, |m| m.len() as i64),
            routes = config.routes.routes().len(),
            "authgate started"
        );
        // A store that refuses us (a wrong Redis password, an unreachable host) is an
        // ERROR now, not silence until the first login.
        if let Err(e) = auth.sessions().store().ping().await {
            tracing::error!(error = %e, "the revocation store does not answer: protected routes and logins fail until it does");
        }
        Ok(App {
            public_addr,
            admin_addr,
            shutdown,
            admin_shutdown,
            shutting_down,
            reloader,
            watcher,
            public_task,
            cores,
            admin_task,
        })
    }

    /// Readiness goes false first, so that load balancers stop sending before we stop accepting.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        let _ = self.shutdown.send(true);
    }

    /// Reloads the configuration from its files (what SIGHUP does); false when the new one
    /// was refused and the running one kept.
    pub async fn reload(&self) -> bool {
        self.reloader.reload("SIGHUP").await
    }

    /// Waits until the public listener has drained (or its grace ran out), then closes admin.
    pub async fn finished(self) {
        let _ = self.public_task.await;
        self.cores.join().await;
        self.watcher.abort();
        let _ = self.admin_shutdown.send(true);
        let _ = self.admin_task.await;
    }

    /// Runs until SIGTERM or SIGINT, then drains. A second signal exits at once.
    pub async fn run_until_signal(self, signals: Signals) -> std::io::Result<()> {
        let Signals {
            mut term,
            mut int,
            mut hup,
        } = signals;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    self.reloader.reload("SIGHUP").await;
                }
            }
        }
        tracing::info!("shutdown signal received; draining");
        self.begin_shutdown();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        });
        self.finished().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Drops expired entries of the memory or file store every minute, for as long as it lives.
fn spawn_sweeper(store: &Store) {
    if let Store::File(f) = store {
        let f = Arc::downgrade(f);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            while let Some(f) = {
                tick.tick().await;
                f.upgrade()
            } {
                if let Err(e) = f.sweep().await {
                    tracing::warn!(error = %e, "sweeping the revocation file failed");
                }
            }
        });
    }
    if let Store::Memory(m) = store {
        let m = Arc::downgrade(m);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            while let Some(m) = {
                tick.tick().await;
                m.upgrade()
            } {
                m.sweep();
            }
        });
    }
}

fn serve_options(s: &crate::config::ServerConfig) -> ServeOptions {
    ServeOptions {
        max_connections: s.max_connections,
        // Heads between max_header_bytes and this get the contract's JSON 431 from the
        // gateway; larger ones are cut off by hyper itself.
        max_buf_size: s.max_header_bytes.saturating_mul(2).max(16 * 1024),
        max_header_list_size: u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX),
        header_read_timeout: s.header_read_timeout,
        idle_timeout: s.idle_timeout,
        // Up to this many reach the gateway, which answers past `max_headers` with the
        // contract's JSON 431; beyond it hyper answers 431 itself.
        max_headers: s.max_headers.saturating_mul(2).max(100),
        shutdown_grace: s.shutdown_grace,
    }
}

/// The process's signal handlers. Installed before the listeners are bound, so that a signal
/// arriving during start-up is handled (SIGHUP's default action would kill the process).
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}
