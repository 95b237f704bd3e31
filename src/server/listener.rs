//! The accept loop: a bounded number of connections, TLS handshakes and request headers under
//! a deadline, then `conn` serves each; a graceful drain on shutdown.

use super::conn::{self, Shared};
use super::idle::Activity;
use crate::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
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
    /// What the handler keeps between the connection's requests.
    pub memo: Arc<ConnMemo>,
}

/// Something a handler keeps for one connection between its requests (the gateway: the last
/// access token it verified there), made on first use and dropped when the connection parks
/// or closes. Never waited for: when another request of the connection (HTTP/2) holds it,
/// a request goes without.
#[derive(Default)]
pub struct ConnMemo(std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>);

impl ConnMemo {
    /// Runs `f` on this connection's `T` (a default one on first use); None when another
    /// request holds it, or it is of another type.
    pub fn try_with<T: std::any::Any + Send + Default, R>(
        &self,
        f: impl FnOnce(&mut T) -> R,
    ) -> Option<R> {
        let mut slot = self.0.try_lock().ok()?;
        let any = slot.get_or_insert_with(|| Box::new(T::default()));
        any.downcast_mut::<T>().map(f)
    }

    /// Drops what is kept (a parked connection holds no more than it must).
    pub fn clear(&self) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = None;
        }
    }
}

impl std::fmt::Debug for ConnMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnMemo")
    }
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
            memo: Arc::default(),
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

    /// Called when an idle keep-alive connection is parked (+1) and when it wakes or
    /// closes (-1).
    fn connections_parked(&self, _delta: i64) {}
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

/// Serves `listener` until `shutdown` turns true, then stops accepting and waits up to
/// `shutdown_grace` for in-flight requests. Every open connection holds one of `permits`
/// (`max_connections`, shared by the listeners of all workers).
pub async fn serve<H: Handler>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    opts: ServeOptions,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
    permits: Arc<Semaphore>,
) {
    // Every connection holds a receiver: `closed()` is the drain.
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared::new(handler, &opts));
    tokio::spawn(super::trim::run(shared.released.clone(), stopped.clone()));
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
        let conn = Conn {
            peer,
            shared: shared.clone(),
            handshake_deadline: opts.header_read_timeout,
            stop: stopped.clone(),
        };
        tokio::spawn(conn.run(tcp, tls.clone(), permit));
    }
    drop(listener);
    drop(stopped);
    let _ = stop.send(true);
    tokio::select! {
        () = stop.closed() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(opts.shutdown_grace) => {
            tracing::warn!(grace = ?opts.shutdown_grace, "shutdown grace expired with requests in flight");
        }
    }
}

/// One accepted connection, served on its own task.
struct Conn<H> {
    peer: SocketAddr,
    shared: Arc<Shared<H>>,
    handshake_deadline: Duration,
    stop: watch::Receiver<bool>,
}

/// Counts an open connection until dropped (also when its task is aborted).
struct Open<H: Handler>(Arc<Shared<H>>);

impl<H: Handler> Drop for Open<H> {
    fn drop(&mut self) {
        self.0.handler.connections_changed(-1);
        self.0.released.one();
    }
}

impl<H: Handler> Conn<H> {
    /// TLS handshake (bounded) if any, then HTTP until the connection ends; the permit (a slot
    /// under `max_connections`) is held for as long.
    async fn run(
        self,
        tcp: tokio::net::TcpStream,
        tls: Option<TlsAcceptor>,
        _permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let Conn {
            peer,
            shared,
            handshake_deadline,
            stop,
        } = self;
        shared.handler.connections_changed(1);
        let _open = Open(shared.clone());
        // The idle clock runs from accept: a socket that never sends a byte is idle too.
        let activity = Activity::new();
        match tls {
            None => {
                let info = ConnInfo::new(peer, false);
                conn::serve(tcp, info, &shared, activity, stop).await;
            }
            // Boxed, the TLS handshake and the TLS connection (a rustls session is several
            // KiB): every connection's task is sized for its largest state, and a plain one
            // would otherwise reserve room for them.
            Some(acceptor) => {
                Box::pin(serve_tls(
                    tcp,
                    acceptor,
                    peer,
                    handshake_deadline,
                    shared,
                    activity,
                    stop,
                ))
                .await;
            }
        }
    }
}

/// TLS handshake (bounded), then HTTP over it.
async fn serve_tls<H: Handler>(
    tcp: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    peer: SocketAddr,
    deadline: Duration,
    shared: Arc<Shared<H>>,
    activity: Arc<Activity>,
    stop: watch::Receiver<bool>,
) {
    match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let info = ConnInfo::new(peer, true);
            conn::serve(stream, info, &shared, activity, stop).await;
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;

    impl Handler for Nothing {
        async fn handle(self: Arc<Self>, _: Request<Incoming>, _: ConnInfo) -> Response<Body> {
            Response::new(crate::body::empty())
        }
    }

    /// A connection's task is sized for its largest state, which it keeps while parked. With
    /// the TLS handshake, a rustls session and an HTTP/2 connection inline it was 8.4 KiB (the
    /// largest item in a heap profile of 1,000 idle connections); they are boxed.
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let opts = ServeOptions {
            max_connections: 1,
            max_buf_size: 16384,
            max_header_list_size: 16384,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_headers: 100,
            shutdown_grace: Duration::from_secs(1),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let (_stop, stopped) = watch::channel(false);
        let conn = Conn {
            peer: tcp.local_addr().unwrap(),
            shared: Arc::new(Shared::new(Arc::new(Nothing), &opts)),
            handshake_deadline: opts.header_read_timeout,
            stop: stopped,
        };
        let task = conn.run(tcp, None, permit);
        let size = std::mem::size_of_val(&task);
        eprintln!("a connection task: {size} bytes");
        assert!(size <= 1536, "a connection's future is {size} bytes");
    }

    #[test]
    fn a_conn_memo_is_made_on_first_use_never_waited_for_and_cleared() {
        let memo = ConnMemo::default();
        assert_eq!(memo.try_with(|n: &mut u32| *n), Some(0));
        memo.try_with(|n: &mut u32| *n = 5);
        assert_eq!(memo.try_with(|n: &mut u32| *n), Some(5));
        // Held by one request: another goes without, at once.
        let nested = memo.try_with(|_: &mut u32| memo.try_with(|n: &mut u32| *n));
        assert_eq!(nested, Some(None));
        // A value of another type is not handed out as this one.
        assert_eq!(memo.try_with(|s: &mut String| s.len()), None);
        memo.clear();
        assert_eq!(memo.try_with(|n: &mut u32| *n), Some(0));
    }
}
