//! Second factors of the gateway's own password users: TOTP with recovery codes, the
//! policy (`login.second_factor`), the factor key their secrets are sealed under, and the
//! `mfa_token` that carries a right password to the second step. What a login does with
//! them is `sessions::second_factor`'s; the pages are `account`'s.

pub mod challenge;
pub mod crypto;
pub mod passkeys;
pub mod qr;
pub mod recovery;
pub mod totp;

use crate::config::{Config, SecondFactor, UsersBackend};
use crate::store::users::User;
use challenge::ChallengeKey;
use crypto::{FactorKey, FactorKeyError, Unseal};
use std::path::PathBuf;
use std::sync::OnceLock;

/// What a user whose password was right must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: the session starts.
    Nothing,
    /// Give a code of their factor.
    Code,
    /// Enrol a first factor (`required`, none yet).
    Enrol,
}

pub struct Factors {
    policy: SecondFactor,
    key_path: Option<PathBuf>,
    key: OnceLock<FactorKey>,
    challenges: ChallengeKey,
    /// The issuer authenticator apps show (`login.title`).
    issuer: String,
    /// Passkeys' relying party (`login.webauthn`; None: no passkeys).
    webauthn: Option<webauthn_rs::Webauthn>,
    /// `login.passwordless`.
    passwordless: bool,
}

/// Where the factor key is: `login.factor_key_file`, else `factor.key` beside a users file.
pub fn key_path(config: &Config) -> Option<PathBuf> {
    config
        .login
        .factor_key_file
        .clone()
        .or_else(|| match &config.users.backend {
            UsersBackend::File(users) => Some(users.with_file_name("factor.key")),
            UsersBackend::Redis => None,
        })
}

/// The context a user's TOTP secret is sealed for.
fn totp_context(user: &str) -> String {
    format!("totp\0{user}")
}

impl Factors {
    pub fn from_config(config: &Config, signing_secret: &[u8]) -> Factors {
        let issuer = if config.login.title == "Sign in" {
            "authgate"
        } else {
            &config.login.title
        };
        let webauthn = config.login.webauthn.as_ref().and_then(|w| {
            passkeys::relying_party(w)
                .inspect_err(|e| tracing::error!(error = %e, "login.webauthn: passkeys are off"))
                .ok()
        });
        let mut f = Factors::new(
            config.login.second_factor,
            key_path(config),
            issuer,
            signing_secret,
        );
        f.passwordless = config.login.passwordless && webauthn.is_some();
        f.webauthn = webauthn;
        f
    }

    pub fn new(
        policy: SecondFactor,
        key_path: Option<PathBuf>,
        issuer: &str,
        signing_secret: &[u8],
    ) -> Factors {
        Factors {
            policy,
            key_path,
            key: OnceLock::new(),
            challenges: ChallengeKey::derive(signing_secret),
            issuer: issuer.to_owned(),
            webauthn: None,
            passwordless: false,
        }
    }

    /// Passkeys' relying party, when passkeys are on.
    pub fn webauthn(&self) -> Option<&webauthn_rs::Webauthn> {
        self.webauthn
            .as_ref()
            .filter(|_| self.policy != SecondFactor::Off)
    }

    /// "Sign in with a passkey" (no password) is on.
    pub fn passwordless(&self) -> bool {
        self.passwordless && self.webauthn().is_some()
    }

    /// `p` sealed for `user`'s record.
    pub fn seal_passkey(
        &self,
        user: &str,
        p: &passkeys::StoredPasskey,
    ) -> Result<String, FactorKeyError> {
        let json = serde_json::to_vec(p).map_err(|_| FactorKeyError::Rng)?;
        self.key(true)?
            .seal(&passkeys::passkey_context(user), &json)
    }

    /// `user`'s passkeys (a record that does not open is an error: the operator's to fix).
    pub fn passkeys_of(&self, user: &User) -> Result<Vec<passkeys::StoredPasskey>, FactorError> {
        if user.passkeys.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.key(false).map_err(FactorError::Key)?;
        user.passkeys
            .iter()
            .map(|sealed| {
                let json = key
                    .open(&passkeys::passkey_context(&user.name), sealed)
                    .map_err(FactorError::Unseal)?;
                serde_json::from_slice(&json).map_err(|_| FactorError::Unseal(Unseal))
            })
            .collect()
    }

    /// A ceremony's state, sealed for the browser to hand back within `CEREMONY_SECS`.
    pub fn seal_ceremony(
        &self,
        c: &passkeys::Ceremony,
        now: u64,
    ) -> Result<String, FactorKeyError> {
        let exp = now + passkeys::CEREMONY_SECS;
        let json = serde_json::to_vec(c).map_err(|_| FactorKeyError::Rng)?;
        let sealed = self
            .key(true)?
            .seal(&passkeys::ceremony_context(exp), &json)?;
        Ok(format!("{exp}.{sealed}"))
    }

    /// The ceremony a sealed state holds, if it is ours and not expired at `now`.
    pub fn open_ceremony(&self, state: &str, now: u64) -> Option<passkeys::Ceremony> {
        let (exp, sealed) = state.split_once('.')?;
        let exp: u64 = exp.parse().ok()?;
        if exp <= now {
            return None;
        }
        let json = self
            .key(false)
            .ok()?
            .open(&passkeys::ceremony_context(exp), sealed)
            .ok()?;
        serde_json::from_slice(&json).ok()
    }

    pub fn policy(&self) -> SecondFactor {
        self.policy
    }

