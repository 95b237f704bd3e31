//! `authgate users totp NAME [--reset]` and `authgate users recovery-codes NAME`: an
//! administrator provisions (or removes) a user's second factor in the user store. The URI
//! and the codes are printed once; the store keeps the sealed secret and the codes' hashes.

use anyhow::{bail, Context, Result};
use authgate::auth::factors::{recovery, totp, Factors};
use authgate::config::{Config, SecondFactor};
use authgate::store::users::UserStore;

fn factors(config: &Config) -> Factors {
    Factors::from_config(config, b"cli: no mfa tokens here")
}

fn warn_if_off(config: &Config) {
    if config.login.second_factor == SecondFactor::Off {
        eprintln!("note: login.second_factor is \"off\": the gateway will not ask for this factor until it is \"optional\" or \"required\"");
    }
}

/// Enrols a new TOTP secret for `name` and prints its `otpauth://` URI; with `reset`,
/// removes the factor (and the recovery codes) instead.
pub async fn totp_cmd(config: &Config, users: &UserStore, name: &str, reset: bool) -> Result<()> {
    let Some(user) = users.get(name).await? else {
        bail!("no user {name:?}");
    };
    if reset {
        if !users.set_totp(name, None).await? || !users.set_recovery_codes(name, &[]).await? {
            bail!("no user {name:?}");
        }
        println!("removed {name}'s authenticator app and recovery codes");
        return Ok(());
    }
    if user.totp.is_some() {
        bail!("{name} has an authenticator app already: `authgate users totp {name} --reset` removes it first");
    }
    let f = factors(config);
    let secret = totp::new_secret()?;
    let sealed = f
        .seal_totp(name, &secret)
        .context("cannot seal the secret under the factor key")?;
    let uri = totp::uri(&secret, f.issuer(), name).context("cannot make the otpauth URI")?;
    if !users.set_totp(name, Some(&sealed)).await? {
        bail!("no user {name:?}");
    }
    warn_if_off(config);
    println!("{uri}");
    eprintln!("{name}: TOTP enrolled. Give the URI above to the user once (as a QR code or typed, key {}); it is not shown again.", totp::secret_text(&secret));
    Ok(())
}

/// Ten new recovery codes for `name` (the old ones stop working), printed once.
pub async fn recovery_codes_cmd(config: &Config, users: &UserStore, name: &str) -> Result<()> {
    let codes = recovery::generate()?;
    let hashes: Vec<String> = codes
        .iter()
        .filter_map(|c| recovery::hash_typed(c))
        .collect();
    if !users.set_recovery_codes(name, &hashes).await? {
        bail!("no user {name:?}");
    }
    warn_if_off(config);
    for c in &codes {
        println!("{c}");
    }
    eprintln!(
        "{name}: {} new recovery codes (each works once; the old ones no longer do)",
        codes.len()
    );
    Ok(())
}
