//! Raw TOML -> validated config: each table's conversion and its checks. Problems are
//! collected in the `Reporter` (with spans) so that one run reports all of them.

use super::error::Reporter;
use super::raw::{self, Dur, RawConfig, Text};
use super::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

pub(super) fn span<T>(s: &Spanned<T>) -> Option<std::ops::Range<usize>> {
    Some(s.span())
}

pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn parse_addr(
    rep: &mut Reporter,
    v: &Option<Spanned<Text>>,
    key: &str,
    default: &str,
) -> SocketAddr {
    let text = v.as_ref().map_or(default, |s| s.get_ref().0.as_str());
    match text.parse() {
        Ok(a) => a,
        Err(_) => {
            rep.error(
                v.as_ref().and_then(span),
                key,
                format!("{text:?} is not a socket address"),
                Some("write IP:PORT, e.g. \"0.0.0.0:8443\" or \"[::1]:8443\"".to_owned()),
            );
            // A placeholder; the error above stops the load.
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    }
}

fn positive(
    rep: &mut Reporter,
    v: &Option<Spanned<usize>>,
    key: &str,
    default: usize,
    min: usize,
) -> usize {
    match v {
        None => default,
        Some(s) if *s.get_ref() >= min => *s.get_ref(),
        Some(s) => {
            rep.error(span(s), key, format!("must be at least {min}"), None);
            default
        }
    }
}

/// `admin.token_file`: must exist and hold a token (at least 16 characters) now, so a typo
/// is found at start-up rather than at the first admin call.
fn admin_token_file(rep: &mut Reporter, base: &Path, v: &Option<Spanned<Text>>) -> Option<PathBuf> {
    let v = v.as_ref()?;
    let path = resolve(base, &v.get_ref().0);
    let problem = match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 16 => return Some(path),
        Ok(_) => "holds no token (at least 16 characters)".to_owned(),
        Err(e) => format!("cannot be read: {e}"),
    };
    rep.error(
        span(v),
        "admin.token_file",
        format!("{} {problem}", path.display()),
        Some(
            "write a random token to it, e.g. `openssl rand -hex 32 > admin-token`, or remove admin.token_file"
                .to_owned(),
        ),
    );
    None
}

pub(super) fn build(rep: &mut Reporter, base: &Path, raw: RawConfig) -> Option<Config> {
    let server = build_server(rep, base, &raw.server);
    let log = build_log(rep, base, &raw.log);
    let admin = AdminConfig {
        listen: parse_addr(rep, &raw.admin.listen, "admin.listen", "127.0.0.1:9901"),
        ready_requires_store: raw.admin.ready_requires_store.unwrap_or(true),
        token_file: admin_token_file(rep, base, &raw.admin.token_file),
    };
    // One port cannot be both: the second bind would fail (or, with port 0, two listeners
    // would be taken for one).
    if admin.listen == server.listen && admin.listen.port() != 0 {
        rep.error(
            raw.admin.listen.as_ref().and_then(span),
            "admin.listen",
            format!("{} is also server.listen", admin.listen),
            Some("give the admin listener its own port, e.g. \"127.0.0.1:9901\"".to_owned()),
        );
    }
    let tokens = build_tokens(rep, base, &raw.tokens);
    let revocation = super::build_revocation::build_revocation(rep, base, &raw.revocation);
    let users = build_users(rep, base, &raw.users);
    let cluster = matches!(
        &revocation.backend,
        RevocationBackend::Redis(r) if matches!(r.topology, RedisTopology::Cluster { .. })
    );
    if cluster
        && users
            .as_ref()
            .is_some_and(|u| u.backend == UsersBackend::Redis)
    {
        rep.error(
            raw.users.backend.as_ref().and_then(span),
            "users.backend",
            "the Redis user store keeps a user index across slots; it needs a single primary, not a Cluster",
            Some("use users.backend = \"file\", or redis_url / sentinel".to_owned()),
        );
    }
    let login = super::build_login::build_login(rep, base, &raw.login, users.as_ref());
    let identity = super::build_identity::build_identity(rep, base, &raw.identity);
    let upstreams = super::build_upstreams::build_upstreams(rep, base, &raw.upstreams);
    let forward_auth_only = raw.forward_auth.only.unwrap_or(false);
    let public_origin = raw
        .forward_auth
        .public_origin
        .as_ref()
        .and_then(|o| parse_origin(rep, o, "forward_auth.public_origin"));
    let routes = super::build_routes::build_routes(rep, &raw.routes, &upstreams, forward_auth_only);
    if !rep.errors.is_empty() {
        return None;
    }
    let tokens = tokens?;
    Some(Config {
        source: PathBuf::new(),
        server,
        log,
        admin,
        tokens,
        revocation,
        users: users?,
        login,
        identity,
        upstreams,
        routes: routes?,
        forward_auth_only,
        public_origin,
        tracing: build_tracing(rep, &raw.tracing),
    })
}