    pub fn challenges(&self) -> &ChallengeKey {
        &self.challenges
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// What `user`, whose password was right, must do next.
    pub fn need(&self, user: &User) -> Need {
        let usable =
            user.totp.is_some() || (!user.passkeys.is_empty() && self.webauthn().is_some());
        match self.policy {
            SecondFactor::Off => Need::Nothing,
            _ if usable => Need::Code,
            SecondFactor::Optional => Need::Nothing,
            SecondFactor::Required => Need::Enrol,
        }
    }

    /// The methods `user` may give (`methods` of the JSON answer).
    pub fn methods(&self, user: &User) -> Vec<&'static str> {
        let mut m = Vec::new();
        if user.totp.is_some() {
            m.push("totp");
        }
        if !user.passkeys.is_empty() && self.webauthn().is_some() {
            m.push("webauthn");
        }
        m
    }

    /// The factor key, read once (with `create`, a missing file is made: enrolment).
    pub fn key(&self, create: bool) -> Result<&FactorKey, FactorKeyError> {
        if let Some(k) = self.key.get() {
            return Ok(k);
        }
        let path = self
            .key_path
            .as_ref()
            .ok_or(FactorKeyError::NotConfigured)?;
        let k = FactorKey::load(path, create)?;
        Ok(self.key.get_or_init(|| k))
    }

    /// `secret` sealed for `user`.
    pub fn seal_totp(&self, user: &str, secret: &[u8]) -> Result<String, FactorKeyError> {
        self.key(true)?.seal(&totp_context(user), secret)
    }

    /// The TOTP secret of `user` (None: no TOTP factor).
    pub fn totp_secret(&self, user: &User) -> Result<Option<Vec<u8>>, FactorError> {
        let Some(sealed) = &user.totp else {
            return Ok(None);
        };
        let key = self.key(false).map_err(FactorError::Key)?;
        key.open(&totp_context(&user.name), sealed)
            .map(Some)
            .map_err(FactorError::Unseal)
    }

    /// A pending enrolment's secret, sealed into the enrolment form until `exp`.
    pub fn seal_pending(
        &self,
        user: &str,
        secret: &[u8],
        exp: u64,
    ) -> Result<String, FactorKeyError> {
        let sealed = self.key(true)?.seal(&pending_context(user, exp), secret)?;
        Ok(format!("{exp}.{sealed}"))
    }

    /// The secret of a pending enrolment, if it is `user`'s and not expired at `now`.
    pub fn open_pending(&self, user: &str, pending: &str, now: u64) -> Option<Vec<u8>> {
        let (exp, sealed) = pending.split_once('.')?;
        let exp: u64 = exp.parse().ok()?;
        if exp <= now {
            return None;
        }
        self.key(false)
            .ok()?
            .open(&pending_context(user, exp), sealed)
            .ok()
    }
}

fn pending_context(user: &str, exp: u64) -> String {
    format!("totp-pending\0{user}\0{exp}")
}

/// A user's factor could not be checked (the operator's to fix: logged, a 503).
#[derive(Debug, thiserror::Error)]
pub enum FactorError {
    #[error(transparent)]
    Key(FactorKeyError),
    #[error(transparent)]
    Unseal(Unseal),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factors(policy: &str, dir: &std::path::Path) -> Factors {
        let text = format!(
            "[tokens]\nalgorithm = \"EdDSA\"\nsigning_key_file = \"k.pem\"\n[users]\nfile = \"{}/users.toml\"\n[login]\nsecond_factor = \"{policy}\"\n[[routes]]\npath = \"/**\"\n[forward_auth]\nonly = true\n",
            dir.display()
        );
        let config = Config::from_str(&dir.join("a.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
        Factors::from_config(&config, b"secret")
    }

    #[test]
    fn the_policy_decides_who_gives_a_code() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let plain = User::default();
        let enrolled = User {
            totp: Some("v1.x".into()),
            ..User::default()
        };
        let f = factors("optional", dir.path());
        assert_eq!(
            (f.need(&plain), f.need(&enrolled)),
            (Need::Nothing, Need::Code)
        );
        assert_eq!(f.methods(&enrolled), ["totp"]);
        let f = factors("required", dir.path());
        assert_eq!(
            (f.need(&plain), f.need(&enrolled)),
            (Need::Enrol, Need::Code)
        );
        let f = factors("off", dir.path());
        assert_eq!(
            (f.need(&plain), f.need(&enrolled)),
            (Need::Nothing, Need::Nothing)
        );
    }

    #[test]
    fn secrets_are_sealed_beside_the_users_file_and_pending_ones_expire() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let f = factors("optional", dir.path());
        let sealed = f
            .seal_totp("alice", b"0123456789")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(dir.path().join("factor.key").exists());
        let alice = User {
            name: "alice".into(),
            totp: Some(sealed),
            ..User::default()
        };
        let secret = f.totp_secret(&alice).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(secret.as_deref(), Some(&b"0123456789"[..]));
        let pending = f.seal_pending("alice", b"s", 100).unwrap_or_default();
        assert_eq!(
            f.open_pending("alice", &pending, 99).as_deref(),
            Some(&b"s"[..])
        );
        assert_eq!(f.open_pending("alice", &pending, 100), None, "expired");
        assert_eq!(f.open_pending("bob", &pending, 99), None, "another user's");
        let later = pending.replacen("100.", "999.", 1);
        assert_eq!(
            f.open_pending("alice", &later, 99),
            None,
            "its expiry is sealed in"
        );
    }
}
