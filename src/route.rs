//! The route table: first match in file order over exact, `*` and `**` patterns, optional
//! methods and host. Pure: built once from config, looked up per request without I/O.

use http::Method;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    /// `*`: exactly one non-empty segment.
    One,
}

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    raw: String,
    segs: Vec<Seg>,
    /// Ends in `/**`: matches the prefix itself and anything below it.
    prefix: bool,
}

/// Why a route pattern is not valid (the message names the pattern).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(String);

impl PatternError {
    fn new(message: String) -> Self {
        PatternError(message)
    }
}

impl Pattern {
    pub fn parse(raw: &str) -> Result<Pattern, PatternError> {
        if !raw.starts_with('/') {
            return Err(PatternError::new(format!(
                "pattern {raw:?} must start with /"
            )));
        }
        let mut segs = Vec::new();
        let mut prefix = false;
        let parts: Vec<&str> = raw[1..].split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            match *part {
                "**" if last => prefix = true,
                "**" => {
                    return Err(PatternError::new(format!(
                        "pattern {raw:?}: ** is only allowed as the last segment"
                    )))
                }
                "*" => segs.push(Seg::One),
                "" if last => {}
                "" => {
                    return Err(PatternError::new(format!(
                        "pattern {raw:?} has an empty segment"
                    )))
                }
                "." | ".." => {
                    return Err(PatternError::new(format!(
                        "pattern {raw:?}: . and .. never appear in a normalized path"
                    )))
                }
                p if p.contains('*') => {
                    return Err(PatternError::new(format!(
                        "pattern {raw:?}: * must be a whole segment"
                    )))
                }
                p if p.contains(['%', ';', '?', '#', '\\']) => {
                    return Err(PatternError::new(format!(
                        "pattern {raw:?}: write segments decoded, without ; ? # % or \\"
                    )))
                }
                p => segs.push(Seg::Lit(p.to_owned())),
            }
        }
        Ok(Pattern {
            raw: raw.to_owned(),
            segs,
            prefix,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Matches a judged (normalized) path. A trailing slash does not make a different path.
    pub fn matches(&self, judged: &str) -> bool {
        let mut parts = judged.split('/').filter(|s| !s.is_empty());
        for seg in &self.segs {
            let Some(part) = parts.next() else {
                return false;
            };
            if let Seg::Lit(lit) = seg {
                if lit != part {
                    return false;
                }
            }
        }
        self.prefix || parts.next().is_none()
    }

    /// True when every path this pattern's `other` matches is matched by `self` too.
    fn covers(&self, other: &Pattern) -> bool {
        if self.segs.len() > other.segs.len() {
            return false;
        }
        if !self.prefix && (other.prefix || other.segs.len() != self.segs.len()) {
            return false;
        }
        self.segs
            .iter()
            .zip(&other.segs)
            .all(|(a, b)| match (a, b) {
                (Seg::One, _) => true,
                (Seg::Lit(x), Seg::Lit(y)) => x == y,
                (Seg::Lit(_), Seg::One) => false,
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Public,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnauthenticated {
    Status401,
    Redirect,
}

/// One validated `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the file's `routes` array.
    pub index: usize,
    /// Line of the route's table in the config file.
    pub line: usize,
    /// Label in metrics and logs: `name` if given, else the pattern. Leaked once per loaded
    /// config (a process loads one), so per-request metrics need no allocation.
    pub name: &'static str,
    pub pattern: Pattern,
    /// Lower-case host without port.
    pub host: Option<String>,
    pub methods: Option<Vec<Method>>,
    /// Index into `Config::upstreams` (none in judge-only mode).
    pub upstream: Option<usize>,
    pub auth: AuthMode,
    pub roles: Vec<String>,
    pub on_unauthenticated: OnUnauthenticated,
    pub websocket: bool,
    /// Removed from the path before forwarding (`/legacy/x` -> `/x`, `/legacy` -> `/`).
    pub strip_prefix: Option<String>,
    /// The `Host` the upstream receives.
    pub host_header: HostHeader,
    /// Judge the path case-folded, trailing dots and spaces of each segment trimmed (for
    /// IIS-like upstreams that treat `/ADMIN./x` as `/admin/x`).
    pub case_insensitive: bool,
    /// Earlier methods-limited routes may let their other methods fall through to this one.
    pub allow_fallthrough: bool,
    /// `Cache-Control` of responses to cookie-authenticated requests.
    pub cache_control: CacheControl,
    /// How a cookie-authenticated unsafe request (or WebSocket handshake) proves it is not
    /// cross-site.
    pub csrf: CsrfMode,
    /// Put in front of the path after `strip_prefix` (public `/wiki/x` -> app `/trac/x`).
    pub upstream_prefix: Option<String>,
    /// Rewrite `Location` / `Refresh` answers to the public origin and mount.
    pub redirect_rewrite: bool,
    /// Rewrite `Set-Cookie` paths (and drop the upstream's `Domain`) for a prefixed mount.
    pub cookie_rewrite: bool,
    /// App cookies a logout through the gateway also expires.
    pub logout_clear_cookies: Vec<String>,
    /// API keys (`Authorization: Bearer agk_...`, `X-API-Key`) open this route.
    pub api_keys: bool,
    /// HTTP Basic (`user:password`, or `user:agk_...`) opens this route.
    pub basic: bool,
    /// Only a session that passed a second factor (its `amr` names one) opens this route.
    pub second_factor: bool,
}

impl Route {
    /// Where this route mounts its app (for rewriting what the app says back).
    pub fn mount(&self) -> crate::rewrite::Mount<'_> {
        crate::rewrite::Mount {
            public: self.strip_prefix.as_deref(),
            upstream: self.upstream_prefix.as_deref(),
        }
    }

    /// The public path this route mounts: `strip_prefix`, else the literal start of its
    /// pattern (`/app/**` -> `/app`), else `/`.
    pub fn public_mount(&self) -> String {
        if let Some(p) = &self.strip_prefix {
            return p.clone();
        }
        let text = self.pattern.as_str();
        let literal: Vec<&str> = text
            .split('/')
            .skip(1)
            .take_while(|s| !s.contains('*'))
            .collect();
        if literal.is_empty() {
            "/".to_owned()
        } else {
            format!("/{}", literal.join("/"))
        }
    }
}

/// Per route: how a cookie-authenticated unsafe request proves it is not cross-site (§10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CsrfMode {
    /// The origin rule (`auth::origin`: Fetch Metadata and `Origin`; no token, so unmodified
    /// apps work). The default.
    #[default]
    Origin,
    /// The origin rule and the session's CSRF token (header, urlencoded or multipart field).
    Token,
    /// No check (an app with its own CSRF defence; SameSite=Lax cookies remain).
    Off,
}

/// What the gateway does to `Cache-Control` on responses to cookie-authenticated requests
/// (a browser's Back button must not show a page after logout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheControl {
    /// `no-store`, unless the upstream set its own (the default).
    Default,
    /// Always `no-store`.
    NoStore,
    /// Whatever the upstream sent, or nothing.
    Upstream,
}

/// What `Host` the upstream receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostHeader {
    /// The client's (checked) host.
    Client,
    /// The upstream URL's `host:port`.
    Upstream,
    /// This value.
    Literal(http::HeaderValue),
}

impl Route {
    fn matches(&self, method: &Method, host: Option<&str>, judged: &str) -> bool {
        if let Some(want) = &self.host {
            if host.is_none_or(|h| !h.eq_ignore_ascii_case(want)) {
                return false;
            }
        }
        if let Some(methods) = &self.methods {
            // HEAD is allowed wherever GET is.
            let head_as_get = *method == Method::HEAD && methods.contains(&Method::GET);
            if !methods.contains(method) && !head_as_get {
                return false;
            }
        }
        self.pattern.matches(judged)
    }