/// `[tracing]`: an `http(s)://host:port[/path]` collector; spans go to `<path>/v1/traces`
/// unless the path already names it.
fn build_tracing(rep: &mut Reporter, raw: &raw::RawTracing) -> super::TracingConfig {
    let service_name = raw
        .service_name
        .as_ref()
        .map_or_else(|| "authgate".to_owned(), |s| s.get_ref().0.clone());
    let url = raw.otlp_endpoint.as_ref().and_then(|e| {
        let text = e.get_ref().0.trim_end_matches('/');
        let ok = text
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
            .filter(|u| u.query().is_none());
        match ok {
            Some(_) if text.ends_with("/v1/traces") => Some(text.to_owned()),
            Some(_) => Some(format!("{text}/v1/traces")),
            None => {
                rep.error(
                    span(e),
                    "tracing.otlp_endpoint",
                    format!("{:?} is not an http:// or https:// URL", e.get_ref().0),
                    Some("an OTLP/HTTP collector, e.g. \"http://127.0.0.1:4318\"".to_owned()),
                );
                None
            }
        }
    });
    super::TracingConfig {
        otlp_traces_url: url,
        service_name,
    }
}

/// An origin, `scheme://host[:port]` (http or https, no user, path, query or fragment),
/// returned lower-cased without a trailing slash.
fn parse_origin(rep: &mut Reporter, s: &Spanned<Text>, key: &str) -> Option<String> {
    let given = &s.get_ref().0;
    let text = given.strip_suffix('/').unwrap_or(given);
    let ok = text.split_once("://").is_some_and(|(scheme, rest)| {
        matches!(scheme, "http" | "https")
            && !rest.contains(['/', '?', '#', '@'])
            && rest.parse::<http::uri::Authority>().is_ok_and(|a| {
                // After the host: nothing, or `:` and a port that fits in 16 bits.
                let port = rest.get(a.host().len()..).unwrap_or("x");
                !a.host().is_empty()
                    && (port.is_empty()
                        || port.strip_prefix(':').is_some_and(|p| {
                            p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
                        }))
            })
    });
    if !ok {
        rep.error(
            span(s),
            key,
            format!("{given:?} is not an origin"),
            Some(
                "write scheme://host[:port] without a path, like \"https://app.example.com\""
                    .to_owned(),
            ),
        );
        return None;
    }
    Some(text.to_ascii_lowercase())
}

