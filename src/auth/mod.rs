//! Authentication: who the caller is (access token from header or cookie, checked against
//! signature, claims, type and revocation), the session lifecycle (`sessions`), and the
//! `/auth/*` endpoints that speak HTTP around it.

mod account;
pub mod api_keys;
pub mod cookies;
pub mod csrf;
pub mod endpoints;
pub mod factors;
pub mod form;
pub mod keys;
mod login;
mod logout;
pub mod oidc;
pub mod pages;
pub(crate) mod passkey_pages;
pub mod passwords;
mod second_step;
pub mod sessions;
mod sessions_page;
pub mod tokens;

use crate::config::Config;
use crate::store::users::{UserStore, UserStoreError};
use crate::store::Store;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use keys::KeySet;
use passwords::{HashError, Hasher};
use sessions::{SessionPolicy, Sessions};
use std::sync::Arc;
use tokens::{Claims, Tokens};

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Identity {
    pub claims: Claims,
    /// The token came from the `authgate_access` cookie (so unsafe methods need CSRF).
    pub via_cookie: bool,
    /// An API key's name (`X-Auth-Key` for the upstream).
    pub key: Option<Arc<str>>,
}

impl Identity {
    pub fn roles(&self) -> &[String] {
        self.claims.roles().unwrap_or(&[])
    }

    /// The session was signed in with more than a password: its `amr` names a second factor
    /// (`otp`, `hwk`, `mfa`... as the gateway or an identity provider put it). An API key
    /// never has.
    pub fn passed_second_factor(&self) -> bool {
        self.key.is_none()
            && self.claims.amr().is_some_and(|amr| {
                amr.iter().any(|m| {
                    matches!(
                        m.as_str(),
                        "otp"
                            | "hwk"
                            | "swk"
                            | "mfa"
                            | "fido"
                            | "sms"
                            | "tel"
                            | "face"
                            | "fpt"
                            | "iris"
                            | "retina"
                            | "vbm"
                            | "sc"
                    )
                })
            })
    }
}

/// Why the authentication service could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Users(#[from] UserStoreError),
    #[error(transparent)]
    Hasher(#[from] HashError),
}

/// The sessions service plus the settings of the gateway's own endpoints.
pub struct Auth {
    sessions: Sessions,
    /// Verified API keys and Basic pairs (`api_keys`).
    machines: api_keys::MachineCache,
    /// Keys the Basic cache's entries (random per process: the cache is per process).
    basic_key: aws_lc_rs::hmac::Key,
    /// `[[login.oidc]]` providers.
    oidc: oidc::Oidc,
    /// `login.password`: the password form and `POST /auth/login`.
    password: bool,
    registration: bool,
    body_limits: form::BodyLimits,
    browser: Browser,
    /// Lockout audit lines under a spray: the first per user and address, then a count.
    lockouts: crate::audit::Repeats,
}

/// What the sign-in and sign-out pages need (`[login]`).
#[derive(Debug, Clone)]
pub struct Browser {
    pub title: String,
    pub default_next: String,
    pub after_logout: String,
    /// `server.trusted_origins`: other origins whose cookie requests pass the origin rule.
    pub trusted_origins: Vec<String>,
    /// App cookies a logout expires (name, path): each route's `logout_clear_cookies` at the
    /// path it mounts, and at `/`.
    pub clear_on_logout: Vec<(String, String)>,
    /// `forward_auth.public_origin`: absolute URLs the gateway builds use it.
    pub public_origin: Option<String>,
}

/// The bearer token of a request: the Authorization header first, then the access cookie
/// (`__Host-` named when `secure`).
pub fn request_token(headers: &HeaderMap, secure: bool) -> Option<(&str, bool)> {
    if let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, rest) = v.trim().split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            let token = rest.trim();
            return (!token.is_empty()).then_some((token, false));
        }
        return None;
    }
    cookies::get(headers, cookies::names(secure).access).map(|t| (t, true))
}

/// Every (cookie, path) the routes' `logout_clear_cookies` name, without repeats.
fn clear_on_logout(config: &Config) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for route in config.routes.routes() {
        let mount = route.public_mount();
        for name in &route.logout_clear_cookies {
            for path in [mount.as_str(), "/"] {
                let pair = (name.clone(), path.to_owned());
                if !out.contains(&pair) {
                    out.push(pair);
                }
            }
        }
    }
    out
}

