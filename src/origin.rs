//! What a browser says about a request (Fetch Metadata and `Origin`): where it comes from (the
//! CSRF origin rule, the approach of Go 1.25's `http.CrossOriginProtection`: an unsafe
//! cookie-authenticated request passes only when it comes from the request's own origin, from
//! a listed trusted origin, or from no browser page at all) and whether it is a navigation (a
//! page load, which may be sent to the login page; a fetch gets 401). Pure and table-tested.

use http::{HeaderMap, Method};

/// A navigation: `Sec-Fetch-Mode: navigate`, or, from a client without Fetch Metadata, a GET
/// (or HEAD) whose `Accept` names HTML. Only navigations are redirected to the login page or
/// shown HTML error pages; fetch/XHR, WebSocket handshakes and other methods get JSON.
pub fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    // Names, not strings: a `&str` lookup parses the name on every call (every request).
    navigation_of(
        method,
        headers.get(&SEC_FETCH_MODE),
        headers.get(http::header::ACCEPT),
    )
}

/// `Sec-Fetch-Mode`.
pub const SEC_FETCH_MODE: http::HeaderName = http::HeaderName::from_static("sec-fetch-mode");

/// [`is_navigation`] from the request's (first) `Sec-Fetch-Mode` and `Accept`, found by the
/// caller (the request path finds them in its one pass over the headers).
pub fn navigation_of(
    method: &Method,
    sec_fetch_mode: Option<&http::HeaderValue>,
    accept: Option<&http::HeaderValue>,
) -> bool {
    match sec_fetch_mode {
        Some(mode) => mode.as_bytes().eq_ignore_ascii_case(b"navigate"),
        None => {
            (*method == Method::GET || *method == Method::HEAD)
                && accept
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.to_ascii_lowercase().contains("text/html"))
        }
    }
}

/// An origin as browsers write it: `scheme://host[:port]`, lower-case, default port omitted.
pub fn normalize_origin(text: &str) -> Option<String> {
    let t = text.trim();
    let (scheme, rest) = t.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let rest = rest.to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let host = rest.strip_suffix(default_port).unwrap_or(&rest);
    Some(format!("{scheme}://{host}"))
}

/// The request's own origin: its scheme (TLS, or a trusted proxy's `https`) and the host it
/// was sent to, port included.
pub fn own_origin(secure: bool, host: &str) -> Option<String> {
    normalize_origin(&format!(
        "{}://{host}",
        if secure { "https" } else { "http" }
    ))
}

/// Why the origin rule refused a request (for the access log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginRefusal {
    CrossSite,
    SameSite,
    ForeignOrigin,
}

