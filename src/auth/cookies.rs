//! Browser sessions: the gateway's cookies, reading them, and keeping them from the upstream.

use crate::clock::now_secs;
use crate::ids::{random_id, RngError};
use http::header::{HeaderValue, COOKIE, SET_COOKIE};
use http::HeaderMap;

pub const ACCESS: &str = "authgate_access";
pub const REFRESH: &str = "authgate_refresh";
pub const CSRF: &str = "authgate_csrf";
/// Every cookie of the gateway starts with this; none of them reaches the upstream.
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

pub fn clear_cookie(name: &str, secure: bool) -> String {
    set_cookie(name, "", 0, name != CSRF, secure)
}

/// The tokens a session's cookies carry, and when they end (Unix seconds).
pub struct SessionCookies<'a> {
    pub access: &'a str,
    pub access_exp: u64,
    pub refresh: &'a str,
    pub session_exp: u64,
}

/// Appends the session's three cookies (access, refresh, CSRF) to `h`. The CSRF cookie keeps
/// `csrf` when given (open pages keep working after an on-the-fly refresh), else a new value.
pub fn set_session(
    h: &mut HeaderMap,
    pair: &SessionCookies<'_>,
    secure: bool,
    csrf: Option<&str>,
) -> Result<(), RngError> {
    let now = now_secs();
    let csrf = match csrf {
        Some(c) => c.to_owned(),
        None => random_id()?,
    };
    let session_left = pair.session_exp.saturating_sub(now);
    let cookies = [
        set_cookie(
            ACCESS,
            pair.access,
            pair.access_exp.saturating_sub(now),
            true,
            secure,
        ),
        set_cookie(REFRESH, pair.refresh, session_left, true, secure),
        set_cookie(CSRF, &csrf, session_left, false, secure),
    ];
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(SET_COOKIE, v);
        }
    }
    Ok(())
}

/// Appends `Set-Cookie` headers that delete the session's cookies.
pub fn clear_session(h: &mut HeaderMap, secure: bool) {
    for name in [ACCESS, REFRESH, CSRF] {
        if let Ok(v) = HeaderValue::from_str(&clear_cookie(name, secure)) {
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
        assert_eq!(get(&h, ACCESS), Some("tok"));
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
