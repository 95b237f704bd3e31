//! Forwarding to upstreams: one connection pool per upstream, the header rewrite the contract
//! promises, timeouts, and WebSocket upgrades spliced through.

pub mod buffer;
mod headers;
mod hosts;
mod overlay;
pub mod plain;
mod pool;

use hosts::Hosts;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use prometheus_client::metrics::counter::Counter;

pub use headers::{rewrite_request_headers, strip_hop_by_hop, ForwardCtx, HeaderPolicy};
pub use overlay::Overlay;
pub use pool::{pooled_body, Pool, SendError, SendFailure};

use crate::body::Body;
use crate::config::UpstreamConfig;
use crate::error::GatewayError;
use crate::metrics::UpstreamErrorKind;
use http::header;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;

/// Upstream bodies of a known length up to this size are read whole before the response head
/// goes out: head and body then leave in one write, and the connection is back in the pool
/// at once. Longer or open-ended bodies are streamed.
const BUFFER_UP_TO: u64 = 16 * 1024;

pub struct UpstreamClient {
    pub name: String,
    hosts: Hosts,
    request_timeout: Duration,
    buffer_request_body: u64,
    buffer_response: u64,
    budget: buffer::Budget,
    /// Every host is plain TCP: requests that fit take the plain exchange.
    plain: bool,
}

/// Why forwarding failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("reading the upstream's response: {0}")]
    Read(#[source] hyper::Error),
    #[error("the upstream switched protocols unasked")]
    UnaskedUpgrade,
    #[error("reading the upstream's response: {0}")]
    Plain(#[from] plain::PlainError),
}

impl UpstreamError {
    /// The client's request body broke off or was malformed (a bad chunk): its fault, not
    /// the upstream's.
    pub fn is_client_fault(&self) -> bool {
        matches!(self, UpstreamError::Send(SendError::Io(e)) if e.is_user())
    }

    /// The client's body stalled while it was being streamed upstream (the upstream got an
    /// incomplete request).
    pub fn is_client_stall(&self) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = source {
            if matches!(
                e.downcast_ref::<crate::body::BodyError>(),
                Some(crate::body::BodyError::Stalled)
            ) {
                return true;
            }
            source = e.source();
        }
        false
    }

    /// The metric label: `connect`, `timeout` or `io`.
    pub fn kind(&self) -> UpstreamErrorKind {
        match self {
            UpstreamError::Send(SendError::Io(_)) => UpstreamErrorKind::io,
            UpstreamError::Send(_) => UpstreamErrorKind::connect,
            UpstreamError::Timeout(_) => UpstreamErrorKind::timeout,
            UpstreamError::Read(_) | UpstreamError::UnaskedUpgrade | UpstreamError::Plain(_) => {
                UpstreamErrorKind::io
            }
        }
    }
}

/// 504 when the upstream was too slow, else 502.
impl From<UpstreamError> for GatewayError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Timeout(_) => GatewayError::GatewayTimeout,
            e if e.is_client_stall() => GatewayError::RequestTimeout,
            e if e.is_client_fault() => {
                GatewayError::BadRequest("the request body is malformed".to_owned())
            }
            other => GatewayError::BadGateway(other.to_string()),
        }
    }
}

impl UpstreamClient {
    /// `ejections` counts the hosts passive health takes out of rotation.
    pub fn new(cfg: &UpstreamConfig, ejections: Counter, budget: buffer::Budget) -> Self {
        let hosts = Hosts::new(cfg, ejections);
        let plain = (0..hosts.len()).all(|i| hosts.get(i).pool.speaks_plain());
        UpstreamClient {
            name: cfg.name.clone(),
            plain,
            hosts,
            request_timeout: cfg.request_timeout,
            buffer_request_body: cfg.buffer_request_body,
            buffer_response: cfg.buffer_response,
            budget,
        }
    }

    /// `buffer_request_body`: how much of a request body is read before forwarding.
    pub fn request_buffer(&self) -> u64 {
        self.buffer_request_body
    }

    pub fn budget(&self) -> &buffer::Budget {
        &self.budget
    }

