//! THE request path, in named phases: check the head -> normalize the path -> the gateway's
//! own endpoints, or route -> authenticate and authorize -> CSRF -> forward. `handle` is the
//! logging phase (metrics and the access log, once per request, from the `Outcome`). Every
//! error becomes a response in `GatewayError::into_response`, in one place.

mod forwarded;
mod head;
mod labels;
pub mod request_id;
mod tunnel;
mod verify;

use crate::auth::cookies;
use crate::auth::endpoints::{self, Ctx};
use crate::auth::tokens::Claims;
use crate::auth::{csrf, Auth, Identity};
use crate::body::Body;
use crate::config::Config;
use crate::error::GatewayError;
use crate::metrics::{
    AuthOutcome, Metrics, RequestLabels, RouteLabel, RouteSeries, UpstreamLabels, UpstreamName,
};
use crate::path::{normalize, NormalizedPath};
use crate::route::{
    request_host, AuthMode, CacheControl, CsrfMode, HostHeader, OnUnauthenticated, Route,
};
use crate::server::{ConnInfo, ConnMemo, Handler};
use crate::upstream::{forward, ForwardCtx, HeaderPolicy, UpstreamClient, UpstreamError};
use head::{check_head, forward_target, request_host_of, upgrade_protocol};
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use request_id::RequestIds;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

pub struct Gateway {
    config: Arc<Config>,
    auth: Arc<Auth>,
    metrics: Arc<Metrics>,
    upstreams: Vec<UpstreamClient>,
    /// `authgate_upstream_duration_seconds`, one per upstream (index as `upstreams`).
    upstream_latency: Vec<prometheus_client::metrics::histogram::Histogram>,
    /// Each upstream's outage record (by index, like `upstreams`).
    upstream_outages: Vec<Arc<crate::outage::Episode>>,
    header_policy: HeaderPolicy,
    request_ids: RequestIds,
    /// Per upstream (index as `upstreams`): its `host:port`s and its hosts, lower-case.
    own_addresses: Vec<OwnAddresses>,
    /// Each route's request series, by `Route::index`.
    route_series: Vec<Option<RouteSeries>>,
    /// Forward-auth checks' request series (`authgate:verify`).
    verify_series: RouteSeries,
}

/// An upstream's own addresses, as it may name itself in `Location` and `Set-Cookie`.
#[derive(Default)]
struct OwnAddresses {
    authorities: Vec<String>,
    hosts: Vec<String>,
}

fn own_addresses(targets: &[crate::config::UpstreamTarget]) -> OwnAddresses {
    let mut out = OwnAddresses::default();
    for t in targets {
        out.authorities.push(
            format!(
                "{}:{}",
                t.authority.host(),
                t.authority
                    .port_u16()
                    .unwrap_or(if t.https { 443 } else { 80 })
            )
            .to_ascii_lowercase(),
        );
        out.hosts.push(t.authority.host().to_ascii_lowercase());
    }
    out
}

/// The per-request context the phases fill in; the logging phase reads it.
#[derive(Default)]
struct Outcome<'g> {
    route: Option<&'static str>,
    /// The route's request series, when it has one at hand (routes and forward-auth).
    series: Option<&'g RouteSeries>,
    /// The request's exported span (`otlp`), when spans are exported.
    trace: Option<crate::otlp::ServerSpan>,
    upstream: Option<&'g str>,
    user: Option<Claims>,
    /// A browser's page load: refusals are HTML pages (or the login redirect), not JSON.
    navigation: bool,
    /// Over TLS (directly or per a trusted proxy): the error page's headers.
    secure: bool,
    /// The `traceparent` the upstream was sent, when the gateway made it (the access line's
    /// trace id; None: the client's own went on).
    traceparent: Option<HeaderValue>,
    /// When the upstream's answer came (the end of the request's latency too: what follows
    /// is a few header changes, not worth a second clock read).
    answered: Option<Instant>,
}

/// What routing decided for a request that goes upstream.
struct Routed<'g> {
    route: &'g Route,
    /// Over TLS, directly or as a trusted proxy says.
    secure: bool,
    client_ip: IpAddr,
    host: Option<HeaderValue>,
    target: PathAndQuery,
    upgrade: Option<HeaderValue>,
}

