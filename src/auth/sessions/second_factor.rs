//! The second step of a password login: what a right password leads to (a session, a code
//! to give, or a first factor to enrol), the code check (TOTP once per step, recovery codes
//! once ever, under the password's throttle), and the factor changes of the account page.

use super::{Pair, Principal, Sessions, SignIn};
use crate::auth::factors::challenge::Purpose;
use crate::auth::factors::{recovery, totp, FactorError, Factors, Need};
use crate::auth::tokens::{TokenError, Via};
use crate::clock::now_secs;
use crate::error::GatewayError;
use crate::metrics::{LoginMethod, LoginOutcome};
use crate::store::users::User;
use std::time::Duration;

/// How long a used TOTP step is remembered: past the last moment its code is accepted.
const USED_STEP_TTL: Duration = Duration::from_secs(3 * 30 + 30);
/// How long a used recovery code is remembered in the revocation store (it is also removed
/// from the user's record, where the store is writable).
const USED_RECOVERY_TTL: Duration = Duration::from_secs(400 * 24 * 3600);

/// What a right password led to.
pub enum LoginStep {
    /// The session started.
    Done(Pair),
    /// A code of the user's factor must follow (`mfa_token`, `methods`).
    Code(Challenged),
    /// `second_factor = "required"` and the user has none: enrol one first.
    Enrol(Challenged),
}

pub struct Challenged {
    pub user: String,
    pub mfa_token: String,
    pub methods: Vec<&'static str>,
}

fn amr(methods: &[&str]) -> Vec<String> {
    methods.iter().map(|m| (*m).to_owned()).collect()
}

fn factor_failed(e: FactorError) -> GatewayError {
    tracing::error!(error = %e, "a second factor could not be checked");
    GatewayError::Unavailable("second factors cannot be checked right now")
}

impl Sessions {
    pub fn factors(&self) -> &Factors {
        &self.factors
    }

    /// After a right password: the session, or the second step.
    pub(super) async fn after_password(
        &self,
        user: &User,
        from: &SignIn<'_>,
    ) -> Result<LoginStep, GatewayError> {
        let purpose = match self.factors.need(user) {
            Need::Nothing => {
                let amr = amr(&["pwd"]);
                let pair = self.start_as(user, &amr, from).await?;
                tracing::info!(user = %user.name, "login");
                return Ok(LoginStep::Done(pair));
            }
            Need::Code => Purpose::Code,
            Need::Enrol => Purpose::Enrol,
        };
        let mfa_token = self
            .factors
            .challenges()
            .issue(&user.name, purpose, now_secs())
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let c = Challenged {
            user: user.name.clone(),
            mfa_token,
            methods: self.factors.methods(user),
        };
        Ok(match purpose {
            Purpose::Code => LoginStep::Code(c),
            Purpose::Enrol => LoginStep::Enrol(c),
        })
    }

    pub(super) async fn start_as_pub(
        &self,
        user: &User,
        amr: &[String],
        from: &SignIn<'_>,
    ) -> Result<Pair, GatewayError> {
        self.start_as(user, amr, from).await
    }

    async fn start_as(
        &self,
        user: &User,
        amr: &[String],
        from: &SignIn<'_>,
    ) -> Result<Pair, GatewayError> {
        let who = Principal {
            name: &user.name,
            roles: &user.roles,
            via: Via {
                idp: None,
                amr: Some(amr),
            },
        };
        self.start_from(&who, from).await
    }

    /// `POST /auth/login/totp`: the code (TOTP or recovery) for an `mfa_token`; the session.
    pub async fn complete_code(
        &self,
        mfa_token: &str,
        code: &str,
        from: &SignIn<'_>,
    ) -> Result<(String, Pair), GatewayError> {
        let result = self.check_code(mfa_token, code, from).await;
        self.metrics.login_by(
            LoginMethod::totp,
            match &result {
                Ok(_) => LoginOutcome::ok,
                Err(GatewayError::InvalidCode) => LoginOutcome::invalid_code,
                Err(GatewayError::TooManyAttempts { .. }) => LoginOutcome::throttled,
                Err(GatewayError::Busy(_)) => LoginOutcome::busy,
                Err(GatewayError::InvalidToken(_)) => LoginOutcome::invalid_token,
                Err(GatewayError::Unavailable(_)) => LoginOutcome::unavailable,
                Err(_) => LoginOutcome::error,
            },
        );
        result
    }

    async fn check_code(
        &self,
        mfa_token: &str,
        code: &str,
        from: &SignIn<'_>,
    ) -> Result<(String, Pair), GatewayError> {
        let challenge = self.challenge(mfa_token, Purpose::Code)?;
        let client_ip = from
            .ip
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let user_key = super::user_counter(&challenge.sub);
        let ip_key = super::ip_counter(client_ip);
        let _checking = self.reserve_attempt(&user_key, &ip_key).await?;
        let user = self
            .users
            .get(&challenge.sub)
            .await
            .map_err(|e| self.store_down(e))?
            .ok_or(GatewayError::InvalidToken(TokenError::UserGone))?;
        let Some(method) = self.code_matches(&user, code).await? else {
            tracing::info!(user = %user.name, ip = %client_ip, "second factor: wrong code");
            return Err(GatewayError::InvalidCode);
        };
        // The token is spent with its first right code (on every replica).
        self.spend_challenge(&challenge.jti).await?;
        let (u, i) = tokio::join!(
            self.store.clear_failures(&user_key),
            self.store.forget_attempt(&ip_key)
        );
        u.and(i).map_err(|e| self.store_down(e))?;
        let pair = self.start_as(&user, &amr(&["pwd", "otp"]), from).await?;
        tracing::info!(user = %user.name, method, "login with a second factor");
        Ok((user.name, pair))
    }