    /// Sends on the picked host; a request that never left (the host refused the connection
    /// or its TLS) is tried on the next host, and the failures count toward ejection.
    async fn send(
        &self,
        mut req: Request<Body>,
        upstream_host: bool,
    ) -> Result<(Response<Incoming>, SendRequest<Body>, &Arc<Pool>), SendError> {
        let n = self.hosts.len();
        let first = self.hosts.pick();
        let mut k = 0;
        loop {
            let host = self.hosts.get(first + k);
            if upstream_host || !req.headers().contains_key(header::HOST) {
                req.headers_mut().insert(header::HOST, host.host.clone());
            }
            let _in_flight = self.hosts.begin(host);
            match host.pool.send(req).await {
                Ok((resp, tx)) => {
                    self.hosts.succeeded(host);
                    return Ok((resp, tx, &host.pool));
                }
                Err(SendFailure { error, unsent }) => {
                    let connect =
                        matches!(error, SendError::Connect(_) | SendError::ConnectTimeout);
                    if connect {
                        self.hosts.connect_failed(host);
                    }
                    match unsent {
                        Some(r) if k + 1 < n => {
                            tracing::warn!(upstream = %self.name, host = ?host.host, error = %error, "upstream host failed; trying the next");
                            req = *r;
                            k += 1;
                        }
                        _ => return Err(error),
                    }
                }
            }
        }
    }
}

impl UpstreamClient {
    /// The plain exchange's `send`: the request written for the picked host and sent; one
    /// that never left (the host refused the connection) is tried on the next host.
    async fn send_plain(
        &self,
        parts: &mut http::request::Parts,
        added: &Overlay,
        body: Option<&bytes::Bytes>,
        (host_set, upstream_host): (bool, bool),
    ) -> Result<(plain::Head, plain::Conn, &hosts::Host), SendError> {
        let n = self.hosts.len();
        let first = if n == 1 { 0 } else { self.hosts.pick() };
        let mut request = Vec::with_capacity(512 + body.map_or(0, |b| b.len()));
        let mut k = 0;
        loop {
            let host = self.hosts.get(first + k);
            if upstream_host || (!host_set && !parts.headers.contains_key(header::HOST)) {
                parts.headers.insert(header::HOST, host.host.clone());
            }
            request.clear();
            plain::write_request(parts, added, body, &mut request);
            let _in_flight = (n > 1).then(|| self.hosts.begin(host));
            match host.pool.exchange(&request, &parts.method).await {
                Ok((head, conn)) => {
                    if n > 1 {
                        self.hosts.succeeded(host);
                    }
                    return Ok((head, conn, host));
                }
                Err(error) => {
                    let connect =
                        matches!(error, SendError::Connect(_) | SendError::ConnectTimeout);
                    if connect {
                        self.hosts.connect_failed(host);
                    }
                    if !(connect && k + 1 < n) {
                        return Err(error);
                    }
                    tracing::warn!(upstream = %self.name, host = ?host.host, error = %error, "upstream host failed; trying the next");
                    k += 1;
                }
            }
        }
    }
}

