//! `[[upstreams]]`: hosts (`url` or `urls`), balancing, passive health, and the TLS client
//! settings of `https://` hosts (read once, here).

use super::build::{one_of, span};
use super::error::Reporter;
use super::raw::{self, Text};
use super::{Balance, ClientCert, UpstreamConfig, UpstreamTarget};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

pub(super) fn build_upstreams(
    rep: &mut Reporter,
    base: &Path,
    raw: &[Spanned<raw::RawUpstream>],
) -> Vec<UpstreamConfig> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, spanned) in raw.iter().enumerate() {
        let up = spanned.get_ref();
        let name = up.name.get_ref().0.clone();
        if !seen.insert(name.clone()) {
            rep.error(
                span(&up.name),
                format!("upstreams[{i}].name"),
                format!("upstream {name:?} is defined twice"),
                Some("give each upstream a unique name".to_owned()),
            );
        }
        let Some(targets) = targets(rep, i, spanned) else {
            continue;
        };
        let key = |k: &str| format!("upstreams[{i}].{k}");
        let balance = one_of(
            rep,
            &up.balance,
            &key("balance"),
            Balance::RoundRobin,
            &[
                ("round_robin", Balance::RoundRobin),
                ("least_requests", Balance::LeastRequests),
            ],
        );
        let (tls, client_cert) = if targets.iter().any(|t| t.https) {
            match client_tls(rep, base, up, &key) {
                Some((tls, cert)) => (Some(tls), cert),
                None => (None, None),
            }
        } else {
            (None, None)
        };
        out.push(UpstreamConfig {
            name,
            targets,
            connect_timeout: up.connect_timeout.map_or(Duration::from_secs(5), |d| d.0),
            request_timeout: up.request_timeout.map_or(Duration::from_secs(60), |d| d.0),
            balance,
            eject_after: up.eject_after.as_ref().map_or(3, |n| *n.get_ref()).max(1),
            eject_for: up.eject_for.map_or(Duration::from_secs(10), |d| d.0),
            tls,
            client_cert,
            sni: up.sni.as_ref().map(|s| s.get_ref().0.clone()),
            buffer_request_body: up.buffer_request_body.map_or(1 << 20, |s| s.0),
            buffer_response: up.buffer_response.map_or(1 << 20, |s| s.0),
        });
    }
    out
}

/// The hosts of one upstream: exactly one of `url` and `urls`.
fn targets(
    rep: &mut Reporter,
    i: usize,
    spanned: &Spanned<raw::RawUpstream>,
) -> Option<Vec<UpstreamTarget>> {
    let up = spanned.get_ref();
    let urls: Vec<&Spanned<Text>> = match (&up.url, &up.urls) {
        (Some(u), None) => vec![u],
        (None, Some(list)) if !list.get_ref().is_empty() => {
            // Spans of list items are the list's.
            return list
                .get_ref()
                .iter()
                .enumerate()
                .map(|(j, u)| {
                    parse_target(&u.0).map_err(|e| {
                        rep.error(span(list), format!("upstreams[{i}].urls[{j}]"), e, None)
                    })
                })
                .collect::<Result<Vec<_>, ()>>()
                .ok();
        }
        _ => {
            rep.error(
                span(spanned),
                format!("upstreams[{i}]"),
                "an upstream needs exactly one of url and urls",
                Some("url = \"http://127.0.0.1:8080\", or urls = [\"http://a:8080\", \"http://b:8080\"]".to_owned()),
            );
            return None;
        }
    };
    let mut out = Vec::new();
    for u in urls {
        match parse_target(&u.get_ref().0) {
            Ok(t) => out.push(t),
            Err(e) => {
                rep.error(
                    span(u),
                    format!("upstreams[{i}].url"),
                    e,
                    Some(
                        "write e.g. \"http://127.0.0.1:8080\" or \"https://app.internal:8443\""
                            .to_owned(),
                    ),
                );
                return None;
            }
        }
    }
    Some(out)
}

fn parse_target(url: &str) -> Result<UpstreamTarget, String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("{url:?}: an upstream is http:// or https://")),
    };
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(format!("{url:?}: an upstream URL carries no path or query"));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{url:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("{url:?}: no user info in an upstream URL"));
    }
    let authority = match authority.port_u16() {
        Some(_) => authority,
        None => format!("{}:{}", authority.host(), if https { 443 } else { 80 })
            .parse()
            .map_err(|_| format!("{url:?} has a bad host"))?,
    };
    Ok(UpstreamTarget { https, authority })
}

/// rustls client settings for `https://` hosts: the system's roots or `ca_file`, and a
/// client certificate when both `client_cert` and `client_key` are given (with its files and
/// expiry, for reload and the expiry metric).
fn client_tls(
    rep: &mut Reporter,
    base: &Path,
    up: &raw::RawUpstream,
    key: &dyn Fn(&str) -> String,
) -> Option<(Arc<rustls::ClientConfig>, Option<ClientCert>)> {
    let path = |s: &Spanned<Text>| base.join(&s.get_ref().0);
    let roots = match &up.ca_file {
        Some(ca) => crate::certs::load_roots(&path(ca))
            .map_err(|e| rep.error(span(ca), key("ca_file"), e.to_string(), None))
            .ok()?,
        None => crate::certs::system_roots(),
    };
    let mut loaded = None;
    let identity = match (&up.client_cert, &up.client_key) {
        (None, None) => None,
        (Some(cert), Some(k)) => {
            let id = crate::certs::load_client_identity(&path(cert), &path(k))
                .map_err(|e| rep.error(span(cert), key("client_cert"), e.to_string(), None))
                .ok()?;
            loaded = Some(ClientCert {
                cert: path(cert),
                key: path(k),
                not_after: id.not_after(),
            });
            Some(id)
        }
        (c, k) => {
            let at = c.as_ref().or(k.as_ref()).and_then(span);
            rep.error(
                at,
                key("client_cert"),
                "client_cert and client_key go together",
                Some("set both (PEM chain and its private key) or neither".to_owned()),
            );
            return None;
        }
    };
    crate::certs::client_config(roots, identity)
        .map_err(|e| rep.error(None, key("url"), e.to_string(), None))
        .ok()
        .map(|tls| (tls, loaded))
}
