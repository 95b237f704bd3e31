//! The login-session lifecycle, in one place and without HTTP: start a session (login), issue
//! an access/refresh pair, rotate the refresh token with reuse detection and grace, refresh a
//! browser session from its cookie, end one session or all of a user's (the cut-off), and the
//! lifetime of every revocation record. The endpoints and the gateway only parse requests and
//! shape responses around these calls.

use super::cookies;
use super::csrf::CsrfKey;
use super::passwords::{HashError, Hasher};
use super::tokens::{Claims, Issued, TokenError, TokenType, Tokens};
use super::Identity;
use crate::clock::now_secs;
use crate::config::{Config, OnStoreError};
use crate::error::GatewayError;
use crate::ids::random_id;
use crate::metrics::{LoginOutcome, Metrics};
use crate::store::users::{validate_name, User, UserStore};
use crate::store::{
    Attempt, AttemptRequest, RevocationState, RotateRequest, Rotation, Store, StoreError,
};
use http::HeaderMap;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The rules sessions follow, from `[tokens]`, `[login]` and `[revocation]`.
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    pub access_ttl: Duration,
    /// Absolute session lifetime: a refresh never extends it.
    pub refresh_ttl: Duration,
    pub leeway: Duration,
    pub rotate_refresh: bool,
    /// A refresh token replayed this soon after its rotation gets the current pair.
    pub reuse_grace: Duration,
    pub max_failures_per_user: u64,
    pub max_failures_per_ip: u64,
    pub failure_window: Duration,
    pub on_store_error: OnStoreError,
}

impl SessionPolicy {
    pub fn new(config: &Config) -> SessionPolicy {
        SessionPolicy {
            access_ttl: config.tokens.access_ttl,
            refresh_ttl: config.tokens.refresh_ttl,
            leeway: config.tokens.leeway,
            rotate_refresh: config.tokens.rotate_refresh,
            reuse_grace: config.tokens.refresh_reuse_grace,
            max_failures_per_user: config.login.max_failures_per_user,
            max_failures_per_ip: config.login.max_failures_per_ip,
            failure_window: config.login.failure_window.max(Duration::from_secs(1)),
            on_store_error: config.revocation.on_store_error,
        }
    }

    /// How long a revocation record must live: until every token it covers has expired
    /// (the longest-lived token is a refresh token, accepted for `leeway` past its `exp`).
    pub fn revocation_ttl(&self) -> Duration {
        self.refresh_ttl + self.leeway + Duration::from_secs(1)
    }
}

/// An access token and the refresh token that goes with it.
pub struct Pair {
    pub access: Issued,
    /// The session's refresh token: a new one, or (without rotation) the one presented.
    pub refresh: String,
    /// True when `refresh` was issued now (the client must store it).
    pub refresh_is_new: bool,
    /// When the session ends, whatever is refreshed.
    pub session_exp: u64,
    /// The session's CSRF value.
    pub csrf: String,
}

impl Pair {
    /// What the session cookies carry.
    pub fn cookies(&self) -> cookies::SessionCookies<'_> {
        cookies::SessionCookies {
            access: &self.access.token,
            access_exp: self.access.claims.exp,
            refresh: &self.refresh,
            session_exp: self.session_exp,
            csrf: &self.csrf,
        }
    }
}

/// A cookie refresh's result, shared by the requests that presented the same session.
type SharedRefresh = Arc<tokio::sync::OnceCell<Result<(Identity, HeaderMap), GatewayError>>>;

/// How long a cookie refresh's result answers requests that present the old session.
const SHARED_FOR: Duration = Duration::from_secs(30);

pub struct Sessions {
    tokens: Tokens,
    csrf: CsrfKey,
    /// Cookie refreshes in progress or just done, by the refresh token presented.
    refreshing: std::sync::Mutex<HashMap<String, (std::time::Instant, SharedRefresh)>>,
    store: Store,
    users: UserStore,
    /// Shared with the configs reloaded after this one (its threads and their argon2 memory
    /// are made once per process).
    hasher: Arc<Hasher>,
    policy: SessionPolicy,
    /// `authgate_store_errors_total` (every store call that failed, on any path) and
    /// `authgate_logins_total`.
    metrics: Arc<Metrics>,
}

/// Keys of the login throttle counters (per user name, per client address).
pub fn user_counter(name: &str) -> String {
    format!("u:{name}")
}

fn ip_counter(ip: IpAddr) -> String {
    format!("ip:{ip}")
}

fn internal(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Internal(e.to_string())
}

