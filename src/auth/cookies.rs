//! Browser sessions: the gateway's cookies, reading them, and keeping them from the upstream.

use http::header::COOKIE;
use http::HeaderMap;

pub const ACCESS: &str = "authgate_access";
pub const REFRESH: &str = "authgate_refresh";
pub const CSRF: &str = "authgate_csrf";

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

/// The `Cookie` header without the gateway's own cookies; None when nothing is left.
pub fn strip_own(value: &str) -> Option<String> {
    let kept: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            !name.is_empty() && !name.starts_with("authgate_")
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
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

/// Percent-encodes everything outside unreserved characters and `/` (for `?next=`).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
    fn reads_and_strips_cookies() {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_static("a=1; authgate_access=tok; b=2"),
        );
        assert_eq!(get(&h, ACCESS), Some("tok"));
        assert_eq!(get(&h, "a"), Some("1"));
        assert_eq!(
            strip_own("a=1; authgate_access=tok; b=2").as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(strip_own("authgate_csrf=x"), None);
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