fn build_server(rep: &mut Reporter, base: &Path, raw: &raw::RawServer) -> ServerConfig {
    let mut trusted_proxies = Vec::new();
    for (i, cidr) in raw.trusted_proxies.iter().enumerate() {
        match cidr.get_ref().0.parse::<IpNet>() {
            Ok(net) => trusted_proxies.push(net),
            Err(e) => rep.error(span(cidr), format!("server.trusted_proxies[{i}]"), e, None),
        }
    }
    let mut trusted_origins = Vec::new();
    for (i, o) in raw.trusted_origins.iter().enumerate() {
        match crate::origin::normalize_origin(&o.get_ref().0) {
            Some(norm) => trusted_origins.push(norm),
            None => rep.error(
                span(o),
                format!("server.trusted_origins[{i}]"),
                format!("{:?} is not an origin", o.get_ref().0),
                Some("write scheme://host[:port], e.g. \"https://app.example.com\"".to_owned()),
            ),
        }
    }
    let max_header_bytes = positive(
        rep,
        &raw.max_header_bytes,
        "server.max_header_bytes",
        65536,
        1024,
    );
    ServerConfig {
        listen: parse_addr(rep, &raw.listen, "server.listen", "0.0.0.0:8443"),
        workers: raw.workers.unwrap_or(0),
        max_header_bytes,
        header_read_timeout: raw
            .header_read_timeout
            .map_or(Duration::from_secs(10), |d| d.0),
        shutdown_grace: raw.shutdown_grace.map_or(Duration::from_secs(30), |d| d.0),
        idle_timeout: raw.idle_timeout.map_or(Duration::from_secs(60), |d| d.0),
        body_read_timeout: raw
            .body_read_timeout
            .map_or(Duration::from_secs(30), |d| d.0),
        max_headers: positive(rep, &raw.max_headers, "server.max_headers", 100, 1),
        trusted_proxies,
        max_buffered: raw.max_buffered.map_or(64 << 20, |s| s.0),
        trusted_origins,
        tunnel_recheck: raw
            .tunnel_recheck
            .map_or(Duration::from_secs(30), |d| d.0)
            .max(Duration::from_secs(1)),
        max_connections: positive(
            rep,
            &raw.max_connections,
            "server.max_connections",
            crate::limits::default_max_connections(),
            1,
        ),
        max_body_bytes: positive(
            rep,
            &raw.max_body_bytes,
            "server.max_body_bytes",
            65536,
            1024,
        ),
        tls: raw.tls.as_ref().and_then(|t| build_tls(rep, base, t)),
    }
}

/// Reads the certificate and key once, here: the listener serves what was read.
fn build_tls(rep: &mut Reporter, base: &Path, raw: &Spanned<raw::RawTls>) -> Option<TlsConfig> {
    let cert = resolve(base, &raw.get_ref().cert.get_ref().0);
    let key = resolve(base, &raw.get_ref().key.get_ref().0);
    match crate::certs::load_certified_key(&cert, &key) {
        Ok(loaded) => Some(TlsConfig {
            cert,
            key,
            loaded: std::sync::Arc::new(loaded),
        }),
        Err(e) => {
            rep.error(span(raw), "server.tls", e.to_string(), None);
            None
        }
    }
}

/// A local path (`/...`, never `//host`, a scheme or a backslash): where browsers are sent.
pub(super) fn local_path(
    rep: &mut Reporter,
    v: &Option<Spanned<Text>>,
    key: &str,
    default: &str,
) -> String {
    let Some(s) = v else {
        return default.to_owned();
    };
    let text = &s.get_ref().0;
    let local = text.starts_with('/')
        && !text.starts_with("//")
        && !text.contains('\\')
        && !text.bytes().any(|b| b.is_ascii_control());
    if !local {
        rep.error(
            span(s),
            key,
            format!("{text:?} is not a local path"),
            Some("write a path on this gateway, like \"/\" or \"/app/home\"".to_owned()),
        );
        return default.to_owned();
    }
    text.clone()
}

pub(super) fn one_of<T: Copy>(
    rep: &mut Reporter,
    v: &Option<Spanned<Text>>,
    key: &str,
    default: T,
    choices: &[(&str, T)],
) -> T {
    let Some(v) = v else { return default };
    let text = v.get_ref().0.as_str();
    if let Some((_, t)) = choices.iter().find(|(name, _)| *name == text) {
        return *t;
    }
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    rep.error(
        span(v),
        key,
        format!("{text:?} is not allowed"),
        Some(format!("use one of: {}", names.join(", "))),
    );
    default
}

fn build_log(rep: &mut Reporter, base: &Path, raw: &raw::RawLog) -> LogConfig {
    let choices = [("json", LogFormat::Json), ("pretty", LogFormat::Pretty)];
    let audit = match raw.audit.as_ref().map(|a| a.get_ref().0.as_str()) {
        None | Some("log") => super::AuditSink::Log,
        Some("stdout") => super::AuditSink::Stdout,
        Some("off") => super::AuditSink::Off,
        Some("") => {
            rep.error(
                raw.audit.as_ref().and_then(span),
                "log.audit",
                "is empty",
                Some("use \"log\", \"stdout\", \"off\" or a file path".to_owned()),
            );
            super::AuditSink::Log
        }
        Some(path) => super::AuditSink::File(resolve(base, path)),
    };
    LogConfig {
        format: one_of(rep, &raw.format, "log.format", LogFormat::Json, &choices),
        audit,
        repeat_every: raw
            .repeat_every
            .map_or(crate::outage::DEFAULT_EVERY, |d| d.0),
    }
}