impl Sessions {
    pub fn new(
        tokens: Tokens,
        store: Store,
        users: UserStore,
        hasher: Arc<Hasher>,
        policy: SessionPolicy,
        metrics: Arc<Metrics>,
    ) -> Sessions {
        Sessions {
            csrf: CsrfKey::derive(tokens.keys().secret_material()),
            refreshing: std::sync::Mutex::default(),
            tokens,
            store,
            users,
            hasher,
            policy,
            metrics,
        }
    }

    /// The password-hashing pool (for the next config's sessions).
    pub fn hasher(&self) -> Arc<Hasher> {
        self.hasher.clone()
    }

    /// The store (for the next config's sessions: a backend change needs a restart).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn policy(&self) -> &SessionPolicy {
        &self.policy
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The CSRF value of login session `sid`.
    pub fn csrf_for(&self, sid: &str) -> String {
        self.csrf.token(sid)
    }

    /// Authenticates a request to a protected route (header first, then the access cookie;
    /// `secure`: the request came over TLS, so only `__Host-` cookies count).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        secure: bool,
    ) -> Result<Identity, GatewayError> {
        let (token, via_cookie) =
            super::request_token(headers, secure).ok_or(GatewayError::MissingToken)?;
        let claims = self.verify(token, TokenType::Access).await?;
        Ok(Identity { claims, via_cookie })
    }

    /// Signature, claims, type, then one revocation round trip.
    pub async fn verify(&self, token: &str, want: TokenType) -> Result<Arc<Claims>, GatewayError> {
        let claims = self
            .tokens
            .verify(token, want)
            .map_err(|e| GatewayError::InvalidToken(e.as_str()))?;
        let state = match self.store.check(&claims.sid, &claims.sub).await {
            Ok(state) => state,
            Err(e) => self.store_failed(e).map(|()| RevocationState::default())?,
        };
        if state.revokes(claims.iat) {
            return Err(GatewayError::InvalidToken(TokenError::Revoked.as_str()));
        }
        Ok(claims)
    }

    /// Readiness: does the store answer? (A failure is counted.)
    pub async fn store_ready(&self) -> Result<(), StoreError> {
        self.store.ping().await.inspect_err(|_| {
            self.metrics.store_errors.inc();
        })
    }

    /// A store call that must succeed failed: counted, logged, 503.
    fn store_down(&self, e: StoreError) -> GatewayError {
        self.metrics.store_errors.inc();
        tracing::warn!(error = %e, "store unavailable");
        e.into()
    }

    /// Applies `on_store_error` to a failed revocation check.
    fn store_failed(&self, e: StoreError) -> Result<(), GatewayError> {
        self.metrics.store_errors.inc();
        match self.policy.on_store_error {
            OnStoreError::Deny => {
                tracing::warn!(error = %e, "revocation store unavailable; denying (on_store_error = deny)");
                Err(e.into())
            }
            OnStoreError::Allow => {
                tracing::error!(error = %e, "revocation store unavailable; ALLOWING without revocation check (on_store_error = allow)");
                Ok(())
            }
        }
    }

    /// Checks a password (throttled per user and per client address) and starts a session.
    /// The attempt is counted before the password is checked, atomically with the limit
    /// check, so however many arrive at once at most `max_failures_per_user` wrong passwords
    /// are ever checked for one user in a window; a right one takes its count back.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client_ip: IpAddr,
    ) -> Result<Pair, GatewayError> {
        let result = self.check_login(username, password, client_ip).await;
        self.metrics.login(match &result {
            Ok(_) => LoginOutcome::ok,
            Err(GatewayError::InvalidCredentials) => LoginOutcome::invalid_credentials,
            Err(GatewayError::TooManyAttempts { .. }) => LoginOutcome::throttled,
            Err(GatewayError::Unavailable(_)) => LoginOutcome::unavailable,
            Err(_) => LoginOutcome::error,
        });
        result
    }

    async fn check_login(
        &self,
        username: &str,
        password: &str,
        client_ip: IpAddr,
    ) -> Result<Pair, GatewayError> {
        let user_key = user_counter(username);
        let ip_key = ip_counter(client_ip);
        let p = &self.policy;
        let attempt = AttemptRequest {
            counters: [&user_key, &ip_key],
            limits: [p.max_failures_per_user, p.max_failures_per_ip],
            window: p.failure_window,
        };
        match self.store.reserve_attempt(attempt).await {
            Ok(Attempt::Reserved) => {}
            Ok(Attempt::Refused { retry_after }) => {
                return Err(GatewayError::TooManyAttempts { retry_after })
            }
            Err(e) => return Err(self.store_down(e)),
        }
        let user = if validate_name(username).is_ok() {
            self.users
                .get(username)
                .await
                .map_err(|e| self.store_down(e))?
        } else {
            None
        };
        let ok = self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await
            .map_err(hash_error)?;
        let Some(user) = user.filter(|_| ok) else {
            tracing::info!(user = %username, ip = %client_ip, "login failed");
            return Err(GatewayError::InvalidCredentials);
        };
        let (u, i) = tokio::join!(
            self.store.clear_failures(&user_key),
            self.store.forget_attempt(&ip_key)
        );
        u.and(i).map_err(|e| self.store_down(e))?;
        let pair = self.start(&user).await?;
        tracing::info!(user = %user.name, "login");
        Ok(pair)
    }

    /// A new login session for `user`: a fresh `sid`, an access and a refresh token.
    pub async fn start(&self, user: &User) -> Result<Pair, GatewayError> {
        let iat = self.issue_time(&user.name).await?;
        let sid = random_id().map_err(internal)?;
        let session_exp = iat + self.policy.refresh_ttl.as_secs();
        let access = self.issue_access(user, &sid, iat, session_exp)?;
        let refresh = self
            .tokens
            .issue(TokenType::Refresh, &user.name, &sid, None, iat, session_exp)
            .map_err(internal)?;
        self.store
            .start_session(
                &user.name,
                &sid,
                &refresh.claims.jti,
                self.policy.revocation_ttl(),
            )
            .await
            .map_err(|e| self.store_down(e))?;
        Ok(Pair {
            csrf: self.csrf_for(&sid),
            access,
            refresh: refresh.token,
            refresh_is_new: true,
            session_exp,
        })
    }

    /// `iat` for new tokens: now, but never at or before the user's revocation cut-off, so a
    /// login in the same second as a logout-everywhere is not revoked by it.
    async fn issue_time(&self, sub: &str) -> Result<u64, GatewayError> {
        let now = now_secs();
        let cutoff = self
            .store
            .user_cutoff(sub)
            .await
            .map_err(|e| self.store_down(e))?;
        Ok(cutoff.map_or(now, |c| now.max(c + 1)))
    }

    fn issue_access(
        &self,
        user: &User,
        sid: &str,
        iat: u64,
        session_exp: u64,
    ) -> Result<Issued, GatewayError> {
        let exp = (iat + self.policy.access_ttl.as_secs()).min(session_exp);
        self.tokens
            .issue(
                TokenType::Access,
                &user.name,
                sid,
                Some(&user.roles),
                iat,
                exp,
            )
            .map_err(internal)
    }

    /// Verifies a refresh token and issues the session's next pair.
    pub async fn refresh(&self, token: &str) -> Result<Pair, GatewayError> {
        let claims = self.verify(token, TokenType::Refresh).await?;
        self.rotate(&claims, token).await
    }

    /// A browser whose access cookie expired (or was dropped at its Max-Age) but whose
    /// refresh cookie is valid: rotate on the fly. Returns the caller's new identity and the
    /// `Set-Cookie` headers for the response; the CSRF cookie keeps its value so open pages
    /// keep working.
    ///
    /// Tabs loading at once present the same expired session together: the first request
    /// rotates, the others wait for it and get its result (within the process; across
    /// replicas `refresh_reuse_grace` covers it). The result is kept for `SHARED_FOR`, for
    /// requests that left the browser before its new cookies arrived.
    pub async fn refresh_cookie(
        &self,
        headers: &HeaderMap,
        secure: bool,
    ) -> Result<(Identity, HeaderMap), GatewayError> {
        let token = cookies::get(headers, cookies::names(secure).refresh)
            .ok_or(GatewayError::MissingToken)?;
        let cell = {
            let mut shared = self
                .refreshing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            shared.retain(|_, (at, _)| at.elapsed() < SHARED_FOR);
            shared
                .entry(token.to_owned())
                .or_insert_with(|| (std::time::Instant::now(), Arc::default()))
                .1
                .clone()
        };
        cell.get_or_init(|| self.refresh_cookie_once(token, secure))
            .await
            .clone()
    }

    async fn refresh_cookie_once(
        &self,
        token: &str,
        secure: bool,
    ) -> Result<(Identity, HeaderMap), GatewayError> {
        let pair = self.refresh(token).await?;
        let mut set = HeaderMap::new();
        cookies::set_session(&mut set, &pair.cookies(), secure);
        let identity = Identity {
            claims: pair.access.claims.clone(),
            via_cookie: true,
        };
        Ok((identity, set))
    }

    /// Issues the next pair of a session, enforcing one-time use of refresh tokens.
    async fn rotate(&self, claims: &Claims, presented: &str) -> Result<Pair, GatewayError> {
        let user = self
            .users
            .get(&claims.sub)
            .await
            .map_err(|e| self.store_down(e))?
            .ok_or(GatewayError::InvalidToken("the user no longer exists"))?;
        let iat = self.issue_time(&user.name).await?;
        // Absolute session lifetime: the new refresh token ends when the first one did.
        let session_exp = claims.exp;
        let access = self.issue_access(&user, &claims.sid, iat, session_exp)?;
        if !self.policy.rotate_refresh {
            return Ok(Pair {
                csrf: self.csrf_for(&claims.sid),
                access,
                refresh: presented.to_owned(),
                refresh_is_new: false,
                session_exp,
            });
        }
        let refresh = self
            .tokens
            .issue(
                TokenType::Refresh,
                &user.name,
                &claims.sid,
                None,
                iat,
                session_exp,
            )
            .map_err(internal)?;
        let refresh = self.spend(claims, refresh).await?;
        Ok(Pair {
            csrf: self.csrf_for(&claims.sid),
            access,
            refresh,
            refresh_is_new: true,
            session_exp,
        })
    }

    /// Makes `next` the session's current refresh token if `claims` names the current one;
    /// returns the token the client should hold from now on.
    async fn spend(&self, claims: &Claims, next: Issued) -> Result<String, GatewayError> {
        let session_exp = claims.exp;
        let left = Duration::from_secs(session_exp.saturating_sub(now_secs()));
        let request = RotateRequest {
            sub: &claims.sub,
            sid: &claims.sid,
            presented_jti: &claims.jti,
            new_jti: &next.claims.jti,
            new_token: &next.token,
            grace: self.policy.reuse_grace,
            ttl: left + self.policy.leeway + Duration::from_secs(1),
        };
        let rotation = self
            .store
            .rotate(request)
            .await
            .map_err(|e| self.store_down(e))?;
        let refresh = match rotation {
            Rotation::Rotated => next.token,
            Rotation::Replay(current) => current,
            Rotation::Reused => {
                tracing::warn!(user = %claims.sub, "refresh token reuse: session revoked");
                return Err(GatewayError::InvalidToken(
                    "the refresh token was already used; the session is revoked",
                ));
            }
            Rotation::Unknown => {
                return Err(GatewayError::InvalidToken("the session is no longer valid"))
            }
        };
        Ok(refresh)
    }

    /// Ends the caller's session, or (`all`) every session of the user.
    pub async fn logout(&self, claims: &Claims, all: bool) -> Result<(), GatewayError> {
        let ttl = self.policy.revocation_ttl();
        if all {
            self.store
                .revoke_user(&claims.sub, now_secs(), ttl)
                .await
                .map(|_| ())
        } else {
            self.store
                .revoke_session(&claims.sub, &claims.sid, ttl)
                .await
        }
        .map_err(|e| self.store_down(e))?;
        tracing::info!(user = %claims.sub, all, "logout");
        Ok(())
    }

    /// Creates a user with no roles (self-registration). `Ok(None)`: the name is taken.
    pub async fn register(&self, name: &str, password: &str) -> Result<Option<User>, GatewayError> {
        validate_name(name).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
        if password.chars().count() < 8 {
            return Err(GatewayError::BadRequest(
                "the password needs at least 8 characters".to_owned(),
            ));
        }
        let hash = self.hasher.hash(password).await.map_err(hash_error)?;
        let user = User {
            name: name.to_owned(),
            password_hash: hash,
            roles: Vec::new(),
        };
        let created = self.users.create(&user).await.map_err(|e| {
            tracing::warn!(error = %e, "registration failed");
            GatewayError::Unavailable("the user store is unavailable")
        })?;
        if created {
            tracing::info!(user = %user.name, "registered");
        }
        Ok(created.then_some(user))
    }
}

