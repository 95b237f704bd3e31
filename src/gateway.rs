//! THE request path, in phases: check framing and head size -> normalize the path -> the
//! gateway's own endpoints, or route -> authenticate -> authorize -> forward. Every error
//! becomes a response in `GatewayError::into_response`, in one place.

use crate::auth::endpoints::{self, Ctx};
use crate::auth::{Auth, Identity};
use crate::body::Body;
use crate::config::Config;
use crate::error::GatewayError;
use crate::metrics::{Metrics, RequestLabels, UpstreamLabels};
use crate::path::normalize;
use crate::route::{request_host, AuthMode, OnUnauthenticated, Route};
use crate::server::{ConnInfo, Handler};
use crate::upstream::{forward, ForwardCtx, UpstreamClient};
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response};
use hyper::body::Incoming;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

pub struct Gateway {
    pub config: Arc<Config>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    upstreams: Vec<UpstreamClient>,
}

/// What the access log and metrics say about one request.
#[derive(Default)]
struct Outcome<'g> {
    route: Option<&'static str>,
    upstream: Option<&'g str>,
    user: Option<Arc<crate::auth::tokens::Claims>>,
}

impl Gateway {
    pub fn new(config: Arc<Config>, auth: Arc<Auth>, metrics: Arc<Metrics>) -> Self {
        let upstreams = config.upstreams.iter().map(UpstreamClient::new).collect();
        Gateway {
            config,
            auth,
            metrics,
            upstreams,
        }
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
    /// X-Forwarded-For entry that is not itself a trusted proxy.
    fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: IpAddr| {
            self.config
                .server
                .trusted_proxies
                .iter()
                .any(|n| n.contains(ip))
        };
        if !trusted(peer) {
            return peer;
        }
        let chain: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        chain
            .into_iter()
            .rev()
            .find(|ip| !trusted(*ip))
            .unwrap_or(peer)
    }

