//! Keep-alive HTTP/1.1 connections to one upstream: a small LIFO stack of idle connections,
//! checked out for one request at a time and given back when the response body has been read
//! to its end. The most recently used connection is reused first (warm in every cache), the
//! oldest expire after `IDLE_TIMEOUT`. A request that a reused connection could not even begin
//! to send (the upstream closed it meanwhile) is retried once per idle connection, then on a
//! fresh one; a request that was (partly) written is never retried.

use super::plain::{self, Conn, Failure, PlainError};
use crate::body::{Body, EndHook};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;

use std::sync::{Arc, Mutex, PoisonError};

use rustls_pki_types::ServerName;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Idle connections kept per upstream and worker; more are closed when given back.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("connect: timed out")]
    ConnectTimeout,
    #[error("io: {0}")]
    Io(hyper::Error),
    #[error(transparent)]
    Plain(PlainError),
}

pub struct Pool {
    /// `host:port`, resolved on every new connection.
    target: String,
    connect_timeout: Duration,
    /// For an `https://` host: the client settings and the name to verify.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Idle connections, a stack per worker (`crate::worker`): a connection is driven by a
    /// task on the runtime that opened it, so it is best reused from there (no wake-ups
    /// across threads).
    idle: Stacks<SendRequest<Body>>,
    /// The same for connections the plain exchange uses (`super::plain`).
    plain: Stacks<Conn>,
}

/// Idle stacks per pool; workers beyond this share them (index modulo).
const STACKS: usize = 16;

/// A request that could not be sent, and the request itself when it never left (a connect
/// failure): it may be tried on another host.
pub struct SendFailure {
    pub error: SendError,
    /// Boxed: the failure path is rare, and a small error keeps every `send` result small.
    pub unsent: Option<Box<Request<Body>>>,
}

impl std::fmt::Debug for SendFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendFailure")
            .field("error", &self.error)
            .field("unsent", &self.unsent.is_some())
            .finish()
    }
}

impl std::fmt::Display for SendFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl From<SendFailure> for SendError {
    fn from(f: SendFailure) -> Self {
        f.error
    }
}

/// Idle connections of one kind: a LIFO stack per worker, each entry with the time it was
/// given back.
struct Stacks<T>(Box<[Mutex<Stack<T>>]>);

/// Oldest first, each with the time it was given back.
type Stack<T> = VecDeque<(T, Instant)>;

impl<T> Stacks<T> {
    fn new() -> Self {
        Stacks((0..STACKS).map(|_| Mutex::new(VecDeque::new())).collect())
    }

    /// This worker's stack.
    fn mine(&self) -> std::sync::MutexGuard<'_, Stack<T>> {
        let stack = &self.0[crate::worker::index() % STACKS];
        stack.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently given back that is not too old and still `usable`.
    fn take(&self, usable: impl Fn(&T) -> bool) -> Option<T> {
        let mut idle = self.mine();
        while let Some((c, since)) = idle.pop_back() {
            if since.elapsed() < IDLE_TIMEOUT && usable(&c) {
                return Some(c);
            }
        }
        None
    }

    /// On top of the stack, up to `MAX_IDLE`; the oldest go first when too old or `closed`.
    fn put(&self, c: T, closed: impl Fn(&T) -> bool) {
        let now = Instant::now();
        let mut idle = self.mine();
        while idle
            .front()
            .is_some_and(|(c, since)| closed(c) || now.duration_since(*since) >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back((c, now));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.mine().len()
    }
}

impl Pool {
    pub fn new(target: String, connect_timeout: Duration) -> Self {
        Self::with_tls(target, connect_timeout, None)
    }