fn build_tokens(rep: &mut Reporter, base: &Path, raw: &raw::RawTokens) -> Option<TokensConfig> {
    let algs = [
        ("HS256", Some(Algorithm::HS256)),
        ("RS256", Some(Algorithm::RS256)),
        ("ES256", Some(Algorithm::ES256)),
        ("EdDSA", Some(Algorithm::EdDSA)),
    ];
    let algorithm = one_of(rep, &raw.algorithm, "tokens.algorithm", None, &algs)
        .or(raw.algorithm.is_none().then_some(Algorithm::EdDSA))?;
    let key = build_key_source(rep, base, raw, algorithm)?;
    let dur = |d: &Option<Spanned<Dur>>, default: u64| {
        d.as_ref()
            .map_or(Duration::from_secs(default), |s| s.get_ref().0)
    };
    let access_ttl = dur(&raw.access_ttl, 900);
    let refresh_ttl = dur(&raw.refresh_ttl, 7 * 86400);
    if access_ttl.as_secs() == 0 {
        rep.error(
            raw.access_ttl.as_ref().and_then(span),
            "tokens.access_ttl",
            "must be at least 1s",
            None,
        );
    }
    if refresh_ttl < access_ttl {
        rep.error(
            raw.refresh_ttl.as_ref().and_then(span),
            "tokens.refresh_ttl",
            "must not be shorter than tokens.access_ttl",
            None,
        );
    }
    Some(TokensConfig {
        issuer: raw
            .issuer
            .as_ref()
            .map_or("authgate", |t| t.0.as_str())
            .to_owned(),
        audience: raw
            .audience
            .as_ref()
            .map_or("authgate", |t| t.0.as_str())
            .to_owned(),
        algorithm,
        key,
        access_ttl,
        refresh_ttl,
        leeway: raw.leeway.map_or(Duration::from_secs(30), |d| d.0),
        rotate_refresh: raw.rotate_refresh.unwrap_or(true),
        refresh_reuse_grace: raw.refresh_reuse_grace.map_or(Duration::ZERO, |d| d.0),
        cache_capacity: positive(
            rep,
            &raw.cache_capacity,
            "tokens.cache_capacity",
            100_000,
            1,
        ),
        previous: previous_keys(rep, base, raw, algorithm),
        secret_files: raw
            .secret_file
            .iter()
            .chain(raw.previous_secret_files.iter())
            .map(|f| resolve(base, &f.get_ref().0))
            .collect(),
    })
}

fn build_key_source(
    rep: &mut Reporter,
    base: &Path,
    raw: &raw::RawTokens,
    algorithm: Algorithm,
) -> Option<KeySource> {
    if algorithm != Algorithm::HS256 {
        let Some(file) = &raw.signing_key_file else {
            rep.error(
                raw.algorithm.as_ref().and_then(span),
                "tokens.signing_key_file",
                format!("{algorithm:?} needs a private key file"),
                Some("create one with `authgate keygen --alg EdDSA --out keys/signing.pem` and set signing_key_file".to_owned()),
            );
            return None;
        };
        return Some(KeySource::Pem {
            path: resolve(base, &file.get_ref().0),
            generate_if_missing: raw.generate_missing_key.unwrap_or(false),
        });
    }
    let secret = read_secret(rep, base, raw)?;
    if secret.len() < 32 {
        let at = raw
            .secret_env
            .as_ref()
            .or(raw.secret_file.as_ref())
            .and_then(span);
        rep.error(
            at,
            "tokens",
            format!(
                "the HS256 secret is {} bytes; at least 32 are required",
                secret.len()
            ),
            Some("generate one with `authgate keygen --alg HS256`".to_owned()),
        );
        return None;
    }
    Some(KeySource::Secret(secret))
}

