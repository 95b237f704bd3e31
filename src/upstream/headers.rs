//! The request head the upstream receives: hop-by-hop headers out, spoofable identity headers
//! out, our own cookies out, identity and X-Forwarded-* in.

use super::overlay::Overlay;
use crate::gateway::request_id::{TRACEPARENT, TRACESTATE};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Headers that describe one connection, not the message (RFC 9110 7.6.1), and Upgrade
/// (forwarded only for a WebSocket handshake, which sets it again). Connection comes first.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the rewrite does to every request, fixed at start-up.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    /// The identity headers (subject, roles): always removed from the client's request, set
    /// only from `ForwardCtx::identity`.
    pub identity_headers: [HeaderName; 2],
    /// Keep the client's `Authorization` header.
    pub forward_token: bool,
    /// Cookies whose name starts with this are the gateway's and never reach the upstream.
    pub own_cookie_prefix: &'static str,
    /// `[identity] pass_basic_auth`: the password sent with the user name as HTTP Basic.
    pub pass_basic_auth: Option<String>,
}

const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
const X_AUTH_KEY: HeaderName = HeaderName::from_static("x-auth-key");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Per-request facts the header rewrite needs.
pub struct ForwardCtx<'a> {
    pub peer_ip: IpAddr,
    /// `peer_ip` as a header value, shared by the connection's requests.
    pub peer_value: &'a HeaderValue,
    /// The client as the gateway judged it (the peer, or what trusted proxies said).
    pub client_ip: IpAddr,
    pub tls: bool,
    /// The client's (checked) host: `X-Forwarded-Host`, and `Host` unless overridden.
    pub host: Option<HeaderValue>,
    /// The `Host` the upstream receives instead (`host_header` set to a literal).
    pub host_override: Option<HeaderValue>,
    /// `host_header = "upstream"`: the host the request goes to (set per attempt).
    pub upstream_host: bool,
    pub request_id: &'a HeaderValue,
    /// A W3C `traceparent` instead of the client's (it sent an invalid one or one of a higher
    /// version, or none while spans are exported); None: the client's goes on, or none.
    pub traceparent: Option<crate::gateway::request_id::Traceparent>,
    pub policy: &'a HeaderPolicy,
    /// Values of `policy.identity_headers` for an authenticated request (a value that is not
    /// header-safe is left out).
    pub identity: Option<[Option<HeaderValue>; 2]>,
    /// The API key's name when a key authenticated the request (`X-Auth-Key`).
    pub key_name: Option<HeaderValue>,
    pub target: http::uri::PathAndQuery,
    pub upgrade: Option<HeaderValue>,
    /// `X-Forwarded-Prefix`: the public mount of a route that strips or maps a prefix.
    pub forwarded_prefix: Option<HeaderValue>,
    /// For an upgrade: resolves when the tunnel must end (its session was revoked).
    pub tunnel_guard: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

/// True when `name` would be read as one of the identity headers by some upstream stack:
/// same letters, ignoring case and `_` versus `-`, either way round.
fn is_identity_like(name: &str, policy: &HeaderPolicy) -> bool {
    policy
        .identity_headers
        .iter()
        .any(|want| crate::config::same_header(name, want.as_str()))
}

/// The `Cookie` header without the cookies named `prefix*`; None when nothing is left.
pub fn strip_cookies(value: &str, prefix: &str) -> Option<String> {
    let kept: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            let bare = name.strip_prefix("__Host-").unwrap_or(name);
            !name.is_empty() && !bare.starts_with(prefix)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// The position of `name` (lower case, as HeaderName keeps it) in [`HOP_BY_HOP`].
fn hop_index(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => 0,
        "upgrade" => 1,
        "keep-alive" => 2,
        "proxy-connection" => 3,
        "proxy-authenticate" => 4,
        "proxy-authorization" => 5,
        "te" => 6,
        "trailer" => 7,
        "transfer-encoding" => 8,
        _ => return None,
    })
}