    /// A pool whose connections speak TLS (`https://` hosts).
    pub fn with_tls(
        target: String,
        connect_timeout: Duration,
        tls: Option<(TlsConnector, ServerName<'static>)>,
    ) -> Self {
        Pool {
            target,
            connect_timeout,
            tls,
            idle: Stacks::new(),
            plain: Stacks::new(),
        }
    }

    /// Whether requests may take the plain exchange here (a plain-TCP upstream).
    pub fn speaks_plain(&self) -> bool {
        self.tls.is_none()
    }

    /// Gives a plain connection back once its answer was read to the end: kept when the
    /// answer allowed (`keep_alive`) and nothing is left unread, else closed.
    pub fn put_plain(&self, mut conn: Conn, keep_alive: bool) {
        if keep_alive && conn.idle() {
            self.plain.put(conn, |_| false);
        }
    }

    /// Sends a request written whole in `request` on an idle plain connection or a new one
    /// and reads the answer's head. A request is tried again on another connection only
    /// when none of it left (the idle connection was found closed), or for a safe method
    /// when a reused connection closed before a byte of the answer came (the upstream's
    /// keep-alive timeout met the request: RFC 9110 §9.2.2, what browsers and nginx do).
    pub async fn exchange(
        &self,
        request: &[u8],
        method: &http::Method,
    ) -> Result<(plain::Head, Conn), SendError> {
        let head_request = method == http::Method::HEAD;
        loop {
            let (mut conn, reused) = match self.plain.take(Conn::is_usable) {
                Some(c) => (c, true),
                None => (Box::pin(self.connect_plain()).await?, false),
            };
            match plain::exchange(&mut conn, request, head_request).await {
                Ok(head) => return Ok((head, conn)),
                Err(Failure::Unsent(_)) if reused => {}
                Err(Failure::NoAnswer) if reused && method.is_safe() => {}
                Err(Failure::Unsent(e) | Failure::Failed(e)) => return Err(SendError::Plain(e)),
                Err(Failure::NoAnswer) => return Err(SendError::Plain(PlainError::NoAnswer)),
            }
        }
    }

    async fn connect_plain(&self) -> Result<Conn, SendError> {
        let connect = async {
            let stream = TcpStream::connect(&self.target)
                .await
                .map_err(|e| SendError::Connect(e.to_string()))?;
            let _ = stream.set_nodelay(true);
            Ok(Conn::new(stream))
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| SendError::ConnectTimeout)?
    }

    /// Gives a connection back after its response was read to the end.
    pub fn put(&self, tx: SendRequest<Body>) {
        if !tx.is_closed() {
            self.idle.put(tx, SendRequest::is_closed);
        }
    }

    /// Idle connections right now.
    #[cfg(test)]
    fn idle_len(&self) -> usize {
        self.idle.len()
    }

    /// Idle plain connections right now.
    #[cfg(test)]
    pub(crate) fn plain_idle_len(&self) -> usize {
        self.plain.len()
    }

    /// A new connection (TCP, then TLS for an `https://` host), all within `connect_timeout`.
    async fn connect(&self) -> Result<SendRequest<Body>, SendError> {
        let connect = async {
            let stream = TcpStream::connect(&self.target)
                .await
                .map_err(|e| SendError::Connect(e.to_string()))?;
            let _ = stream.set_nodelay(true);
            match &self.tls {
                None => handshake(stream).await,
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), stream)
                        .await
                        .map_err(|e| SendError::Connect(format!("TLS: {e}")))?;
                    handshake(tls).await
                }
            }
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| SendError::ConnectTimeout)?
    }

    /// Sends `req` on an idle connection or a new one. The connection comes back with the
    /// response: give it to [`Pool::put`] once the body is done (or wrap the body in
    /// [`pooled_body`]), or drop it to close.
    pub async fn send(
        &self,
        mut req: Request<Body>,
    ) -> Result<(Response<Incoming>, SendRequest<Body>), SendFailure> {
        loop {
            let (mut tx, reused) = match self.idle.take(|tx| !tx.is_closed()) {
                Some(tx) => (tx, true),
                // Boxed: the connect future is large and rarely polled.
                None => match Box::pin(self.connect()).await {
                    Ok(tx) => (tx, false),
                    Err(error) => {
                        return Err(SendFailure {
                            error,
                            unsent: Some(Box::new(req)),
                        })
                    }
                },
            };
            // A fresh connection may take its first request before it is polled.
            if reused && tx.ready().await.is_err() {
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok((resp, tx)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => {
                        return Err(SendFailure {
                            error: SendError::Io(e.into_error()),
                            unsent: None,
                        })
                    }
                },
            }
        }
    }
}

/// HTTP/1.1 on a new connection; the connection runs on its own task.
async fn handshake<S>(stream: S) -> Result<SendRequest<Body>, SendError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(SendError::Io)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(tx)
}