/// Verify-only keys: PEM files for RS256/ES256/EdDSA, secret files for HS256.
fn previous_keys(
    rep: &mut Reporter,
    base: &Path,
    raw: &raw::RawTokens,
    algorithm: Algorithm,
) -> Vec<KeySource> {
    let (wrong, right) = if algorithm == Algorithm::HS256 {
        (&raw.previous_key_files, "tokens.previous_secret_files")
    } else {
        (&raw.previous_secret_files, "tokens.previous_key_files")
    };
    if let Some(first) = wrong.first() {
        rep.error(
            span(first),
            "tokens",
            format!("{algorithm:?} keys of earlier rotations go in {right}"),
            None,
        );
    }
    if algorithm != Algorithm::HS256 {
        return raw
            .previous_key_files
            .iter()
            .map(|f| KeySource::Pem {
                path: resolve(base, &f.get_ref().0),
                generate_if_missing: false,
            })
            .collect();
    }
    let mut out = Vec::new();
    for (i, f) in raw.previous_secret_files.iter().enumerate() {
        match std::fs::read(resolve(base, &f.get_ref().0)) {
            Ok(v) if trim_ascii_end(v.clone()).len() >= 32 => {
                out.push(KeySource::Secret(trim_ascii_end(v)))
            }
            Ok(_) => rep.error(
                span(f),
                format!("tokens.previous_secret_files[{i}]"),
                "the secret is shorter than 32 bytes",
                None,
            ),
            Err(e) => rep.error(
                span(f),
                format!("tokens.previous_secret_files[{i}]"),
                format!("cannot read: {e}"),
                None,
            ),
        }
    }
    out
}

/// The HS256 secret from `secret_env` or `secret_file` (exactly one of them).
fn read_secret(rep: &mut Reporter, base: &Path, raw: &raw::RawTokens) -> Option<Vec<u8>> {
    let secret = match (&raw.secret_env, &raw.secret_file) {
        (Some(var), None) => match std::env::var(&var.get_ref().0) {
            Ok(v) => v.into_bytes(),
            Err(_) => {
                rep.error(
                    span(var),
                    "tokens.secret_env",
                    format!("environment variable {} is not set", var.get_ref().0),
                    Some("export it with `authgate keygen --alg HS256` output".to_owned()),
                );
                return None;
            }
        },
        (None, Some(file)) => match std::fs::read(resolve(base, &file.get_ref().0)) {
            Ok(v) => trim_ascii_end(v),
            Err(e) => {
                rep.error(
                    span(file),
                    "tokens.secret_file",
                    format!("cannot read: {e}"),
                    None,
                );
                return None;
            }
        },
        _ => {
            rep.error(
                raw.algorithm.as_ref().and_then(span),
                "tokens",
                "HS256 needs exactly one of secret_env or secret_file",
                Some("set secret_env = \"AUTHGATE_SECRET\"".to_owned()),
            );
            return None;
        }
    };
    Some(secret)
}

pub(super) fn trim_ascii_end(mut v: Vec<u8>) -> Vec<u8> {
    while v.last().is_some_and(|b| b.is_ascii_whitespace()) {
        v.pop();
    }
    v
}

fn build_users(rep: &mut Reporter, base: &Path, raw: &raw::RawUsers) -> Option<UsersConfig> {
    let backend = match raw.backend.as_ref().map(|b| b.get_ref().0.as_str()) {
        None | Some("file") => {
            let file = raw
                .file
                .as_ref()
                .map_or("users.toml", |f| f.get_ref().0.as_str());
            UsersBackend::File(resolve(base, file))
        }
        Some("redis") => UsersBackend::Redis,
        Some(other) => {
            rep.error(
                raw.backend.as_ref().and_then(span),
                "users.backend",
                format!("{other:?} is not a user store"),
                Some("use \"file\" or \"redis\"".to_owned()),
            );
            return None;
        }
    };
    let registration = raw.registration.as_ref().is_some_and(|r| *r.get_ref());
    if registration && backend != UsersBackend::Redis {
        rep.error(
            raw.registration.as_ref().and_then(span),
            "users.registration",
            "registration needs the redis user store",
            Some("set users.backend = \"redis\" or registration = false".to_owned()),
        );
    }
    Some(UsersConfig {
        backend,
        registration,
    })
}
