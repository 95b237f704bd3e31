//! Checks and views of the request head that decide nothing about auth: framing, size, the
//! Host, the target forwarded upstream, and the upgrade asked for.

use crate::error::GatewayError;
use crate::path::NormalizedPath;
use crate::route::fold_path;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Version};

/// The host the request is for, checked as RFC 9112 section 3.2 asks: exactly one `Host`
/// (none only for HTTP/1.0), a valid `host[:port]`, and on HTTP/2 an `:authority` that agrees
/// with any `Host`. The target's authority wins over `Host` (absolute-form, HTTP/2). A
/// trailing dot is removed (`app.example.com.` is `app.example.com`), for matching and for
/// what the upstream receives.
pub fn request_host_of<B>(req: &Request<B>) -> Result<Option<HeaderValue>, GatewayError> {
    let bad = |why: &str| GatewayError::BadRequest(why.to_owned());
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("more than one Host header"));
    }
    let authority = req.uri().authority();
    let chosen = match (authority, header) {
        (Some(a), Some(h)) => {
            if req.version() == Version::HTTP_2 && !a.as_str().eq_ignore_ascii_case_bytes(h) {
                return Err(bad(":authority and Host disagree"));
            }
            HeaderValue::from_str(a.as_str()).map_err(|_| bad("invalid host"))?
        }
        (Some(a), None) => HeaderValue::from_str(a.as_str()).map_err(|_| bad("invalid host"))?,
        (None, Some(h)) => h.clone(),
        (None, None) if req.version() == Version::HTTP_10 => return Ok(None),
        (None, None) => return Err(bad("an HTTP/1.1 request needs a Host header")),
    };
    normalize_host(chosen)
        .map(Some)
        .ok_or_else(|| bad("invalid Host header"))
}

trait EqIgnoreCaseBytes {
    fn eq_ignore_ascii_case_bytes(&self, other: &HeaderValue) -> bool;
}

impl EqIgnoreCaseBytes for str {
    fn eq_ignore_ascii_case_bytes(&self, other: &HeaderValue) -> bool {
        self.as_bytes().eq_ignore_ascii_case(other.as_bytes())
    }
}

/// `host[:port]` with host a name, IPv4 address or `[IPv6]`, and no userinfo; a trailing
/// dot on a name is removed. `None` when invalid. One pass over the bytes (every request).
pub fn normalize_host(value: HeaderValue) -> Option<HeaderValue> {
    let b = value.as_bytes();
    if b.first() == Some(&b'[') {
        let close = b.iter().position(|&c| c == b']')?;
        std::str::from_utf8(&b[1..close])
            .ok()?
            .parse::<std::net::Ipv6Addr>()
            .ok()?;
        return match &b[close + 1..] {
            [] => Some(value),
            [b':', port @ ..] if valid_port(port) => Some(value),
            _ => None,
        };
    }
    let mut end = b.len();
    let mut prev = b'.';
    for (i, &c) in b.iter().enumerate() {
        match c {
            b':' => {
                end = i;
                break;
            }
            // No empty label: not at the start, never two dots in a row.
            b'.' if prev == b'.' => return None,
            b'.' | b'-' | b'_' => {}
            c if c.is_ascii_alphanumeric() => {}
            _ => return None,
        }
        prev = c;
    }
    if end == 0 || end > 254 || (end < b.len() && !valid_port(&b[end + 1..])) {
        return None;
    }
    if prev != b'.' {
        return Some(value);
    }
    // `name.` or `name.:port`: the same host without its trailing dot.
    let mut fixed = Vec::with_capacity(b.len() - 1);
    fixed.extend_from_slice(&b[..end - 1]);
    fixed.extend_from_slice(&b[end..]);
    (end > 1)
        .then(|| HeaderValue::from_bytes(&fixed).ok())
        .flatten()
}

fn valid_port(p: &[u8]) -> bool {
    !p.is_empty() && p.len() <= 5 && p.iter().all(u8::is_ascii_digit)
}