    /// Which factor `code` is a right code of (`totp`, `recovery_code`), spending it; None:
    /// wrong, replayed or used.
    async fn code_matches(
        &self,
        user: &User,
        code: &str,
    ) -> Result<Option<&'static str>, GatewayError> {
        let typed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if typed.len() == 6 && typed.bytes().all(|b| b.is_ascii_digit()) {
            let Some(secret) = self.factors.totp_secret(user).map_err(factor_failed)? else {
                return Ok(None);
            };
            let Some(step) = totp::check(&secret, &typed, now_secs()) else {
                return Ok(None);
            };
            let fresh = self
                .store
                .mark_once(&format!("totp:{}:{step}", user.name), USED_STEP_TTL)
                .await
                .map_err(|e| self.store_down(e))?;
            return Ok(fresh.then_some("totp"));
        }
        let Some(hash) = recovery::hash_typed(&typed) else {
            return Ok(None);
        };
        if !user.recovery_codes.contains(&hash) {
            return Ok(None);
        }
        let fresh = self
            .store
            .mark_once(&format!("rc:{}:{hash}", user.name), USED_RECOVERY_TTL)
            .await
            .map_err(|e| self.store_down(e))?;
        if !fresh {
            return Ok(None);
        }
        if let Err(e) = self.users.take_recovery_code(&user.name, &hash).await {
            tracing::warn!(user = %user.name, error = %e, "a used recovery code could not be removed from the user store (the revocation store remembers it)");
        }
        crate::audit!("recovery_code_used", user = %user.name, left = user.recovery_codes.len() - 1);
        Ok(Some("recovery_code"))
    }

    /// Enrols the TOTP secret of a pending enrolment, once `code` shows the user's app has it.
    pub async fn enrol_totp(
        &self,
        user: &str,
        pending: &str,
        code: &str,
    ) -> Result<(), GatewayError> {
        let now = now_secs();
        let secret = self
            .factors
            .open_pending(user, pending, now)
            .ok_or_else(|| {
                GatewayError::BadRequest("the set-up expired; start it again".to_owned())
            })?;
        let typed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if totp::check(&secret, &typed, now).is_none() {
            return Err(GatewayError::InvalidCode);
        }
        let sealed = self.factors.seal_totp(user, &secret).map_err(|e| {
            tracing::error!(error = %e, "cannot seal a second factor");
            GatewayError::Unavailable("second factors cannot be enrolled right now")
        })?;
        match self.users.set_totp(user, Some(&sealed)).await {
            Ok(true) => {}
            Ok(false) => return Err(GatewayError::InvalidToken(TokenError::UserGone)),
            Err(e) => {
                tracing::error!(user, error = %e, "cannot store a second factor");
                return Err(GatewayError::Unavailable(
                    "the user store cannot be written (ask an administrator to run `authgate users totp`)",
                ));
            }
        }
        crate::audit!("factor_enrolled", user = %user, factor = "totp");
        Ok(())
    }

    /// Enrolment without a session (`second_factor = "required"`): the `mfa_token` of the
    /// right password, then the session, signed in with both.
    pub async fn enrol_and_start(
        &self,
        mfa_token: &str,
        pending: &str,
        code: &str,
        from: &SignIn<'_>,
    ) -> Result<(String, Pair), GatewayError> {
        let challenge = self.challenge(mfa_token, Purpose::Enrol)?;
        self.enrol_totp(&challenge.sub, pending, code).await?;
        self.spend_challenge(&challenge.jti).await?;
        let user = self
            .users
            .get(&challenge.sub)
            .await
            .map_err(|e| self.store_down(e))?
            .ok_or(GatewayError::InvalidToken(TokenError::UserGone))?;
        let pair = self.start_as(&user, &amr(&["pwd", "otp"]), from).await?;
        Ok((user.name, pair))
    }

    /// Ten new recovery codes for `user` (the old ones stop working), shown once.
    pub async fn new_recovery_codes(&self, user: &str) -> Result<Vec<String>, GatewayError> {
        let codes = recovery::generate().map_err(|e| GatewayError::Internal(e.to_string()))?;
        let hashes: Vec<String> = codes
            .iter()
            .filter_map(|c| recovery::hash_typed(c))
            .collect();
        match self.users.set_recovery_codes(user, &hashes).await {
            Ok(true) => {}
            Ok(false) => return Err(GatewayError::InvalidToken(TokenError::UserGone)),
            Err(e) => {
                tracing::error!(user, error = %e, "cannot store recovery codes");
                return Err(GatewayError::Unavailable(
                    "the user store cannot be written (ask an administrator to run `authgate users recovery-codes`)",
                ));
            }
        }
        crate::audit!("recovery_codes_created", user = %user);
        Ok(codes)
    }

    /// Removes `user`'s TOTP factor and recovery codes.
    pub async fn remove_factors(&self, user: &str) -> Result<(), GatewayError> {
        let unwritable = |e: crate::store::users::UserStoreError| {
            tracing::error!(user, error = %e, "cannot remove a second factor");
            GatewayError::Unavailable("the user store cannot be written")
        };
        self.users.set_totp(user, None).await.map_err(unwritable)?;
        self.users
            .set_recovery_codes(user, &[])
            .await
            .map_err(unwritable)?;
        crate::audit!("factor_removed", user = %user, factor = "totp");
        Ok(())
    }

    /// The user record of a signed-in user (the account page).
    pub async fn user(&self, name: &str) -> Result<Option<User>, GatewayError> {
        self.users.get(name).await.map_err(|e| self.store_down(e))
    }
}
