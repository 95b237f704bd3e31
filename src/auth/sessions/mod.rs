//! The login-session lifecycle, in one place and without HTTP: start a session (login), issue
//! an access/refresh pair, rotate the refresh token with reuse detection and grace, refresh a
//! browser session from its cookie, end one session or all of a user's (the cut-off), and the
//! lifetime of every revocation record. The endpoints and the gateway only parse requests and
//! shape responses around these calls.

mod cookie_refresh;
mod listing;
mod passkey_flow;
mod second_factor;

pub use listing::{clean_user_agent, method_of, SignIn};
pub use second_factor::{Challenged, LoginStep};

use crate::auth::cookies;
use crate::auth::csrf::CsrfKey;
use crate::auth::factors::challenge::{Challenge, Purpose};
use crate::auth::passwords::{HashCost, HashError, Hasher};
use crate::auth::tokens::{Claims, Issued, NoMemo, TokenError, TokenMemo, TokenType, Tokens, Via};
use crate::auth::Identity;
use crate::clock::now_secs;
use crate::config::{Config, OnStoreError};
use crate::error::GatewayError;
use crate::ids::random_id;
use crate::metrics::{LoginOutcome, Metrics};
use crate::outage::WhileDown;
use crate::store::users::{validate_name, User, UserStore};
use crate::store::{
    Attempt, AttemptRequest, Refusal, RevocationState, RotateRequest, Rotation, Store, StoreError,
};
use http::HeaderMap;
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
    /// `[[login.oidc]]` providers by name and whom they sign in: a session an unknown
    /// provider started ends at its next refresh.
    pub providers: std::collections::HashMap<String, crate::config::OidcUsers>,
}

/// Who a new session is for, as decided at sign-in.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    pub name: &'a str,
    pub roles: &'a [String],
    /// How they signed in: the identity provider (None: the password form) and `amr`.
    pub via: Via<'a>,
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
            providers: config
                .login
                .oidc
                .iter()
                .map(|p| (p.name.clone(), p.users))
                .collect(),
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

pub struct Sessions {
    tokens: Tokens,
    csrf: CsrfKey,
    /// Cookie refreshes in flight (or just done, within the reuse grace), by session.
    sharing: cookie_refresh::Sharing,
    store: Store,
    users: UserStore,
    /// Shared with the configs reloaded after this one (its threads and their argon2 memory
    /// are made once per process).
    hasher: Arc<Hasher>,
    /// What an unknown user is verified against: a hash with the costliest parameters in
    /// the user store (made again on every reload).
    dummy: String,
    policy: SessionPolicy,
    /// `authgate_store_errors_total` (every store call that failed, on any path) and
    /// `authgate_logins_total`.
    metrics: Arc<Metrics>,
    /// Password checks running now, by user counter (see `check_login`).
    checks: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// When each API key's use was last written to the store.
    key_uses: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Second factors: the policy, the factor key, the `mfa_token`s.
    factors: crate::auth::factors::Factors,
}

/// Keys of the login throttle counters (per user name, per client address).
pub fn user_counter(name: &str) -> String {
    format!("u:{name}")
}