impl Gateway {
    /// This gateway's sessions, users and keys.
    pub fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }

    pub fn new(
        config: Arc<Config>,
        auth: Arc<Auth>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, crate::ids::RngError> {
        let name = |u: &crate::config::UpstreamConfig| UpstreamName {
            upstream: u.name.clone(),
        };
        let budget = crate::upstream::buffer::Budget::new(
            config.server.max_buffered,
            metrics.buffer_overflows.clone(),
        );
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                let ejections = metrics.upstream_ejections.get_or_create(&name(u));
                UpstreamClient::new(u, ejections.clone(), budget.clone())
            })
            .collect();
        let upstream_latency = config
            .upstreams
            .iter()
            .map(|u| metrics.upstream_latency.get_or_create(&name(u)).clone())
            .collect();
        let upstream_outages = config
            .upstreams
            .iter()
            .map(|u| metrics.outages.upstream(&u.name))
            .collect();
        metrics.outages.set_every(config.log.repeat_every);
        metrics.present_at_zero(
            config.upstreams.iter().map(|u| u.name.as_str()),
            !config.login.oidc.is_empty(),
            config.routes.routes().iter().any(|r| r.basic),
        );
        let identity = &config.identity;
        let header_policy = HeaderPolicy {
            identity_headers: [
                identity.subject_header.clone(),
                identity.roles_header.clone(),
            ],
            forward_token: identity.forward_token,
            own_cookie_prefix: cookies::OWN_PREFIX,
            pass_basic_auth: identity.pass_basic_auth.clone(),
        };
        // Each upstream's own addresses, for rewriting what it says back (`Location`...).
        let own_addresses = config
            .upstreams
            .iter()
            .map(|u| own_addresses(&u.targets))
            .collect();
        let routes = config.routes.routes();
        let mut route_series: Vec<Option<RouteSeries>> = Vec::new();
        route_series.resize_with(
            routes.iter().map(|r| r.index + 1).max().unwrap_or(0),
            || None,
        );
        for r in routes {
            if let Some(slot) = route_series.get_mut(r.index) {
                *slot = Some(RouteSeries::new(r.name));
            }
        }
        Ok(Gateway {
            config,
            auth,
            metrics,
            upstreams,
            upstream_latency,
            upstream_outages,
            header_policy,
            request_ids: RequestIds::new()?,
            own_addresses,
            route_series,
            verify_series: RouteSeries::new(labels::VERIFY),
        })
    }

    async fn process<'g>(
        &'g self,
        req: Request<Incoming>,
        conn: &ConnInfo,
        request_id: &HeaderValue,
        out: &mut Outcome<'g>,
    ) -> Result<Response<Body>, GatewayError> {
        let server = &self.config.server;
        let head = check_head(&req, server.max_header_bytes, server.max_headers)?;
        if let Some(caller) = verify::endpoint(req.uri().path()) {
            out.route = Some(labels::VERIFY);
            out.series = Some(&self.verify_series);
            return Ok(Box::pin(self.verify(req, caller, conn)).await);
        }
        let path =
            normalize(req.uri().path()).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
        let secure = conn.tls || self.https_via_proxy(conn, req.headers());
        out.secure = secure;
        out.navigation = head.navigation;
        if endpoints::is_own(&path.judged) {
            out.route = Some(labels::own_endpoint(&path.judged));
            let judged = path.judged.into_owned();
            return Box::pin(self.own_endpoint(req, &judged, conn, secure)).await;
        }
        if self.config.forward_auth_only {
            // Judge-only: nothing is proxied.
            return Err(GatewayError::NotFound);
        }
        let mut routed = self.route(&req, &path, conn.peer.ip(), head.upgrade)?;
        routed.secure = secure;
        out.route = Some(routed.route.name);
        out.series = self
            .route_series
            .get(routed.route.index)
            .and_then(Option::as_ref);
        let (identity, set_cookies) = match routed.route.auth {
            AuthMode::Public => (None, None),
            AuthMode::Required => {
                // Not boxed: its rare, large paths are (a memory store's check is a few
                // hundred bytes of state; a box would be an allocation per request).
                let (id, cookies) = self
                    .authorize(&routed, &req, &path, out.navigation, &conn.memo)
                    .await?;
                (Some(id), cookies)
            }
        };
        out.user = identity.as_ref().map(|i| i.claims.clone());
        // A new trace only when someone reads it (spans exported) or the client's is invalid.
        let exporting = crate::otlp::exporting();
        let traceparent = (head.traceparent || exporting)
            .then(|| self.request_ids.traceparent_for(req.headers(), exporting))
            .flatten();
        let cache_control = routed.route.cache_control;
        let via_cookie = identity.as_ref().is_some_and(|id| id.via_cookie);
        let hop;
        // In a block of its own: what it makes on the way to the upstream (the request's
        // forms, the context) ends with it, instead of living on in this future's state
        // (and being copied with it) while the upstream answers.
        let (forwarding, upstream, index, rewrite) = {
            let guard = match (&identity, &routed.upgrade) {
                (Some(id), Some(_)) => Some(tunnel::guard(
                    self.auth.clone(),
                    id.claims.clone(),
                    req.headers(),
                    id.via_cookie,
                    routed.secure,
                    self.config.server.tunnel_recheck,
                )),
                _ => None,
            };
            let req = match &identity {
                Some(id)
                    if id.via_cookie
                        && (!csrf::is_safe_method(req.method()) || routed.upgrade.is_some()) =>
                {
                    Box::pin(self.cross_site_check(req, &routed, id, conn))
                        .await
                        .inspect_err(|e| self.count_refusal(e))?
                }
                _ => req.map(Body::Incoming),
            };
            if identity.is_some() {
                self.metrics.auth(AuthOutcome::ok);
            }
            let index = routed.route.upstream.ok_or(GatewayError::NotFound)?;
            let upstream = self.upstreams.get(index).ok_or(GatewayError::NotFound)?;
            // A body is read (up to `buffer_request_body`) before any upstream connection is
            // taken: a slow client never holds an app server's worker.
            let req = crate::upstream::buffer::request_body(
                req,
                upstream.request_buffer(),
                self.config.server.body_read_timeout,
                upstream.budget(),
            )
            .await
            .map_err(|e| match e {
                crate::body::BodyError::Stalled => GatewayError::RequestTimeout,
                crate::body::BodyError::Hyper(_) | crate::body::BodyError::Io(_) => {
                    GatewayError::BadRequest("could not read the request body".to_owned())
                }
            })?;
            out.upstream = Some(&upstream.name);
            let rewrite = self.answer_rewrite(&routed, index);
            let mut ctx = self.forward_ctx(routed, identity.as_ref(), conn, request_id);
            ctx.tunnel_guard = guard;
            ctx.traceparent = traceparent;
            // The forwarding's own span (exported only): the upstream's parent.
            hop = crate::otlp::ClientSpan::start(out.trace.as_ref(), req.method(), &upstream.name);
            if let Some(t) = hop.as_ref().and_then(|h| h.traceparent(req.headers())) {
                ctx.traceparent = Some(t);
            }
            out.traceparent = ctx.traceparent.as_ref().map(|t| t.value.clone());
            (forward(upstream, req, ctx), upstream, index, rewrite)
        };
        let sent = Instant::now();
        let forwarded = forwarding.await;
        if let Some(hop) = hop {
            hop.end(match &forwarded {
                Ok(resp) => Ok(resp.status().as_u16()),
                Err(e) => Err(e.kind().as_str()),
            });
        }
        let mut resp = match forwarded {
            Ok(resp) => resp,
            Err(e) => return Err(self.upstream_failed(upstream, index, e)),
        };
        if let Some(o) = self.upstream_outages.get(index) {
            crate::outage::upstream_answered(o, &upstream.name);
        }
        let answered = Instant::now();
        out.answered = Some(answered);
        if let Some(h) = self.upstream_latency.get(index) {
            h.observe(answered.saturating_duration_since(sent).as_secs_f64());
        }
        if let Some(rw) = rewrite {
            rw.apply(resp.status(), resp.headers_mut());
        }
        if via_cookie {
            cookie_session_answer(resp.headers_mut(), set_cookies, cache_control);
        }
        Ok(resp)
    }

    /// What to rewrite in this route's answers (None: nothing, the common case).
    fn answer_rewrite<'a>(
        &'a self,
        routed: &Routed<'a>,
        upstream: usize,
    ) -> Option<AnswerRewrite<'a>> {
        let route = routed.route;
        let mount = route.mount();
        let own = self.own_addresses.get(upstream)?;
        let redirects = route.redirect_rewrite;
        let cookies = route.cookie_rewrite && mount.is_set();
        if !redirects && !cookies {
            return None;
        }
        Some(AnswerRewrite {
            mount,
            own,
            host: routed.host.clone()?,
            secure: routed.secure,
            redirects,
            cookies,
        })
    }

    /// CSRF for a cookie-authenticated unsafe request or WebSocket handshake, by the route's
    /// mode: the origin rule (and, in `token` mode, the session's token; a handshake carries
    /// none, so it is judged by its origin alone).
    async fn cross_site_check(
        &self,
        req: Request<Incoming>,
        routed: &Routed<'_>,
        id: &Identity,
        conn: &ConnInfo,
    ) -> Result<Request<Body>, GatewayError> {
        if routed.route.csrf == CsrfMode::Off {
            return Ok(req.map(Body::Incoming));
        }
        self.origin_rule(req.headers(), routed.secure, routed.host.as_ref(), conn)?;
        if routed.route.csrf == CsrfMode::Origin || routed.upgrade.is_some() {
            return Ok(req.map(Body::Incoming));
        }
        let expected = self.auth.sessions().csrf_for(id.claims.sid());
        csrf::check(req, &expected, self.auth.body_limits()).await
    }

    /// The origin rule against this request's own origin (its `Host`, or a trusted proxy's
    /// `X-Forwarded-Host`) and `server.trusted_origins`.
    fn origin_rule(
        &self,
        headers: &HeaderMap,
        secure: bool,
        host: Option<&HeaderValue>,
        conn: &ConnInfo,
    ) -> Result<(), GatewayError> {
        let trusted = &self.config.server.trusted_proxies;
        let forwarded = (!trusted.is_empty() && trusted.iter().any(|n| n.contains(conn.peer.ip())))
            .then(|| headers.get("x-forwarded-host"))
            .flatten();
        let own = forwarded
            .or(host)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| crate::origin::own_origin(secure, h));
        crate::origin::check(headers, own.as_deref(), &self.config.server.trusted_origins)
            .map_err(|_| GatewayError::Csrf)
    }

    /// The route that judges a request (proxied, or described by a forward-auth caller).
    fn lookup(
        &self,
        method: &http::Method,
        host: Option<&HeaderValue>,
        path: &NormalizedPath<'_>,
    ) -> Result<&Route, GatewayError> {
        // The host's text only where a route asks for one.
        let judged_host = if self.config.routes.judges_hosts() {
            host.and_then(|h| h.to_str().ok()).map(request_host)
        } else {
            None
        };
        self.config
            .routes
            .lookup(method, judged_host, &path.judged)
            .ok_or(GatewayError::NotFound)
    }

    fn header_policy(&self) -> &HeaderPolicy {
        &self.header_policy
    }

    fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        forwarded::client_ip(peer, headers, &self.config.server.trusted_proxies)
    }

    /// A trusted proxy that terminated TLS says so with `X-Forwarded-Proto: https`.
    fn https_via_proxy(&self, conn: &ConnInfo, headers: &HeaderMap) -> bool {
        let trusted = &self.config.server.trusted_proxies;
        !trusted.is_empty() && forwarded::https_via_proxy(conn.peer.ip(), headers, trusted)
    }

    /// `/auth/*` and the JWKS document.
    async fn own_endpoint(
        &self,
        req: Request<Incoming>,
        judged: &str,
        conn: &ConnInfo,
        secure: bool,
    ) -> Result<Response<Body>, GatewayError> {
        let query = req.uri().query().map(str::to_owned);
        let host = request_host_of(&req)?;
        let ctx = Ctx {
            client_ip: self.client_ip(conn.peer.ip(), req.headers()),
            secure,
            query: query.as_deref(),
            host: host.as_ref().and_then(|h| h.to_str().ok()),
        };
        endpoints::handle(&self.auth, req, judged, ctx).await
    }

    /// The first matching route, the target the upstream will see, and the upgrade asked for
    /// (refused on routes that do not allow it).
    fn route<'g>(
        &'g self,
        req: &Request<Incoming>,
        path: &NormalizedPath<'_>,
        peer: IpAddr,
        upgrade: bool,
    ) -> Result<Routed<'g>, GatewayError> {
        let host = request_host_of(req)?;
        let route = self.lookup(req.method(), host.as_ref(), path)?;
        let strip = route
            .strip_prefix
            .as_deref()
            .map(|p| (p, route.case_insensitive));
        let mut target = forward_target(req.uri(), path, strip)?;
        if let Some(up) = &route.upstream_prefix {
            target = PathAndQuery::try_from(format!("{up}{target}")).map_err(|_| {
                GatewayError::BadRequest("the request target cannot be forwarded".to_owned())
            })?;
        }
        let upgrade = if upgrade {
            upgrade_protocol(req.headers())?
        } else {
            None
        };
        if upgrade.is_some() && !route.websocket {
            return Err(GatewayError::BadRequest(
                "protocol upgrades are not allowed on this route".to_owned(),
            ));
        }
        Ok(Routed {
            route,
            secure: false,
            client_ip: self.client_ip(peer, req.headers()),
            host,
            target,
            upgrade,
        })
    }

    /// Authentication (refreshing a cookie session on the fly), then roles. Returns the
    /// `Set-Cookie` headers of an on-the-fly refresh.
    async fn authorize(
        &self,
        routed: &Routed<'_>,
        req: &Request<Incoming>,
        path: &NormalizedPath<'_>,
        navigation: bool,
        memo: &ConnMemo,
    ) -> Result<(Identity, Option<HeaderMap>), GatewayError> {
        let (route, secure, client_ip) = (routed.route, routed.secure, routed.client_ip);
        let headers = req.headers();
        // An API key or Basic pair, where the route takes them (rarely: a flag check first).
        if route.api_keys || route.basic {
            if let Some(m) = crate::auth::api_keys::presented(headers, route) {
                // Boxed, as the cookie refresh below: rare paths with large states, kept out
                // of every protected request's future.
                let result =
                    Box::pin(self.auth.authenticate_machine(m, &path.judged, client_ip)).await;
                return match result {
                    Ok(id) => self.check_roles(route, id).map(|id| (id, None)),
                    Err(e) => {
                        self.count_refusal(&e);
                        Err(challenge(route, e))
                    }
                };
            }
        }
        let result = match self.auth.authenticate_on(headers, secure, memo).await {
            Err(GatewayError::MissingToken | GatewayError::InvalidToken(_))
                if !headers.contains_key(header::AUTHORIZATION)
                    && cookies::get(headers, cookies::names(secure).refresh).is_some() =>
            {
                let sessions = self.auth.sessions();
                Box::pin(sessions.refresh_cookie(headers, secure))
                    .await
                    .map(|(id, set)| (id, Some(set)))
            }
            other => other.map(|id| (id, None)),
        };
        if let Err(e) = &result {
            self.count_refusal(e);
        }
        let (identity, set_cookies) = match result {
            Ok(ok) => ok,
            // Only a page load goes to the login page; a fetch, a WebSocket handshake or a
            // PUT there gets 401, so the app can show its own signed-out state.
            Err(GatewayError::MissingToken | GatewayError::InvalidToken(_))
                if route.on_unauthenticated == OnUnauthenticated::Redirect && navigation =>
            {
                // The normalized path: `//app/page` comes back as `/app/page`, a local path.
                let next = match req.uri().query() {
                    Some(q) => format!("{}?{q}", path.forward),
                    None => path.forward.to_string(),
                };
                return Err(GatewayError::LoginRedirect { next });
            }
            Err(e) => return Err(challenge(route, e)),
        };
        self.check_roles(route, identity)
            .map(|id| (id, set_cookies))
    }

    fn check_roles(&self, route: &Route, identity: Identity) -> Result<Identity, GatewayError> {
        if !route.roles.is_empty() && !identity.roles().iter().any(|r| route.roles.contains(r)) {
            self.metrics.auth(AuthOutcome::forbidden);
            return Err(GatewayError::InsufficientRole);
        }
        if route.second_factor && !identity.passed_second_factor() {
            self.metrics.auth(AuthOutcome::forbidden);
            return Err(GatewayError::SecondFactorRequired);
        }
        Ok(identity)
    }

    /// Counts a refused judgment by outcome (errors that are no judgment, such as the store
    /// being down, are not counted here).
    fn count_refusal(&self, e: &GatewayError) {
        if let Some(outcome) = refusal_outcome(e) {
            self.metrics.auth(outcome);
        }
    }

    /// What the header rewrite needs to know about this request. (A plain function: the
    /// forwarding future is awaited in `process` itself, one future fewer to move around.)
    fn forward_ctx<'a>(
        &'a self,
        routed: Routed<'_>,
        identity: Option<&Identity>,
        conn: &'a ConnInfo,
        request_id: &'a HeaderValue,
    ) -> ForwardCtx<'a> {
        ForwardCtx {
            peer_ip: conn.peer.ip(),
            peer_value: &conn.peer_value,
            client_ip: routed.client_ip,
            tls: routed.secure,
            host: routed.host,
            host_override: match &routed.route.host_header {
                HostHeader::Literal(v) => Some(v.clone()),
                HostHeader::Client | HostHeader::Upstream => None,
            },
            upstream_host: routed.route.host_header == HostHeader::Upstream,
            request_id,
            traceparent: None,
            policy: &self.header_policy,
            identity: identity.map(|id| id.claims.identity_values()),
            key_name: identity
                .and_then(|id| id.key.as_deref())
                .and_then(|k| HeaderValue::from_str(k).ok()),
            target: routed.target,
            upgrade: routed.upgrade,
            tunnel_guard: None,
            forwarded_prefix: routed.route.mount().is_set().then(|| {
                HeaderValue::from_str(&routed.route.public_mount())
                    .unwrap_or(HeaderValue::from_static("/"))
            }),
        }
    }

    /// Counts a failed exchange by upstream and kind; logs it (the first of an outage, then
    /// a count every `log.repeat_every`).
    fn upstream_failed(
        &self,
        upstream: &UpstreamClient,
        index: usize,
        e: UpstreamError,
    ) -> GatewayError {
        if e.is_client_fault() || e.is_client_stall() {
            return e.into();
        }
        if let Some(o) = self.upstream_outages.get(index) {
            crate::outage::upstream_failed(o, &upstream.name, &e.kind(), &error_chain(&e));
        }
        self.metrics
            .upstream_errors
            .get_or_create(&UpstreamLabels {
                upstream: upstream.name.clone(),
                kind: e.kind(),
            })
            .inc();
        e.into()
    }
}

