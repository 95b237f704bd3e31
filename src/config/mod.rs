//! Typed, validated configuration: the TOML file becomes these types once, at start-up, and
//! the request path never looks at text again. Every problem is reported with file, line,
//! column, key path and a fix; all problems of a file are reported together.

mod build;
mod build_identity;
mod build_login;
mod build_oidc;
mod build_revocation;
mod build_routes;
mod build_upstreams;
mod duration;
mod env;
pub mod error;
mod net;
pub mod raw;
pub mod size;

pub use build_identity::same_header;
pub use build_oidc::check_url as check_provider_url;
pub use duration::parse_duration;
pub use error::{ConfigError, ConfigErrors};
pub use net::IpNet;

use crate::route::RouteTable;
use error::{did_you_mean, Reporter};
use http::HeaderName;
use raw::RawConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// `[forward_auth] only = true`: judge for a proxy in front, proxy nothing.
    pub forward_auth_only: bool,
    /// `[forward_auth] public_origin`: `scheme://host[:port]` (lower case, no trailing
    /// slash) that every absolute URL the gateway builds starts with, instead of a host a
    /// client could choose.
    pub public_origin: Option<String>,
    /// `[tracing]`.
    pub tracing: TracingConfig,
}

/// `[tracing]`: request spans exported over OTLP (HTTP/protobuf), or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TracingConfig {
    /// The full URL spans are posted to (`.../v1/traces`); None: no export.
    pub otlp_traces_url: Option<String>,
    /// `service.name` of the exported resource.
    pub service_name: String,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub workers: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this (from accept on).
    pub idle_timeout: Duration,
    /// The longest gap between two reads of a request body the gateway reads (408 past it).
    pub body_read_timeout: Duration,
    /// More request headers than this are 431.
    pub max_headers: usize,
    pub shutdown_grace: Duration,
    pub trusted_proxies: Vec<IpNet>,
    /// An upgraded tunnel's session is re-checked this often (at once on a revocation this
    /// process wrote or heard).
    pub tunnel_recheck: Duration,
    /// Origins (normalized `scheme://host[:port]`) whose cookie requests pass the CSRF origin
    /// rule from another site.
    pub trusted_origins: Vec<String>,
    pub max_connections: usize,
    /// Memory all buffered bodies may hold at once (bytes); beyond it bodies stream.
    pub max_buffered: u64,
    /// Body limit for the gateway's own endpoints (login, refresh, ...); proxied bodies stream.
    pub max_body_bytes: usize,
    pub tls: Option<TlsConfig>,
}

#[derive(Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The chain and key as read (and checked to belong together) when the config loaded.
    pub loaded: std::sync::Arc<rustls::sign::CertifiedKey>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// Where the audit trail (target `audit`: one JSON line per security event) goes.
    pub audit: AuditSink,
    /// `log.repeat_every`: a repeated warning (store or upstream down) is logged once, then
    /// with a count at most this often (see `outage`).
    pub repeat_every: Duration,
}

/// `log.audit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// With the other logs (stderr, in `log.format`), target `audit` (the default).
    Log,
    /// JSON lines on stdout.
    Stdout,
    /// JSON lines appended to this file.
    File(PathBuf),
    Off,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// `/readyz` fails while the revocation store is down (false: a shared-store blip does not
    /// take every replica out of its Service at once).
    pub ready_requires_store: bool,
    /// `admin.token_file`: the bearer token `/admin/sessions*` and `/admin/unlock` need (read
    /// at each request, so a rotated file applies at once). None: those endpoints answer 403.
    pub token_file: Option<PathBuf>,
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
    /// Verified tokens remembered so their signatures are checked once.
    pub cache_capacity: usize,
    /// Verify-only keys of earlier rotations (`previous_key_files` / `previous_secret_files`).
    pub previous: Vec<KeySource>,
    /// The HS256 secret files read (`secret_file`, `previous_secret_files`): watched for
    /// live reload like the PEM key files.
    pub secret_files: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationBackend {
    Memory,
    /// A durable embedded database at this path (one instance).
    File(PathBuf),
    Redis(RedisSettings),
}

/// Where the shared store is and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub topology: RedisTopology,
    /// `tls_ca_file` (PEM), else the system roots, for `rediss://`.
    pub tls_ca: Option<Vec<u8>>,
    /// `tls_cert_file` and `tls_key_file` (PEM): a client certificate for mutual TLS.
    pub tls_client: Option<(Vec<u8>, Vec<u8>)>,
    /// `redis_password_file` (its trailing newline dropped): overrides a URL's password.
    pub password: Option<String>,
}

impl RedisSettings {
    /// One primary at `url`, no TLS material, no password file.
    pub fn single(url: &str) -> RedisSettings {
        RedisSettings {
            topology: RedisTopology::Single {
                url: url.to_owned(),
            },
            tls_ca: None,
            tls_client: None,
            password: None,
        }
    }
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("topology", &self.topology)
            .field("tls_ca", &self.tls_ca.is_some())
            .field("tls_client", &self.tls_client.is_some())
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// `redis_url`: one primary (`redis://`, `rediss://` or `unix://`).
    Single { url: String },
    /// `sentinel`: the primary named `master_name`, found (and followed over failovers)
    /// through these sentinels.
    Sentinel {
        master_name: String,
        nodes: Vec<String>,
    },
    /// `cluster_nodes`: a Redis Cluster, reached through any of these nodes.
    Cluster { nodes: Vec<String> },
}

