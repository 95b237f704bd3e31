//! `[[upstreams]]` and `[[routes]]`: names resolved, patterns compiled, dead routes found.

use super::build::{one_of, span};
use super::error::Reporter;
use super::raw;
use super::UpstreamConfig;
use crate::route::{
    AuthMode, CacheControl, CsrfMode, HostHeader, OnUnauthenticated, Pattern, Route, RouteTable,
};
use http::Method;
use toml::Spanned;

pub(super) fn build_routes(
    rep: &mut Reporter,
    raw: &[Spanned<raw::RawRoute>],
    upstreams: &[UpstreamConfig],
    judge_only: bool,
) -> Option<RouteTable> {
    let routes: Vec<Route> = raw
        .iter()
        .enumerate()
        .filter_map(|(i, spanned)| build_route(rep, i, spanned, upstreams, judge_only))
        .collect();
    for (later, earlier) in RouteTable::shadowed(&routes) {
        let (l, e) = (&routes[later], &routes[earlier]);
        rep.error(
            span(&raw[l.index]),
            format!("routes[{}]", l.index),
            format!("this route can never match: routes[{}] (line {}, {:?}) comes first and matches everything it does", e.index, e.line, e.pattern.as_str()),
            Some("move the more specific route above the catch-all".to_owned()),
        );
    }
    for (earlier, later) in RouteTable::fallthroughs(&routes) {
        let (e, l) = (&routes[earlier], &routes[later]);
        let methods: Vec<&str> = e.methods.iter().flatten().map(Method::as_str).collect();
        rep.error(
            span(&raw[e.index]),
            format!("routes[{}]", e.index),
            format!(
                "only {} are limited here; every other method on {:?} falls through to routes[{}] (line {}, {:?}), which asks for less ({})",
                methods.join(", "),
                e.pattern.as_str(),
                l.index,
                l.line,
                l.pattern.as_str(),
                describe_auth(l),
            ),
            Some(format!(
                "drop `methods` from routes[{}], add a route for the other methods, or set allow_fallthrough = true on routes[{}] if that is intended",
                e.index, l.index
            )),
        );
    }
    Some(RouteTable::new(routes))
}

fn describe_auth(r: &Route) -> String {
    match r.auth {
        AuthMode::Public => "public".to_owned(),
        AuthMode::Required if r.roles.is_empty() => "any signed-in user".to_owned(),
        AuthMode::Required => format!("roles {}", r.roles.join(", ")),
    }
}