pub fn ip_counter(ip: IpAddr) -> String {
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
        factors: crate::auth::factors::Factors,
    ) -> Result<Sessions, HashError> {
        let dummy = crate::auth::passwords::dummy_hash(users.costliest())?;
        Ok(Sessions {
            dummy,
            csrf: CsrfKey::derive(tokens.keys().secret_material()),
            sharing: cookie_refresh::Sharing::default(),
            tokens,
            store,
            users,
            hasher,
            policy,
            metrics,
            key_uses: Default::default(),
            checks: Default::default(),
            factors,
        })
    }

    fn checks_in_flight(&self, user_key: &str) -> u32 {
        self.checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(user_key)
            .copied()
            .unwrap_or(0)
    }

    /// The password-hashing pool (for the next config's sessions).
    pub fn hasher(&self) -> Arc<Hasher> {
        self.hasher.clone()
    }

    /// The store (for the next config's sessions: a backend change needs a restart).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn users(&self) -> &UserStore {
        &self.users
    }

    /// Ends every session of `sub` (a cut-off at now), as `logout?all` does.
    pub async fn end_all(&self, sub: &str) -> Result<(), StoreError> {
        self.store
            .revoke_user(sub, now_secs(), self.policy.revocation_ttl())
            .await?;
        self.sharing.forget(sub, None);
        Ok(())
    }

    /// Ends one session of `sub` (back-channel logout, a per-session revoke).
    pub async fn end_session(&self, sub: &str, sid: &str) -> Result<(), StoreError> {
        self.store
            .revoke_session(sub, sid, self.policy.revocation_ttl())
            .await?;
        self.sharing.forget(sub, Some(sid));
        Ok(())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
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
        self.authenticate_on(headers, secure, &NoMemo).await
    }

    /// `authenticate`, remembering the token in `memo` (the request's connection's): the
    /// next request with the same token skips its digest and the cache lookup. Revocation is
    /// checked every time.
    pub async fn authenticate_on(
        &self,
        headers: &HeaderMap,
        secure: bool,
        memo: &dyn TokenMemo,
    ) -> Result<Identity, GatewayError> {
        let (token, via_cookie) =
            super::request_token(headers, secure).ok_or(GatewayError::MissingToken)?;
        let claims = self
            .tokens
            .verify_access(token, memo)
            .await
            .map_err(GatewayError::InvalidToken)?;
        self.check_revocation(claims.sid(), claims.sub(), claims.iat)
            .await?;
        Ok(Identity {
            claims,
            via_cookie,
            key: None,
        })
    }

    /// Signature, claims, type, then one revocation round trip.
    pub async fn verify(&self, token: &str, want: TokenType) -> Result<Claims, GatewayError> {
        let claims = self
            .tokens
            .verify(token, want)
            .map_err(GatewayError::InvalidToken)?;
        self.check_revocation(claims.sid(), claims.sub(), claims.iat)
            .await?;
        Ok(claims)
    }

    /// One revocation round trip for a token of session `sid` of `sub` issued at `iat`.
    pub async fn check_revocation(
        &self,
        sid: &str,
        sub: &str,
        iat: u64,
    ) -> Result<(), GatewayError> {
        let state = match self.store.check(sid, sub).await {
            Ok(state) => {
                self.metrics.outages.store_answered();
                state
            }
            Err(e) => self.store_failed(e).map(|()| RevocationState::default())?,
        };
        match state.refusal(iat) {
            None => Ok(()),
            Some(Refusal::Revoked) => Err(GatewayError::InvalidToken(TokenError::Revoked)),
            Some(Refusal::BeforeEpoch) => Err(GatewayError::InvalidToken(TokenError::BeforeEpoch)),
        }
    }

    /// Readiness: does the store answer? (A failure is counted.)
    pub async fn store_ready(&self) -> Result<(), StoreError> {
        match self.store.ping().await {
            Ok(()) => {
                self.metrics.outages.store_answered();
                Ok(())
            }
            Err(e) => {
                self.metrics.store_errors.inc();
                self.metrics.outages.store_failed(&e, self.while_down());
                Err(e)
            }
        }
    }

    fn while_down(&self) -> WhileDown {
        match self.policy.on_store_error {
            OnStoreError::Deny => WhileDown::FailClosed,
            OnStoreError::Allow => WhileDown::Allowing,
        }
    }

    /// A store call that must succeed failed: counted, logged (see `outage`), 503.
    fn store_down(&self, e: StoreError) -> GatewayError {
        self.metrics.store_errors.inc();
        self.metrics.outages.store_failed(&e, self.while_down());
        e.into()
    }

    /// Applies `on_store_error` to a failed revocation check.
    fn store_failed(&self, e: StoreError) -> Result<(), GatewayError> {
        self.metrics.store_errors.inc();
        self.metrics.outages.store_failed(&e, self.while_down());
        match self.policy.on_store_error {
            OnStoreError::Deny => Err(e.into()),
            OnStoreError::Allow => Ok(()),
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
        match self.login_from(username, password, client_ip, None).await? {
            LoginStep::Done(pair) => Ok(pair),
            LoginStep::Code(_) | LoginStep::Enrol(_) => Err(GatewayError::Forbidden(
                "this user must give a second factor",
            )),
        }
    }

    /// `login`, keeping the client's `User-Agent` with the session (the sessions page).
    pub async fn login_from(
        &self,
        username: &str,
        password: &str,
        client_ip: IpAddr,
        user_agent: Option<&str>,
    ) -> Result<LoginStep, GatewayError> {
        let from = SignIn {
            ip: Some(client_ip),
            user_agent,
        };
        let result = self.check_login(username, password, &from).await;
        self.metrics.login(match &result {
            Ok(LoginStep::Done(_)) => LoginOutcome::ok,
            Ok(_) => LoginOutcome::second_factor,
            Err(GatewayError::InvalidCredentials) => LoginOutcome::invalid_credentials,
            Err(GatewayError::TooManyAttempts { .. }) => LoginOutcome::throttled,
            Err(GatewayError::Busy(_)) => LoginOutcome::busy,
            Err(GatewayError::Unavailable(_)) => LoginOutcome::unavailable,
            Err(_) => LoginOutcome::error,
        });
        result
    }

    async fn check_login(
        &self,
        username: &str,
        password: &str,
        from: &SignIn<'_>,
    ) -> Result<LoginStep, GatewayError> {
        let client_ip = from
            .ip
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let user_key = user_counter(username);
        let ip_key = ip_counter(client_ip);
        let _checking = self.reserve_attempt(&user_key, &ip_key).await?;
        let user = self.check_password(username, password, client_ip).await?;
        self.upgrade_hash(&user, password).await;
        let (u, i) = tokio::join!(
            self.store.clear_failures(&user_key),
            self.store.forget_attempt(&ip_key)
        );
        u.and(i).map_err(|e| self.store_down(e))?;
        self.after_password(&user, from).await
    }

    /// Counts a sign-in check of `user_key` from `ip_key` against the throttle before it is
    /// made (a right answer takes it back); the guard marks the check as in flight.
    async fn reserve_attempt(
        &self,
        user_key: &str,
        ip_key: &str,
    ) -> Result<InFlight<'_>, GatewayError> {
        let p = &self.policy;
        let attempt = AttemptRequest {
            counters: [user_key, ip_key],
            limits: [p.max_failures_per_user, p.max_failures_per_ip],
            window: p.failure_window,
        };
        match self.store.reserve_attempt(attempt).await {
            Ok(Attempt::Reserved) => Ok(InFlight::enter(&self.checks, user_key)),
            // Checks of this account are running here: the counter holds them as well as
            // failures, and they may all be right. Not "too many failed attempts" for
            // 15 minutes, but "busy, retry in a second".
            Ok(Attempt::Refused { .. }) if self.checks_in_flight(user_key) > 0 => Err(
                GatewayError::Busy("sign-ins of this account are being checked; retry in a second"),
            ),
            Ok(Attempt::Refused { retry_after }) => {
                Err(GatewayError::TooManyAttempts { retry_after })
            }
            Err(e) => Err(self.store_down(e)),
        }
    }

    /// The signed, unexpired `mfa_token` (or enrolment token) for `purpose`; not yet spent.
    pub fn challenge(&self, token: &str, purpose: Purpose) -> Result<Challenge, GatewayError> {
        self.factors
            .challenges()
            .verify(token, purpose, now_secs())
            .map_err(GatewayError::InvalidToken)
    }

    /// Spends the `mfa_token` whose id is `jti` (on every replica); an error if it was spent.
    async fn spend_challenge(&self, jti: &str) -> Result<(), GatewayError> {
        let fresh = self
            .store
            .mark_once(
                &format!("mfa:{jti}"),
                Duration::from_secs(crate::auth::factors::challenge::TTL_SECS + 60),
            )
            .await
            .map_err(|e| self.store_down(e))?;
        if fresh {
            Ok(())
        } else {
            Err(GatewayError::InvalidToken(TokenError::Invalid))
        }
    }

    /// The user whose password this is, checked with argon2 (an unknown user against the
    /// dummy hash, in the same time); `InvalidCredentials` otherwise. No throttle here: the
    /// caller reserved the attempt.
    pub async fn check_password(
        &self,
        username: &str,
        password: &str,
        client_ip: IpAddr,
    ) -> Result<User, GatewayError> {
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
            .verify(
                password,
                user.as_ref().map(|u| u.password_hash.as_str()),
                &self.dummy,
            )
            .await
            .map_err(hash_error)?;
        match user.filter(|_| ok) {
            Some(u) => Ok(u),
            None => {
                tracing::info!(user = %username, ip = %client_ip, "login failed");
                Err(GatewayError::InvalidCredentials)
            }
        }
    }

    /// `issue_time` for other callers: the second a verification counts as made at.
    pub async fn issue_time_for(&self, sub: &str) -> Result<u64, GatewayError> {
        self.issue_time(sub).await
    }

    /// Records that API key `name` was used (at most once a minute per key and process; in
    /// the shared store, for `keys list`).
    pub async fn note_key_use(&self, name: &str) {
        let due = {
            let mut seen = self
                .key_uses
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = std::time::Instant::now();
            match seen.get(name) {
                Some(t) if now.duration_since(*t) < Duration::from_secs(60) => false,
                _ => {
                    if seen.len() >= 10_000 {
                        seen.clear();
                    }
                    seen.insert(name.to_owned(), now);
                    true
                }
            }
        };
        if due {
            if let Err(e) = self.store.note_key_use(name, now_secs()).await {
                tracing::debug!(error = %e, "could not record an API key's last use");
            }
        }
    }

    /// After a successful login: a hash made with other parameters than the gateway's is
    /// made again with the gateway's where the store is writable (Redis); the users file is
    /// the operator's, so that is only logged.
    async fn upgrade_hash(&self, user: &User, password: &str) {
        let ours = HashCost::ours();
        let theirs = HashCost::of(&user.password_hash);
        if theirs == Some(ours) && user.password_hash.starts_with("$argon2id$v=19$") {
            return;
        }
        let described = theirs.map_or_else(|| "unknown".to_owned(), |c| c.to_string());
        let hash = match self.hasher.hash(password).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(user = %user.name, error = %e, "could not rehash the password");
                return;
            }
        };
        match self.users.set_hash(&user.name, &hash).await {
            Ok(true) => {
                tracing::info!(user = %user.name, from = %described, to = %ours, "password rehashed with the gateway's parameters");
            }
            Ok(false) => tracing::info!(
                user = %user.name,
                params = %described,
                gateway = %ours,
                "this user's password hash uses other parameters than the gateway's; the users file is not rewritten by the gateway (hash it again with `authgate hash-password`)"
            ),
            Err(e) => {
                tracing::warn!(user = %user.name, error = %e, "could not store the rehashed password");
            }
        }
    }

    /// A new login session for `user`: a fresh `sid`, an access and a refresh token.
    pub async fn start(&self, user: &User) -> Result<Pair, GatewayError> {
        self.start_for(&Principal {
            name: &user.name,
            roles: &user.roles,
            via: Via::default(),
        })
        .await
    }

    /// A new login session for `who`. A session an identity provider started carries its
    /// roles (decided at sign-in) and the provider in its refresh token too, so a refresh
    /// needs no user record.
    pub async fn start_for(&self, who: &Principal<'_>) -> Result<Pair, GatewayError> {
        self.start_from(who, &SignIn::default()).await
    }

    /// `start_for`, keeping where the sign-in came from with the session (the sessions
    /// page). The record is written first, so every live session is listed.
    pub async fn start_from(
        &self,
        who: &Principal<'_>,
        from: &SignIn<'_>,
    ) -> Result<Pair, GatewayError> {
        let iat = self.issue_time(who.name).await?;
        let sid = random_id().map_err(internal)?;
        let info = self.session_info(who, from, &sid, iat);
        self.store
            .record_session(who.name, &info)
            .await
            .map_err(|e| self.store_down(e))?;
        let session_exp = iat + self.policy.refresh_ttl.as_secs();
        let access = self.issue_access(who, &sid, iat, session_exp)?;
        let refresh_roles = who.via.idp.map(|_| who.roles);
        let refresh = self
            .tokens
            .issue_via(
                TokenType::Refresh,
                who.name,
                &sid,
                refresh_roles,
                who.via,
                iat,
                session_exp,
            )
            .map_err(internal)?;
        self.store
            .start_session(
                who.name,
                &sid,
                refresh.claims.jti(),
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
    /// login in the same second as a logout-everywhere is not revoked by it, nor before the
    /// store's epoch (another replica's clock may be ahead of this one's).
    async fn issue_time(&self, sub: &str) -> Result<u64, GatewayError> {
        let epoch = self
            .store
            .known_epoch()
            .await
            .map_err(|e| self.store_down(e))?;
        let now = now_secs().max(epoch);
        let cutoff = self
            .store
            .user_cutoff(sub)
            .await
            .map_err(|e| self.store_down(e))?;
        Ok(cutoff.map_or(now, |c| now.max(c + 1)))
    }

    fn issue_access(
        &self,
        who: &Principal<'_>,
        sid: &str,
        iat: u64,
        session_exp: u64,
    ) -> Result<Issued, GatewayError> {
        let exp = (iat + self.policy.access_ttl.as_secs()).min(session_exp);
        self.tokens
            .issue_via(
                TokenType::Access,
                who.name,
                sid,
                Some(who.roles),
                who.via,
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

    /// Issues the next pair of a session, enforcing one-time use of refresh tokens, and
    /// notes the refresh for the sessions page.
    async fn rotate(&self, claims: &Claims, presented: &str) -> Result<Pair, GatewayError> {
        let pair = self.next_pair(claims, presented).await?;
        self.metrics.session(crate::metrics::SessionEvent::refresh);
        self.note_refresh(claims.sub(), claims.sid()).await;
        Ok(pair)
    }

    async fn next_pair(&self, claims: &Claims, presented: &str) -> Result<Pair, GatewayError> {
        let user = match claims.idp() {
            None => Some(
                self.users
                    .get(claims.sub())
                    .await
                    .map_err(|e| self.store_down(e))?
                    .ok_or(GatewayError::InvalidToken(TokenError::UserGone))?,
            ),
            Some(idp) => {
                match self.policy.providers.get(idp) {
                    // The provider was removed from the configuration: its sessions end.
                    None => return Err(GatewayError::InvalidToken(TokenError::SessionUnknown)),
                    Some(crate::config::OidcUsers::Known) => {
                        self.users
                            .get(claims.sub())
                            .await
                            .map_err(|e| self.store_down(e))?
                            .ok_or(GatewayError::InvalidToken(TokenError::UserGone))?;
                    }
                    Some(crate::config::OidcUsers::Any) => {}
                }
                None
            }
        };
        // The session keeps how it was signed in (`amr`) for its whole life.
        let via = Via {
            idp: claims.idp(),
            amr: claims.amr(),
        };
        let who = match &user {
            Some(u) => Principal {
                name: &u.name,
                roles: &u.roles,
                via,
            },
            None => Principal {
                name: claims.sub(),
                roles: claims.roles().unwrap_or(&[]),
                via,
            },
        };
        let iat = self.issue_time(who.name).await?;
        // Absolute session lifetime: the new refresh token ends when the first one did.
        let session_exp = claims.exp;
        let access = self.issue_access(&who, claims.sid(), iat, session_exp)?;
        if !self.policy.rotate_refresh {
            return Ok(Pair {
                csrf: self.csrf_for(claims.sid()),
                access,
                refresh: presented.to_owned(),
                refresh_is_new: false,
                session_exp,
            });
        }
        let refresh = self
            .tokens
            .issue_via(
                TokenType::Refresh,
                who.name,
                claims.sid(),
                who.via.idp.map(|_| who.roles),
                who.via,
                iat,
                session_exp,
            )
            .map_err(internal)?;
        let refresh = self.spend(claims, refresh).await?;
        Ok(Pair {
            csrf: self.csrf_for(claims.sid()),
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
            sub: claims.sub(),
            sid: claims.sid(),
            presented_jti: claims.jti(),
            new_jti: next.claims.jti(),
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
                tracing::warn!(user = %claims.sub(), "refresh token reuse: session revoked");
                crate::audit!("refresh_reuse", user = %claims.sub(), sid = %claims.sid());
                self.metrics
                    .session(crate::metrics::SessionEvent::refresh_reuse);
                return Err(GatewayError::InvalidToken(TokenError::RefreshReused));
            }
            Rotation::Unknown => {
                return Err(GatewayError::InvalidToken(TokenError::SessionUnknown))
            }
        };
        Ok(refresh)
    }

    /// Ends the caller's session, or (`all`) every session of the user.
    pub async fn logout(&self, claims: &Claims, all: bool) -> Result<(), GatewayError> {
        let ttl = self.policy.revocation_ttl();
        if all {
            self.store
                .revoke_user(claims.sub(), now_secs(), ttl)
                .await
                .map(|_| ())
        } else {
            self.store
                .revoke_session(claims.sub(), claims.sid(), ttl)
                .await
        }
        .map_err(|e| self.store_down(e))?;
        // A cookie refresh shared with other requests must not outlive the session.
        self.sharing
            .forget(claims.sub(), (!all).then_some(claims.sid()));
        self.metrics.session(if all {
            crate::metrics::SessionEvent::logout_all
        } else {
            crate::metrics::SessionEvent::logout
        });
        tracing::info!(user = %claims.sub(), all, "logout");
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
            ..User::default()
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

/// One password check of a user counter in flight; counted down when dropped (also when the
/// request is cancelled).
struct InFlight<'a> {
    map: &'a std::sync::Mutex<std::collections::HashMap<String, u32>>,
    key: String,
}

impl<'a> InFlight<'a> {
    fn enter(map: &'a std::sync::Mutex<std::collections::HashMap<String, u32>>, key: &str) -> Self {
        *map.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.to_owned())
            .or_insert(0) += 1;
        InFlight {
            map,
            key: key.to_owned(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut m = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
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
mod tests;