    fn covers(&self, other: &Route) -> bool {
        let host_ok = self.host.is_none() || self.host == other.host;
        let methods_ok = match (&self.methods, &other.methods) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs.iter().all(|m| mine.contains(m)),
        };
        host_ok && methods_ok && self.pattern.covers(&other.pattern)
    }
}

/// Routes in file order.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Some route is limited to a host (else the request's host is never looked at).
    judges_hosts: bool,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        let judges_hosts = routes.iter().any(|r| r.host.is_some());
        Self {
            routes,
            judges_hosts,
        }
    }

    /// True when some route is limited to a host: only then does `lookup` need one.
    pub fn judges_hosts(&self) -> bool {
        self.judges_hosts
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// First route, in file order, that matches; `host` is the request's host without port.
    /// Case-insensitive routes see the path folded (computed once, only if one is reached).
    pub fn lookup(&self, method: &Method, host: Option<&str>, judged: &str) -> Option<&Route> {
        let mut folded: Option<String> = None;
        self.routes.iter().find(|r| {
            let path = if r.case_insensitive {
                folded.get_or_insert_with(|| fold_path(judged)).as_str()
            } else {
                judged
            };
            r.matches(method, host, path)
        })
    }

    /// Pairs (later, earlier) of positions in `routes` where the earlier route matches every
    /// request the later one would, so the later one is dead.
    pub fn shadowed(routes: &[Route]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (j, later) in routes.iter().enumerate() {
            if let Some(i) = routes[..j].iter().position(|e| e.covers(later)) {
                out.push((j, i));
            }
        }
        out
    }

    /// Pairs (earlier, later): a methods-limited route whose other methods, on the same
    /// paths, fall through to a later route that asks for less (public where it required a
    /// token, or a role it does not accept), unless the later one says `allow_fallthrough`.
    /// (The classic leak: `/admin/**` for GET and POST with role admin, then `/**` for any
    /// user: DELETE /admin/x reaches the admin app as a plain user.)
    pub fn fallthroughs(routes: &[Route]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (i, a) in routes.iter().enumerate() {
            let Some(limited) = &a.methods else { continue };
            let allowed = |m: &Method| {
                limited.contains(m) || (*m == Method::HEAD && limited.contains(&Method::GET))
            };
            for (j, b) in routes.iter().enumerate().skip(i + 1) {
                let host_ok = b.host.is_none() || b.host == a.host;
                let takes_others = b
                    .methods
                    .as_ref()
                    .is_none_or(|bm| bm.iter().any(|m| !allowed(m)));
                if !(host_ok && takes_others && b.pattern.covers(&a.pattern)) {
                    continue;
                }
                if weaker(a, b) && !b.allow_fallthrough {
                    out.push((i, j));
                }
                if b.methods.is_none() {
                    break; // it answers every method that got this far
                }
            }
        }
        out
    }
}