    async fn process<'g>(
        &'g self,
        req: Request<Incoming>,
        conn: ConnInfo,
        request_id: &HeaderValue,
        out: &mut Outcome<'g>,
    ) -> Result<Response<Body>, GatewayError> {
        check_framing(req.headers())?;
        check_head_size(&req, self.config.server.max_header_bytes)?;
        let path =
            normalize(req.uri().path()).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
        let client_ip = self.client_ip(conn.peer.ip(), req.headers());
        if endpoints::is_own(&path.judged) {
            out.route = Some("authgate");
            let judged = path.judged.into_owned();
            let query = req.uri().query().map(str::to_owned);
            let ctx = Ctx {
                client_ip,
                tls: conn.tls,
                query: query.as_deref(),
            };
            return Box::pin(endpoints::handle(&self.auth, req, &judged, ctx)).await;
        }
        let host = request_host_of(&req);
        let judged_host = host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .map(request_host);
        let route = self
            .config
            .routes
            .lookup(req.method(), judged_host, &path.judged)
            .ok_or(GatewayError::NotFound)?;
        out.route = Some(route.name);
        let target = forward_target(req.uri(), &path.forward)?;
        let upgrade = upgrade_protocol(req.headers());
        if upgrade.is_some() && !route.websocket {
            return Err(GatewayError::BadRequest(
                "protocol upgrades are not allowed on this route".to_owned(),
            ));
        }
        let (identity, set_cookies) = match route.auth {
            AuthMode::Public => (None, None),
            AuthMode::Required => {
                let (id, cookies) = Box::pin(self.authorize(route, &req, conn.tls)).await?;
                (Some(id), cookies)
            }
        };
        out.user = identity.as_ref().map(|i| i.claims.clone());
        let req = match &identity {
            Some(id) if id.via_cookie && !is_safe_method(req.method()) => {
                Box::pin(check_csrf(req, self.config.server.max_body_bytes)).await?
            }
            _ => req.map(Body::Incoming),
        };
        let upstream = &self.upstreams[route.upstream];
        out.upstream = Some(&upstream.name);
        let ctx = ForwardCtx {
            peer_ip: conn.peer.ip(),
            tls: conn.tls,
            host: host.as_ref(),
            request_id,
            identity: identity.as_ref(),
            identity_cfg: &self.config.identity,
            target,
            upgrade,
        };
        let mut resp = match forward(upstream, req, ctx).await {
            Ok(resp) => resp,
            Err(failure) => {
                self.metrics
                    .upstream_errors
                    .get_or_create(&UpstreamLabels {
                        upstream: upstream.name.clone(),
                        kind: failure.kind.to_owned(),
                    })
                    .inc();
                return Err(failure.error);
            }
        };
        if let Some(cookies) = set_cookies {
            for v in cookies.get_all(header::SET_COOKIE) {
                resp.headers_mut().append(header::SET_COOKIE, v.clone());
            }
        }
        Ok(resp)
    }

    /// Authentication (refreshing a cookie session on the fly), then roles. Returns the `Set-Cookie` headers of an on-the-fly refresh.
    async fn authorize(
        &self,
        route: &Route,
        req: &Request<Incoming>,
        tls: bool,
    ) -> Result<(Identity, Option<HeaderMap>), GatewayError> {
        let headers = req.headers();
        let mut set_cookies = None;
        let result = match self.auth.authenticate(headers).await {
            Err(GatewayError::MissingToken | GatewayError::InvalidToken(_))
                if !headers.contains_key(header::AUTHORIZATION)
                    && crate::auth::cookies::get(headers, crate::auth::cookies::REFRESH)
                        .is_some() =>
            {
                endpoints::refresh_from_cookie(&self.auth, headers, tls)
                    .await
                    .map(|(claims, cookies)| {
                        set_cookies = Some(cookies);
                        Identity {
                            claims,
                            via_cookie: true,
                        }
                    })
            }
            other => other,
        };
        let identity = match result {
            Ok(id) => id,
            Err(GatewayError::MissingToken | GatewayError::InvalidToken(_))
                if route.on_unauthenticated == OnUnauthenticated::Redirect =>
            {
                let next = req
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                return Err(GatewayError::LoginRedirect { next });
            }
            Err(e) => return Err(e),
        };
        if !route.roles.is_empty() && !identity.roles().iter().any(|r| route.roles.contains(r)) {
            return Err(GatewayError::InsufficientRole);
        }
        Ok((identity, set_cookies))
    }
}

