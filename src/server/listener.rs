//! The accept loop: a bounded number of connections, TLS handshakes and request headers under
//! a deadline, hyper-util's auto (HTTP/1.1 + HTTP/2) server, and a graceful drain on shutdown.

use super::idle::{Activity, IdleIo};
use crate::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// What a handler knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The peer's address as a header value, made once per connection (shared, not copied,
    /// by every request's `X-Forwarded-For` and `X-Real-IP`).
    pub peer_value: http::HeaderValue,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> ConnInfo {
        let text = peer.ip().to_string();
        let peer_value = http::HeaderValue::try_from(text)
            .unwrap_or_else(|_| http::HeaderValue::from_static("unknown"));
        ConnInfo {
            peer,
            tls,
            peer_value,
        }
    }
}

/// Answers requests; never fails (errors are already responses).
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<Body>> + Send;

    /// Called when a connection opens (+1) or closes (-1).
    fn connections_changed(&self, _delta: i64) {}
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub max_connections: usize,
    /// hyper's read buffer: the hard cap on a request head (hyper answers 431 past it).
    pub max_buf_size: usize,
    pub max_header_list_size: u32,
    pub header_read_timeout: Duration,
    /// A connection with nothing in flight and no byte moved this long is closed.
    pub idle_timeout: Duration,
    /// hyper's own cap on the number of request headers (ours, with a JSON 431, is lower).
    pub max_headers: usize,
    pub shutdown_grace: Duration,
}

fn http_builder(opts: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Ours (the idle watchdog): hyper's also ran between keep-alive requests.
        .header_read_timeout(None)
        .max_headers(opts.max_headers)
        .max_buf_size(opts.max_buf_size.max(8192))
        .writev(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(opts.max_header_list_size)
        .max_concurrent_streams(256)
        .max_pending_accept_reset_streams(64)
        // No PINGs: they would count as activity and keep an idle connection open forever;
        // the idle timeout ends idle (and dead) HTTP/2 connections instead.
        .keep_alive_interval(None);
    builder
}

/// Serves `listener` until `shutdown` turns true, then stops accepting and waits up to
/// `shutdown_grace` for in-flight requests.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    opts: ServeOptions,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(opts.max_connections));
    let builder = Arc::new(http_builder(&opts));
    loop {
        let accepted = tokio::select! {
            res = listener.accept() => res,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = opts.max_connections, "connection limit reached; refusing a connection");
            if tls.is_none() {
                tokio::spawn(refuse_overloaded(tcp));
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        // The idle clock runs from accept: a socket that never sends a byte is idle too.
        let activity = Activity::new();
        let conn = Conn {
            peer,
            handler: handler.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            handshake_deadline: opts.header_read_timeout,
            activity: activity.clone(),
        };
        let (done, ended) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(conn.run(tcp, tls.clone(), (permit, done)));
        let limits = super::idle::Limits {
            idle: opts.idle_timeout,
            head: Some(opts.header_read_timeout),
        };
        tokio::spawn(activity.watch(limits, task.abort_handle(), ended));
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(opts.shutdown_grace) => {
            tracing::warn!(grace = ?opts.shutdown_grace, "shutdown grace expired with requests in flight");
        }
    }
}

/// One accepted connection, served on its own task.
struct Conn<H> {
    peer: SocketAddr,
    handler: Arc<H>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    handshake_deadline: Duration,
    activity: Arc<Activity>,
}

/// Counts an open connection until dropped (also when its task is aborted).
struct Open<H: Handler>(Arc<H>);

impl<H: Handler> Drop for Open<H> {
    fn drop(&mut self) {
        self.0.connections_changed(-1);
    }
}

impl<H: Handler> Conn<H> {
    /// TLS handshake (bounded) if any, then HTTP until the connection ends; the permit (a slot
    /// under `max_connections`) and the watchdog's `done` sender are held for as long (both
    /// drop when the task ends or is aborted).
    async fn run(
        self,
        tcp: tokio::net::TcpStream,
        tls: Option<TlsAcceptor>,
        _held: (
            tokio::sync::OwnedSemaphorePermit,
            tokio::sync::oneshot::Sender<()>,
        ),
    ) {
        let Conn {
            peer,
            handler,
            builder,
            watcher,
            handshake_deadline,
            activity,
        } = self;
        handler.connections_changed(1);
        let _open = Open(handler.clone());
        let tcp = IdleIo::new(tcp, activity.clone());
        match tls {
            None => {
                let info = ConnInfo::new(peer, false);
                serve_io(tcp, info, &builder, handler.clone(), watcher, activity).await;
            }
            Some(acceptor) => {
                match tokio::time::timeout(handshake_deadline, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let info = ConnInfo::new(peer, true);
                        serve_io(stream, info, &builder, handler.clone(), watcher, activity).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
        }
    }
}

/// Over the connection cap: answer plain-HTTP clients with the contract's 503 instead of a
/// bare reset, without reading their request (bounded by a short write deadline).
async fn refuse_overloaded(mut tcp: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    const BODY: &str =
        r#"{"error":"unavailable","error_description":"too many connections; retry shortly"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(response.as_bytes())).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), tcp.shutdown()).await;
}

async fn serve_io<I, H>(
    io: I,
    info: ConnInfo,
    builder: &auto::Builder<TokioExecutor>,
    handler: Arc<H>,
    watcher: hyper_util::server::graceful::Watcher,
    activity: Arc<Activity>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let peer = info.peer;
    let svc = service_fn(move |req| {
        let handler = handler.clone();
        let info = info.clone();
        let in_flight = activity.request();
        // Boxed: the connection holds a pointer, not the whole request state machine (many
        // KiB), for as long as it stays open, idle included.
        Box::pin(async move {
            let resp = handler.handle(req, info).await;
            drop(in_flight);
            Ok::<_, Infallible>(resp)
        })
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
