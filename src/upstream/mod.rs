//! Forwarding to upstreams: one connection pool per upstream, the header rewrite the contract
//! promises, timeouts, and WebSocket upgrades spliced through.

mod headers;
mod pool;

pub use headers::{rewrite_request_headers, strip_hop_by_hop, ForwardCtx};
pub use pool::{Pool, PooledBody, SendError};

use crate::body::Body;
use crate::config::UpstreamConfig;
use crate::error::GatewayError;
use http::header::{self, HeaderValue};
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
    authority: http::uri::Authority,
    host: HeaderValue,
    pool: Arc<Pool>,
    request_timeout: Duration,
}

/// How forwarding failed, for the metrics: `connect`, `timeout` or `io`.
pub struct ForwardError {
    pub kind: &'static str,
    pub error: GatewayError,
}

impl ForwardError {
    fn new(kind: &'static str, error: GatewayError) -> Self {
        ForwardError { kind, error }
    }
}

impl UpstreamClient {
    pub fn new(cfg: &UpstreamConfig) -> Self {
        let target = cfg.authority.as_str().to_owned();
        let host = HeaderValue::from_str(cfg.authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        UpstreamClient {
            name: cfg.name.clone(),
            authority: cfg.authority.clone(),
            host,
            pool: Arc::new(Pool::new(target, cfg.connect_timeout)),
            request_timeout: cfg.request_timeout,
        }
    }

    /// Idle keep-alive connections to this upstream right now.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle_len()
    }

    pub fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }
}

/// Sends the request and returns the upstream's response: small bodies read whole, others
/// streamed.
pub async fn forward(
    up: &UpstreamClient,
    mut req: Request<Body>,
    ctx: ForwardCtx<'_>,
) -> Result<Response<Body>, ForwardError> {
    let client_upgrade = ctx.upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.extensions = http::Extensions::new();
    parts.uri = Uri::from(ctx.target.clone());
    parts.version = Version::HTTP_11;
    rewrite_request_headers(&mut parts.headers, &ctx);
    if !parts.headers.contains_key(header::HOST) {
        parts.headers.insert(header::HOST, up.host.clone());
    }
    let outgoing = Request::from_parts(parts, body);
    let exchange = async {
        let (resp, tx) = up.pool.send(outgoing).await.map_err(|e| {
            let kind = match e {
                SendError::Io(_) => "io",
                _ => "connect",
            };
            ForwardError::new(kind, GatewayError::BadGateway(e.to_string()))
        })?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now belongs to the upgrade; it never returns to the pool.
            return Ok(resp.map(|b| b.boxed()));
        }
        let small = resp
            .body()
            .size_hint()
            .exact()
            .is_some_and(|n| n <= BUFFER_UP_TO);
        if !small {
            return Ok(resp.map(|b| PooledBody::new(b, tx, up.pool.clone()).boxed()));
        }
        let (parts, body) = resp.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| ForwardError::new("io", GatewayError::BadGateway(format!("io: {e}"))))?;
        up.pool.put(tx);
        Ok(Response::from_parts(
            parts,
            crate::body::full(bytes.to_bytes()),
        ))
    };
    let mut resp = tokio::time::timeout(up.request_timeout, exchange)
        .await
        .map_err(|_| ForwardError::new("timeout", GatewayError::GatewayTimeout))??;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ForwardError::new(
                "io",
                GatewayError::BadGateway("the upstream switched protocols unasked".to_owned()),
            ));
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::join!(client_upgrade, upstream_upgrade) {
                (Ok(client), Ok(upstream)) => {
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                _ => tracing::debug!("upgrade did not complete"),
            }
        });
        return Ok(resp);
    }
    strip_hop_by_hop(resp.headers_mut());
    Ok(resp)
}