/// A busy hashing pool is a 503 (retry shortly); anything else is ours.
pub fn hash_error(e: HashError) -> GatewayError {
    match e {
        HashError::Busy => GatewayError::Unavailable("too many logins in progress; retry shortly"),
        other => internal(other),
    }
}

#[cfg(test)]
mod tests {
    //! The security core against the memory store, without HTTP.
    use super::*;
    use crate::auth::keys::{Generate, KeySet};
    use crate::config::{Algorithm, KeySource, TokensConfig};
    use crate::store::MemoryStore;
    use std::collections::HashMap;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn sessions(rotate_refresh: bool) -> Sessions {
        let cfg = TokensConfig {
            issuer: "authgate".into(),
            audience: "authgate".into(),
            algorithm: Algorithm::HS256,
            key: KeySource::Secret(vec![9; 32]),
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(600),
            leeway: Duration::ZERO,
            rotate_refresh,
            refresh_reuse_grace: Duration::ZERO,
            cache_capacity: 100,
            previous: Vec::new(),
            secret_files: Vec::new(),
        };
        let keys = KeySet::load(&cfg, Generate::No).unwrap();
        let user = User {
            name: "alice".into(),
            password_hash: crate::auth::passwords::hash_password(b"pw-alice").unwrap(),
            roles: vec!["user".into()],
        };
        let users = UserStore::File {
            path: "unused.toml".into(),
            users: HashMap::from([(user.name.clone(), user)]),
        };
        let policy = SessionPolicy {
            access_ttl: cfg.access_ttl,
            refresh_ttl: cfg.refresh_ttl,
            leeway: cfg.leeway,
            rotate_refresh,
            reuse_grace: Duration::ZERO,
            max_failures_per_user: 2,
            max_failures_per_ip: 100,
            failure_window: Duration::from_secs(60),
            on_store_error: OnStoreError::Deny,
        };
        Sessions::new(
            Tokens::new(&cfg, Arc::new(keys)),
            Store::Memory(MemoryStore::new()),
            users,
            Arc::new(Hasher::new(1).unwrap()),
            policy,
            Arc::new(Metrics::new()),
        )
    }