/// `b` lets in someone `a` would refuse.
fn weaker(a: &Route, b: &Route) -> bool {
    match (a.auth, b.auth) {
        (AuthMode::Public, _) => false,
        (AuthMode::Required, AuthMode::Public) => true,
        (AuthMode::Required, AuthMode::Required) => {
            !a.roles.is_empty()
                && (b.roles.is_empty() || b.roles.iter().any(|r| !a.roles.contains(r)))
        }
    }
}

/// A path as IIS-like servers read it: lower case, each segment without trailing dots and
/// spaces (`/ADMIN./x%20` is `/admin/x`).
/// A route's label as `&'static str` (metrics count requests by it without allocating), kept
/// once per distinct name for the life of the process: reloading a config with the same
/// routes reuses them, and every one stays reachable (not leaked).
pub fn intern(name: String) -> &'static str {
    static NAMES: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<&'static str>>> =
        std::sync::OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    let mut set = names
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = set.get(name.as_str()) {
        return known;
    }
    let kept: &'static str = Box::leak(name.into_boxed_str());
    set.insert(kept);
    kept
}

pub fn fold_path(judged: &str) -> String {
    let mut out = String::with_capacity(judged.len());
    for (i, seg) in judged.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let mut s = seg;
        loop {
            let trimmed = s
                .strip_suffix('.')
                .or_else(|| s.strip_suffix("%20"))
                .or_else(|| s.strip_suffix(' '));
            match trimmed {
                Some(t) => s = t,
                None => break,
            }
        }
        out.push_str(&s.to_ascii_lowercase());
    }
    out
}

