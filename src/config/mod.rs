//! Typed, validated configuration: the TOML file becomes these types once, at start-up, and
//! the request path never looks at text again. Every problem is reported with file, line,
//! column, key path and a fix; all problems of a file are reported together.

mod duration;
mod env;
pub mod error;
mod net;
pub mod raw;

pub use duration::parse_duration;
pub use error::{ConfigError, ConfigErrors};
pub use net::IpNet;

use crate::auth::keys::KeySet;
use crate::route::{AuthMode, OnUnauthenticated, Pattern, Route, RouteTable};
use error::{did_you_mean, Reporter};
use http::{HeaderName, Method};
use raw::{Dur, RawConfig, Text};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// The whole validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it came from; relative paths inside were resolved against its directory.
    pub source: PathBuf,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub tokens: TokensConfig,
    pub revocation: RevocationConfig,
    pub users: UsersConfig,
    pub login: LoginConfig,
    pub identity: IdentityConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: RouteTable,
    /// Loaded signing and verification keys.
    pub keys: Arc<KeySet>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub workers: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
    pub trusted_proxies: Vec<IpNet>,
    pub max_connections: usize,
    /// Body limit for the gateway's own endpoints (login, refresh, ...); proxied bodies stream.
    pub max_body_bytes: usize,
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HS256,
    RS256,
    ES256,
    EdDSA,
}

impl Algorithm {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "HS256" => Some(Self::HS256),
            "RS256" => Some(Self::RS256),
            "ES256" => Some(Self::ES256),
            "EdDSA" => Some(Self::EdDSA),
            _ => None,
        }
    }
}

/// Where the signing key comes from.
#[derive(Clone)]
pub enum KeySource {
    /// PKCS#8 PEM private key (RS256, ES256, EdDSA).
    Pem {
        path: PathBuf,
        generate_if_missing: bool,
    },
    /// HS256 shared secret, already read from its env var or file.
    Secret(Vec<u8>),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pem { path, .. } => write!(f, "Pem({})", path.display()),
            Self::Secret(_) => f.write_str("Secret(<redacted>)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TokensConfig {
    pub issuer: String,
    pub audience: String,
    pub algorithm: Algorithm,
    pub key: KeySource,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub leeway: Duration,
    pub rotate_refresh: bool,
    pub refresh_reuse_grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationBackend {
    Memory,
    Redis { url: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    Deny,
    Allow,
}

#[derive(Debug, Clone)]
pub struct RevocationConfig {
    pub backend: RevocationBackend,
    pub key_prefix: String,
    pub on_store_error: OnStoreError,
    /// Upper bound on one store round trip; past it the store counts as down.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsersBackend {
    File(PathBuf),
    Redis,
}

#[derive(Debug, Clone)]
pub struct UsersConfig {
    pub backend: UsersBackend,
    pub registration: bool,
}

#[derive(Debug, Clone)]
pub struct LoginConfig {
    pub max_failures_per_user: u64,
    pub max_failures_per_ip: u64,
    pub failure_window: Duration,
    /// Password hashes computed at once; 0 = one per core.
    pub max_concurrent_hashes: usize,
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub subject_header: HeaderName,
    pub roles_header: HeaderName,
    pub forward_token: bool,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    /// `host:port` of a plain-HTTP upstream.
    pub authority: http::uri::Authority,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                col: 0,
                key: String::new(),
                message: format!("cannot read the config file: {e}"),
                hint: Some("pass --config PATH or set AUTHGATE_CONFIG".to_owned()),
            }])
        })?;
        Self::from_str(path, &source)
    }

    /// Parses and validates config text; `path` names it in errors and anchors relative paths.
    pub fn from_str(path: &Path, source: &str) -> Result<Config, ConfigErrors> {
        let raw = parse_raw(path, source)?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut rep = Reporter::new(path, source);
        let built = build(&mut rep, &base, raw);
        rep.finish()?;
        let mut config = built.ok_or_else(|| ConfigErrors(Vec::new()))?;
        config.source = path.to_path_buf();
        Ok(config)
    }

    pub fn upstream_index(&self, name: &str) -> Option<usize> {
        self.upstreams.iter().position(|u| u.name == name)
    }
}

fn parse_raw(path: &Path, source: &str) -> Result<RawConfig, ConfigErrors> {
    let de = toml::Deserializer::parse(source).map_err(|e| {
        let rep = Reporter::new(path, source);
        let (line, col) = rep.line_col(e.span());
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line,
            col,
            key: String::new(),
            message: e.message().trim().to_owned(),
            hint: None,
        }])
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let rep = Reporter::new(path, source);
        let (line, col) = rep.line_col(inner.span());
        let message = inner.message().trim().to_owned();
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line,
            col,
            key: if key == "." { String::new() } else { key },
            hint: did_you_mean(&message),
            message,
        }])
    })
}

fn span<T>(s: &Spanned<T>) -> Option<std::ops::Range<usize>> {
    Some(s.span())
}

