//! `[revocation]`: which store (memory, file, redis) and, for Redis, its topology, TLS and
//! password (files read once, here).

use super::build::{one_of, resolve, span, trim_ascii_end};
use super::error::Reporter;
use super::raw;
use super::*;
use std::path::Path;
use toml::Spanned;

/// Where `backend = "file"` keeps its database when `path` is not set (relative to the config).
pub const DEFAULT_FILE_STORE: &str = "state/revocations.redb";

pub(super) fn build_revocation(
    rep: &mut Reporter,
    base: &Path,
    raw: &raw::RawRevocation,
) -> RevocationConfig {
    let backend = match raw.backend.as_ref().map(|b| b.get_ref().0.as_str()) {
        None | Some("memory") => RevocationBackend::Memory,
        Some("file") => RevocationBackend::File(resolve(
            base,
            raw.path
                .as_ref()
                .map_or(DEFAULT_FILE_STORE, |p| p.get_ref().0.as_str()),
        )),
        Some("redis") => RevocationBackend::Redis(build_redis(rep, base, raw)),
        Some(other) => {
            rep.error(
                raw.backend.as_ref().and_then(span),
                "revocation.backend",
                format!("{other:?} is not a revocation backend"),
                Some("use \"memory\", \"file\" or \"redis\"".to_owned()),
            );
            RevocationBackend::Memory
        }
    };
    if let Some(p) = raw
        .path
        .as_ref()
        .filter(|_| !matches!(backend, RevocationBackend::File(_)))
    {
        rep.error(
            span(p),
            "revocation.path",
            "only the file backend uses it",
            Some("set backend = \"file\" or remove path".to_owned()),
        );
    }
    if !matches!(backend, RevocationBackend::Redis(_)) {
        for (key, at) in [
            (
                "revocation.tls_ca_file",
                raw.tls_ca_file.as_ref().and_then(span),
            ),
            (
                "revocation.tls_cert_file",
                raw.tls_cert_file.as_ref().and_then(span),
            ),
            (
                "revocation.redis_password_file",
                raw.redis_password_file.as_ref().and_then(span),
            ),
            ("revocation.sentinel", raw.sentinel.as_ref().and_then(span)),
            (
                "revocation.cluster_nodes",
                raw.cluster_nodes.as_ref().and_then(span),
            ),
        ] {
            if at.is_some() {
                rep.error(
                    at,
                    key,
                    "only the redis backend uses it",
                    Some("set backend = \"redis\" or remove it".to_owned()),
                );
            }
        }
    }
    if let (RevocationBackend::Redis(r), Some(m)) =
        (&backend, raw.mirror.as_ref().filter(|m| *m.get_ref()))
    {
        if matches!(r.topology, RedisTopology::Cluster { .. }) {
            rep.error(
                span(m),
                "revocation.mirror",
                "the mirror needs a single primary (one pub/sub channel); Redis Cluster has none",
                Some("remove mirror, or use redis_url or sentinel".to_owned()),
            );
        }
    }
    if let Some(m) = raw.mirror.as_ref().filter(|m| *m.get_ref()) {
        if !matches!(backend, RevocationBackend::Redis(_)) {
            rep.error(
                span(m),
                "revocation.mirror",
                "the mirror copies a Redis revocation set; only the redis backend has one",
                Some("set backend = \"redis\" or remove mirror".to_owned()),
            );
        }
    }
    let choices = [("deny", OnStoreError::Deny), ("allow", OnStoreError::Allow)];
    RevocationConfig {
        backend,
        key_prefix: raw
            .key_prefix
            .as_ref()
            .map_or("authgate:", |t| t.0.as_str())
            .to_owned(),
        on_store_error: one_of(
            rep,
            &raw.on_store_error,
            "revocation.on_store_error",
            OnStoreError::Deny,
            &choices,
        ),
        timeout: raw.timeout.map_or(Duration::from_millis(500), |d| d.0),
        mirror: raw.mirror.as_ref().is_some_and(|m| *m.get_ref()),
        mirror_staleness: raw.mirror_staleness.map_or(Duration::from_secs(1), |d| d.0),
    }
}