/// The host a rule judges: the Host header (or HTTP/2 authority) without port, lower-cased.
pub fn request_host(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {

    /// Found by the config fuzzer (LeakSanitizer): every config load leaked its route labels.
    /// A label is now kept once per distinct name, reachable, and reloads reuse it.
    #[test]
    fn route_labels_are_kept_once_per_name() {
        let a = intern("/fuzz-label/**".to_owned());
        let b = intern("/fuzz-label/**".to_owned());
        assert!(std::ptr::eq(a, b));
        assert_ne!(intern("/other-label/**".to_owned()), a);
    }

    use super::*;

    fn pat(s: &str) -> Pattern {
        Pattern::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(super) fn route(
        i: usize,
        path: &str,
        methods: Option<Vec<Method>>,
        host: Option<&str>,
    ) -> Route {
        Route {
            index: i,
            line: i + 1,
            name: "test",
            pattern: pat(path),
            host: host.map(str::to_owned),
            methods,
            upstream: Some(0),
            auth: AuthMode::Public,
            roles: vec![],
            on_unauthenticated: OnUnauthenticated::Status401,
            websocket: true,
            strip_prefix: None,
            host_header: HostHeader::Client,
            case_insensitive: false,
            allow_fallthrough: false,
            cache_control: CacheControl::Default,
            csrf: CsrfMode::Origin,
            upstream_prefix: None,
            redirect_rewrite: true,
            cookie_rewrite: true,
            logout_clear_cookies: Vec::new(),
            api_keys: false,
            basic: false,
            second_factor: false,
        }
    }

    #[test]
    fn exact_star_and_prefix() {
        assert!(pat("/a/b").matches("/a/b"));
        assert!(pat("/a/b").matches("/a/b/"));
        assert!(!pat("/a/b").matches("/a/b/c"));
        assert!(!pat("/a/b").matches("/a"));
        assert!(pat("/a/*/c").matches("/a/x/c"));
        assert!(!pat("/a/*/c").matches("/a/c"));
        assert!(!pat("/a/*/c").matches("/a/x/y/c"));
        assert!(pat("/a/**").matches("/a"));
        assert!(pat("/a/**").matches("/a/"));
        assert!(pat("/a/**").matches("/a/b/c"));
        assert!(!pat("/a/**").matches("/ab"));
        assert!(pat("/**").matches("/"));
        assert!(pat("/**").matches("/anything/at/all"));
        assert!(pat("/").matches("/"));
        assert!(!pat("/").matches("/a"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["a", "/a/**/b", "/a*", "//a", "/a/../b", "/a%2Fb", "/a;x"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn first_match_wins_with_methods_and_host() {
        let table = RouteTable::new(vec![
            route(0, "/admin/**", Some(vec![Method::POST]), None),
            route(1, "/api/**", None, Some("api.example.com")),
            route(2, "/**", None, None),
        ]);
        let hit = |m: &Method, h: Option<&str>, p: &str| table.lookup(m, h, p).map(|r| r.index);
        assert_eq!(hit(&Method::POST, None, "/admin/x"), Some(0));
        assert_eq!(hit(&Method::GET, None, "/admin/x"), Some(2));
        assert_eq!(
            hit(&Method::GET, Some("API.example.com"), "/api/v1"),
            Some(1)
        );
        assert_eq!(hit(&Method::GET, Some("other"), "/api/v1"), Some(2));
        let no_catch_all = RouteTable::new(vec![route(0, "/a", None, None)]);
        assert!(no_catch_all.lookup(&Method::GET, None, "/b").is_none());
    }

    #[test]
    fn shadowing_is_found() {
        let routes = vec![
            route(0, "/**", None, None),
            route(1, "/admin/**", None, None),
        ];
        assert_eq!(RouteTable::shadowed(&routes), vec![(1, 0)]);
        let fine = vec![
            route(0, "/admin/**", Some(vec![Method::GET]), None),
            route(1, "/admin/**", None, None),
            route(2, "/a/*", None, None),
            route(3, "/a/b", None, Some("h")),
            route(4, "/**", None, None),
        ];
        assert_eq!(RouteTable::shadowed(&fine), vec![(3, 2)]);
    }

    #[test]
    fn host_without_port() {
        assert_eq!(request_host("example.com:8443"), "example.com");
        assert_eq!(request_host("example.com"), "example.com");
        assert_eq!(request_host("[::1]:80"), "::1");
    }
}

#[cfg(test)]
mod route_rules_tests {
    use super::*;

    /// The table tests' route, with auth and roles.
    fn route(i: usize, path: &str, methods: &[Method], auth: AuthMode, roles: &[&str]) -> Route {
        let limited = (!methods.is_empty()).then(|| methods.to_vec());
        let mut r = super::tests::route(i, path, limited, None);
        r.auth = auth;
        r.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        r
    }

    #[test]
    fn weaker_fallthroughs_are_found() {
        use AuthMode::*;
        let leaky = vec![
            route(
                0,
                "/admin/**",
                &[Method::GET, Method::POST],
                Required,
                &["admin"],
            ),
            route(1, "/**", &[], Required, &[]),
        ];
        assert_eq!(RouteTable::fallthroughs(&leaky), vec![(0, 1)]);
        let to_public = vec![
            route(0, "/api/**", &[Method::GET], Required, &[]),
            route(1, "/**", &[], Public, &[]),
        ];
        assert_eq!(RouteTable::fallthroughs(&to_public), vec![(0, 1)]);
        // Falling through to something stronger, or to the same roles, is fine.
        let fine = vec![
            route(0, "/reports/**", &[Method::GET], Public, &[]),
            route(1, "/admin/**", &[Method::GET], Required, &["admin"]),
            route(2, "/admin/**", &[], Required, &["admin"]),
            route(3, "/**", &[], Required, &[]),
        ];
        assert!(RouteTable::fallthroughs(&fine).is_empty());
        let mut allowed = leaky.clone();
        allowed[1].allow_fallthrough = true;
        assert!(RouteTable::fallthroughs(&allowed).is_empty());
    }

    #[test]
    fn head_follows_get() {
        let t = RouteTable::new(vec![route(
            0,
            "/r/**",
            &[Method::GET],
            AuthMode::Public,
            &[],
        )]);
        assert!(t.lookup(&Method::HEAD, None, "/r/x").is_some());
        assert!(t.lookup(&Method::POST, None, "/r/x").is_none());
    }

    #[test]
    fn case_insensitive_routes_judge_the_folded_path() {
        assert_eq!(fold_path("/ADMIN./X%20/y..."), "/admin/x/y");
        assert_eq!(fold_path("/"), "/");
        let mut admin = route(0, "/admin/**", &[], AuthMode::Required, &["admin"]);
        admin.case_insensitive = true;
        let t = RouteTable::new(vec![admin, route(1, "/**", &[], AuthMode::Public, &[])]);
        for p in ["/ADMIN/x", "/admin./x", "/Admin%20/x", "/admin"] {
            assert_eq!(
                t.lookup(&Method::GET, None, p).map(|r| r.index),
                Some(0),
                "{p}"
            );
        }
        assert_eq!(
            t.lookup(&Method::GET, None, "/administrator")
                .map(|r| r.index),
            Some(1)
        );
    }
}
