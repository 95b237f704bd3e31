//! Authentication: who the caller is (access token from header or cookie, checked against
//! signature, claims, type and revocation) and the `/auth/*` endpoints that issue tokens.

pub mod cookies;
pub mod endpoints;
pub mod keys;
pub mod passwords;
pub mod tokens;

use crate::config::{Config, OnStoreError};
use crate::error::GatewayError;
use crate::store::users::UserStore;
use crate::store::{RevocationState, Store, StoreError};
use http::header::AUTHORIZATION;
use http::HeaderMap;
use passwords::Hasher;
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use tokens::{Claims, TokenError, TokenType, Tokens};

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Identity {
    pub claims: Arc<Claims>,
    /// The token came from the `authgate_access` cookie (so unsafe methods need CSRF).
    pub via_cookie: bool,
}

impl Identity {
    pub fn roles(&self) -> &[String] {
        self.claims.roles.as_deref().unwrap_or(&[])
    }
}

/// Everything the request path needs to answer "who is this?" and to run `/auth/*`.
pub struct Auth {
    pub tokens: Tokens,
    pub store: Store,
    pub users: UserStore,
    pub hasher: Hasher,
    pub on_store_error: OnStoreError,
    pub rotate_refresh: bool,
    pub reuse_grace_ms: u64,
    pub registration: bool,
    pub max_failures_per_user: u64,
    pub max_failures_per_ip: u64,
    pub failure_window: u64,
    pub max_body_bytes: usize,
    pub jwks: Option<String>,
    /// `authgate_store_errors_total`: every store call that failed, on any path.
    pub store_errors: Counter,
}

/// The bearer token of a request: the Authorization header first, then the access cookie.
pub fn request_token(headers: &HeaderMap) -> Option<(&str, bool)> {
    if let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, rest) = v.trim().split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            let token = rest.trim();
            return (!token.is_empty()).then_some((token, false));
        }
        return None;
    }
    cookies::get(headers, cookies::ACCESS).map(|t| (t, true))
}

impl Auth {
    pub fn new(config: &Config, store: Store, store_errors: Counter) -> Result<Auth, String> {
        let users = UserStore::open(&config.users, &store)?;
        Ok(Auth {
            tokens: Tokens::new(&config.tokens, config.keys.clone()),
            users,
            hasher: Hasher::new(config.login.max_concurrent_hashes)?,
            on_store_error: config.revocation.on_store_error,
            rotate_refresh: config.tokens.rotate_refresh,
            reuse_grace_ms: u64::try_from(config.tokens.refresh_reuse_grace.as_millis())
                .unwrap_or(u64::MAX),
            registration: config.users.registration,
            max_failures_per_user: config.login.max_failures_per_user,
            max_failures_per_ip: config.login.max_failures_per_ip,
            failure_window: config.login.failure_window.as_secs().max(1),
            max_body_bytes: config.server.max_body_bytes,
            jwks: config.keys.jwks.clone(),
            store,
            store_errors,
        })
    }

    /// Seconds a revocation entry must live: until every token it covers has expired.
    pub fn revocation_ttl(&self) -> u64 {
        self.tokens.refresh_ttl + self.tokens.leeway + 1
    }

    /// Authenticates a request to a protected route.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, GatewayError> {
        let (token, via_cookie) = request_token(headers).ok_or(GatewayError::MissingToken)?;
        let claims = self.verify(token, TokenType::Access).await?;
        Ok(Identity { claims, via_cookie })
    }

    /// Signature, claims, type, then one revocation round trip.
    pub async fn verify(&self, token: &str, want: TokenType) -> Result<Arc<Claims>, GatewayError> {
        let claims = self
            .tokens
            .verify(token, want)
            .map_err(|e| GatewayError::InvalidToken(e.as_str()))?;
        let state = self.revocation(&claims.sid, &claims.sub).await?;
        if state.revokes(claims.iat) {
            return Err(GatewayError::InvalidToken(TokenError::Revoked.as_str()));
        }
        Ok(claims)
    }

    async fn revocation(&self, sid: &str, sub: &str) -> Result<RevocationState, GatewayError> {
        match self.store.check(sid, sub).await {
            Ok(state) => Ok(state),
            Err(e) => self.store_failed(e).map(|()| RevocationState::default()),
        }
    }

    /// A store call that must succeed failed: counted, logged, 503.
    pub fn store_down(&self, e: StoreError) -> GatewayError {
        self.store_errors.inc();
        tracing::warn!(error = %e, "store unavailable");
        GatewayError::Unavailable("the revocation store is unavailable")
    }

    /// Applies `on_store_error` to a failed store call.
    pub fn store_failed(&self, e: StoreError) -> Result<(), GatewayError> {
        self.store_errors.inc();
        match self.on_store_error {
            OnStoreError::Deny => {
                tracing::warn!(error = %e, "revocation store unavailable; denying (on_store_error = deny)");
                Err(GatewayError::Unavailable(
                    "the revocation store is unavailable",
                ))
            }
            OnStoreError::Allow => {
                tracing::error!(error = %e, "revocation store unavailable; ALLOWING without revocation check (on_store_error = allow)");
                Ok(())
            }
        }
    }
}
