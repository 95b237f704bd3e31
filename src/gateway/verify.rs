//! Forward-auth: judging requests for a proxy in front (nginx `auth_request`, Traefik and
//! Caddy `forward_auth`, Envoy `ext_authz`) with the same normalization, routes, tokens,
//! revocation, roles and CSRF as proxying. The convention is chosen by the endpoint the proxy
//! calls, never by which headers are present (a client can add headers a proxy passes on),
//! and only a caller in `server.trusted_proxies` is believed. The check never refreshes or
//! sets cookies (proxies drop or merge them): an expired browser session is sent through
//! `GET /auth/refresh?next=` instead.

use super::head::normalize_host;
use super::Gateway;
use crate::auth::{cookies, csrf, tokens::TokenType, Identity};
use crate::body::{empty, Body};
use crate::error::GatewayError;
use crate::metrics::AuthOutcome;
use crate::path::{encode_component, normalize};
use crate::route::{request_host, AuthMode, CsrfMode, OnUnauthenticated};
use crate::server::ConnInfo;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

/// Which proxy is calling, named by the endpoint it calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// `/auth/verify/nginx`: `X-Original-Method`, `X-Original-URI`, `Host`.
    Nginx,
    /// `/auth/verify`: `X-Forwarded-Method`, `-Uri`, `-Host`, `-Proto` (Traefik, Caddy).
    Forwarded,
    /// `/auth/verify/ext_authz/<path and query>`: the request's own method (Envoy).
    ExtAuthz,
}

const EXT_AUTHZ: &str = "/auth/verify/ext_authz";

/// The forward-auth endpoint a raw request path names, if any.
pub fn endpoint(raw_path: &str) -> Option<Caller> {
    match raw_path {
        "/auth/verify/nginx" => Some(Caller::Nginx),
        "/auth/verify" => Some(Caller::Forwarded),
        p if p == EXT_AUTHZ || p.starts_with("/auth/verify/ext_authz/") => Some(Caller::ExtAuthz),
        _ => None,
    }
}

/// Why a request is not let through.
enum Refusal {
    /// A browser route without a valid session: where to send it.
    Redirect(String),
    Error(GatewayError),
}

impl From<GatewayError> for Refusal {
    fn from(e: GatewayError) -> Self {
        Refusal::Error(e)
    }
}

/// The original request, as the calling proxy describes it.
struct Original {
    method: Method,
    /// Raw path and query, as the client sent them.
    uri: String,
    host: Option<HeaderValue>,
}