/// Removes hop-by-hop headers and every header named in `Connection`. One pass over the
/// names finds which are present; a message without any costs no lookup and no allocation.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = hop_index(name.as_str()) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        let mut values = headers.get_all(header::CONNECTION).iter();
        let first = values.next().cloned();
        let more: Vec<HeaderValue> = values.cloned().collect();
        headers.remove(header::CONNECTION);
        for value in first.iter().chain(&more) {
            let Ok(value) = value.to_str() else { continue };
            for token in value
                .split(',')
                .map(str::trim)
                .filter(|t| is_extra_token(t))
            {
                // By &str: no HeaderName is built; a token that is no valid name is skipped.
                headers.remove(token);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate().skip(1) {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// A `Connection` token that may name a further header to drop: not empty, not an option
/// (`close`), not a name the fixed list already covers (`keep-alive`, `upgrade`).
fn is_extra_token(token: &str) -> bool {
    !token.is_empty()
        && !["close", "keep-alive", "upgrade"]
            .iter()
            .any(|t| t.eq_ignore_ascii_case(token))
}

/// An address as text (tests compare it with `Display`).
#[cfg(test)]
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let (buf, n) = ipv4_bytes(v4);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// IPv4 text in a stack buffer.
fn ipv4_bytes(v4: std::net::Ipv4Addr) -> ([u8; 15], usize) {
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    (buf, n)
}

/// An address as a header value: one exact-size allocation (a `String` turned into a
/// header value would need a second one for its spare capacity).
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    match ip {
        IpAddr::V4(v4) => {
            let (buf, n) = ipv4_bytes(v4);
            HeaderValue::from_bytes(&buf[..n]).ok()
        }
        IpAddr::V6(_) => HeaderValue::try_from(ip.to_string()).ok(),
    }
}

/// Which of the headers the gateway sets the client's request (after the strip) still holds:
/// a name it holds is replaced in the map, one it does not goes to the [`Overlay`].
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    forwarded_for: bool,
    forwarded_proto: bool,
    forwarded_host: bool,
    request_id: bool,
    /// A `tracestate` without a `traceparent`: it describes no trace and goes too, unless
    /// the gateway starts one.
    orphan_tracestate: bool,
}

/// Removes what the client may not send on: hop-by-hop headers, anything named like an
/// identity header, `Authorization` (unless forwarded by policy) and the gateway's cookies.
/// Says which of the names the gateway sets are left.
fn strip_client_headers(headers: &mut HeaderMap, policy: &HeaderPolicy) -> Held {
    strip_hop_by_hop(headers);
    // One pass over the names finds what must go; a clean request costs no lookup.
    let mut spoofed: Vec<HeaderName> = Vec::new();
    let (mut cookie, mut authorization) = (false, false);
    let (mut traceparent, mut tracestate) = (false, false);
    let mut held = Held::default();
    for name in headers.keys() {
        if *name == X_FORWARDED_FOR {
            held.forwarded_for = true;
        } else if *name == X_FORWARDED_PROTO {
            held.forwarded_proto = true;
        } else if *name == X_FORWARDED_HOST {
            held.forwarded_host = true;
        } else if *name == X_REQUEST_ID {
            held.request_id = true;
        } else if *name == header::COOKIE {
            cookie = true;
        } else if *name == header::AUTHORIZATION {
            authorization = true;
        } else if *name == TRACEPARENT {
            traceparent = true;
        } else if *name == TRACESTATE {
            tracestate = true;
        } else if is_identity_like(name.as_str(), policy)
            // Only the gateway says who the client is.
            || *name == header::FORWARDED
            || *name == X_REAL_IP
            // Apps build their links from it: only the gateway says where they are mounted.
            || *name == X_FORWARDED_PREFIX
            // Only the gateway says which key authenticated; the key itself never goes on.
            || *name == X_AUTH_KEY
            || *name == X_API_KEY
        {
            spoofed.push(name.clone());
        }
    }
    for name in spoofed {
        headers.remove(name);
    }
    if authorization && !policy.forward_token {
        headers.remove(header::AUTHORIZATION);
    }
    if cookie {
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join("; ");
        headers.remove(header::COOKIE);
        if let Some(kept) = strip_cookies(&cookie, policy.own_cookie_prefix) {
            if let Ok(v) = HeaderValue::from_str(&kept) {
                headers.insert(header::COOKIE, v);
            }
        }
    }
    held.orphan_tracestate = tracestate && !traceparent;
    held
}

/// Sets `name` for the upstream: replaced in the map when the client's request holds it,
/// else added beside it.
fn set(
    headers: &mut HeaderMap,
    added: &mut Overlay,
    held: bool,
    name: HeaderName,
    value: HeaderValue,
) {
    if held {
        headers.insert(name, value);
    } else {
        added.push(name, value);
    }
}

/// The request head the upstream receives: `headers` rewritten in place, and the headers the
/// gateway adds that the client did not send (most of them) returned beside it.
pub fn rewrite_request_headers(headers: &mut HeaderMap, ctx: &mut ForwardCtx<'_>) -> Overlay {
    let held = strip_client_headers(headers, ctx.policy);
    let mut added = Overlay::with_capacity(8);
    if held.forwarded_for {
        if let header::Entry::Occupied(mut e) = headers.entry(X_FORWARDED_FOR) {
            let prior: Vec<&str> = e.iter().filter_map(|v| v.to_str().ok()).collect();
            let xff = if prior.is_empty() {
                Some(ctx.peer_value.clone())
            } else {
                HeaderValue::try_from(format!("{}, {}", prior.join(", "), ctx.peer_ip)).ok()
            };
            if let Some(v) = xff {
                e.insert(v);
            }
        }
    } else {
        added.push(X_FORWARDED_FOR, ctx.peer_value.clone());
    }
    let real_ip = if ctx.client_ip == ctx.peer_ip {
        Some(ctx.peer_value.clone())
    } else {
        ip_value(ctx.client_ip)
    };
    if let Some(v) = real_ip {
        // The client's was stripped.
        added.push(X_REAL_IP, v);
    }
    let proto = if ctx.tls { "https" } else { "http" };
    set(
        headers,
        &mut added,
        held.forwarded_proto,
        X_FORWARDED_PROTO,
        HeaderValue::from_static(proto),
    );
    if let Some(v) = ctx.host.take() {
        set(
            headers,
            &mut added,
            held.forwarded_host,
            X_FORWARDED_HOST,
            v.clone(),
        );
        // The checked host (a trailing dot removed), also over the client's own Host.
        headers.insert(header::HOST, v);
    }
    if let Some(v) = ctx.host_override.take() {
        headers.insert(header::HOST, v);
    }
    set(
        headers,
        &mut added,
        held.request_id,
        X_REQUEST_ID,
        ctx.request_id.clone(),
    );
    match ctx.traceparent.take() {
        Some(t) => {
            if t.new_trace {
                // It described the client's trace (or nothing valid), not this new one.
                headers.remove(TRACESTATE);
            }
            headers.insert(TRACEPARENT, t.value);
        }
        // No trace at all: a vendor's state of nothing.
        None if held.orphan_tracestate => {
            headers.remove(TRACESTATE);
        }
        None => {}
    }
    // The client's X-Forwarded-Prefix, X-Auth-Key and identity headers were stripped.
    if let Some(prefix) = ctx.forwarded_prefix.take() {
        added.push(X_FORWARDED_PREFIX, prefix);
    }
    if let Some(k) = ctx.key_name.take() {
        added.push(X_AUTH_KEY, k);
        // The key travelled as `Authorization: Bearer` or Basic: never to the upstream.
        headers.remove(header::AUTHORIZATION);
    }
    if let Some(values) = ctx.identity.take() {
        if let (Some(password), Some(user)) = (&ctx.policy.pass_basic_auth, &values[0]) {
            use base64::Engine;
            let mut pair = user.as_bytes().to_vec();
            pair.push(b':');
            pair.extend_from_slice(password.as_bytes());
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            if let Ok(v) = HeaderValue::try_from(format!("Basic {encoded}")) {
                headers.insert(header::AUTHORIZATION, v);
            }
        }
        for (name, value) in ctx.policy.identity_headers.iter().zip(values) {
            if let Some(v) = value {
                // Moved in, not cloned: a cloned value would be copied to shared storage.
                added.push(name.clone(), v);
            }
        }
    }
    if let Some(protocol) = &ctx.upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    debug_assert!(added.disjoint(headers), "{added:?} also in {headers:?}");
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HeaderPolicy {
        HeaderPolicy {
            identity_headers: [
                HeaderName::from_static("x-auth-user"),
                HeaderName::from_static("x-auth-roles"),
            ],
            forward_token: false,
            own_cookie_prefix: "authgate_",
            pass_basic_auth: None,
        }
    }

    #[test]
    fn own_cookies_are_stripped() {
        assert_eq!(
            strip_cookies("a=1; authgate_access=tok; b=2", "authgate_").as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(strip_cookies("authgate_csrf=x", "authgate_"), None);
        assert_eq!(
            strip_cookies("__Host-authgate_access=t; __Host-theirs=1", "authgate_").as_deref(),
            Some("__Host-theirs=1")
        );
    }

    #[test]
    fn identity_lookalikes_are_caught() {
        let c = cfg();
        for name in ["x-auth-user", "x_auth_user", "x-auth_roles", "x_auth_roles"] {
            assert!(is_identity_like(name, &c), "{name}");
        }
        for name in ["x-auth-users", "x-auth", "x-authuser"] {
            assert!(!is_identity_like(name, &c), "{name}");
        }
        // A header configured with `_` (`X_Remote_User`): the client's dashed copy is the
        // same header to a CGI or WSGI app, and goes too.
        let mut underscored = cfg();
        underscored.identity_headers[0] = HeaderName::from_static("x_remote_user");
        for name in ["x_remote_user", "x-remote-user", "X-Remote_User"] {
            assert!(is_identity_like(name, &underscored), "{name}");
        }
    }

    #[test]
    fn hop_index_matches_the_list() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_index(name.as_str()), Some(i), "{name}");
        }
        assert_eq!(hop_index("host"), None);
    }

    #[test]
    fn ipv4_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.100.9.99",
        ] {
            let ip: IpAddr = ip.parse().unwrap_or_else(|_| panic!("{ip}"));
            assert_eq!(ip_text(ip), ip.to_string());
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap_or_else(|_| panic!("v6"));
        assert_eq!(ip_text(v6), "2001:db8::1");
    }

    /// The request the upstream gets: the map and the overlay together.
    fn sent(map: &HeaderMap, added: &Overlay) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = map
            .iter()
            .chain(added.iter())
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        all.sort();
        all
    }

    fn rewrite(client: &[(&'static str, &'static str)], identity: bool) -> (HeaderMap, Overlay) {
        let policy = cfg();
        let peer: IpAddr = "10.0.0.7".parse().unwrap_or_else(|_| panic!("ip"));
        let peer_value = HeaderValue::from_static("10.0.0.7");
        let request_id = HeaderValue::from_static("gw-id");
        let mut ctx = ForwardCtx {
            peer_ip: peer,
            peer_value: &peer_value,
            client_ip: peer,
            tls: true,
            host: Some(HeaderValue::from_static("app.example")),
            host_override: None,
            upstream_host: false,
            request_id: &request_id,
            traceparent: None,
            policy: &policy,
            identity: identity.then(|| {
                [
                    Some(HeaderValue::from_static("alice")),
                    Some(HeaderValue::from_static("user")),
                ]
            }),
            key_name: None,
            target: http::uri::PathAndQuery::from_static("/"),
            upgrade: None,
            forwarded_prefix: Some(HeaderValue::from_static("/app")),
            tunnel_guard: None,
        };
        let mut map = HeaderMap::new();
        for (n, v) in client {
            map.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let added = rewrite_request_headers(&mut map, &mut ctx);
        (map, added)
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = v
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        v.sort();
        v
    }

    /// Whether the client sent a header the gateway sets or not, the upstream gets it once,
    /// with the gateway's value (a sent X-Forwarded-For is extended, as a proxy chain is).
    #[test]
    fn the_gateways_headers_replace_the_clients_whether_sent_or_not() {
        let clean = rewrite(&[("host", "app.example"), ("accept", "*/*")], true);
        let spoofed = rewrite(
            &[
                ("host", "app.example"),
                ("accept", "*/*"),
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-prefix", "/evil"),
                ("x-request-id", "client-id"),
                ("x-real-ip", "1.2.3.4"),
                ("x-auth-user", "root"),
                ("x_auth_roles", "admin"),
                ("forwarded", "for=1.2.3.4"),
            ],
            true,
        );
        let expect = |xff: &str| {
            pairs(&[
                ("host", "app.example"),
                ("accept", "*/*"),
                ("x-forwarded-for", xff),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "app.example"),
                ("x-forwarded-prefix", "/app"),
                ("x-request-id", "gw-id"),
                ("x-real-ip", "10.0.0.7"),
                ("x-auth-user", "alice"),
                ("x-auth-roles", "user"),
            ])
        };
        assert_eq!(sent(&clean.0, &clean.1), expect("10.0.0.7"));
        assert_eq!(sent(&spoofed.0, &spoofed.1), expect("1.2.3.4, 10.0.0.7"));
        // A clean request's map is not touched for what the gateway adds.
        assert_eq!(clean.0.len(), 2, "{:?}", clean.0);
        assert!(clean.1.disjoint(&clean.0) && spoofed.1.disjoint(&spoofed.0));
        // Without an identity, no identity header reaches the upstream, sent or not.
        let anonymous = rewrite(&[("x-auth-user", "root")], false);
        assert!(sent(&anonymous.0, &anonymous.1)
            .iter()
            .all(|(n, _)| n != "x-auth-user"));
    }

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("connection", "close, x-secret"),
            ("connection", " X-Other ,,bad name,"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("te", "trailers"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "h2c"),
            ("transfer-encoding", "chunked"),
            ("x-keep", "1"),
        ] {
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));

        let mut clean = HeaderMap::new();
        clean.insert(header::HOST, HeaderValue::from_static("a"));
        clean.append(header::ACCEPT, HeaderValue::from_static("x"));
        clean.append(header::ACCEPT, HeaderValue::from_static("y"));
        let before = clean.clone();
        strip_hop_by_hop(&mut clean);
        assert_eq!(clean, before);
    }
}
