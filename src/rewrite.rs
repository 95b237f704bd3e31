//! What an app that thinks it lives elsewhere says back, made to fit where it is mounted:
//! `Location` / `Refresh` targets and `Set-Cookie` paths and domains (§10). Like nginx's
//! `proxy_redirect default` and `proxy_cookie_path`, plus the upstream's own absolute URLs.
//! Pure and table-tested.

/// Where a route mounts its app: the public prefix (`strip_prefix`) and the app's own prefix
/// (`upstream_prefix`), either or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mount<'a> {
    pub public: Option<&'a str>,
    pub upstream: Option<&'a str>,
}

impl Mount<'_> {
    pub fn is_set(&self) -> bool {
        self.public.is_some() || self.upstream.is_some()
    }

    /// The app's path `path` (starting with `/`) as the client must see it, or None when it
    /// is not under the app's prefix (then it stays).
    pub fn public_path(&self, path: &str) -> Option<String> {
        let public = self.public.unwrap_or("");
        match self.upstream {
            Some(up) => {
                let rest = under(path, up)?;
                Some(format!("{public}{rest}"))
            }
            None if self.public.is_some() => Some(format!("{public}{path}")),
            None => None,
        }
    }

    /// The public mount as a cookie path (`/` when mounted at the root).
    pub fn cookie_path(&self) -> &str {
        self.public.unwrap_or("/")
    }
}

/// The rest of `path` after the segments of `prefix` (`/trac/x` under `/trac` is `/x`;
/// `/trac` is `/`; `/tracx` is not under it).
fn under<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with(['/', '?', '#']) {
        Some(rest)
    } else {
        None
    }
}

/// `host[:port]` of an absolute `http(s)://` URL, and the rest (path, query, fragment).
fn split_absolute(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some((scheme, &rest[..end], &rest[end..]))
}

/// Whether `authority` (as in a URL) names one of the upstream's own addresses (`host:port`
/// with the scheme's default port when the URL has none; compared ignoring case).
fn is_upstream(authority: &str, scheme: &str, own: &[String]) -> bool {
    let a = authority.to_ascii_lowercase();
    let with_port = if a.contains(':') && !a.ends_with(']') {
        a
    } else if scheme.eq_ignore_ascii_case("https") {
        format!("{a}:443")
    } else {
        format!("{a}:80")
    };
    own.contains(&with_port)
}

/// A `Location` (or `Refresh` URL) from the upstream, rewritten: an absolute URL naming the
/// upstream's own address gets the client's origin; a local path gets the public prefix back
/// (see `Mount::public_path`). None: leave it as it is.
pub fn location(
    value: &str,
    own: &[String],
    client_origin: &str,
    mount: &Mount<'_>,
) -> Option<String> {
    let v = value.trim();
    if let Some((scheme, authority, rest)) = split_absolute(v) {
        if !is_upstream(authority, scheme, own) {
            return None;
        }
        let path = if rest.is_empty() { "/" } else { rest };
        let path = if path.starts_with('/') {
            mount.public_path(path).unwrap_or_else(|| path.to_owned())
        } else {
            path.to_owned()
        };
        return Some(format!("{client_origin}{path}"));
    }
    if v.starts_with('/') && !v.starts_with("//") {
        return mount.public_path(v);
    }
    None
}

/// A `Refresh` value (`5; url=/x`): its URL rewritten as `location` does.
pub fn refresh(
    value: &str,
    own: &[String],
    client_origin: &str,
    mount: &Mount<'_>,
) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    let at = lower.find("url=")? + 4;
    let url = value[at..].trim().trim_matches(['"', '\'']);
    let new = location(url, own, client_origin, mount)?;
    Some(format!("{}{new}", &value[..at]))
}