/// A cookie-authenticated unsafe request must prove it came from our pages: the CSRF cookie's
/// value as `X-CSRF-Token`, or as the `csrf_token` field of a urlencoded form (whose body is
/// then read, bounded by `max_body_bytes`, and forwarded as read).
async fn check_csrf(
    req: Request<Incoming>,
    max_body: usize,
) -> Result<Request<Body>, GatewayError> {
    let expected = crate::auth::cookies::get(req.headers(), crate::auth::cookies::CSRF)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or(GatewayError::Csrf)?;
    let header = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok());
    if header.is_some_and(|h| constant_time_eq(h, &expected)) {
        return Ok(req.map(Body::Incoming));
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if header.is_some() || !is_form {
        return Err(GatewayError::Csrf);
    }
    let (parts, body) = req.into_parts();
    let bytes = crate::body::read_limited(body, max_body).await?;
    let field = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .ok()
        .and_then(|pairs| {
            pairs
                .into_iter()
                .find(|(k, _)| k == "csrf_token")
                .map(|(_, v)| v)
        });
    if !field.is_some_and(|f| constant_time_eq(&f, &expected)) {
        return Err(GatewayError::Csrf);
    }
    Ok(Request::from_parts(parts, crate::body::full(bytes)))
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn is_safe_method(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The Host header, or the authority of an absolute-form or HTTP/2 request target.
fn request_host_of(req: &Request<Incoming>) -> Option<HeaderValue> {
    match req.headers().get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    }
}

/// The request target the upstream receives: the client's own when normalization changed
/// nothing (no copy), else the normalized path with the client's query.
fn forward_target(uri: &http::Uri, forward: &str) -> Result<PathAndQuery, GatewayError> {
    let unforwardable =
        || GatewayError::BadRequest("the request target cannot be forwarded".to_owned());
    match uri.path_and_query() {
        Some(pq) if pq.path() == forward => Ok(pq.clone()),
        _ => {
            let target = match uri.query() {
                Some(q) => format!("{forward}?{q}"),
                None => forward.to_owned(),
            };
            PathAndQuery::try_from(target).map_err(|_| unforwardable())
        }
    }
}

/// A WebSocket-style upgrade request's protocol (HTTP/1.1 only).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    wants
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Ambiguous framing is refused even if the parser let it through: the upstream must never
/// see a body boundary that differs from ours.
fn check_framing(headers: &HeaderMap) -> Result<(), GatewayError> {
    let te = headers.contains_key(header::TRANSFER_ENCODING);
    let cls: Vec<&HeaderValue> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
    if te && !cls.is_empty() {
        return Err(GatewayError::BadRequest(
            "both Transfer-Encoding and Content-Length".to_owned(),
        ));
    }
    if cls.len() > 1 || cls.first().is_some_and(|v| v.as_bytes().contains(&b',')) {
        return Err(GatewayError::BadRequest(
            "more than one Content-Length".to_owned(),
        ));
    }
    Ok(())
}

fn check_head_size(req: &Request<Incoming>, max: usize) -> Result<(), GatewayError> {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if line + headers > max {
        return Err(GatewayError::HeadersTooLarge);
    }
    Ok(())
}

/// Request ids: kept from the client when sane, else a per-process random prefix and a
/// counter (unique, cheap: no RNG call per request).
fn request_id(headers: &HeaderMap) -> HeaderValue {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if let Some(id) = headers.get("x-request-id").filter(|v| {
        !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(u8::is_ascii_graphic)
    }) {
        return id.clone();
    }
    let prefix = PREFIX.get_or_init(crate::auth::tokens::random_id);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // The random id's base64url alphabet and hex digits: always a valid header value.
    HeaderValue::try_from(numbered_id(prefix, n)).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// `{prefix}-{n in lower-case hex}`, without the formatting machinery (once per request).
fn numbered_id(prefix: &str, n: u64) -> String {
    let mut id = String::with_capacity(prefix.len() + 17);
    id.push_str(prefix);
    id.push('-');
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        let nibble = (n >> (shift * 4)) & 0xf;
        id.push(char::from(b"0123456789abcdef"[nibble as usize]));
    }
    id
}

impl Handler for Gateway {
    async fn handle(self: Arc<Self>, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let start = Instant::now();
        let request_id = request_id(req.headers());
        let method = req.method().clone();
        let access_log = tracing::enabled!(target: "access", tracing::Level::INFO);
        let raw_path = if access_log {
            req.uri().path().to_owned()
        } else {
            String::new()
        };
        let mut out = Outcome::default();
        let mut resp = match self.process(req, conn, &request_id, &mut out).await {
            Ok(resp) => resp,
            Err(e) => {
                if matches!(e, GatewayError::Internal(_)) {
                    tracing::error!(error = %e, request_id = request_id.to_str().unwrap_or("-"), "internal error");
                }
                e.into_response()
            }
        };
        resp.headers_mut().insert(X_REQUEST_ID, request_id.clone());
        let status = resp.status().as_u16();
        let elapsed = start.elapsed();
        let route = out.route.unwrap_or("none");
        self.metrics.latency.observe(elapsed.as_secs_f64());
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                route: std::borrow::Cow::Borrowed(route),
                status,
            })
            .inc();
        if !access_log {
            return resp;
        }
        tracing::info!(
            target: "access",
            request_id = request_id.to_str().unwrap_or("-"),
            peer = %conn.peer,
            method = %method,
            path = %raw_path,
            route = %route,
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            upstream = out.upstream.unwrap_or("-"),
            user = out.user.as_ref().map_or("-", |c| c.sub.as_str()),
        );
        resp
    }

    fn connections_changed(&self, delta: i64) {
        self.metrics.open_connections.inc_by(delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_ids_are_prefix_dash_hex() {
        for n in [0, 1, 9, 10, 15, 16, 255, 4096, 0xdead_beef, u64::MAX] {
            assert_eq!(numbered_id("p", n), format!("p-{n:x}"));
        }
    }
}
