//! Machine clients on routes that allow them: API keys (`Authorization: Bearer agk_...` or
//! `X-API-Key`, on `api_keys = true` routes) and HTTP Basic (`user:password` or `user:agk_...`,
//! on `basic = true` routes). Never at the gateway's own `/auth/*` endpoints: those read only
//! the gateway's tokens.
//!
//! A key is looked up by its SHA-256 (cached when the user store is Redis), must not have
//! expired, and is checked against the revocation store on every request (its `sid`), so
//! `keys revoke` refuses it at once on every replica sharing the store. A Basic password costs
//! an argon2 verification with the login's throttle, timing (a dummy hash for unknown users)
//! and lockout; a verified (user, password) pair is then remembered for `BASIC_TTL`, keyed by
//! an HMAC of the pair (never the password), and used only while the user's stored hash is the
//! one it was verified against (a changed password stops it at the next reload).

use super::tokens::{Claims, TokenError};
use super::{Auth, Identity};
use crate::clock::now_secs;
use crate::error::GatewayError;
use crate::metrics::{LoginMethod, LoginOutcome};
use crate::route::{Pattern, Route};
use crate::store::api_keys::{digest, looks_like_key, ApiKey};
use crate::store::{Attempt, AttemptRequest};
use base64::Engine;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `X-API-Key: agk_...`.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// How long a verified Basic pair is remembered.
const BASIC_TTL: Duration = Duration::from_secs(60);
/// How long a key read from Redis is remembered (revocation is checked on every request).
const KEY_TTL: Duration = Duration::from_secs(60);
/// Entries each cache holds at most.
const CACHE_MAX: usize = 10_000;

/// What a request presents, on a route that accepts it.
#[derive(Debug, PartialEq, Eq)]
pub enum Machine<'a> {
    Key(&'a str),
    Basic { user: String, password: String },
}

/// The key or Basic credentials of a request, as `route` allows them; None: none (the
/// gateway's own tokens are read as usual).
pub fn presented<'a>(headers: &'a HeaderMap, route: &Route) -> Option<Machine<'a>> {
    if route.api_keys {
        if let Some(k) = headers.get(&X_API_KEY).and_then(|v| v.to_str().ok()) {
            return Some(Machine::Key(k.trim()));
        }
    }
    let auth = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = auth.split_once(' ')?;
    let rest = rest.trim();
    if route.api_keys && scheme.eq_ignore_ascii_case("bearer") && rest.starts_with("agk_") {
        return Some(Machine::Key(rest));
    }
    if route.basic && scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let (user, password) = decoded.split_once(':').unwrap_or(("", ""));
        return Some(Machine::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        });
    }
    None
}

/// Verified keys (Redis user store) and Basic pairs.
#[derive(Default)]
pub struct MachineCache {
    keys: Mutex<HashMap<String, (ApiKey, Instant)>>,
    /// HMAC(user:password) -> (user, roles, the hash it was verified against, when).
    basic: Mutex<HashMap<[u8; 32], BasicEntry>>,
    /// Pairs being verified now, each behind one gate.
    verifying: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Clone)]
struct BasicEntry {
    user: String,
    roles: Vec<String>,
    hash: String,
    at: Instant,
    verified_secs: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn bounded_insert<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>, k: K, v: V) {
    if map.len() >= CACHE_MAX {
        map.clear();
    }
    map.insert(k, v);
}

impl Auth {
    /// Authenticates a key or Basic pair for `route` at `judged` (the path as judged).
    pub async fn authenticate_machine(
        &self,
        m: Machine<'_>,
        judged: &str,
        client_ip: IpAddr,
    ) -> Result<Identity, GatewayError> {
        match m {
            Machine::Key(k) => self.authenticate_key(k, judged).await.inspect_err(|e| {
                crate::audit!("key_refused", ip = %client_ip, path = %judged, reason = %e);
            }),
            Machine::Basic { user, password } if looks_like_key(&password) => {
                let id = self.authenticate_key(&password, judged).await?;
                // The user part must name the key (its user or its name).
                let named = id.key.as_deref() == Some(user.as_str()) || id.claims.sub() == user;
                if named {
                    Ok(id)
                } else {
                    Err(GatewayError::InvalidCredentials)
                }
            }
            Machine::Basic { user, password } => {
                self.authenticate_basic(&user, &password, client_ip).await
            }
        }
    }

