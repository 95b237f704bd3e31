//! `[login]`: the throttle, the pages' wording and paths, the password form, identity
//! providers and the second-factor policy.

use super::build::{local_path, one_of, resolve, span};
use super::error::Reporter;
use super::raw::{RawLogin, RawWebauthn, Text};
use super::{LoginConfig, SecondFactor, UsersBackend, UsersConfig, WebauthnConfig};
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

pub(super) fn build_login(
    rep: &mut Reporter,
    base: &Path,
    raw: &RawLogin,
    users: Option<&UsersConfig>,
) -> LoginConfig {
    let second_factor = one_of(
        rep,
        &raw.second_factor,
        "login.second_factor",
        SecondFactor::Optional,
        &[
            ("off", SecondFactor::Off),
            ("optional", SecondFactor::Optional),
            ("required", SecondFactor::Required),
        ],
    );
    let factor_key_file = raw
        .factor_key_file
        .as_ref()
        .map(|f| resolve(base, &f.get_ref().0));
    let redis_users = users.is_some_and(|u| u.backend == UsersBackend::Redis);
    if second_factor == SecondFactor::Required && redis_users && factor_key_file.is_none() {
        rep.error(
            raw.second_factor.as_ref().and_then(span),
            "login.second_factor",
            "second factors of a Redis user store are encrypted under login.factor_key_file, which is not set",
            Some("set login.factor_key_file to a file of 32 random bytes every replica mounts (e.g. `head -c 32 /dev/urandom > factor.key`)".to_owned()),
        );
    }
    let login = LoginConfig {
        max_failures_per_user: raw.max_failures_per_user.unwrap_or(5),
        max_failures_per_ip: raw.max_failures_per_ip.unwrap_or(50),
        failure_window: raw.failure_window.map_or(Duration::from_secs(900), |d| d.0),
        max_concurrent_hashes: raw.max_concurrent_hashes.unwrap_or(0),
        max_hash_memory: raw.max_hash_memory.map_or(64 << 20, |s| s.0),
        hash_memory_idle: raw
            .hash_memory_idle
            .map_or(Duration::from_secs(60), |d| d.0),
        title: raw
            .title
            .as_ref()
            .map_or_else(|| "Sign in".to_owned(), |t| t.0.clone()),
        default_next: local_path(rep, &raw.default_next, "login.default_next", "/"),
        after_logout: local_path(rep, &raw.after_logout, "login.after_logout", "/auth/login"),
        password: raw.password.as_ref().is_none_or(|p| *p.get_ref()),
        oidc: super::build_oidc::build_oidc(rep, base, &raw.oidc),
        second_factor,
        factor_key_file,
        webauthn: raw
            .webauthn
            .as_ref()
            .and_then(|w| webauthn(rep, w, &raw.title)),
        passwordless: raw.passwordless.as_ref().is_some_and(|p| *p.get_ref()),
    };
    if login.passwordless && login.webauthn.is_none() {
        rep.error(
            raw.passwordless.as_ref().and_then(span),
            "login.passwordless",
            "passwordless sign-in uses passkeys, and login.webauthn is not set",
            Some("add login.webauthn = { rp_id = \"example.com\", origins = [\"https://app.example.com\"] }".to_owned()),
        );
    }
    if login.passwordless && login.second_factor == SecondFactor::Off {
        rep.error(
            raw.passwordless.as_ref().and_then(span),
            "login.passwordless",
            "passkeys are second factors, and login.second_factor = \"off\" turns them off",
            Some(
                "set login.second_factor = \"optional\" (the default) or remove login.passwordless"
                    .to_owned(),
            ),
        );
    }
    if !login.password && raw.oidc.is_empty() {
        rep.error(
            raw.password.as_ref().and_then(span),
            "login.password",
            "with the password form off and no [[login.oidc]] provider, no one can sign in",
            Some("add a [[login.oidc]] provider, or remove login.password = false".to_owned()),
        );
    }
    login
}

/// `login.webauthn`: the relying party must build as `serve` will build it.
fn webauthn(
    rep: &mut Reporter,
    w: &Spanned<RawWebauthn>,
    title: &Option<Text>,
) -> Option<WebauthnConfig> {
    let raw = w.get_ref();
    let rp_id = raw.rp_id.get_ref().0.clone();
    let origins: Vec<String> = raw.origins.get_ref().iter().map(|o| o.0.clone()).collect();
    let cfg = WebauthnConfig {
        rp_id,
        origins,
        rp_name: raw
            .rp_name
            .as_ref()
            .or(title.as_ref())
            .map_or_else(|| "authgate".to_owned(), |t| t.0.clone()),
    };
    if cfg.origins.is_empty() {
        rep.error(
            span(&raw.origins),
            "login.webauthn.origins",
            "no origin: passkeys need the origin the pages are served from",
            Some("origins = [\"https://app.example.com\"]".to_owned()),
        );
        return None;
    }
    for o in &cfg.origins {
        if let Err(e) = origin_fits(o, &cfg.rp_id) {
            rep.error(
                span(&raw.origins),
                "login.webauthn.origins",
                e,
                Some("origins are absolute https:// URLs (http:// only for localhost) on rp_id or a subdomain of it: rp_id = \"example.com\", origins = [\"https://app.example.com\"]".to_owned()),
            );
            return None;
        }
    }
    Some(cfg)
}

/// An origin passkeys of `rp_id` can be used at: https (http for localhost), no path, and a
/// host that is `rp_id` or a subdomain of it.
fn origin_fits(origin: &str, rp_id: &str) -> Result<(), String> {
    let uri: http::Uri = origin
        .parse()
        .map_err(|_| format!("{origin:?} is not a URL"))?;
    let host = uri.host().unwrap_or_default().to_ascii_lowercase();
    let rp = rp_id.to_ascii_lowercase();
    let scheme_ok = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => host == "localhost",
        _ => false,
    };
    if !scheme_ok {
        return Err(format!(
            "{origin:?}: passkeys work only on https:// origins (and http://localhost)"
        ));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(format!("{origin:?}: an origin has no path"));
    }
    if rp.is_empty() || rp.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "rp_id {rp_id:?}: it must be a domain name (browsers refuse IP addresses)"
        ));
    }
    if host != rp && !host.ends_with(&format!(".{rp}")) {
        return Err(format!(
            "{origin:?} is not on rp_id {rp_id:?} or a subdomain of it"
        ));
    }
    Ok(())
}