fn resolve(base: &Path, p: &str) -> PathBuf {
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

fn build(rep: &mut Reporter, base: &Path, raw: RawConfig) -> Option<Config> {
    let server = build_server(rep, base, &raw.server);
    let log = build_log(rep, &raw.log);
    let admin = AdminConfig {
        listen: parse_addr(rep, &raw.admin.listen, "admin.listen", "127.0.0.1:9901"),
    };
    let tokens = build_tokens(rep, base, &raw.tokens);
    let revocation = build_revocation(rep, &raw.revocation);
    let users = build_users(rep, base, &raw.users);
    let login = LoginConfig {
        max_failures_per_user: raw.login.max_failures_per_user.unwrap_or(5),
        max_failures_per_ip: raw.login.max_failures_per_ip.unwrap_or(50),
        failure_window: raw
            .login
            .failure_window
            .map_or(Duration::from_secs(900), |d| d.0),
        max_concurrent_hashes: raw.login.max_concurrent_hashes.unwrap_or(0),
    };
    let identity = build_identity(rep, &raw.identity);
    let upstreams = build_upstreams(rep, &raw.upstreams);
    let routes = build_routes(rep, &raw.routes, &upstreams);
    if !rep.errors.is_empty() {
        return None;
    }
    let tokens = tokens?;
    let keys = match KeySet::load(&tokens) {
        Ok(k) => Arc::new(k),
        Err(e) => {
            let at = raw
                .tokens
                .signing_key_file
                .as_ref()
                .or(raw.tokens.secret_file.as_ref())
                .or(raw.tokens.secret_env.as_ref())
                .and_then(span);
            rep.error(at, "tokens", e, None);
            return None;
        }
    };
    if let Some(tls) = &server.tls {
        if let Err(e) = crate::server::tls::load_certified_key(&tls.cert, &tls.key) {
            let at = raw.server.tls.as_ref().and_then(span);
            rep.error(at, "server.tls", e.to_string(), None);
        }
    }
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
        keys,
    })
}