fn text(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn original(caller: Caller, req: &Request<Incoming>) -> Option<Original> {
    let h = req.headers();
    let host = |name: &str| h.get(name).cloned();
    let (method, uri, host) = match caller {
        Caller::Nginx => (
            text(h, "x-original-method")?,
            text(h, "x-original-uri")?,
            host("host"),
        ),
        Caller::Forwarded => (
            text(h, "x-forwarded-method")?,
            text(h, "x-forwarded-uri")?,
            host("x-forwarded-host"),
        ),
        Caller::ExtAuthz => {
            let pq = req.uri().path_and_query().map_or("", |p| p.as_str());
            let rest = pq.strip_prefix(EXT_AUTHZ)?;
            let uri = if rest.is_empty() || rest.starts_with('?') {
                format!("/{rest}")
            } else {
                rest.to_owned()
            };
            (req.method().to_string(), uri, host("host"))
        }
    };
    Some(Original {
        method: Method::from_bytes(method.as_bytes()).ok()?,
        uri,
        host,
    })
}

impl Gateway {
    /// One forward-auth check; every outcome is an answer in the caller's convention.
    pub(super) async fn verify(
        &self,
        req: Request<Incoming>,
        caller: Caller,
        conn: &ConnInfo,
    ) -> Response<Body> {
        let trusted = &self.config.server.trusted_proxies;
        if !trusted.iter().any(|n| n.contains(conn.peer.ip())) {
            let e = GatewayError::Forbidden("forward-auth answers only trusted proxies");
            return refusal(caller, Refusal::Error(e));
        }
        let Some(orig) = original(caller, &req) else {
            let e = GatewayError::BadRequest(
                "the proxy did not describe the original request".to_owned(),
            );
            return refusal(caller, Refusal::Error(e));
        };
        let secure =
            conn.tls || super::forwarded::https_via_proxy(conn.peer.ip(), req.headers(), trusted);
        let client_ip = self.client_ip(conn.peer.ip(), req.headers());
        match self
            .judge(&orig, req.headers(), secure, client_ip, &conn.memo)
            .await
        {
            Ok(identity) => self.allowed(caller, identity.as_ref()),
            Err(Refusal::Redirect(to)) if caller == Caller::Forwarded => {
                match self.absolute(&orig, secure, to) {
                    Ok(to) => refusal(caller, Refusal::Redirect(to)),
                    Err(e) => refusal(caller, Refusal::Error(e)),
                }
            }
            Err(r) => refusal(caller, r),
        }
    }

    /// The same decisions as proxying: normalization, route, token, revocation, roles, CSRF.
    async fn judge(
        &self,
        orig: &Original,
        headers: &HeaderMap,
        secure: bool,
        client_ip: std::net::IpAddr,
        memo: &crate::server::ConnMemo,
    ) -> Result<Option<Identity>, Refusal> {
        let (raw_path, query) = match orig.uri.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (orig.uri.as_str(), None),
        };
        let path = normalize(raw_path).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
        let host = match orig.host.clone() {
            Some(h) => Some(
                normalize_host(h)
                    .ok_or_else(|| GatewayError::BadRequest("invalid host".to_owned()))?,
            ),
            None => None,
        };
        let route = self.lookup(&orig.method, host.as_ref(), &path)?;
        if route.auth == AuthMode::Public {
            return Ok(None);
        }
        let sessions = self.auth.sessions();
        // An API key or Basic pair where the route takes them, as when proxying.
        let machine = (route.api_keys || route.basic)
            .then(|| crate::auth::api_keys::presented(headers, route))
            .flatten();
        let authenticated = match machine {
            Some(m) => {
                self.auth
                    .authenticate_machine(m, &path.judged, client_ip)
                    .await
            }
            None => self.auth.authenticate_on(headers, secure, memo).await,
        };
        if let Err(e) = &authenticated {
            self.count_refusal(e);
        }
        let identity = match authenticated {
            Ok(id) => id,
            // Only a page load goes to the login page (§10); a fetch gets 401.
            Err(GatewayError::MissingToken | GatewayError::InvalidToken(_))
                if route.on_unauthenticated == OnUnauthenticated::Redirect
                    && crate::origin::is_navigation(&orig.method, headers) =>
            {
                let next = match query {
                    Some(q) => format!("{}?{q}", path.forward),
                    None => path.forward.to_string(),
                };
                return Err(self.browser_redirect(headers, secure, &next).await);
            }
            Err(e) => return Err(e.into()),
        };
        if !route.roles.is_empty() && !identity.roles().iter().any(|r| route.roles.contains(r)) {
            self.metrics.auth(AuthOutcome::forbidden);
            return Err(GatewayError::InsufficientRole.into());
        }
        if route.second_factor && !identity.passed_second_factor() {
            self.metrics.auth(AuthOutcome::forbidden);
            return Err(GatewayError::SecondFactorRequired.into());
        }
        // CSRF by the route's mode, from the original request's `Origin` and `Sec-Fetch-Site`
        // (every printed snippet passes them); a token only as the header (the proxy does
        // not show us the body). A WebSocket handshake is judged like an unsafe method.
        let upgrade = headers.contains_key(http::header::UPGRADE);
        if identity.via_cookie
            && (!csrf::is_safe_method(&orig.method) || upgrade)
            && route.csrf != CsrfMode::Off
        {
            let own = orig
                .host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .and_then(|h| crate::origin::own_origin(secure, h));
            let origin_ok =
                crate::origin::check(headers, own.as_deref(), &self.config.server.trusted_origins)
                    .is_ok();
            let token_ok = route.csrf == CsrfMode::Origin
                || upgrade
                || csrf::matches(
                    csrf::header_value(headers),
                    &sessions.csrf_for(identity.claims.sid()),
                );
            if !(origin_ok && token_ok) {
                self.metrics.auth(AuthOutcome::csrf);
                return Err(GatewayError::Csrf.into());
            }
        }
        self.metrics.auth(AuthOutcome::ok);
        Ok(Some(identity))
    }

    /// A browser without a valid access token: to `/auth/refresh` when its refresh cookie is
    /// still good (the check itself may not set cookies), else to the login page.
    async fn browser_redirect(&self, headers: &HeaderMap, secure: bool, next: &str) -> Refusal {
        let refreshable = match cookies::get(headers, cookies::names(secure).refresh) {
            Some(t) => self
                .auth
                .sessions()
                .verify(t, TokenType::Refresh)
                .await
                .is_ok(),
            None => false,
        };
        let to = if refreshable {
            "/auth/refresh"
        } else {
            "/auth/login"
        };
        Refusal::Redirect(format!("{to}?next={}", encode_component(next)))
    }

    /// Traefik resolves a relative `Location` from the check against the check's own address
    /// (sending browsers to authgate's internal one): the `/auth/verify` convention answers an
    /// absolute URL. On `forward_auth.public_origin` when it is set; else on the host and
    /// scheme the proxy said the client used, which the client chose (`Host: evil.example`
    /// made `Location: http://evil.example/auth/login...`): when routes name hosts, a host
    /// outside them is refused (400) rather than written into a redirect.
    fn absolute(&self, orig: &Original, secure: bool, to: String) -> Result<String, GatewayError> {
        if let Some(origin) = &self.config.public_origin {
            return Ok(format!("{origin}{to}"));
        }
        let Some(host) = orig.host.as_ref().and_then(|h| normalize_host(h.clone())) else {
            return Ok(to);
        };
        let host = String::from_utf8_lossy(host.as_bytes());
        let mut named = self
            .config
            .routes
            .routes()
            .iter()
            .filter_map(|r| r.host.as_deref())
            .peekable();
        if named.peek().is_some() && !named.any(|h| h.eq_ignore_ascii_case(request_host(&host))) {
            return Err(GatewayError::BadRequest(
                "the forwarded host is none of the routes' hosts (set forward_auth.public_origin)"
                    .to_owned(),
            ));
        }
        let scheme = if secure { "https" } else { "http" };
        Ok(format!("{scheme}://{host}{to}"))
    }

    /// 200, with the identity headers for an authenticated request. Envoy copies only the
    /// headers an answer carries, so it is told which identity headers to remove.
    fn allowed(&self, caller: Caller, identity: Option<&Identity>) -> Response<Body> {
        let mut resp = Response::new(empty());
        let names = &self.header_policy().identity_headers;
        let mut unset: Vec<&str> = Vec::new();
        match identity {
            Some(id) => {
                if let Some(k) = id
                    .key
                    .as_deref()
                    .and_then(|k| HeaderValue::from_str(k).ok())
                {
                    resp.headers_mut()
                        .insert(HeaderName::from_static("x-auth-key"), k);
                }
                for (name, value) in names.iter().zip(id.claims.identity_values()) {
                    match value {
                        Some(v) => {
                            resp.headers_mut().insert(name.clone(), v);
                        }
                        None => unset.push(name.as_str()),
                    }
                }
            }
            None => unset.extend(names.iter().map(HeaderName::as_str)),
        }
        // Only authgate says which API key authenticated.
        if identity.is_none_or(|id| id.key.is_none()) {
            unset.push("x-auth-key");
        }
        if caller == Caller::ExtAuthz && !unset.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&unset.join(",")) {
                resp.headers_mut()
                    .insert(HeaderName::from_static("x-envoy-auth-headers-to-remove"), v);
            }
        }
        resp
    }
}

