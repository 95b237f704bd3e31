//! Browser sessions: the gateway's cookies, reading them, and keeping them from the upstream.

use crate::clock::now_secs;
use http::header::{HeaderValue, COOKIE, SET_COOKIE};
use http::HeaderMap;

/// The names of the session's cookies. Over TLS they carry the `__Host-` prefix: the browser
/// then takes them only from this exact host, over HTTPS, with `Path=/` and no `Domain`, so a
/// sibling subdomain cannot plant one.
#[derive(Debug, Clone, Copy)]
pub struct Names {
    pub access: &'static str,
    pub refresh: &'static str,
    pub csrf: &'static str,
}

pub const PLAIN: Names = Names {
    access: "authgate_access",
    refresh: "authgate_refresh",
    csrf: "authgate_csrf",
};

pub const HOST_ONLY: Names = Names {
    access: "__Host-authgate_access",
    refresh: "__Host-authgate_refresh",
    csrf: "__Host-authgate_csrf",
};

/// The names in use on a connection that is (`secure`) or is not TLS.
pub fn names(secure: bool) -> Names {
    if secure {
        HOST_ONLY
    } else {
        PLAIN
    }
}

/// Every cookie of the gateway starts with this (after any `__Host-`); none of them reaches
/// the upstream.
pub const OWN_PREFIX: &str = "authgate_";

/// The value of cookie `name` from all `Cookie` headers.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

pub fn set_cookie(name: &str, value: &str, max_age: u64, http_only: bool, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path=/; Max-Age={max_age}; SameSite=Lax");
    if http_only {
        c.push_str("; HttpOnly");
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// The tokens a session's cookies carry, and when they end (Unix seconds).
pub struct SessionCookies<'a> {
    pub access: &'a str,
    pub access_exp: u64,
    pub refresh: &'a str,
    pub session_exp: u64,
    /// The session's CSRF value (derived from it; readable by the pages' scripts).
    pub csrf: &'a str,
}

/// Appends the session's three cookies (access, refresh, CSRF) to `h`.
pub fn set_session(h: &mut HeaderMap, pair: &SessionCookies<'_>, secure: bool) {
    let now = now_secs();
    let n = names(secure);
    let session_left = pair.session_exp.saturating_sub(now);
    let cookies = [
        set_cookie(
            n.access,
            pair.access,
            pair.access_exp.saturating_sub(now),
            true,
            secure,
        ),
        set_cookie(n.refresh, pair.refresh, session_left, true, secure),
        set_cookie(n.csrf, pair.csrf, session_left, false, secure),
    ];
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(SET_COOKIE, v);
        }
    }
}

/// Appends `Set-Cookie` headers that delete the session's cookies.
pub fn clear_session(h: &mut HeaderMap, secure: bool) {
    let n = names(secure);
    for (name, http_only) in [(n.access, true), (n.refresh, true), (n.csrf, false)] {
        if let Ok(v) = HeaderValue::from_str(&set_cookie(name, "", 0, http_only, secure)) {
            h.append(SET_COOKIE, v);
        }
    }
}

/// `next` is followed only when it is a local path: never `//host`, a scheme or a backslash.
pub fn safe_next(next: &str) -> Option<&str> {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.bytes().any(|b| b.is_ascii_control());
    local.then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn reads_cookies() {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_static("a=1; authgate_access=tok; b=2"),
        );
        assert_eq!(get(&h, PLAIN.access), Some("tok"));
        assert_eq!(get(&h, "a"), Some("1"));
    }

    #[test]
    fn next_must_be_local() {
        assert_eq!(safe_next("/app?x=1"), Some("/app?x=1"));
        for bad in [
            "//evil.com",
            "https://evil.com",
            "/\\evil.com",
            "evil",
            "/a\r\nb",
        ] {
            assert_eq!(safe_next(bad), None, "{bad}");
        }
    }
}