/// An error and its sources, `a: b: c` (hyper's own message is often only "connection
/// error"; the cause is further down).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// The access log's `reason` for an error answer: the contract's code, and for a 502 whether
/// the upstream could not be reached or closed mid-answer.
fn refusal_reason(e: &GatewayError) -> &'static str {
    match e {
        GatewayError::BadGateway(m) if m.starts_with("connect") => "upstream_unreachable",
        GatewayError::BadGateway(_) => "upstream_closed",
        other => other.status_and_code().1,
    }
}

/// A 401 on a `basic = true` route carries a Basic challenge (clients that only speak Basic
/// ask for credentials on it).
fn challenge(route: &Route, e: GatewayError) -> GatewayError {
    match e {
        GatewayError::MissingToken
        | GatewayError::InvalidCredentials
        | GatewayError::InvalidToken(_)
            if route.basic =>
        {
            GatewayError::BasicChallenge(Box::new(e))
        }
        e => e,
    }
}

/// The auth-decision outcome a refusal stands for.
fn refusal_outcome(e: &GatewayError) -> Option<AuthOutcome> {
    use crate::auth::tokens::TokenError;
    match e {
        GatewayError::MissingToken => Some(AuthOutcome::missing),
        GatewayError::InvalidToken(TokenError::Expired) => Some(AuthOutcome::expired),
        GatewayError::InvalidToken(
            TokenError::Revoked
            | TokenError::BeforeEpoch
            | TokenError::RefreshReused
            | TokenError::SessionUnknown
            | TokenError::UserGone,
        ) => Some(AuthOutcome::revoked),
        GatewayError::InvalidToken(_) => Some(AuthOutcome::invalid),
        GatewayError::InsufficientRole => Some(AuthOutcome::forbidden),
        GatewayError::Csrf => Some(AuthOutcome::csrf),
        _ => None,
    }
}