    async fn find_key(&self, sha256: &str) -> Result<Option<ApiKey>, GatewayError> {
        let users = self.sessions().users();
        if matches!(users, crate::store::users::UserStore::File { .. }) {
            return users.key(sha256).await.map_err(GatewayError::from);
        }
        if let Some((k, at)) = lock(&self.machines.keys).get(sha256) {
            if at.elapsed() < KEY_TTL {
                return Ok(Some(k.clone()));
            }
        }
        let found = users.key(sha256).await?;
        if let Some(k) = &found {
            bounded_insert(
                &mut lock(&self.machines.keys),
                sha256.to_owned(),
                (k.clone(), Instant::now()),
            );
        }
        Ok(found)
    }

    async fn authenticate_key(&self, key: &str, judged: &str) -> Result<Identity, GatewayError> {
        if !looks_like_key(key) {
            return Err(GatewayError::InvalidToken(TokenError::Invalid));
        }
        let k = self
            .find_key(&digest(key))
            .await?
            .ok_or(GatewayError::InvalidToken(TokenError::Invalid))?;
        let now = now_secs();
        if k.expires.is_some_and(|e| e <= now) {
            return Err(GatewayError::InvalidToken(TokenError::Expired));
        }
        if !k.routes.is_empty()
            && !k
                .routes
                .iter()
                .filter_map(|r| Pattern::parse(r).ok())
                .any(|p| p.matches(judged))
        {
            return Err(GatewayError::Forbidden(
                "this API key may not open this path",
            ));
        }
        let sid = k.sid();
        // Revocation on every request (`keys revoke` writes it); a user's cut-off does not
        // apply to keys (they have their own roles and lifetime).
        self.sessions()
            .check_revocation(&sid, k.subject(), now)
            .await?;
        let claims = Claims::machine(k.subject(), &sid, k.roles.clone(), k.expires);
        self.sessions().note_key_use(&k.name).await;
        Ok(Identity {
            claims,
            via_cookie: false,
            key: Some(Arc::from(k.name.as_str())),
        })
    }

    async fn authenticate_basic(
        &self,
        user: &str,
        password: &str,
        client_ip: IpAddr,
    ) -> Result<Identity, GatewayError> {
        if user.is_empty() || password.is_empty() || password.len() > 1024 || user.len() > 256 {
            return Err(GatewayError::InvalidCredentials);
        }
        let mac = aws_lc_rs::hmac::sign(&self.basic_key, format!("{user}\0{password}").as_bytes());
        let mut id = [0u8; 32];
        id.copy_from_slice(&mac.as_ref()[..32]);
        if let Some(hit) = self.basic_hit(&id).await? {
            return Ok(hit);
        }
        // One verification per pair at a time: when an entry expires under a client sending
        // many requests at once, the others wait for it rather than each starting argon2
        // (which would fill the hashing pool and answer 503s).
        let gate = lock(&self.machines.verifying)
            .entry(id)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        let verified = {
            let _one = gate.lock().await;
            match self.basic_hit(&id).await? {
                Some(hit) => Ok(hit),
                None => self.verify_basic_pair(user, password, client_ip, id).await,
            }
        };
        {
            let mut waiting = lock(&self.machines.verifying);
            // The map's reference and ours: nobody else waits on this gate.
            if Arc::strong_count(&gate) <= 2 {
                waiting.remove(&id);
            }
        }
        verified
    }