/// An upstream response body that gives its connection back to the pool when read to the end.
/// Dropped early, it drops the connection (a half-read response cannot be reused).
pub fn pooled_body(inner: Incoming, tx: SendRequest<Body>, pool: Arc<Pool>) -> Body {
    Body::Tracked(inner, Some(EndHook::new(move || pool.put(tx))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;

    /// A real HTTP/1.1 server on 127.0.0.1:0 answering `/len/<n>` with n bytes; counts the
    /// connections it accepted. With `keep_alive` false it closes each after one response.
    async fn server(keep_alive: bool) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = service_fn(|req: Request<Incoming>| async move {
                        let n: usize = req
                            .uri()
                            .path()
                            .strip_prefix("/len/")
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(2);
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            vec![b'x'; n],
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path)
            .header("host", "upstream")
            .body(crate::body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (addr, accepted) = server(true).await;
        let pool = Pool::new(addr, Duration::from_secs(2));
        for _ in 0..20 {
            let (resp, tx) = pool.send(get("/len/2")).await.unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"xx");
            pool.put(tx);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_len(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_replaced_not_an_error() {
        let (addr, accepted) = server(false).await;
        let pool = Pool::new(addr, Duration::from_secs(2));
        for i in 0..10 {
            let (resp, tx) = pool
                .send(get("/len/3"))
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.unwrap();
            pool.put(tx);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 10);
    }

    #[tokio::test]
    async fn a_streamed_body_gives_its_connection_back_at_the_end_only() {
        let (addr, accepted) = server(true).await;
        let pool = Arc::new(Pool::new(addr, Duration::from_secs(2)));
        let (resp, tx) = pool.send(get("/len/300000")).await.unwrap();
        let body = pooled_body(resp.into_body(), tx, pool.clone());
        assert_eq!(pool.idle_len(), 0);
        let read = body.collect().await.unwrap().to_bytes();
        assert_eq!(read.len(), 300_000);
        assert_eq!(pool.idle_len(), 1);

        // A body dropped half-read takes its connection with it.
        let (resp, tx) = pool.send(get("/len/300000")).await.unwrap();
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the idle connection was reused"
        );
        let mut body = pooled_body(resp.into_body(), tx, pool.clone());
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        drop(body);
        assert_eq!(pool.idle_len(), 0);
        let (resp, _tx) = pool.send(get("/len/1")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// The upstream closes a keep-alive connection while it sits idle in the pool (its own
    /// idle timeout), without saying so in the response. The request after it goes out on a
    /// new connection, never as an error, and no byte of it reaches the closed one.
    #[tokio::test]
    async fn a_connection_closed_while_idle_is_not_written_to_and_the_request_goes_on_a_new_one() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(usize, Vec<u8>)>();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut tcp, _)) = listener.accept().await {
                n += 1;
                let seen_tx = seen_tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let got = tcp.read(&mut buf).await.unwrap_or(0);
                    let _ = seen_tx.send((n, buf[..got].to_vec()));
                    let _ = tcp
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    // Idle for a moment, then closed: whatever comes later is recorded.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = tcp.shutdown().await;
                    let mut rest = Vec::new();
                    let _ = tcp.read_to_end(&mut rest).await;
                    if !rest.is_empty() {
                        let _ = seen_tx.send((n, rest));
                    }
                });
            }
        });
        let pool = Pool::new(addr, Duration::from_secs(2));
        for i in 0..3 {
            let (resp, tx) = pool.send(get("/again")).await.unwrap_or_else(|e| {
                panic!("request {i} failed instead of going out on a new connection: {e}")
            });
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap();
            assert_eq!(&body.to_bytes()[..], b"ok");
            pool.put(tx);
            assert_eq!(pool.idle_len(), 1, "kept: nothing said it would close");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(pool);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut requests = Vec::new();
        while let Ok((conn, bytes)) = seen.try_recv() {
            requests.push((conn, String::from_utf8_lossy(&bytes).into_owned()));
        }
        assert_eq!(
            requests.len(),
            3,
            "one request per connection: {requests:?}"
        );
        for (k, (conn, text)) in requests.iter().enumerate() {
            assert_eq!(*conn, k + 1);
            assert!(text.starts_with("GET /again HTTP/1.1\r\n"), "{text:?}");
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let pool = Pool::new(format!("127.0.0.1:{port}"), Duration::from_secs(2));
        let err = pool.send(get("/")).await.unwrap_err().error;
        assert!(matches!(err, SendError::Connect(_)), "{err:?}");
    }
}