/// The answer to a cookie-authenticated request: the cookies of an on-the-fly refresh, and no
/// caching.
fn cookie_session_answer(h: &mut HeaderMap, set: Option<HeaderMap>, policy: CacheControl) {
    if let Some(cookies) = set {
        for v in cookies.get_all(header::SET_COOKIE) {
            h.append(header::SET_COOKIE, v.clone());
        }
    }
    cookie_cache_control(h, policy);
}

/// Rewriting an upstream's answer for where its route mounts it (`crate::rewrite`).
struct AnswerRewrite<'a> {
    mount: crate::rewrite::Mount<'a>,
    own: &'a OwnAddresses,
    /// The client's (checked) host: with the scheme, the origin absolute URLs get.
    host: HeaderValue,
    secure: bool,
    redirects: bool,
    cookies: bool,
}

impl AnswerRewrite<'_> {
    fn apply(&self, status: StatusCode, h: &mut HeaderMap) {
        use crate::rewrite;
        // Looked for only where they occur (a `Location` on redirects and 201; `Refresh` and
        // cookies on a prefixed mount): a plain 200 costs no header lookup.
        let redirected = self.redirects
            && (((status.is_redirection() || status == StatusCode::CREATED)
                && h.contains_key(header::LOCATION))
                || (self.mount.is_set() && h.contains_key(header::REFRESH)));
        if redirected {
            let origin = format!(
                "{}://{}",
                if self.secure { "https" } else { "http" },
                self.host.to_str().unwrap_or_default()
            );
            for (name, f) in [
                (header::LOCATION, rewrite::location as RewriteFn),
                (header::REFRESH, rewrite::refresh as RewriteFn),
            ] {
                let new = h
                    .get(&name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| f(v, &self.own.authorities, &origin, &self.mount))
                    .and_then(|v| HeaderValue::try_from(v).ok());
                if let Some(v) = new {
                    h.insert(name, v);
                }
            }
        }
        if self.cookies && h.contains_key(header::SET_COOKIE) {
            let values: Vec<HeaderValue> = h
                .get_all(header::SET_COOKIE)
                .iter()
                .map(|v| {
                    v.to_str()
                        .ok()
                        .and_then(|c| rewrite::set_cookie(c, &self.own.hosts, &self.mount))
                        .and_then(|c| HeaderValue::try_from(c).ok())
                        .unwrap_or_else(|| v.clone())
                })
                .collect();
            h.remove(header::SET_COOKIE);
            for v in values {
                h.append(header::SET_COOKIE, v);
            }
        }
    }
}