/// One route; `None` (with the problem reported) when it cannot be built.
fn build_route(
    rep: &mut Reporter,
    i: usize,
    spanned: &Spanned<raw::RawRoute>,
    upstreams: &[UpstreamConfig],
    judge_only: bool,
) -> Option<Route> {
    let r = spanned.get_ref();
    let (line, _) = rep.line_col(span(spanned));
    let key = |k: &str| format!("routes[{i}].{k}");
    let case_insensitive = r.case_insensitive.unwrap_or(false);
    let raw_path = &r.path.get_ref().0;
    let path = if case_insensitive {
        raw_path.to_ascii_lowercase()
    } else {
        raw_path.clone()
    };
    let pattern = match Pattern::parse(&path) {
        Ok(p) => p,
        Err(e) => {
            rep.error(
                span(&r.path),
                key("path"),
                e.to_string(),
                Some("patterns look like \"/a/b\", \"/a/**\" or \"/a/*/c\"".to_owned()),
            );
            return None;
        }
    };
    let upstream = match (&r.upstream, judge_only) {
        // Judge-only: nothing is proxied, an upstream named anyway is ignored.
        (_, true) => None,
        (Some(u), false) => Some(find_upstream(rep, u, upstreams, &key("upstream"))?),
        (None, false) => {
            rep.error(
                span(spanned),
                key("upstream"),
                "a route needs an upstream",
                Some("name one of [[upstreams]], or set [forward_auth] only = true to judge requests for a proxy in front without proxying".to_owned()),
            );
            return None;
        }
    };
    let (auth, on_unauthenticated) = parse_auth(rep, r, &key);
    let methods = r
        .methods
        .as_ref()
        .map(|ms| parse_methods(rep, ms, &key("methods")));
    let (strip_prefix, host_header, cache_control) = forwarding(rep, r, &key)?;
    for (flag, name) in [
        (&r.api_keys, "api_keys"),
        (&r.basic, "basic"),
        (&r.second_factor, "second_factor"),
    ] {
        if auth == AuthMode::Public && flag.as_ref().is_some_and(|f| *f.get_ref()) {
            rep.error(
                flag.as_ref().and_then(span),
                key(name),
                format!("{name} on a public route is never used (anyone gets in)"),
                Some(format!("set auth = \"required\" or remove {name}")),
            );
        }
    }
    if auth == AuthMode::Public && !r.roles.is_empty() {
        rep.error(
            span(&r.path),
            key("roles"),
            "roles on a public route are never checked",
            Some("set auth = \"required\" or remove roles".to_owned()),
        );
    }
    Some(Route {
        index: i,
        line,
        name: crate::route::intern(
            r.name
                .as_ref()
                .map_or_else(|| r.path.get_ref().0.clone(), |n| n.0.clone()),
        ),
        pattern,
        host: r.host.as_ref().map(|h| h.0.to_ascii_lowercase()),
        methods,
        upstream,
        auth,
        roles: r.roles.iter().map(|t| t.0.clone()).collect(),
        on_unauthenticated,
        websocket: r.websocket.unwrap_or(true),
        strip_prefix,
        host_header,
        case_insensitive,
        allow_fallthrough: r.allow_fallthrough.unwrap_or(false),
        cache_control,
        upstream_prefix: r
            .upstream_prefix
            .as_ref()
            .and_then(|s| parse_strip_prefix(rep, s, &key("upstream_prefix"))),
        redirect_rewrite: r.redirect_rewrite.unwrap_or(true),
        cookie_rewrite: r.cookie_rewrite.unwrap_or(true),
        logout_clear_cookies: r
            .logout_clear_cookies
            .iter()
            .enumerate()
            .filter_map(|(j, c)| cookie_name(rep, c, &key(&format!("logout_clear_cookies[{j}]"))))
            .collect(),
        api_keys: r.api_keys.as_ref().is_some_and(|f| *f.get_ref()),
        basic: r.basic.as_ref().is_some_and(|f| *f.get_ref()),
        second_factor: r.second_factor.as_ref().is_some_and(|f| *f.get_ref()),
        csrf: one_of(
            rep,
            &r.csrf,
            &key("csrf"),
            CsrfMode::Origin,
            &[
                ("origin", CsrfMode::Origin),
                ("token", CsrfMode::Token),
                ("off", CsrfMode::Off),
            ],
        ),
    })
}

/// How a route forwards: `strip_prefix`, `host_header`, `cache_control`.
fn forwarding(
    rep: &mut Reporter,
    r: &raw::RawRoute,
    key: &dyn Fn(&str) -> String,
) -> Option<(Option<String>, HostHeader, CacheControl)> {
    let strip_prefix = r
        .strip_prefix
        .as_ref()
        .and_then(|s| parse_strip_prefix(rep, s, &key("strip_prefix")));
    let host_header = r
        .host_header
        .as_ref()
        .map_or(Some(HostHeader::Client), |h| {
            parse_host_header(rep, h, &key("host_header"))
        })?;
    let cache_control = one_of(
        rep,
        &r.cache_control,
        &key("cache_control"),
        CacheControl::Default,
        &[
            ("no-store", CacheControl::NoStore),
            ("upstream", CacheControl::Upstream),
        ],
    );
    Some((strip_prefix, host_header, cache_control))
}

/// A cookie name (RFC 6265 token); the gateway's own are not the app's to clear.
fn cookie_name(rep: &mut Reporter, s: &Spanned<raw::Text>, key: &str) -> Option<String> {
    let text = &s.get_ref().0;
    let ok = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
        && !text.starts_with("authgate_")
        && !text.starts_with("__Host-authgate_");
    if !ok {
        rep.error(
            span(s),
            key,
            format!("{text:?} is not an app cookie name"),
            Some("a cookie name like \"sessionid\" (the gateway clears its own)".to_owned()),
        );
        return None;
    }
    Some(text.clone())
}