/// Reads a short body whole: one data frame (the usual case) is kept as it came, more are
/// joined. Trailers of such a body are dropped (hyper sends none for a Content-Length body).
async fn read_small(body: &mut hyper::body::Incoming) -> Result<bytes::Bytes, hyper::Error> {
    let mut first: Option<bytes::Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        match (&mut joined, first.take()) {
            (Some(buf), _) => buf.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(prev)) => {
                let mut buf = bytes::BytesMut::with_capacity(prev.len() + data.len());
                buf.extend_from_slice(&prev);
                buf.extend_from_slice(&data);
                joined = Some(buf);
            }
        }
    }
    Ok(match joined {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// Whether the plain exchange can carry the request: no body, or one already held whole.
fn plain_fits(req: &Request<Body>) -> bool {
    let body = match req.body() {
        Body::Incoming(b) => b.is_end_stream(),
        Body::Full(_) | Body::Held(..) => true,
        _ => false,
    };
    body && !req.headers().contains_key(header::TRANSFER_ENCODING)
}

/// The plain exchange (`plain`): the request written whole, the answer's head parsed here;
/// a short body read whole (the connection back in the pool before the answer goes out),
/// one up to `buffer_response` read whole within the memory budget, any other streamed.
async fn forward_plain(
    up: &UpstreamClient,
    req: Request<Body>,
    added: Overlay,
    host: (bool, bool),
) -> Result<Response<Body>, UpstreamError> {
    let (mut parts, body) = req.into_parts();
    // A held body keeps its share of the budget until it has been written.
    let body = match body {
        Body::Full(b) | Body::Held(b, _) => b,
        _ => None,
    };
    plain::declare_length(&mut parts, body.as_ref());
    let (head, mut conn, host) = up
        .send_plain(&mut parts, &added, body.as_ref(), host)
        .await?;
    drop(added);
    drop(body);
    let pool = &host.pool;
    let plain::Head {
        response,
        framing,
        keep_alive,
    } = head;
    let body = match framing {
        plain::Framing::Empty => {
            pool.put_plain(conn, keep_alive);
            Body::Full(None)
        }
        plain::Framing::Length(n) if n <= BUFFER_UP_TO => {
            let bytes = plain::read_whole(&mut conn, n).await?;
            pool.put_plain(conn, keep_alive);
            crate::body::full(bytes)
        }
        plain::Framing::Length(n) => {
            let permit = (n <= up.buffer_response)
                .then(|| up.budget.take(n))
                .flatten();
            match permit {
                Some(permit) => {
                    let bytes = plain::read_whole(&mut conn, n).await?;
                    pool.put_plain(conn, keep_alive);
                    Body::Held(Some(bytes), Some(permit))
                }
                None => Body::Streamed(Box::new(plain::Stream::new(
                    conn,
                    framing,
                    keep_alive,
                    pool.clone(),
                ))),
            }
        }
        plain::Framing::Chunked | plain::Framing::Close => Body::Streamed(Box::new(
            plain::Stream::new(conn, framing, keep_alive, pool.clone()),
        )),
    };
    Ok(response.map(|()| body))
}

/// Sends the request and returns the upstream's response: small bodies read whole, others
/// streamed. The request's head is rewritten here, before the returned future is first
/// polled, so that the future holds the request alone: not the context, nor a second copy
/// of either (an `async fn` keeps its arguments and their moved copies for its whole life).
pub fn forward<'u>(
    up: &'u UpstreamClient,
    mut req: Request<Body>,
    mut ctx: ForwardCtx<'_>,
) -> impl std::future::Future<Output = Result<Response<Body>, UpstreamError>> + Send + 'u {
    let client_upgrade = ctx.upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    // Changed in place: a request head is a few hundred bytes, not worth moving around.
    req.extensions_mut().clear();
    *req.uri_mut() = Uri::from(ctx.target.clone());
    *req.version_mut() = Version::HTTP_11;
    // The rewrite sets `Host` from these; only without them is the client's own looked for.
    let host_set = ctx.host.is_some() || ctx.host_override.is_some();
    let headers = req.headers_mut();
    let added = rewrite_request_headers(headers, &mut ctx);
    let upstream_host = ctx.upstream_host;
    if client_upgrade.is_none() && up.plain && plain_fits(&req) {
        return futures_util::future::Either::Left(async move {
            let mut resp = tokio::time::timeout(
                up.request_timeout,
                forward_plain(up, req, added, (host_set, upstream_host)),
            )
            .await
            .map_err(|_| UpstreamError::Timeout(up.request_timeout))??;
            strip_hop_by_hop(resp.headers_mut());
            *resp.version_mut() = Version::HTTP_11;
            Ok(resp)
        });
    }
    // hyper's client (streamed bodies, upgrades, https): boxed, its state is larger.
    added.apply(req.headers_mut());
    let guard = ctx.tunnel_guard.take();
    futures_util::future::Either::Right(Box::pin(forward_hyper(
        up,
        req,
        client_upgrade,
        guard,
        (host_set, upstream_host),
    )))
}

