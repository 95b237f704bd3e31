//! `[login]`: the throttle, the pages' wording and paths, the password form, identity
//! providers and the second-factor policy.

use super::build::{local_path, one_of, resolve, span};
use super::error::Reporter;
use super::raw::RawLogin;
use super::{LoginConfig, SecondFactor, UsersBackend, UsersConfig};
use std::path::Path;
use std::time::Duration;

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
    };
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