/// `strip_prefix`: a plain path without wildcards or trailing slash.
fn parse_strip_prefix(rep: &mut Reporter, s: &Spanned<raw::Text>, key: &str) -> Option<String> {
    let text = &s.get_ref().0;
    let ok = text.starts_with('/')
        && text.len() > 1
        && !text.ends_with('/')
        && !text.contains(['*', '?', '#', '%', ';', '\\'])
        && !text.contains("//");
    if !ok {
        rep.error(
            span(s),
            key,
            format!("{text:?} is not a path prefix"),
            Some(
                "write it like \"/legacy\": a leading slash, no trailing slash, no wildcards"
                    .to_owned(),
            ),
        );
        return None;
    }
    Some(text.clone())
}

/// `host_header`: `client`, `upstream` or a literal host.
fn parse_host_header(rep: &mut Reporter, s: &Spanned<raw::Text>, key: &str) -> Option<HostHeader> {
    let text = &s.get_ref().0;
    match text.as_str() {
        "client" => Some(HostHeader::Client),
        "upstream" => Some(HostHeader::Upstream),
        literal => {
            let valid = !literal.is_empty()
                && literal.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
                });
            match http::HeaderValue::from_str(literal) {
                Ok(v) if valid => Some(HostHeader::Literal(v)),
                _ => {
                    rep.error(
                        span(s),
                        key,
                        format!("{literal:?} is not a host"),
                        Some("use \"client\", \"upstream\" or a host such as \"intranet.local:8080\"".to_owned()),
                    );
                    None
                }
            }
        }
    }
}

/// `auth` and `on_unauthenticated` of one route.
fn parse_auth(
    rep: &mut Reporter,
    r: &raw::RawRoute,
    key: &dyn Fn(&str) -> String,
) -> (AuthMode, OnUnauthenticated) {
    let auth = one_of(
        rep,
        &r.auth,
        &key("auth"),
        AuthMode::Required,
        &[
            ("public", AuthMode::Public),
            ("required", AuthMode::Required),
        ],
    );
    let on_unauthenticated = one_of(
        rep,
        &r.on_unauthenticated,
        &key("on_unauthenticated"),
        OnUnauthenticated::Status401,
        &[
            ("401", OnUnauthenticated::Status401),
            ("redirect", OnUnauthenticated::Redirect),
        ],
    );
    (auth, on_unauthenticated)
}

fn find_upstream(
    rep: &mut Reporter,
    name: &Spanned<raw::Text>,
    upstreams: &[UpstreamConfig],
    key: &str,
) -> Option<usize> {
    let up_name = &name.get_ref().0;
    let found = upstreams.iter().position(|u| &u.name == up_name);
    if found.is_none() {
        let defined: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
        rep.error(
            span(name),
            key,
            format!(
                "upstream {up_name:?} is not defined; defined: {}",
                if defined.is_empty() {
                    "(none)".to_owned()
                } else {
                    defined.join(", ")
                }
            ),
            Some("add an [[upstreams]] table with this name or fix the spelling".to_owned()),
        );
    }
    found
}

fn parse_methods(rep: &mut Reporter, ms: &Spanned<Vec<raw::Text>>, key: &str) -> Vec<Method> {
    let mut parsed = Vec::new();
    for m in ms.get_ref() {
        match Method::from_bytes(m.0.to_ascii_uppercase().as_bytes()) {
            Ok(m) => parsed.push(m),
            Err(_) => rep.error(
                span(ms),
                key,
                format!("{:?} is not an HTTP method", m.0),
                None,
            ),
        }
    }
    if parsed.is_empty() {
        rep.error(
            span(ms),
            key,
            "an empty list matches nothing",
            Some("remove `methods` to match every method".to_owned()),
        );
    }
    parsed
}