/// A refusal in the caller's convention. nginx turns anything but 2xx, 401 and 403 into a
/// 500, so it hears 401 or 403, with `X-Auth-Redirect` for its `error_page 401` location and
/// `X-Auth-Error` always.
fn refusal(caller: Caller, r: Refusal) -> Response<Body> {
    let (mut resp, code, redirect) = match r {
        Refusal::Redirect(to) => {
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::FOUND;
            (resp, "login_required", Some(to))
        }
        Refusal::Error(e) => {
            let code = e.status_and_code().1;
            (e.into_response(), code, None)
        }
    };
    let h = resp.headers_mut();
    h.insert(
        HeaderName::from_static("x-auth-error"),
        HeaderValue::from_static(code),
    );
    match (caller, redirect) {
        (Caller::Nginx, Some(to)) => {
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            if let Ok(v) = HeaderValue::from_str(&to) {
                resp.headers_mut()
                    .insert(HeaderName::from_static("x-auth-redirect"), v);
            }
        }
        (_, Some(to)) => {
            if let Ok(v) = HeaderValue::from_str(&to) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
        }
        (Caller::Nginx, None) if resp.status() != StatusCode::UNAUTHORIZED => {
            *resp.status_mut() = StatusCode::FORBIDDEN;
        }
        _ => {}
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_names_the_caller() {
        assert_eq!(endpoint("/auth/verify/nginx"), Some(Caller::Nginx));
        assert_eq!(endpoint("/auth/verify"), Some(Caller::Forwarded));
        assert_eq!(
            endpoint("/auth/verify/ext_authz/admin/x"),
            Some(Caller::ExtAuthz)
        );
        assert_eq!(endpoint("/auth/verify/ext_authzx"), None);
        assert_eq!(endpoint("/auth/verify/other"), None);
    }
}