/// The request target the upstream receives: the client's own when normalization changed
/// nothing (no copy), else the normalized path with the client's query. `strip` is the
/// route's `strip_prefix` and whether the route judges case-folded.
pub fn forward_target(
    uri: &http::Uri,
    path: &NormalizedPath<'_>,
    strip: Option<(&str, bool)>,
) -> Result<PathAndQuery, GatewayError> {
    let unforwardable =
        || GatewayError::BadRequest("the request target cannot be forwarded".to_owned());
    let forward = strip
        .and_then(|(prefix, folded)| strip_path_prefix(path, prefix, folded))
        .unwrap_or(&path.forward);
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

/// The forward view without the prefix's segments, when they are the first segments of the
/// judged view as the route judged it (`folded`: case-folded, trailing dots and spaces
/// trimmed). Segments, not bytes: the route matched `/static;v=1/x` as `/static/x`, and
/// `/STATIC./x` as `/static/x` on a case-insensitive route, so both lose `/static` and keep
/// `/x` (with its own `;params`). `/legacy` and `/legacy/` become `/`; `/legacyx` keeps all.
fn strip_path_prefix<'p>(
    path: &'p NormalizedPath<'_>,
    prefix: &str,
    folded: bool,
) -> Option<&'p str> {
    let mut judged = path.judged.split('/').skip(1);
    let mut count = 0;
    for want in prefix.split('/').skip(1) {
        let got = judged.next()?;
        let same = if folded {
            fold_path(got) == fold_path(want)
        } else {
            got == want
        };
        if !same {
            return None;
        }
        count += 1;
    }
    // The forward view has the judged view's segments (each with its `;params`): the rest
    // starts at the slash that opens segment `count + 1`.
    let forward: &str = &path.forward;
    match forward.match_indices('/').nth(count) {
        Some((at, _)) => Some(&forward[at..]),
        None if forward.split('/').count() > count => Some("/"),
        None => None,
    }
}

/// The protocol of a WebSocket upgrade (HTTP/1.1 only). Any other `Upgrade` (`h2c` above
/// all: a tunnel past every rule) is refused with 400.
pub fn upgrade_protocol(headers: &HeaderMap) -> Result<Option<HeaderValue>, GatewayError> {
    let Some(upgrade) = headers.get(header::UPGRADE) else {
        return Ok(None);
    };
    let websocket = headers.get_all(header::UPGRADE).iter().count() == 1
        && upgrade.as_bytes().eq_ignore_ascii_case(b"websocket");
    if !websocket {
        return Err(GatewayError::BadRequest(
            "only WebSocket upgrades are forwarded".to_owned(),
        ));
    }
    Ok(websocket_requested(headers).then(|| upgrade.clone()))
}

/// `Connection: upgrade` is present.
fn websocket_requested(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// What the request path needs to know of the head, found in [`check_head`]'s one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeadFacts {
    /// A browser's page load (`origin::is_navigation`).
    pub navigation: bool,
    /// An `Upgrade` header is present.
    pub upgrade: bool,
    /// A `traceparent` header is present.
    pub traceparent: bool,
}

