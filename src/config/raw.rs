//! The serde mirror of the TOML file: every table with `deny_unknown_fields`, every string
//! passed through `${ENV}` expansion, durations parsed where they are read so that toml puts
//! the offending line and column on the error.

use super::duration::parse_duration;
use super::env::expand_env;
use serde::{de, Deserialize, Deserializer};
use std::time::Duration;
use toml::Spanned;

/// A config string after `${ENV}` expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        expand_env(&raw).map(Text).map_err(de::Error::custom)
    }
}

/// A duration written as a string such as `"30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(raw) = Text::deserialize(d)?;
        parse_duration(&raw).map(Dur).map_err(de::Error::custom)
    }
}

/// A byte size written as a string such as `"64MiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(raw) = Text::deserialize(d)?;
        super::size::parse_size(&raw)
            .map(Size)
            .map_err(de::Error::custom)
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub tokens: RawTokens,
    #[serde(default)]
    pub revocation: RawRevocation,
    #[serde(default)]
    pub users: RawUsers,
    #[serde(default)]
    pub login: RawLogin,
    #[serde(default)]
    pub identity: RawIdentity,
    #[serde(default)]
    pub upstreams: Vec<Spanned<RawUpstream>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub forward_auth: RawForwardAuth,
    #[serde(default)]
    pub tracing: RawTracing,
}