    async fn access_ok(s: &Sessions, pair: &Pair) -> bool {
        s.verify(&pair.access.token, TokenType::Access)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn login_rotate_reuse_and_logout() {
        let s = sessions(true);
        let first = s.login("alice", "pw-alice", IP).await.unwrap();
        assert!(access_ok(&s, &first).await);
        assert_eq!(
            first.access.claims.roles.as_deref(),
            Some(&["user".to_owned()][..])
        );
        // The issued claims are the ones verification sees.
        let verified = s
            .verify(&first.access.token, TokenType::Access)
            .await
            .unwrap();
        assert_eq!(*verified, *first.access.claims);
        // An access token never refreshes; a refresh token never opens a route.
        assert!(s.refresh(&first.access.token).await.is_err());
        assert!(s.verify(&first.refresh, TokenType::Access).await.is_err());

        let second = s.refresh(&first.refresh).await.unwrap();
        assert!(second.refresh_is_new && second.refresh != first.refresh);
        assert_eq!(
            second.session_exp, first.session_exp,
            "a refresh never extends"
        );
        // Replaying the spent token kills the whole session, the new pair included.
        assert!(matches!(
            s.refresh(&first.refresh).await,
            Err(GatewayError::InvalidToken(_))
        ));
        assert!(!access_ok(&s, &second).await);
        assert!(s.refresh(&second.refresh).await.is_err());

        let third = s.login("alice", "pw-alice", IP).await.unwrap();
        let fourth = s.login("alice", "pw-alice", IP).await.unwrap();
        s.logout(&third.access.claims, false).await.unwrap();
        assert!(!access_ok(&s, &third).await);
        assert!(access_ok(&s, &fourth).await, "only that session ends");
        s.logout(&fourth.access.claims, true).await.unwrap();
        assert!(!access_ok(&s, &fourth).await);
        assert!(s.refresh(&fourth.refresh).await.is_err());
    }

    #[tokio::test]
    async fn without_rotation_the_refresh_token_is_kept() {
        let s = sessions(false);
        let first = s.login("alice", "pw-alice", IP).await.unwrap();
        let next = s.refresh(&first.refresh).await.unwrap();
        assert!(!next.refresh_is_new);
        assert_eq!(next.refresh, first.refresh);
        assert!(s.refresh(&first.refresh).await.is_ok());
    }

    #[tokio::test]
    async fn wrong_passwords_are_throttled_and_unknown_users_fail_alike() {
        let s = sessions(true);
        for _ in 0..2 {
            assert!(matches!(
                s.login("alice", "wrong", IP).await,
                Err(GatewayError::InvalidCredentials)
            ));
        }
        assert!(matches!(
            s.login("alice", "pw-alice", IP).await,
            Err(GatewayError::TooManyAttempts { .. })
        ));
        assert!(matches!(
            s.login("nobody", "pw", IP).await,
            Err(GatewayError::InvalidCredentials)
        ));
    }

    #[test]
    fn revocation_records_outlive_every_token_they_cover() {
        let s = sessions(true);
        assert_eq!(s.policy().revocation_ttl(), Duration::from_secs(601));
    }
}
