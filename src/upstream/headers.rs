//! The request head the upstream receives: hop-by-hop headers out, spoofable identity headers
//! out, our own cookies out, identity and X-Forwarded-* in.

use crate::auth::cookies;
use crate::auth::Identity;
use crate::config::IdentityConfig;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Headers that describe one connection, not the message (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Per-request facts the header rewrite needs.
pub struct ForwardCtx<'a> {
    pub peer_ip: IpAddr,
    pub tls: bool,
    pub host: Option<&'a str>,
    pub request_id: &'a HeaderValue,
    pub identity: Option<&'a Identity>,
    pub identity_cfg: &'a IdentityConfig,
    pub path_and_query: String,
    pub upgrade: Option<HeaderValue>,
}

/// True when `name` would be read as one of the identity headers by some upstream stack:
/// same letters, ignoring case and `_` versus `-`.
fn is_identity_like(name: &str, cfg: &IdentityConfig) -> bool {
    let same = |want: &HeaderName| {
        name.len() == want.as_str().len()
            && name
                .bytes()
                .zip(want.as_str().bytes())
                .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
    };
    same(&cfg.subject_header) || same(&cfg.roles_header)
}

/// Removes hop-by-hop headers and every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The request head the upstream receives.
pub fn rewrite_request_headers(headers: &mut HeaderMap, ctx: &ForwardCtx<'_>) {
    strip_hop_by_hop(headers);
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_identity_like(n.as_str(), ctx.identity_cfg))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    if !ctx.identity_cfg.forward_token {
        headers.remove(header::AUTHORIZATION);
    }
    if headers.contains_key(header::COOKIE) {
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join("; ");
        headers.remove(header::COOKIE);
        if let Some(kept) = cookies::strip_own(&cookie) {
            if let Ok(v) = HeaderValue::from_str(&kept) {
                headers.insert(header::COOKIE, v);
            }
        }
    }
    let xff_name = HeaderName::from_static("x-forwarded-for");
    let prior: Vec<&str> = headers
        .get_all(&xff_name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let xff = if prior.is_empty() {
        ctx.peer_ip.to_string()
    } else {
        format!("{}, {}", prior.join(", "), ctx.peer_ip)
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(xff_name, v);
    }
    let proto = if ctx.tls { "https" } else { "http" };
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(proto),
    );
    if let Some(v) = ctx.host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), v.clone());
        headers.entry(header::HOST).or_insert(v);
    }
    headers.insert(
        HeaderName::from_static("x-request-id"),
        ctx.request_id.clone(),
    );
    if let Some(id) = ctx.identity {
        if let Ok(v) = HeaderValue::from_str(&id.claims.sub) {
            headers.insert(ctx.identity_cfg.subject_header.clone(), v);
        }
        if let Ok(v) = HeaderValue::from_str(&id.roles().join(",")) {
            headers.insert(ctx.identity_cfg.roles_header.clone(), v);
        }
    }
    if let Some(protocol) = &ctx.upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> IdentityConfig {
        IdentityConfig {
            subject_header: HeaderName::from_static("x-auth-user"),
            roles_header: HeaderName::from_static("x-auth-roles"),
            forward_token: false,
        }
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
    }

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert(
            HeaderName::from_static("x-secret"),
            HeaderValue::from_static("1"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            HeaderName::from_static("x-keep"),
            HeaderValue::from_static("1"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }
}