/// `[tracing]`: span export.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// An OTLP/HTTP collector (`http://host:4318`); spans go to `<it>/v1/traces`.
    pub otlp_endpoint: Option<Spanned<Text>>,
    pub service_name: Option<Spanned<Text>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawForwardAuth {
    /// Judge only: nothing is proxied, `upstream` is optional on routes.
    pub only: Option<bool>,
    /// `scheme://host[:port]` of every absolute URL the gateway builds.
    pub public_origin: Option<Spanned<Text>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<Spanned<Text>>,
    pub workers: Option<usize>,
    pub max_header_bytes: Option<Spanned<usize>>,
    pub header_read_timeout: Option<Dur>,
    pub shutdown_grace: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    pub body_read_timeout: Option<Dur>,
    pub tunnel_recheck: Option<Dur>,
    pub max_headers: Option<Spanned<usize>>,
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<Text>>,
    #[serde(default)]
    pub trusted_origins: Vec<Spanned<Text>>,
    pub max_connections: Option<Spanned<usize>>,
    pub max_buffered: Option<Size>,
    pub max_body_bytes: Option<Spanned<usize>>,
    pub tls: Option<Spanned<RawTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Spanned<Text>,
    pub key: Spanned<Text>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<Spanned<Text>>,
    /// "log" (default), "stdout", "off", or a file path.
    pub audit: Option<Spanned<Text>>,
    /// How often a repeated warning (store down, upstream down) is logged again, with a count.
    pub repeat_every: Option<Dur>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<Spanned<Text>>,
    pub ready_requires_store: Option<bool>,
    /// A file holding the bearer token of the admin session endpoints.
    pub token_file: Option<Spanned<Text>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTokens {
    pub issuer: Option<Text>,
    pub audience: Option<Text>,
    pub algorithm: Option<Spanned<Text>>,
    pub signing_key_file: Option<Spanned<Text>>,
    pub secret_env: Option<Spanned<Text>>,
    pub secret_file: Option<Spanned<Text>>,
    /// Development only: create `signing_key_file` on first start when it is missing.
    pub generate_missing_key: Option<bool>,
    /// Verify-only keys of earlier rotations.
    #[serde(default)]
    pub previous_key_files: Vec<Spanned<Text>>,
    #[serde(default)]
    pub previous_secret_files: Vec<Spanned<Text>>,
    pub access_ttl: Option<Spanned<Dur>>,
    pub refresh_ttl: Option<Spanned<Dur>>,
    pub leeway: Option<Dur>,
    pub rotate_refresh: Option<bool>,
    pub refresh_reuse_grace: Option<Dur>,
    pub cache_capacity: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRevocation {
    pub backend: Option<Spanned<Text>>,
    pub path: Option<Spanned<Text>>,
    pub redis_url: Option<Spanned<Text>>,
    pub key_prefix: Option<Text>,
    pub on_store_error: Option<Spanned<Text>>,
    pub timeout: Option<Dur>,
    pub mirror: Option<Spanned<bool>>,
    pub mirror_staleness: Option<Dur>,
    pub tls_ca_file: Option<Spanned<Text>>,
    pub tls_cert_file: Option<Spanned<Text>>,
    pub tls_key_file: Option<Spanned<Text>>,
    pub redis_password_file: Option<Spanned<Text>>,
    pub sentinel: Option<Spanned<RawSentinel>>,
    pub cluster_nodes: Option<Spanned<Vec<Text>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    pub master_name: Text,
    pub nodes: Vec<Text>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawUsers {
    pub backend: Option<Spanned<Text>>,
    pub file: Option<Spanned<Text>>,
    pub registration: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLogin {
    pub max_failures_per_user: Option<u64>,
    pub max_failures_per_ip: Option<u64>,
    pub failure_window: Option<Dur>,
    pub max_concurrent_hashes: Option<usize>,
    pub max_hash_memory: Option<Size>,
    pub title: Option<Text>,
    pub default_next: Option<Spanned<Text>>,
    pub after_logout: Option<Spanned<Text>>,
    /// false: no password form (single sign-on only).
    pub password: Option<Spanned<bool>>,
    #[serde(default)]
    pub oidc: Vec<Spanned<RawOidc>>,
    pub second_factor: Option<Spanned<Text>>,
    pub factor_key_file: Option<Spanned<Text>>,
    pub webauthn: Option<Spanned<RawWebauthn>>,
    pub passwordless: Option<Spanned<bool>>,
    pub hash_memory_idle: Option<Dur>,
}

/// `login.webauthn`: the relying party passkeys are made for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebauthn {
    pub rp_id: Spanned<Text>,
    pub origins: Spanned<Vec<Text>>,
    pub rp_name: Option<Text>,
}

/// One `[[login.oidc]]` identity provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    pub name: Spanned<Text>,
    pub display_name: Option<Text>,
    pub issuer: Spanned<Text>,
    pub client_id: Spanned<Text>,
    pub client_secret: Option<Spanned<Text>>,
    pub client_secret_file: Option<Spanned<Text>>,
    pub scopes: Option<Spanned<Vec<Text>>>,
    pub redirect_url: Option<Spanned<Text>>,
    pub username_claim: Option<Spanned<Text>>,
    pub roles_claim: Option<Spanned<Text>>,
    pub role_map: Option<Spanned<std::collections::BTreeMap<String, Vec<Text>>>>,
    #[serde(default)]
    pub default_roles: Vec<Spanned<Text>>,
    #[serde(default)]
    pub allowed_email_domains: Vec<Spanned<Text>>,
    pub users: Option<Spanned<Text>>,
    pub ca_file: Option<Spanned<Text>>,
    pub logout_at_provider: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub subject_header: Option<Spanned<Text>>,
    pub roles_header: Option<Spanned<Text>>,
    pub forward_token: Option<bool>,
    pub pass_basic_auth: Option<bool>,
    pub basic_auth_password_file: Option<Spanned<Text>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: Spanned<Text>,
    pub url: Option<Spanned<Text>>,
    pub urls: Option<Spanned<Vec<Text>>>,
    pub connect_timeout: Option<Dur>,
    pub request_timeout: Option<Dur>,
    pub balance: Option<Spanned<Text>>,
    pub eject_after: Option<Spanned<u32>>,
    pub eject_for: Option<Dur>,
    pub ca_file: Option<Spanned<Text>>,
    pub client_cert: Option<Spanned<Text>>,
    pub client_key: Option<Spanned<Text>>,
    pub sni: Option<Spanned<Text>>,
    pub buffer_request_body: Option<Size>,
    pub buffer_response: Option<Size>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<Text>,
    pub path: Spanned<Text>,
    pub host: Option<Text>,
    pub methods: Option<Spanned<Vec<Text>>>,
    pub upstream: Option<Spanned<Text>>,
    pub auth: Option<Spanned<Text>>,
    #[serde(default)]
    pub roles: Vec<Text>,
    pub on_unauthenticated: Option<Spanned<Text>>,
    pub websocket: Option<bool>,
    pub strip_prefix: Option<Spanned<Text>>,
    pub host_header: Option<Spanned<Text>>,
    pub case_insensitive: Option<bool>,
    pub allow_fallthrough: Option<bool>,
    pub cache_control: Option<Spanned<Text>>,
    pub csrf: Option<Spanned<Text>>,
    pub upstream_prefix: Option<Spanned<Text>>,
    pub redirect_rewrite: Option<bool>,
    pub cookie_rewrite: Option<bool>,
    #[serde(default)]
    pub logout_clear_cookies: Vec<Spanned<Text>>,
    pub api_keys: Option<Spanned<bool>>,
    pub basic: Option<Spanned<bool>>,
    pub second_factor: Option<Spanned<bool>>,
}