type RewriteFn = fn(&str, &[String], &str, &crate::rewrite::Mount<'_>) -> Option<String>;

/// The contract's JSON error, or for a browser's page load an HTML page with the same status
/// (and `Retry-After` / `WWW-Authenticate`), for the refusals a person should read.
fn error_response(e: GatewayError, navigation: bool, secure: bool) -> Response<Body> {
    let status = e.status_and_code().0;
    let page = navigation
        && (matches!(
            status.as_u16(),
            403 | 404 | 405 | 408 | 413 | 429 | 431 | 502 | 503 | 504
        ) || matches!(e, GatewayError::SecondFactorRequired));
    if !page {
        return e.into_response();
    }
    let sentence = match &e {
        GatewayError::Csrf => "This request came from another site, so it was refused.",
        GatewayError::InsufficientRole => "Your account may not open this page.",
        GatewayError::SecondFactorRequired => {
            "This page needs a sign-in with a second factor. Set one up on your account page (/auth/account), then sign in again."
        }
        GatewayError::NotFound => "There is no page at this address.",
        GatewayError::BadGateway(_) => {
            "The application behind this gateway could not be reached. Try again shortly."
        }
        GatewayError::GatewayTimeout => {
            "The application behind this gateway took too long to answer. Try again shortly."
        }
        GatewayError::Unavailable(_) => "The service is unavailable right now. Try again shortly.",
        GatewayError::TooManyAttempts { .. } => "Too many attempts. Wait a while, then try again.",
        GatewayError::BodyTooLarge => "What was sent is too large.",
        _ => "The request was refused.",
    };
    let sign_in = matches!(
        e,
        GatewayError::Csrf | GatewayError::InsufficientRole | GatewayError::SecondFactorRequired
    );
    let json = e.into_response();
    let mut resp = crate::auth::pages::error(status, sentence, sign_in, secure);
    for name in [header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(v) = json.headers().get(&name) {
            resp.headers_mut().insert(name, v.clone());
        }
    }
    resp
}

/// Responses to cookie-authenticated requests stay out of caches (a browser's Back button must
/// not show them after logout), unless the upstream chose for itself or the route says so.
fn cookie_cache_control(h: &mut HeaderMap, policy: CacheControl) {
    let no_store = HeaderValue::from_static("no-store");
    match policy {
        CacheControl::Upstream => {}
        CacheControl::NoStore => {
            h.insert(header::CACHE_CONTROL, no_store);
        }
        CacheControl::Default => {
            // An HTML page the app marked `no-cache` or `private` (or nothing) may still be
            // shown by Back after logout: only `no-store` keeps it out of the history cache.
            let html = h
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
            let weak = h
                .get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok())
                .is_none_or(|v| {
                    let v = v.to_ascii_lowercase();
                    (v.contains("no-cache") || v.contains("private")) && !v.contains("no-store")
                });
            if html && weak {
                h.insert(header::CACHE_CONTROL, no_store);
            } else {
                h.entry(header::CACHE_CONTROL).or_insert(no_store);
            }
        }
    }
}