/// A `Set-Cookie` from a prefixed route: `Path=/` (or a path under the app's prefix) becomes
/// the public mount; a `Domain` naming the upstream's host is dropped (the browser would
/// refuse or misplace it). None: leave it as it is.
pub fn set_cookie(value: &str, upstream_hosts: &[String], mount: &Mount<'_>) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut changed = false;
    for (i, part) in value.split(';').enumerate() {
        let trimmed = part.trim();
        if i > 0 {
            let (name, val) = trimmed.split_once('=').unwrap_or((trimmed, ""));
            if name.eq_ignore_ascii_case("domain") {
                let d = val.trim().trim_start_matches('.').to_ascii_lowercase();
                if upstream_hosts.contains(&d) {
                    changed = true;
                    continue;
                }
            } else if name.eq_ignore_ascii_case("path") && mount.is_set() {
                let p = val.trim();
                let new = if p == "/" && mount.upstream.is_none() {
                    Some(mount.cookie_path().to_owned())
                } else if p.starts_with('/') {
                    mount.public_path(p).map(|np| match np.strip_suffix('/') {
                        Some(s) if !s.is_empty() => s.to_owned(),
                        _ => np,
                    })
                } else {
                    None
                };
                if let Some(np) = new.filter(|np| np != p) {
                    parts.push(format!("Path={np}"));
                    changed = true;
                    continue;
                }
            }
        }
        parts.push(if i == 0 {
            part.to_owned()
        } else {
            trimmed.to_owned()
        });
    }
    changed.then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &[&str] = &["127.0.0.1:8080", "app.internal:80"];
    const ORIGIN: &str = "https://gw.example";

    fn own() -> Vec<String> {
        OWN.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn locations_table() {
        let strip = Mount {
            public: Some("/wiki"),
            upstream: None,
        };
        let mapped = Mount {
            public: Some("/wiki"),
            upstream: Some("/trac"),
        };
        let root = Mount::default();
        let cases: &[(&str, &Mount<'_>, Option<&str>)] = &[
            // The app's own address, absolute: the client's origin instead.
            (
                "http://127.0.0.1:8080/x",
                &root,
                Some("https://gw.example/x"),
            ),
            ("http://127.0.0.1:8080", &root, Some("https://gw.example/")),
            (
                "http://APP.internal/x?y=1",
                &root,
                Some("https://gw.example/x?y=1"),
            ),
            (
                "http://app.internal:80/x",
                &root,
                Some("https://gw.example/x"),
            ),
            (
                "http://127.0.0.1:8080/x",
                &strip,
                Some("https://gw.example/wiki/x"),
            ),
            (
                "http://127.0.0.1:8080/trac/t/1",
                &mapped,
                Some("https://gw.example/wiki/t/1"),
            ),
            // Someone else's address stays (an app may send users to its identity provider).
            ("https://idp.example/login", &strip, None),
            ("http://127.0.0.1:9999/x", &root, None),
            // Local paths get the public prefix back.
            ("/login", &strip, Some("/wiki/login")),
            ("/trac/newticket", &mapped, Some("/wiki/newticket")),
            ("/trac", &mapped, Some("/wiki/")),
            ("/tracx", &mapped, None),
            ("/other", &mapped, None),
            ("/login", &root, None),
            ("//evil.example/x", &strip, None),
            ("relative/path", &strip, None),
        ];
        for (value, mount, want) in cases {
            assert_eq!(
                location(value, &own(), ORIGIN, mount).as_deref(),
                *want,
                "{value} with {mount:?}"
            );
        }
    }

    #[test]
    fn refresh_urls_are_rewritten_too() {
        let strip = Mount {
            public: Some("/wiki"),
            upstream: None,
        };
        assert_eq!(
            refresh("0; url=/start", &own(), ORIGIN, &strip).as_deref(),
            Some("0; url=/wiki/start")
        );
        assert_eq!(refresh("5", &own(), ORIGIN, &strip), None);
    }

    #[test]
    fn cookies_table() {
        let hosts = vec!["127.0.0.1".to_owned(), "app.internal".to_owned()];
        let strip = Mount {
            public: Some("/wiki"),
            upstream: None,
        };
        let mapped = Mount {
            public: Some("/wiki"),
            upstream: Some("/trac"),
        };
        let cases: &[(&str, &Mount<'_>, Option<&str>)] = &[
            (
                "sid=1; Path=/; HttpOnly",
                &strip,
                Some("sid=1; Path=/wiki; HttpOnly"),
            ),
            (
                "sid=1; path=/trac; Secure",
                &mapped,
                Some("sid=1; Path=/wiki; Secure"),
            ),
            ("sid=1; Path=/trac/x", &mapped, Some("sid=1; Path=/wiki/x")),
            ("sid=1; Path=/other", &mapped, None),
            (
                "sid=1; Domain=app.internal; Path=/",
                &Mount::default(),
                Some("sid=1; Path=/"),
            ),
            (
                "sid=1; Domain=.example.com; Path=/",
                &Mount::default(),
                None,
            ),
            ("sid=1", &strip, None),
        ];
        for (value, mount, want) in cases {
            assert_eq!(
                set_cookie(value, &hosts, mount).as_deref(),
                *want,
                "{value}"
            );
        }
    }
}
