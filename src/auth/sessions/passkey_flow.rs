//! Passkeys in the session lifecycle: adding one to an account, and signing in with one,
//! as the second step after a password or (`login.passwordless`) alone. Each ceremony's
//! state goes to the browser sealed and comes back once (spent in the revocation store).

use super::{Pair, Sessions, SignIn};
use crate::auth::factors::challenge::Purpose;
use crate::auth::factors::passkeys::{user_handle, Ceremony, StoredPasskey};
use crate::auth::factors::FactorError;
use crate::auth::tokens::TokenError;
use crate::clock::now_secs;
use crate::error::GatewayError;
use crate::metrics::{LoginMethod, LoginOutcome};
use crate::store::users::User;
use base64::Engine as _;
use std::time::Duration;
use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableKey, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse,
};
use webauthn_rs_proto::ResidentKeyRequirement;

/// At most this many passkeys per account.
const MAX_PASSKEYS: usize = 16;

fn off() -> GatewayError {
    GatewayError::NotFound
}

fn factor_failed(e: FactorError) -> GatewayError {
    tracing::error!(error = %e, "passkeys could not be read");
    GatewayError::Unavailable("passkeys cannot be checked right now")
}

fn sealing_failed(e: impl std::fmt::Display) -> GatewayError {
    tracing::error!(error = %e, "cannot seal a passkey ceremony");
    GatewayError::Unavailable("passkeys cannot be used right now")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Sessions {
    /// Spends a ceremony's state (any replica, once).
    async fn spend_state(&self, state: &str) -> Result<(), GatewayError> {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, state.as_bytes());
        let fresh = self
            .store
            .mark_once(
                &format!("wa:{}", b64(&d.as_ref()[..16])),
                Duration::from_secs(crate::auth::factors::passkeys::CEREMONY_SECS + 60),
            )
            .await
            .map_err(|e| self.store_down(e))?;
        if fresh {
            Ok(())
        } else {
            Err(GatewayError::InvalidPasskey)
        }
    }

    /// The options for adding a passkey to `user`'s account, and the sealed state.
    pub async fn passkey_register_options(
        &self,
        user: &User,
    ) -> Result<(CreationChallengeResponse, String), GatewayError> {
        let rp = self.factors.webauthn().ok_or_else(off)?;
        let have = self.factors.passkeys_of(user).map_err(factor_failed)?;
        if have.len() >= MAX_PASSKEYS {
            return Err(GatewayError::Conflict(
                "this account has as many passkeys as it may",
            ));
        }
        let exclude = have.iter().map(|p| p.key.cred_id().clone()).collect();
        let (mut ccr, state) = rp
            .start_passkey_registration(
                user_handle(&user.name),
                &user.name,
                &user.name,
                Some(exclude),
            )
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        // A discoverable credential, so the passkey can also sign in without a name.
        if let Some(sel) = ccr.public_key.authenticator_selection.as_mut() {
            sel.resident_key = Some(ResidentKeyRequirement::Required);
            sel.require_resident_key = true;
        }
        let sealed = self
            .factors
            .seal_ceremony(
                &Ceremony::Register {
                    user: user.name.clone(),
                    state,
                },
                now_secs(),
            )
            .map_err(sealing_failed)?;
        Ok((ccr, sealed))
    }

    /// Adds the passkey the browser made for the ceremony `state` to `user`'s account.
    pub async fn passkey_register(
        &self,
        user: &str,
        state: &str,
        credential: &RegisterPublicKeyCredential,
        name: &str,
    ) -> Result<(), GatewayError> {
        let rp = self.factors.webauthn().ok_or_else(off)?;
        let Some(Ceremony::Register {
            user: for_user,
            state: reg,
        }) = self.factors.open_ceremony(state, now_secs())
        else {
            return Err(GatewayError::BadRequest(
                "the passkey set-up expired; start it again".to_owned(),
            ));
        };
        if for_user != user {
            return Err(GatewayError::InvalidPasskey);
        }
        self.spend_state(state).await?;
        let key = rp
            .finish_passkey_registration(credential, &reg)
            .map_err(|e| {
                tracing::info!(user, error = %e, "a passkey registration did not verify");
                GatewayError::InvalidPasskey
            })?;
        let record = self
            .user(user)
            .await?
            .ok_or(GatewayError::InvalidToken(TokenError::UserGone))?;
        let mut all = self.factors.passkeys_of(&record).map_err(factor_failed)?;
        let id = b64(key.cred_id().as_ref());
        if all.iter().any(|p| p.id == id) {
            return Err(GatewayError::Conflict("this passkey is registered already"));
        }
        let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
        let name = if name.trim().is_empty() {
            format!("Passkey {}", all.len() + 1)
        } else {
            name.trim().to_owned()
        };
        all.push(StoredPasskey {
            id,
            name,
            created: now_secs(),
            key,
        });
        self.store_passkeys(user, &all).await?;
        crate::audit!("factor_enrolled", user = %user, factor = "passkey");
        Ok(())
    }

    async fn store_passkeys(&self, user: &str, all: &[StoredPasskey]) -> Result<(), GatewayError> {
        let sealed: Vec<String> = all
            .iter()
            .map(|p| self.factors.seal_passkey(user, p))
            .collect::<Result<_, _>>()
            .map_err(sealing_failed)?;
        match self.users.set_passkeys(user, &sealed).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(GatewayError::InvalidToken(TokenError::UserGone)),
            Err(e) => {
                tracing::error!(user, error = %e, "cannot store passkeys");
                Err(GatewayError::Unavailable(
                    "the user store cannot be written",
                ))
            }
        }
    }

    /// Removes passkey `id` from `user`'s account: true when it was there.
    pub async fn remove_passkey(&self, user: &str, id: &str) -> Result<bool, GatewayError> {
        let record = self
            .user(user)
            .await?
            .ok_or(GatewayError::InvalidToken(TokenError::UserGone))?;
        let mut all = self.factors.passkeys_of(&record).map_err(factor_failed)?;
        let before = all.len();
        all.retain(|p| p.id != id);
        if all.len() == before {
            return Ok(false);
        }
        self.store_passkeys(user, &all).await?;
        crate::audit!("factor_removed", user = %user, factor = "passkey");
        Ok(true)
    }

    /// Options for signing in with a passkey: the second step of `mfa_token`'s sign-in, or
    /// (None, `login.passwordless`) a passkey alone.
    pub async fn passkey_login_options(
        &self,
        mfa_token: Option<&str>,
    ) -> Result<(RequestChallengeResponse, String), GatewayError> {
        let rp = self.factors.webauthn().ok_or_else(off)?;
        let (rcr, ceremony) = match mfa_token {
            Some(t) => {
                let c = self.challenge(t, Purpose::Code)?;
                let user = self
                    .user(&c.sub)
                    .await?
                    .ok_or(GatewayError::InvalidToken(TokenError::UserGone))?;
                let keys: Vec<_> = self
                    .factors
                    .passkeys_of(&user)
                    .map_err(factor_failed)?
                    .into_iter()
                    .map(|p| p.key)
                    .collect();
                if keys.is_empty() {
                    return Err(GatewayError::InvalidPasskey);
                }
                let (rcr, state) = rp
                    .start_passkey_authentication(&keys)
                    .map_err(|e| GatewayError::Internal(e.to_string()))?;
                (
                    rcr,
                    Ceremony::Second {
                        user: c.sub,
                        jti: c.jti,
                        state,
                    },
                )
            }
            None if self.factors.passwordless() => {
                let (mut rcr, state) = rp
                    .start_discoverable_authentication()
                    .map_err(|e| GatewayError::Internal(e.to_string()))?;
                // A button's sign-in, not the autofill ("conditional") one.
                rcr.mediation = None;
                (rcr, Ceremony::Discover { state })
            }
            None => return Err(off()),
        };
        let sealed = self
            .factors
            .seal_ceremony(&ceremony, now_secs())
            .map_err(sealing_failed)?;
        Ok((rcr, sealed))
    }

    /// Finishes a passkey sign-in; the user and the session.
    pub async fn passkey_login(
        &self,
        state: &str,
        credential: &PublicKeyCredential,
        from: &SignIn<'_>,
    ) -> Result<(String, Pair), GatewayError> {
        let result = self.check_passkey(state, credential, from).await;
        self.metrics.login_by(
            LoginMethod::passkey,
            match &result {
                Ok(_) => LoginOutcome::ok,
                Err(GatewayError::InvalidPasskey) => LoginOutcome::invalid_code,
                Err(GatewayError::InvalidToken(_)) => LoginOutcome::invalid_token,
                Err(GatewayError::Unavailable(_)) => LoginOutcome::unavailable,
                Err(_) => LoginOutcome::error,
            },
        );
        result
    }

    async fn check_passkey(
        &self,
        state: &str,
        credential: &PublicKeyCredential,
        from: &SignIn<'_>,
    ) -> Result<(String, Pair), GatewayError> {
        let rp = self.factors.webauthn().ok_or_else(off)?;
        let ceremony = self
            .factors
            .open_ceremony(state, now_secs())
            .ok_or(GatewayError::InvalidToken(TokenError::Expired))?;
        self.spend_state(state).await?;
        let refused = |e: webauthn_rs::prelude::WebauthnError| {
            tracing::info!(error = %e, "a passkey sign-in did not verify");
            GatewayError::InvalidPasskey
        };
        let (user, mut keys, result, amr, jti) = match ceremony {
            Ceremony::Second { user, jti, state } => {
                let record = self
                    .user(&user)
                    .await?
                    .ok_or(GatewayError::InvalidToken(TokenError::UserGone))?;
                let keys = self.factors.passkeys_of(&record).map_err(factor_failed)?;
                let result = rp
                    .finish_passkey_authentication(credential, &state)
                    .map_err(refused)?;
                (record, keys, result, ["pwd", "hwk"], Some(jti))
            }
            Ceremony::Discover { state } => {
                let (handle, _) = rp
                    .identify_discoverable_authentication(credential)
                    .map_err(refused)?;
                let record = self
                    .user_by_handle(handle)
                    .await?
                    .ok_or(GatewayError::InvalidPasskey)?;
                let keys = self.factors.passkeys_of(&record).map_err(factor_failed)?;
                let discoverable: Vec<DiscoverableKey> =
                    keys.iter().map(|p| DiscoverableKey::from(&p.key)).collect();
                let result = rp
                    .finish_discoverable_authentication(credential, state, &discoverable)
                    .map_err(refused)?;
                (record, keys, result, ["hwk", "mfa"], None)
            }
            Ceremony::Register { .. } => return Err(GatewayError::InvalidPasskey),
        };
        if let Some(jti) = jti {
            // The mfa_token is spent with its first passkey, as with its first code.
            self.spend_challenge(&jti).await?;
        }
        // The authenticator's counter moves on with each use (a clone stays behind).
        let mut changed = false;
        for p in &mut keys {
            changed |= p.key.update_credential(&result) == Some(true);
        }
        if changed {
            if let Err(e) = self.store_passkeys(&user.name, &keys).await {
                tracing::warn!(user = %user.name, error = %e, "could not store a passkey's counter");
            }
        }
        let amr: Vec<String> = amr.iter().map(|m| (*m).to_owned()).collect();
        let pair = self.start_as_pub(&user, &amr, from).await?;
        tracing::info!(user = %user.name, "login with a passkey");
        Ok((user.name, pair))
    }

    /// The user whose WebAuthn user handle is `handle` (a scan of the user store).
    async fn user_by_handle(
        &self,
        handle: webauthn_rs::prelude::Uuid,
    ) -> Result<Option<User>, GatewayError> {
        let all = self.users.list().await.map_err(|e| {
            tracing::warn!(error = %e, "cannot list users");
            GatewayError::Unavailable("the user store is unavailable")
        })?;
        Ok(all
            .into_iter()
            .find(|u| !u.passkeys.is_empty() && user_handle(&u.name) == handle))
    }
}
