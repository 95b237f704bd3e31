//! `[[login.oidc]]`: identity providers, checked the way `serve` will use them (URL shapes,
//! secret sources read now, role values header-safe, unique names).

use super::build::{resolve, span, trim_ascii_end};
use super::error::Reporter;
use super::raw::{RawOidc, Text};
use super::{OidcProviderConfig, OidcUsers};
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

/// What may travel in an identity header: visible ASCII, no comma (roles are joined by it).
fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// True for a host the traffic to which never leaves the machine.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An absolute `https://` URL (or `http://` to a loopback host) without fragment; the reason
/// it is not one otherwise.
pub fn check_url(url: &str, what: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("{url:?} is not a URL ({what})"))?;
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{url:?} has no host ({what})"))?;
    if url.contains('#') {
        return Err(format!("{url:?} has a fragment ({what})"));
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback_host(host) => Ok(()),
        Some("http") => Err(format!(
            "{url:?} is plain http to another host: tokens and codes would cross the network in clear ({what})"
        )),
        _ => Err(format!("{url:?} is not an http(s) URL ({what})")),
    }
}

pub(super) fn build_oidc(
    rep: &mut Reporter,
    base: &Path,
    raw: &[Spanned<RawOidc>],
) -> Vec<OidcProviderConfig> {
    let mut out: Vec<OidcProviderConfig> = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let at = span(p);
        let p = p.get_ref();
        let key = |k: &str| format!("login.oidc[{i}].{k}");
        let name = p.name.get_ref().0.clone();
        if !valid_name(&name) {
            rep.error(
                span(&p.name),
                key("name"),
                format!("{name:?} is not a provider name"),
                Some("use lower-case letters, digits and '-' (it appears in URLs: /auth/oidc/<name>/callback)".to_owned()),
            );
            continue;
        }
        if out.iter().any(|o| o.name == name) {
            rep.error(
                span(&p.name),
                key("name"),
                format!("provider {name:?} is defined twice"),
                Some("give each [[login.oidc]] its own name".to_owned()),
            );
            continue;
        }
        let issuer = p.issuer.get_ref().0.clone();
        if let Err(m) = check_url(&issuer, "issuer") {
            rep.error(
                span(&p.issuer),
                key("issuer"),
                m,
                Some(
                    "the provider's issuer, e.g. \"https://sso.example.com/realms/corp\""
                        .to_owned(),
                ),
            );
        } else if issuer.contains('?') {
            rep.error(
                span(&p.issuer),
                key("issuer"),
                "an issuer has no query",
                None,
            );
        }
        let client_id = p.client_id.get_ref().0.clone();
        if client_id.is_empty() {
            rep.error(span(&p.client_id), key("client_id"), "is empty", None);
        }
        let client_secret = match (&p.client_secret, &p.client_secret_file) {
            (Some(_), Some(f)) => {
                rep.error(
                    span(f),
                    key("client_secret_file"),
                    "client_secret and client_secret_file are both set",
                    Some("keep one of them".to_owned()),
                );
                None
            }
            (Some(s), None) => {
                let v = s.get_ref().0.trim().to_owned();
                if v.is_empty() {
                    rep.error(
                        span(s),
                        key("client_secret"),
                        "is empty",
                        Some("remove it for a public client, or set the secret".to_owned()),
                    );
                }
                Some(v)
            }
            (None, Some(f)) => {
                let path = resolve(base, &f.get_ref().0);
                match std::fs::read(&path) {
                    Ok(v) => match String::from_utf8(trim_ascii_end(v)) {
                        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
                        _ => {
                            rep.error(
                                span(f),
                                key("client_secret_file"),
                                format!("{} holds no secret (empty or not UTF-8)", path.display()),
                                None,
                            );
                            None
                        }
                    },
                    Err(e) => {
                        rep.error(
                            span(f),
                            key("client_secret_file"),
                            format!("cannot read {}: {e}", path.display()),
                            Some(
                                "the file the provider's client secret is in (a mounted Secret)"
                                    .to_owned(),
                            ),
                        );
                        None
                    }
                }
            }
            (None, None) => None,
        };
        let mut scopes = vec!["openid".to_owned()];
        let given = p.scopes.as_ref().map_or_else(
            || vec!["email".to_owned(), "profile".to_owned()],
            |s| s.get_ref().iter().map(|t| t.0.clone()).collect(),
        );
        for s in given {
            if s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            {
                rep.error(
                    p.scopes.as_ref().and_then(span),
                    key("scopes"),
                    format!("{s:?} is not a scope"),
                    None,
                );
            } else if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        let redirect_url = p.redirect_url.as_ref().and_then(|r| {
            let url = r.get_ref().0.clone();
            match check_url(&url, "redirect_url") {
                Ok(()) => Some(url),
                Err(m) => {
                    rep.error(
                        span(r),
                        key("redirect_url"),
                        m,
                        Some(format!(
                            "the gateway's callback as the browser reaches it, e.g. \"https://app.example.com/auth/oidc/{name}/callback\""
                        )),
                    );
                    None
                }
            }
        });
        let claim = |v: &Option<Spanned<Text>>, k: &str, rep: &mut Reporter| {
            v.as_ref().and_then(|c| {
                let c0 = c.get_ref().0.clone();
                if c0.is_empty() {
                    rep.error(span(c), key(k), "is empty", None);
                    None
                } else {
                    Some(c0)
                }
            })
        };
        let username_claim = claim(&p.username_claim, "username_claim", rep)
            .unwrap_or_else(|| "preferred_username".to_owned());
        let roles_claim = claim(&p.roles_claim, "roles_claim", rep);
        let mut role_map = BTreeMap::new();
        let empty = BTreeMap::new();
        let map_span = p.role_map.as_ref().and_then(span);
        for (from, to) in p.role_map.as_ref().map_or(&empty, |m| m.get_ref()) {
            let roles: Vec<String> = to.iter().map(|t| t.0.clone()).collect();
            if let Some(bad) = roles.iter().find(|r| !header_safe(r)) {
                rep.error(
                    map_span.clone(),
                    key("role_map"),
                    format!("{bad:?} (for {from:?}) is not a role: roles travel in a header"),
                    Some("use visible ASCII without commas or spaces".to_owned()),
                );
            }
            role_map.insert(from.clone(), roles);
        }
        let mut default_roles = Vec::new();
        for r in &p.default_roles {
            let v = r.get_ref().0.clone();
            if header_safe(&v) {
                default_roles.push(v);
            } else {
                rep.error(
                    span(r),
                    key("default_roles"),
                    format!("{v:?} is not a role: roles travel in a header"),
                    Some("use visible ASCII without commas or spaces".to_owned()),
                );
            }
        }
        let mut allowed_email_domains = Vec::new();
        for d in &p.allowed_email_domains {
            let v = d
                .get_ref()
                .0
                .trim()
                .trim_start_matches('@')
                .to_ascii_lowercase();
            if v.is_empty() || v.contains('@') || v.contains(char::is_whitespace) {
                rep.error(
                    span(d),
                    key("allowed_email_domains"),
                    format!("{:?} is not a domain", d.get_ref().0),
                    Some("e.g. \"example.com\"".to_owned()),
                );
            } else {
                allowed_email_domains.push(v);
            }
        }
        let users = match p.users.as_ref().map(|u| u.get_ref().0.as_str()) {
            None | Some("any") => OidcUsers::Any,
            Some("known") => OidcUsers::Known,
            Some(other) => {
                rep.error(
                    p.users.as_ref().and_then(span),
                    key("users"),
                    format!("{other:?} is not a choice"),
                    Some("use \"any\" (anyone the provider signs in) or \"known\" (only names in the user store)".to_owned()),
                );
                OidcUsers::Any
            }
        };
        let roots = match &p.ca_file {
            Some(ca) => match crate::certs::load_roots(&resolve(base, &ca.get_ref().0)) {
                Ok(r) => r,
                Err(e) => {
                    rep.error(span(ca), key("ca_file"), e.to_string(), None);
                    continue;
                }
            },
            None => crate::certs::system_roots(),
        };
        let tls = match crate::certs::client_config(roots, None) {
            Ok(t) => t,
            Err(e) => {
                rep.error(at.clone(), key("ca_file"), e.to_string(), None);
                continue;
            }
        };
        out.push(OidcProviderConfig {
            display_name: p
                .display_name
                .as_ref()
                .map_or_else(|| name.clone(), |d| d.0.clone()),
            name,
            issuer,
            client_id,
            client_secret,
            scopes,
            redirect_url,
            username_claim,
            roles_claim,
            role_map,
            default_roles,
            allowed_email_domains,
            users,
            tls,
            logout_at_provider: p.logout_at_provider.unwrap_or(false),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_unless_loopback() {
        assert!(check_url("https://sso.example.com/realms/x", "issuer").is_ok());
        assert!(check_url("http://127.0.0.1:8080", "issuer").is_ok());
        assert!(check_url("http://localhost:8080/x", "issuer").is_ok());
        assert!(check_url("http://[::1]:8080/x", "issuer").is_ok());
        assert!(check_url("http://sso.example.com", "issuer").is_err());
        assert!(check_url("ftp://sso.example.com", "issuer").is_err());
        assert!(check_url("/relative", "issuer").is_err());
        assert!(check_url("https://x.example/#frag", "issuer").is_err());
    }

    #[test]
    fn names_are_url_safe() {
        assert!(valid_name("corp-sso2"));
        assert!(!valid_name("Corp"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
    }
}