impl Auth {
    pub fn new(
        config: &Config,
        keys: Arc<KeySet>,
        store: Store,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Auth, AuthError> {
        // The pool's memory budget counts the costliest stored hash (read again below; the
        // users file is small).
        let largest = UserStore::open(&config.users, &store, config.login.max_hash_memory)?
            .costliest()
            .memory_bytes();
        let hasher = Arc::new(Hasher::with_release(
            config.login.max_concurrent_hashes,
            largest,
            config.login.hash_memory_idle,
        )?);
        hasher.report_to(&metrics.hash_pool);
        Self::with_hasher(config, keys, store, metrics, hasher)
    }

    /// Like `new`, on an existing hashing pool (a reload keeps the process's).
    pub fn with_hasher(
        config: &Config,
        keys: Arc<KeySet>,
        store: Store,
        metrics: Arc<crate::metrics::Metrics>,
        hasher: Arc<Hasher>,
    ) -> Result<Auth, AuthError> {
        let users = UserStore::open(&config.users, &store, config.login.max_hash_memory)?;
        let oidc = oidc::Oidc::new(&config.login.oidc, keys.secret_material());
        let factors = factors::Factors::from_config(config, keys.secret_material());
        let sessions = Sessions::new(
            Tokens::new(&config.tokens, keys).count_cache_lookups(metrics.token_cache.clone()),
            store,
            users,
            hasher,
            SessionPolicy::new(config),
            metrics,
            factors,
        )?;
        let seed =
            crate::ids::random_bytes::<32>().map_err(|_| AuthError::Hasher(HashError::Failed))?;
        Ok(Auth {
            sessions,
            machines: api_keys::MachineCache::default(),
            basic_key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &seed),
            lockouts: crate::audit::Repeats::new(config.log.repeat_every),
            oidc,
            password: config.login.password,
            registration: config.users.registration,
            body_limits: form::BodyLimits {
                max_bytes: config.server.max_body_bytes,
                read_gap: config.server.body_read_timeout,
            },
            browser: Browser {
                title: config.login.title.clone(),
                default_next: config.login.default_next.clone(),
                after_logout: config.login.after_logout.clone(),
                trusted_origins: config.server.trusted_origins.clone(),
                clear_on_logout: clear_on_logout(config),
                public_origin: config.public_origin.clone(),
            },
        })
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub fn browser(&self) -> &Browser {
        &self.browser
    }

    /// The identity providers (`[[login.oidc]]`).
    pub fn oidc(&self) -> &oidc::Oidc {
        &self.oidc
    }

    /// Whether the password form and `POST /auth/login` are on (`login.password`).
    pub fn password_login(&self) -> bool {
        self.password
    }

    /// Whether `POST /auth/register` is open.
    pub fn registration(&self) -> bool {
        self.registration
    }

    /// The lockout audit lines' limiter.
    pub fn lockouts(&self) -> &crate::audit::Repeats {
        &self.lockouts
    }

    /// Body limits of the gateway's own endpoints and of CSRF form checks.
    pub fn body_limits(&self) -> form::BodyLimits {
        self.body_limits
    }

    /// Authenticates a request to a protected route (the sessions' own future, not a wrapper
    /// around it: this is on every protected request).
    pub fn authenticate<'a>(
        &'a self,
        headers: &'a HeaderMap,
        secure: bool,
    ) -> impl std::future::Future<Output = Result<Identity, crate::error::GatewayError>> + Send + 'a
    {
        self.sessions.authenticate(headers, secure)
    }

    /// `authenticate`, remembering the token on the request's connection (`memo`).
    pub fn authenticate_on<'a>(
        &'a self,
        headers: &'a HeaderMap,
        secure: bool,
        memo: &'a dyn tokens::TokenMemo,
    ) -> impl std::future::Future<Output = Result<Identity, crate::error::GatewayError>> + Send + 'a
    {
        self.sessions.authenticate_on(headers, secure, memo)
    }
}