fn build_server(rep: &mut Reporter, base: &Path, raw: &raw::RawServer) -> ServerConfig {
    let mut trusted_proxies = Vec::new();
    for (i, cidr) in raw.trusted_proxies.iter().enumerate() {
        match cidr.get_ref().0.parse::<IpNet>() {
            Ok(net) => trusted_proxies.push(net),
            Err(e) => rep.error(span(cidr), format!("server.trusted_proxies[{i}]"), e, None),
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
        trusted_proxies,
        max_connections: positive(
            rep,
            &raw.max_connections,
            "server.max_connections",
            10_000,
            1,
        ),
        max_body_bytes: positive(
            rep,
            &raw.max_body_bytes,
            "server.max_body_bytes",
            65536,
            1024,
        ),
        tls: raw.tls.as_ref().map(|t| TlsConfig {
            cert: resolve(base, &t.get_ref().cert.get_ref().0),
            key: resolve(base, &t.get_ref().key.get_ref().0),
        }),
    }
}

fn one_of<T: Copy>(
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

fn build_log(rep: &mut Reporter, raw: &raw::RawLog) -> LogConfig {
    let choices = [("json", LogFormat::Json), ("pretty", LogFormat::Pretty)];
    LogConfig {
        format: one_of(rep, &raw.format, "log.format", LogFormat::Json, &choices),
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

fn trim_ascii_end(mut v: Vec<u8>) -> Vec<u8> {
    while v.last().is_some_and(|b| b.is_ascii_whitespace()) {
        v.pop();
    }
    v
}

fn build_revocation(rep: &mut Reporter, raw: &raw::RawRevocation) -> RevocationConfig {
    let backend = match raw.backend.as_ref().map(|b| b.get_ref().0.as_str()) {
        None | Some("memory") => RevocationBackend::Memory,
        Some("redis") => RevocationBackend::Redis {
            url: raw
                .redis_url
                .as_ref()
                .map_or("redis://127.0.0.1:6379/0", |u| u.get_ref().0.as_str())
                .to_owned(),
        },
        Some(other) => {
            rep.error(
                raw.backend.as_ref().and_then(span),
                "revocation.backend",
                format!("{other:?} is not a revocation backend"),
                Some("use \"memory\" or \"redis\"".to_owned()),
            );
            RevocationBackend::Memory
        }
    };
    if let (RevocationBackend::Redis { url }, Some(at)) = (&backend, &raw.redis_url) {
        if !(url.starts_with("redis://") || url.starts_with("unix://")) {
            rep.error(
                span(at),
                "revocation.redis_url",
                "must start with redis:// or unix://",
                None,
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
    }
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

fn header_name(
    rep: &mut Reporter,
    v: &Option<Spanned<Text>>,
    key: &str,
    default: &str,
) -> HeaderName {
    let text = v.as_ref().map_or(default, |s| s.get_ref().0.as_str());
    HeaderName::from_bytes(text.as_bytes()).unwrap_or_else(|_| {
        rep.error(
            v.as_ref().and_then(span),
            key,
            format!("{text:?} is not a valid header name"),
            None,
        );
        HeaderName::from_static("x-invalid")
    })
}

fn build_identity(rep: &mut Reporter, raw: &raw::RawIdentity) -> IdentityConfig {
    IdentityConfig {
        subject_header: header_name(
            rep,
            &raw.subject_header,
            "identity.subject_header",
            "X-Auth-User",
        ),
        roles_header: header_name(
            rep,
            &raw.roles_header,
            "identity.roles_header",
            "X-Auth-Roles",
        ),
        forward_token: raw.forward_token.unwrap_or(false),
    }
}

fn build_upstreams(rep: &mut Reporter, raw: &[Spanned<raw::RawUpstream>]) -> Vec<UpstreamConfig> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, up) in raw.iter().enumerate() {
        let up = up.get_ref();
        let name = up.name.get_ref().0.clone();
        if !seen.insert(name.clone()) {
            rep.error(
                span(&up.name),
                format!("upstreams[{i}].name"),
                format!("upstream {name:?} is defined twice"),
                Some("give each upstream a unique name".to_owned()),
            );
        }
        let url = up.url.get_ref().0.as_str();
        let authority = match parse_upstream_url(url) {
            Ok(a) => a,
            Err(e) => {
                rep.error(
                    span(&up.url),
                    format!("upstreams[{i}].url"),
                    e,
                    Some("write e.g. \"http://127.0.0.1:8080\"".to_owned()),
                );
                continue;
            }
        };
        out.push(UpstreamConfig {
            name,
            authority,
            connect_timeout: up.connect_timeout.map_or(Duration::from_secs(5), |d| d.0),
            request_timeout: up.request_timeout.map_or(Duration::from_secs(60), |d| d.0),
        });
    }
    out
}

fn parse_upstream_url(url: &str) -> Result<http::uri::Authority, String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url:?}: only http:// upstreams are supported (the gateway terminates TLS; the upstream is local)"));
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(format!("{url:?}: an upstream URL carries no path or query"));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{url:?} has no host"))?;
    if authority.port_u16().is_none() {
        return format!("{}:80", authority.host())
            .parse()
            .map_err(|_| format!("{url:?} has a bad host"));
    }
    Ok(authority)
}

fn build_routes(
    rep: &mut Reporter,
    raw: &[Spanned<raw::RawRoute>],
    upstreams: &[UpstreamConfig],
) -> Option<RouteTable> {
    let mut routes = Vec::new();
    for (i, spanned) in raw.iter().enumerate() {
        let r = spanned.get_ref();
        let (line, _) = rep.line_col(span(spanned));
        let key = |k: &str| format!("routes[{i}].{k}");
        let pattern = match Pattern::parse(&r.path.get_ref().0) {
            Ok(p) => p,
            Err(e) => {
                rep.error(
                    span(&r.path),
                    key("path"),
                    e,
                    Some("patterns look like \"/a/b\", \"/a/**\" or \"/a/*/c\"".to_owned()),
                );
                continue;
            }
        };
        let up_name = &r.upstream.get_ref().0;
        let Some(upstream) = upstreams.iter().position(|u| &u.name == up_name) else {
            let defined: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            rep.error(
                span(&r.upstream),
                key("upstream"),
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
            continue;
        };
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
        let methods = match &r.methods {
            None => None,
            Some(ms) => {
                let mut parsed = Vec::new();
                for m in ms.get_ref() {
                    match Method::from_bytes(m.0.to_ascii_uppercase().as_bytes()) {
                        Ok(m) => parsed.push(m),
                        Err(_) => rep.error(
                            span(ms),
                            key("methods"),
                            format!("{:?} is not an HTTP method", m.0),
                            None,
                        ),
                    }
                }
                if parsed.is_empty() {
                    rep.error(
                        span(ms),
                        key("methods"),
                        "an empty list matches nothing",
                        Some("remove `methods` to match every method".to_owned()),
                    );
                }
                Some(parsed)
            }
        };
        if auth == AuthMode::Public && !r.roles.is_empty() {
            rep.error(
                span(&r.path),
                key("roles"),
                "roles on a public route are never checked",
                Some("set auth = \"required\" or remove roles".to_owned()),
            );
        }
        routes.push(Route {
            index: i,
            line,
            name: r
                .name
                .as_ref()
                .map_or_else(|| r.path.get_ref().0.clone(), |n| n.0.clone()),
            pattern,
            host: r.host.as_ref().map(|h| h.0.to_ascii_lowercase()),
            methods,
            upstream,
            auth,
            roles: r.roles.iter().map(|t| t.0.clone()).collect(),
            on_unauthenticated,
            websocket: r.websocket.unwrap_or(true),
        });
    }
    for (later, earlier) in RouteTable::shadowed(&routes) {
        let (l, e) = (&routes[later], &routes[earlier]);
        rep.error(
            span(&raw[l.index]),
            format!("routes[{}]", l.index),
            format!("this route can never match: routes[{}] (line {}, {:?}) comes first and matches everything it does", e.index, e.line, e.pattern.as_str()),
            Some("move the more specific route above the catch-all".to_owned()),
        );
    }
    Some(RouteTable::new(routes))
}