/// The head's size and count under the limits, and no ambiguous framing (refused even if
/// the parser let it through: the upstream must never see a body boundary that differs from
/// ours). One pass over the headers, no lookup by name; it also gathers [`HeadFacts`].
pub fn check_head<B>(
    req: &Request<B>,
    max: usize,
    max_headers: usize,
) -> Result<HeadFacts, GatewayError> {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    let mut headers = 0;
    let (mut te, mut cls, mut cl_list) = (false, 0usize, false);
    let (mut fetch_mode, mut accept) = (None, None);
    let mut facts = HeadFacts::default();
    for (k, v) in req.headers() {
        headers += k.as_str().len() + v.len() + 4;
        if *k == header::CONTENT_LENGTH {
            cls += 1;
            cl_list |= v.as_bytes().contains(&b',');
        } else if *k == header::TRANSFER_ENCODING {
            te = true;
        } else if *k == header::ACCEPT {
            accept = accept.or(Some(v));
        } else if *k == header::UPGRADE {
            facts.upgrade = true;
        } else if *k == crate::origin::SEC_FETCH_MODE {
            fetch_mode = fetch_mode.or(Some(v));
        } else if *k == super::request_id::TRACEPARENT {
            facts.traceparent = true;
        }
    }
    if te && cls > 0 {
        return Err(GatewayError::BadRequest(
            "both Transfer-Encoding and Content-Length".to_owned(),
        ));
    }
    if cls > 1 || cl_list {
        return Err(GatewayError::BadRequest(
            "more than one Content-Length".to_owned(),
        ));
    }
    if req.headers().len() > max_headers || line + headers > max {
        return Err(GatewayError::HeadersTooLarge);
    }
    facts.navigation = crate::origin::navigation_of(req.method(), fetch_mode, accept);
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 18, item 10): the prefix was cut from the bytes of the forward view,
    /// so `/static;v=1/css/a.css` went upstream as `/`, and `/STATIC/x` or `/static./x` on a
    /// case-insensitive route (which matched them as `/static/x`) went unstripped.
    #[test]
    fn strip_prefix_goes_by_the_segments_the_route_judged() {
        // (request target, strip_prefix, route is case-insensitive, target forwarded)
        let table = [
            ("/legacy/page?x=1", "/legacy", false, "/page?x=1"),
            ("/legacy", "/legacy", false, "/"),
            ("/legacy/", "/legacy", false, "/"),
            ("/legacy?x=1", "/legacy", false, "/?x=1"),
            ("/legacyx/page", "/legacy", false, "/legacyx/page"),
            ("/legacy//page", "/legacy", false, "/page"),
            ("/legacy/./page", "/legacy", false, "/page"),
            ("/static;v=1/css/a.css", "/static", false, "/css/a.css"),
            ("/static;v=1/css/a.css?x", "/static", false, "/css/a.css?x"),
            ("/static;v=1", "/static", false, "/"),
            ("/static;v=1/", "/static", false, "/"),
            ("/static/css;v=2/a.css", "/static", false, "/css;v=2/a.css"),
            ("/a;x/b;y/c;z", "/a/b", false, "/c;z"),
            ("/a/bc/d", "/a/b", false, "/a/bc/d"),
            ("/STATIC/css/a.css", "/static", false, "/STATIC/css/a.css"),
            ("/STATIC/css/a.css", "/static", true, "/css/a.css"),
            ("/Static./css/a.css", "/static", true, "/css/a.css"),
            ("/static%20/css", "/static", true, "/css"),
            ("/STATIC.;v=1/Css", "/static", true, "/Css"),
            ("/Legacy/App/x", "/legacy/app", true, "/x"),
            ("/staticx/css", "/static", true, "/staticx/css"),
        ];
        for (target, prefix, folded, want) in table {
            let uri: http::Uri = target.parse().unwrap_or_else(|e| panic!("{target}: {e}"));
            let path = crate::path::normalize(uri.path()).unwrap_or_else(|e| panic!("{e}"));
            let got = forward_target(&uri, &path, Some((prefix, folded)))
                .unwrap_or_else(|e| panic!("{target}: {e}"));
            assert_eq!(
                got.as_str(),
                want,
                "{target} without {prefix} (folded: {folded})"
            );
        }
    }

    fn host(h: &str) -> Option<String> {
        normalize_host(HeaderValue::from_str(h).ok()?)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    }

    #[test]
    fn hosts_are_checked_and_trailing_dots_removed() {
        for (given, want) in [
            ("app.example.com", "app.example.com"),
            ("app.example.com:8443", "app.example.com:8443"),
            ("app.example.com.", "app.example.com"),
            ("app.example.com.:80", "app.example.com:80"),
            ("10.0.0.1:80", "10.0.0.1:80"),
            ("[::1]:8443", "[::1]:8443"),
            ("[2001:db8::1]", "[2001:db8::1]"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(host(given).as_deref(), Some(want), "{given}");
        }
        for bad in [
            "",
            ".",
            ":80",
            "user@host",
            "host:80:80",
            "host:",
            "host:x",
            "a..b",
            ".a",
            "a b",
            "host:123456",
            "[::1",
            "[nope]",
            "[::1]80",
            "a/b",
            "a\\b",
        ] {
            assert_eq!(host(bad), None, "{bad:?}");
        }
    }

    fn facts(method: &str, headers: &[(&str, &str)]) -> Result<HeadFacts, GatewayError> {
        let mut b = Request::builder().method(method).uri("/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        check_head(&b.body(()).unwrap_or_default(), 8192, 100)
    }

    /// The one pass finds what the lookups by name used to: navigation as
    /// `origin::is_navigation` judges it, an upgrade, a traceparent; and it refuses
    /// ambiguous framing and oversized heads.
    #[test]
    fn one_pass_over_the_head() {
        let ok = |m, h| facts(m, h).unwrap_or_else(|e| panic!("{h:?}: {e}"));
        assert_eq!(ok("GET", &[("host", "a")]), HeadFacts::default());
        assert!(ok("GET", &[("sec-fetch-mode", "navigate")]).navigation);
        assert!(
            !ok(
                "GET",
                &[("sec-fetch-mode", "cors"), ("accept", "text/html")]
            )
            .navigation
        );
        assert!(ok("GET", &[("accept", "Text/HTML,*/*")]).navigation);
        assert!(!ok("POST", &[("accept", "text/html")]).navigation);
        assert!(ok("GET", &[("upgrade", "websocket")]).upgrade);
        assert!(ok("GET", &[("traceparent", "x")]).traceparent);
        for bad in [
            &[("content-length", "1"), ("transfer-encoding", "chunked")][..],
            &[("content-length", "1"), ("content-length", "1")][..],
            &[("content-length", "1, 1")][..],
        ] {
            assert!(
                matches!(facts("POST", bad), Err(GatewayError::BadRequest(_))),
                "{bad:?}"
            );
        }
        let big = "x".repeat(9000);
        assert!(matches!(
            facts("GET", &[("x-big", big.as_str())]),
            Err(GatewayError::HeadersTooLarge)
        ));
    }

    #[test]
    fn only_websocket_upgrades_pass() {
        let mut h = HeaderMap::new();
        assert_eq!(upgrade_protocol(&h).ok(), Some(None));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, HTTP2-Settings"),
        );
        assert!(upgrade_protocol(&h).is_err());
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert_eq!(
            upgrade_protocol(&h).ok().flatten(),
            Some(HeaderValue::from_static("WebSocket"))
        );
    }
}