    /// The remembered verification of pair `id`, if it still holds: not expired, the user's
    /// stored hash unchanged, and no cut-off since (else it is forgotten).
    async fn basic_hit(&self, id: &[u8; 32]) -> Result<Option<Identity>, GatewayError> {
        let sessions = self.sessions();
        let cached = lock(&self.machines.basic).get(id).cloned();
        let Some(e) = cached.filter(|e| e.at.elapsed() < BASIC_TTL) else {
            return Ok(None);
        };
        let current = sessions.users().get(&e.user).await?;
        if current.is_none_or(|u| u.password_hash != e.hash) {
            lock(&self.machines.basic).remove(id);
            return Ok(None);
        }
        let sid = format!("b:{}", e.user);
        match sessions
            .check_revocation(&sid, &e.user, e.verified_secs)
            .await
        {
            Ok(()) => Ok(Some(basic_identity(&e.user, &sid, e.roles.clone()))),
            Err(GatewayError::InvalidToken(_)) => {
                lock(&self.machines.basic).remove(id);
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    /// Verifies a pair with argon2 (throttled like a login) and remembers it.
    async fn verify_basic_pair(
        &self,
        user: &str,
        password: &str,
        client_ip: IpAddr,
        id: [u8; 32],
    ) -> Result<Identity, GatewayError> {
        let sessions = self.sessions();
        let result = self.verify_basic(user, password, client_ip).await;
        sessions.metrics().login_by(
            LoginMethod::basic,
            match &result {
                Ok(_) => LoginOutcome::ok,
                Err(GatewayError::InvalidCredentials) => LoginOutcome::invalid_credentials,
                Err(GatewayError::TooManyAttempts { .. }) => LoginOutcome::throttled,
                Err(GatewayError::Unavailable(_)) => LoginOutcome::unavailable,
                Err(_) => LoginOutcome::error,
            },
        );
        if let Err(e) = &result {
            crate::audit!("basic_failed", user = %user, ip = %client_ip, reason = %e);
        }
        let u = result?;
        let verified_secs = sessions.issue_time_for(&u.name).await?;
        let sid = format!("b:{}", u.name);
        sessions
            .check_revocation(&sid, &u.name, verified_secs)
            .await?;
        bounded_insert(
            &mut lock(&self.machines.basic),
            id,
            BasicEntry {
                user: u.name.clone(),
                roles: u.roles.clone(),
                hash: u.password_hash.clone(),
                at: Instant::now(),
                verified_secs,
            },
        );
        Ok(basic_identity(&u.name, &sid, u.roles))
    }

    /// The login's argon2 check, throttle and lockout, without starting a session.
    async fn verify_basic(
        &self,
        user: &str,
        password: &str,
        client_ip: IpAddr,
    ) -> Result<crate::store::users::User, GatewayError> {
        let sessions = self.sessions();
        let p = sessions.policy();
        let user_key = super::sessions::user_counter(user);
        let ip_key = super::sessions::ip_counter(client_ip);
        let attempt = AttemptRequest {
            counters: [&user_key, &ip_key],
            limits: [p.max_failures_per_user, p.max_failures_per_ip],
            window: p.failure_window,
        };
        match sessions.store().reserve_attempt(attempt).await? {
            Attempt::Reserved => {}
            Attempt::Refused { retry_after } => {
                return Err(GatewayError::TooManyAttempts { retry_after })
            }
        }
        let user = sessions.check_password(user, password, client_ip).await?;
        // A password is not all a user with a second factor must give: not over Basic
        // (an API key is what scripts of such a user use).
        if sessions.factors().need(&user) != super::factors::Need::Nothing {
            return Err(GatewayError::SecondFactorRequired);
        }
        Ok(user).inspect(|_| {
            let store = sessions.store().clone();
            tokio::spawn(async move {
                let _ = store.clear_failures(&user_key).await;
                let _ = store.forget_attempt(&ip_key).await;
            });
        })
    }
}

fn basic_identity(user: &str, sid: &str, roles: Vec<String>) -> Identity {
    Identity {
        claims: Claims::machine(user, sid, roles, None),
        via_cookie: false,
        key: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn route(api_keys: bool, basic: bool) -> Route {
        let text = format!(
            "[tokens]\nalgorithm = \"EdDSA\"\nsigning_key_file = \"k.pem\"\n\
             [[routes]]\npath = \"/**\"\napi_keys = {api_keys}\nbasic = {basic}\n[forward_auth]\nonly = true\n"
        );
        let config = crate::Config::from_str(std::path::Path::new("/nonexistent/a.toml"), &text)
            .unwrap_or_else(|e| panic!("{e}"));
        config.routes.routes()[0].clone()
    }

    #[test]
    fn credentials_count_only_where_the_route_allows_them() {
        let key = "agk_".to_owned() + &"A".repeat(43);
        let mut h = HeaderMap::new();
        h.insert(
            X_API_KEY,
            HeaderValue::from_str(&key).unwrap_or(HeaderValue::from_static("")),
        );
        assert_eq!(presented(&h, &route(false, true)), None);
        assert_eq!(presented(&h, &route(true, false)), Some(Machine::Key(&key)));
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic YWxpY2U6cHc="),
        );
        assert_eq!(presented(&h, &route(true, false)), None);
        assert_eq!(
            presented(&h, &route(false, true)),
            Some(Machine::Basic {
                user: "alice".into(),
                password: "pw".into()
            })
        );
        // A JWT bearer is not a key: the usual token path reads it.
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer eyJhbGciOi"));
        assert_eq!(presented(&h, &route(true, true)), None);
    }
}