/// Reads one PEM or password file the Redis settings name, reporting at its key.
fn read_named(
    rep: &mut Reporter,
    base: &Path,
    file: &Spanned<super::raw::Text>,
    key: &str,
) -> Option<Vec<u8>> {
    match std::fs::read(resolve(base, &file.get_ref().0)) {
        Ok(v) => Some(v),
        Err(e) => {
            rep.error(span(file), key, format!("cannot read: {e}"), None);
            None
        }
    }
}

fn redis_scheme_ok(url: &str, unix: bool) -> bool {
    url.starts_with("redis://")
        || url.starts_with("rediss://")
        || (unix && url.starts_with("unix://"))
}

fn build_redis(rep: &mut Reporter, base: &Path, raw: &raw::RawRevocation) -> RedisSettings {
    let url = raw.redis_url.as_ref();
    let chosen = [
        url.is_some(),
        raw.sentinel.is_some(),
        raw.cluster_nodes.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if chosen > 1 {
        let at = raw
            .sentinel
            .as_ref()
            .and_then(span)
            .or_else(|| raw.cluster_nodes.as_ref().and_then(span));
        rep.error(
            at,
            "revocation",
            "redis_url, sentinel and cluster_nodes are mutually exclusive",
            Some("keep the one that describes your Redis".to_owned()),
        );
    }
    let topology = if let Some(s) = &raw.sentinel {
        let nodes: Vec<String> = s.get_ref().nodes.iter().map(|n| n.0.clone()).collect();
        if nodes.is_empty() || s.get_ref().master_name.0.is_empty() {
            rep.error(
                span(s),
                "revocation.sentinel",
                "needs master_name and at least one node",
                Some(
                    "sentinel = { master_name = \"mymaster\", nodes = [\"redis://h:26379\"] }"
                        .to_owned(),
                ),
            );
        }
        for n in nodes.iter().filter(|n| !redis_scheme_ok(n, false)) {
            rep.error(
                span(s),
                "revocation.sentinel.nodes",
                format!("{n:?} must start with redis:// or rediss://"),
                None,
            );
        }
        RedisTopology::Sentinel {
            master_name: s.get_ref().master_name.0.clone(),
            nodes,
        }
    } else if let Some(c) = &raw.cluster_nodes {
        let nodes: Vec<String> = c.get_ref().iter().map(|n| n.0.clone()).collect();
        if nodes.is_empty() {
            rep.error(
                span(c),
                "revocation.cluster_nodes",
                "needs at least one node",
                None,
            );
        }
        for n in nodes.iter().filter(|n| !redis_scheme_ok(n, false)) {
            rep.error(
                span(c),
                "revocation.cluster_nodes",
                format!("{n:?} must start with redis:// or rediss://"),
                None,
            );
        }
        RedisTopology::Cluster { nodes }
    } else {
        let u = url.map_or("redis://127.0.0.1:6379/0", |u| u.get_ref().0.as_str());
        if let Some(at) = url.filter(|_| !redis_scheme_ok(u, true)) {
            rep.error(
                span(at),
                "revocation.redis_url",
                "must start with redis://, rediss:// or unix://",
                None,
            );
        }
        RedisTopology::Single { url: u.to_owned() }
    };
    let tls_ca = raw
        .tls_ca_file
        .as_ref()
        .and_then(|f| read_named(rep, base, f, "revocation.tls_ca_file"));
    let tls_client = match (&raw.tls_cert_file, &raw.tls_key_file) {
        (Some(c), Some(k)) => {
            let cert = read_named(rep, base, c, "revocation.tls_cert_file");
            let key = read_named(rep, base, k, "revocation.tls_key_file");
            cert.zip(key)
        }
        (None, None) => None,
        (Some(at), None) | (None, Some(at)) => {
            rep.error(
                span(at),
                "revocation.tls_cert_file",
                "a client certificate needs both tls_cert_file and tls_key_file",
                None,
            );
            None
        }
    };
    let password = raw.redis_password_file.as_ref().and_then(|f| {
        let bytes = read_named(rep, base, f, "revocation.redis_password_file")?;
        match String::from_utf8(trim_ascii_end(bytes)) {
            Ok(p) if !p.is_empty() => Some(p),
            _ => {
                rep.error(
                    span(f),
                    "revocation.redis_password_file",
                    "the file holds no password (empty or not UTF-8)",
                    None,
                );
                None
            }
        }
    });
    RedisSettings {
        topology,
        tls_ca,
        tls_client,
        password,
    }
}