/// The origin rule (§10): passes when `Sec-Fetch-Site` is `same-origin` or `none`; or, without
/// `Sec-Fetch-Site`, when `Origin` is absent or the request's own; or when `Origin` is one of
/// `trusted`. Everything else (`cross-site`, `same-site`, a foreign or `null` `Origin`) fails.
pub fn check(
    headers: &HeaderMap,
    own: Option<&str>,
    trusted: &[String],
) -> Result<(), OriginRefusal> {
    let origin = headers.get("origin").and_then(|v| v.to_str().ok());
    if let Some(o) = origin.and_then(normalize_origin) {
        if trusted.contains(&o) {
            return Ok(());
        }
    }
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase());
    match site.as_deref() {
        Some("same-origin" | "none") => Ok(()),
        Some("same-site") => Err(OriginRefusal::SameSite),
        Some(_) => Err(OriginRefusal::CrossSite),
        None => match origin {
            None => Ok(()),
            Some(o) => match (normalize_origin(o), own) {
                (Some(o), Some(own)) if o == own => Ok(()),
                _ => Err(OriginRefusal::ForeignOrigin),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(site: Option<&str>, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(s) = site {
            h.insert(
                "sec-fetch-site",
                s.parse().unwrap_or_else(|e| panic!("{e}")),
            );
        }
        if let Some(o) = origin {
            h.insert("origin", o.parse().unwrap_or_else(|e| panic!("{e}")));
        }
        h
    }

    /// (Sec-Fetch-Site, Origin, passes) for a request to http://app.example:8080.
    const TABLE: &[(Option<&str>, Option<&str>, bool)] = &[
        // Browsers that send Fetch Metadata: the site decides.
        (Some("same-origin"), Some("http://app.example:8080"), true),
        (Some("same-origin"), None, true),
        (Some("none"), None, true), // typed in the address bar, a bookmark
        (Some("cross-site"), Some("https://evil.example"), false),
        (Some("cross-site"), None, false),
        (
            Some("same-site"),
            Some("http://sibling.app.example:8080"),
            false,
        ),
        (Some("cross-site"), Some("null"), false),
        // A trusted origin passes whatever the site says.
        (Some("cross-site"), Some("https://partner.example"), true),
        (Some("same-site"), Some("https://PARTNER.example:443"), true),
        // Without Fetch Metadata: Origin decides; no Origin is a non-browser client.
        (None, None, true),
        (None, Some("http://app.example:8080"), true),
        (None, Some("HTTP://APP.EXAMPLE:8080"), true),
        (None, Some("http://app.example"), false), // another port is another origin
        (None, Some("https://app.example:8080"), false), // another scheme too
        (None, Some("https://evil.example"), false),
        (None, Some("null"), false), // a sandboxed frame
        (None, Some("http://sibling.app.example:8080"), false),
        (None, Some("https://partner.example"), true),
        (Some("SAME-ORIGIN"), None, true),
        (Some("garbage"), None, false),
    ];

    #[test]
    fn the_origin_rule_table() {
        let trusted = vec!["https://partner.example".to_owned()];
        let own = own_origin(false, "app.example:8080");
        assert_eq!(own.as_deref(), Some("http://app.example:8080"));
        for (site, origin, pass) in TABLE {
            let got = check(&headers(*site, *origin), own.as_deref(), &trusted);
            assert_eq!(
                got.is_ok(),
                *pass,
                "site {site:?} origin {origin:?}: {got:?}"
            );
        }
    }

    #[test]
    fn navigations_are_page_loads_only() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(*k, HeaderValue::from_static(v));
            }
            m
        };
        use http::HeaderValue;
        let get = Method::GET;
        assert!(is_navigation(&get, &h(&[("sec-fetch-mode", "navigate")])));
        assert!(!is_navigation(
            &get,
            &h(&[("sec-fetch-mode", "cors"), ("accept", "text/html")])
        ));
        assert!(!is_navigation(&get, &h(&[("sec-fetch-mode", "websocket")])));
        assert!(is_navigation(
            &get,
            &h(&[("accept", "text/html,application/xhtml+xml")])
        ));
        assert!(!is_navigation(&get, &h(&[("accept", "application/json")])));
        assert!(!is_navigation(&get, &h(&[])));
        assert!(!is_navigation(&Method::PUT, &h(&[("accept", "text/html")])));
        assert!(is_navigation(
            &Method::POST,
            &h(&[("sec-fetch-mode", "navigate")])
        ));
    }

    #[test]
    fn origins_normalize_like_browsers_write_them() {
        assert_eq!(
            normalize_origin("https://A.example:443").as_deref(),
            Some("https://a.example")
        );
        assert_eq!(
            normalize_origin("http://a.example:80").as_deref(),
            Some("http://a.example")
        );
        assert_eq!(
            normalize_origin("http://a.example:8443").as_deref(),
            Some("http://a.example:8443")
        );
        for bad in [
            "null",
            "a.example",
            "ftp://a",
            "https://a/x",
            "https://u@a",
            "",
        ] {
            assert_eq!(normalize_origin(bad), None, "{bad}");
        }
    }
}