impl RedisTopology {
    /// For logs: the addresses without passwords.
    pub fn describe(&self) -> String {
        match self {
            RedisTopology::Single { url } => redact_url(url),
            RedisTopology::Sentinel { master_name, nodes } => format!(
                "sentinel {master_name} via {}",
                nodes
                    .iter()
                    .map(|n| redact_url(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            RedisTopology::Cluster { nodes } => format!(
                "cluster via {}",
                nodes
                    .iter()
                    .map(|n| redact_url(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// A Redis URL with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
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
    /// Redis only: check revocations against a local copy kept in sync by pub/sub.
    pub mirror: bool,
    /// How long the mirror may go without hearing from Redis before checks fail closed.
    pub mirror_staleness: Duration,
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
    /// A stored hash needing more argon2 memory than this (bytes) is refused at load.
    pub max_hash_memory: u64,
    /// A hashing thread idle this long gives its argon2 memory back.
    pub hash_memory_idle: Duration,
    /// What the login page says it signs in to.
    pub title: String,
    /// Where a form login without `next` (or a signed-in visit to the login page) goes.
    pub default_next: String,
    /// Where a form logout goes.
    pub after_logout: String,
    /// The password form and `POST /auth/login` (false: single sign-on only).
    pub password: bool,
    /// `[[login.oidc]]`: identity providers, each a button on the login page.
    pub oidc: Vec<OidcProviderConfig>,
    /// `login.second_factor`: who must give a second factor after the password.
    pub second_factor: SecondFactor,
    /// `login.factor_key_file`: the secret second-factor records are encrypted under (None:
    /// `factor.key` beside the users file; a Redis user store needs it set).
    pub factor_key_file: Option<PathBuf>,
    /// `login.webauthn`: passkeys (None: off).
    pub webauthn: Option<WebauthnConfig>,
    /// `login.passwordless`: "Sign in with a passkey" (discoverable credentials) on the login
    /// page, with no password.
    pub passwordless: bool,
}

/// `login.webauthn`, checked (the relying party builds with it).
#[derive(Debug, Clone)]
pub struct WebauthnConfig {
    /// The domain passkeys are bound to (`example.com`).
    pub rp_id: String,
    /// The origins the pages are served from (`https://app.example.com`).
    pub origins: Vec<String>,
    /// What authenticators show.
    pub rp_name: String,
}

/// `login.second_factor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    /// Never asked (enrolled factors are ignored, the account page offers none).
    Off,
    /// Users who enrolled one must give it (the default).
    Optional,
    /// Every password user must: one without a factor enrols right after the password and
    /// gets no session before.
    Required,
}

/// `users` of a provider: who it may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OidcUsers {
    /// Anyone the provider signs in (a name held by a user of the user store is refused: the
    /// provider must not speak for the gateway's own accounts).
    Any,
    /// Only names in the user store (their roles from the store, plus the mapped ones).
    Known,
}

/// One `[[login.oidc]]` provider, checked.
#[derive(Debug, Clone)]
pub struct OidcProviderConfig {
    pub name: String,
    pub display_name: String,
    /// Exactly as configured: discovery is `issuer + /.well-known/openid-configuration`, and
    /// ID tokens' `iss` must equal it.
    pub issuer: String,
    pub client_id: String,
    /// None: a public client (PKCE only).
    pub client_secret: Option<String>,
    /// Always starts with "openid".
    pub scopes: Vec<String>,
    /// None: from the request's scheme and Host (or `forward_auth.public_origin`).
    pub redirect_url: Option<String>,
    pub username_claim: String,
    pub roles_claim: Option<String>,
    pub role_map: std::collections::BTreeMap<String, Vec<String>>,
    pub default_roles: Vec<String>,
    /// Lower-cased; non-empty: the email claim must be verified and in one of them.
    pub allowed_email_domains: Vec<String>,
    pub users: OidcUsers,
    /// TLS to the provider: the system's roots or `ca_file`.
    pub tls: std::sync::Arc<rustls::ClientConfig>,
    pub logout_at_provider: bool,
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub subject_header: HeaderName,
    pub roles_header: HeaderName,
    pub forward_token: bool,
    /// Also send `Authorization: Basic base64(user:password)` on authenticated requests, for
    /// apps that only know HTTP authentication; the password (often empty) is this.
    pub pass_basic_auth: Option<String>,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    /// Its hosts (`url`, or each of `urls`).
    pub targets: Vec<UpstreamTarget>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub balance: Balance,
    /// Connect failures in a row that take a host out of rotation...
    pub eject_after: u32,
    /// ...for this long.
    pub eject_for: Duration,
    /// For `https://` hosts: roots (system or `ca_file`), client certificate, ALPN http/1.1.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The client certificate in `tls`, when there is one.
    pub client_cert: Option<ClientCert>,
    /// The TLS server name to ask for and verify, instead of the URL's host.
    pub sni: Option<String>,
    /// A request body up to this size is read whole before an upstream connection is taken
    /// (0: streamed), so a slow client never holds an app server's worker.
    pub buffer_request_body: u64,
    /// Up to this much of an answer is read as fast as the upstream sends it (0: streamed),
    /// so its connection is free while a slow client reads.
    pub buffer_response: u64,
}

/// An upstream's client certificate (mTLS): its files, and when it expires.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The earliest `notAfter` of its chain (Unix seconds); None if it could not be read.
    pub not_after: Option<i64>,
}

/// One host of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    pub https: bool,
    /// `host:port` (the scheme's port when the URL has none).
    pub authority: http::uri::Authority,
}

/// How requests are spread over an upstream's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastRequests,
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
        let built = build::build(&mut rep, &base, raw);
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