/// `forward` by hyper's client.
async fn forward_hyper(
    up: &UpstreamClient,
    mut req: Request<Body>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    guard: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    (host_set, upstream_host): (bool, bool),
) -> Result<Response<Body>, UpstreamError> {
    let exchange = async {
        let (mut resp, tx, pool) = if up.hosts.len() == 1 {
            // One host (the common case): sent from here, one future fewer to move around.
            let host = up.hosts.get(0);
            if upstream_host || (!host_set && !req.headers().contains_key(header::HOST)) {
                req.headers_mut().insert(header::HOST, host.host.clone());
            }
            match host.pool.send(req).await {
                Ok((resp, tx)) => (resp, tx, &host.pool),
                Err(f) => {
                    if matches!(f.error, SendError::Connect(_) | SendError::ConnectTimeout) {
                        up.hosts.connect_failed(host);
                    }
                    return Err(f.error.into());
                }
            }
        } else {
            Box::pin(up.send(req, upstream_host)).await?
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now belongs to the upgrade; it never returns to the pool.
            return Ok(resp.map(Body::Incoming));
        }
        let size = resp.body().size_hint().exact();
        let small = size.is_some_and(|n| n <= BUFFER_UP_TO);
        if !small {
            // An answer of known length up to `buffer_response` is read now, at the upstream's
            // pace, and its connection freed. One of unknown length (a stream, server-sent
            // events) flows as it comes.
            let limit = up.buffer_response;
            let permit = size.filter(|n| *n <= limit).and_then(|n| up.budget.take(n));
            let Some(permit) = permit else {
                return Ok(resp.map(|b| pooled_body(b, tx, pool.clone())));
            };
            let (parts, body) = resp.into_parts();
            let read = buffer::read_up_to(body, limit, None)
                .await
                .map_err(|e| match e {
                    crate::body::BodyError::Hyper(e) => UpstreamError::Read(e),
                    crate::body::BodyError::Stalled => UpstreamError::Timeout(up.request_timeout),
                    crate::body::BodyError::Io(e) => UpstreamError::Plain(e.into()),
                })?;
            let body = match read {
                buffer::Read::Whole(bytes) => {
                    pool.put(tx);
                    Body::Held(Some(bytes), Some(permit))
                }
                buffer::Read::Partial(head, rest) => Body::Chain(
                    Some(head),
                    Box::new(pooled_body(rest, tx, pool.clone())),
                    Some(permit),
                ),
            };
            return Ok(Response::from_parts(parts, body));
        }
        let bytes = read_small(resp.body_mut())
            .await
            .map_err(UpstreamError::Read)?;
        pool.put(tx);
        Ok::<_, UpstreamError>(resp.map(|_| crate::body::full(bytes)))
    };
    let mut resp = tokio::time::timeout(up.request_timeout, exchange)
        .await
        .map_err(|_| UpstreamError::Timeout(up.request_timeout))??;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return splice_upgrade(client_upgrade, resp, guard);
    }
    strip_hop_by_hop(resp.headers_mut());
    // An HTTP/1.0 (or close-delimited) answer is given to the client in the client's own
    // protocol: hyper then keeps the connection alive and chunks a body of unknown length.
    *resp.version_mut() = Version::HTTP_11;
    Ok(resp)
}

/// A WebSocket handshake the upstream accepted: the two upgraded connections are spliced on
/// a task of their own and the 101 goes back to the client.
/// Joins the client's and the upstream's upgraded connections, until either side closes or
/// `guard` (the session's end) resolves.
fn splice_upgrade(
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    mut resp: Response<Body>,
    guard: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
) -> Result<Response<Body>, UpstreamError> {
    let Some(client_upgrade) = client_upgrade else {
        return Err(UpstreamError::UnaskedUpgrade);
    };
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        match tokio::join!(client_upgrade, upstream_upgrade) {
            (Ok(client), Ok(upstream)) => {
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
                match guard {
                    Some(guard) => {
                        tokio::select! {
                            _ = copy => {}
                            // Dropping both connections closes them: the app sees its
                            // socket end, the browser its WebSocket close.
                            () = guard => {}
                        }
                    }
                    None => {
                        let _ = copy.await;
                    }
                }
            }
            _ => tracing::debug!("upgrade did not complete"),
        }
    });
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A body that arrives in pieces (several frames) is joined in order; one that arrives at
    /// once is one frame.
    #[tokio::test]
    async fn short_bodies_are_read_whole_from_any_number_of_frames() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            for pieces in [&["hello", " wor", "ld!"][..], &["at once"][..]] {
                let mut buf = [0u8; 1024];
                let _ = tcp.read(&mut buf).await.unwrap();
                let len: usize = pieces.iter().map(|p| p.len()).sum();
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                tcp.write_all(head.as_bytes()).await.unwrap();
                for piece in pieces {
                    tcp.write_all(piece.as_bytes()).await.unwrap();
                    tcp.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        let pool = Pool::new(addr, Duration::from_secs(2));
        for expected in ["hello world!", "at once"] {
            let req = Request::get("/")
                .header("host", "x")
                .body(crate::body::empty())
                .unwrap();
            let (resp, tx) = pool.send(req).await.unwrap();
            let (_, mut body) = resp.into_parts();
            let body = read_small(&mut body).await.unwrap();
            assert_eq!(&body[..], expected.as_bytes());
            pool.put(tx);
        }
    }
}
