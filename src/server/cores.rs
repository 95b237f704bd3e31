//! Per-core serving (`server.workers` other than 1): one current-thread runtime per worker,
//! each on its own thread and accepting on its own listener, all bound to the same address
//! with `SO_REUSEPORT` so that the kernel spreads new connections across them. A connection
//! lives and dies on the runtime that accepted it: no work-stealing, no wake-ups across
//! threads (nginx's worker processes, in threads). Worker 0 is the process's main runtime,
//! which also runs the admin listener and the background tasks.

use super::listener::{serve, Handler, ServeOptions};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// A listening socket with `SO_REUSEPORT`, so that the other workers can bind the same
/// address (the kernel allows it only to the same user).
pub fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The workers other than the main runtime.
pub struct Cores {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Cores {
    /// Starts workers `1..n` on `addr` (the address worker 0 is bound to), each serving until
    /// `shutdown`, sharing `permits` (`max_connections` is one limit for the process).
    pub fn start<H: Handler>(
        n: usize,
        addr: SocketAddr,
        tls: Option<TlsAcceptor>,
        opts: &ServeOptions,
        handler: &Arc<H>,
        shutdown: &watch::Receiver<bool>,
        permits: &Arc<Semaphore>,
    ) -> io::Result<Cores> {
        let mut threads = Vec::with_capacity(n.saturating_sub(1));
        for i in 1..n {
            let listener = reuseport_listener(addr)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (tls, opts, handler, shutdown, permits) = (
                tls.clone(),
                opts.clone(),
                handler.clone(),
                shutdown.clone(),
                permits.clone(),
            );
            let thread = std::thread::Builder::new()
                .name(format!("authgate-core-{i}"))
                .spawn(move || {
                    crate::worker::set_index(i);
                    runtime.block_on(async move {
                        match TcpListener::from_std(listener) {
                            Ok(l) => serve(l, tls, opts, handler, shutdown, permits).await,
                            Err(e) => tracing::error!(worker = i, error = %e, "cannot serve"),
                        }
                    });
                })?;
            threads.push(thread);
        }
        Ok(Cores { threads })
    }

    /// Waits for every worker to drain and stop (after `shutdown`).
    pub async fn join(self) {
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}