/// The request as the access line shows it.
#[derive(Default)]
struct AccessFacts {
    path: String,
    host: String,
    user_agent: String,
    client_ip: String,
    traceparent: Option<HeaderValue>,
}

impl AccessFacts {
    fn of(req: &Request<Incoming>, client_ip: IpAddr) -> AccessFacts {
        let text = |name: http::header::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(256).collect::<String>())
        };
        AccessFacts {
            path: req.uri().path().to_owned(),
            host: text(http::header::HOST)
                .or_else(|| req.uri().authority().map(|a| a.to_string()))
                .unwrap_or_else(|| "-".to_owned()),
            user_agent: text(http::header::USER_AGENT).unwrap_or_else(|| "-".to_owned()),
            client_ip: client_ip.to_string(),
            traceparent: req.headers().get(request_id::TRACEPARENT).cloned(),
        }
    }
}

/// A connection's memo keeps the last access token verified on it (see `auth::tokens`).
impl crate::auth::tokens::TokenMemo for ConnMemo {
    fn with_last(&self, f: &mut dyn FnMut(&mut crate::auth::tokens::LastToken)) {
        self.try_with(f);
    }
}

impl Handler for Gateway {
    async fn handle(self: Arc<Self>, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let start = Instant::now();
        let request_id = self.request_ids.for_request(req.headers());
        let method = req.method().clone();
        let access_log = tracing::enabled!(target: "access", tracing::Level::INFO);
        // What the access line says of the request (read only when it is written).
        let seen = access_log
            .then(|| AccessFacts::of(&req, self.client_ip(conn.peer.ip(), req.headers())));
        let mut out = Outcome::default();
        // Every line logged while serving this request carries its id (the span's field).
        let span = tracing::info_span!("request", request_id = request_id.to_str().unwrap_or("-"));
        if crate::otlp::exporting() {
            let client = self.client_ip(conn.peer.ip(), req.headers());
            out.trace = crate::otlp::ServerSpan::start(&method, req.headers(), client);
        }
        let processed = self
            .process(req, &conn, &request_id, &mut out)
            .instrument(span.clone())
            .await;
        let mut reason = None;
        let mut resp = match processed {
            Ok(resp) => resp,
            Err(e) => {
                if matches!(e, GatewayError::Internal(_)) {
                    span.in_scope(|| tracing::error!(error = %e, "internal error"));
                }
                reason = Some(refusal_reason(&e));
                error_response(e, out.navigation, out.secure)
            }
        };
        resp.headers_mut().insert(X_REQUEST_ID, request_id.clone());
        let status = resp.status().as_u16();
        let elapsed = out
            .answered
            .unwrap_or_else(Instant::now)
            .saturating_duration_since(start);
        let route = out.route.unwrap_or("none");
        if let Some(trace) = out.trace.take() {
            trace.end(&method, route, status);
        }
        match out.series {
            Some(series) => series.count(&self.metrics, status, elapsed.as_secs_f64()),
            None => {
                self.metrics
                    .latency
                    .get_or_create(&RouteLabel {
                        route: std::borrow::Cow::Borrowed(route),
                    })
                    .observe(elapsed.as_secs_f64());
                self.metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        route: std::borrow::Cow::Borrowed(route),
                        status,
                    })
                    .inc();
            }
        }
        if !access_log {
            return resp;
        }
        let seen = seen.unwrap_or_default();
        let trace_id = out
            .traceparent
            .as_ref()
            .or(seen.traceparent.as_ref())
            .and_then(|t| t.to_str().ok())
            .and_then(|t| t.split('-').nth(1))
            .unwrap_or("-");
        // The body's length when known now (a streamed answer's is not).
        let bytes = http_body::Body::size_hint(resp.body())
            .exact()
            .map_or_else(|| "-".to_owned(), |n| n.to_string());
        tracing::info!(
            target: "access",
            request_id = request_id.to_str().unwrap_or("-"),
            peer = %conn.peer,
            client_ip = %seen.client_ip,
            host = %seen.host,
            method = %method,
            path = %seen.path,
            route = %route,
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            upstream = out.upstream.unwrap_or("-"),
            user = out.user.as_ref().map_or("-", |c| c.sub()),
            reason = reason.unwrap_or("-"),
            bytes = %bytes,
            user_agent = %seen.user_agent,
            trace_id,
        );
        resp
    }

    fn connections_changed(&self, delta: i64) {
        self.metrics.open_connections.inc_by(delta);
    }

    fn connections_parked(&self, delta: i64) {
        self.metrics.idle_connections.inc_by(delta);
    }
}
