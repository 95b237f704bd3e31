//! The audit trail: one line per security event on the `audit` target (JSON with the other
//! logs, or a sink of its own: `log.audit`), each with `event` and what is known of who and
//! where: `user`, `ip` (the client, behind trusted proxies), `sid`, `user_agent`, `method`.
//! Never a token, a password or a key.
//!
//! Events: `login_ok`, `login_failed`, `lockout` (a throttled attempt), `lockout_cleared`
//! (`by = "operator"`: `POST /admin/unlock`, with `user` or `ip`), `logout`,
//! `logout_all`, `refresh_reuse` (the session was killed), `oidc_login_ok`, `oidc_login_refused`,
//! `backchannel_logout`, `key_refused`, `basic_failed`, `reload_ok`, `reload_failed`,
//! `users_changed` (cut-offs written at a reload), `session_revoked` (`by`: `user` from the
//! sessions page, `operator` on the admin listener), `other_sessions_revoked`, `store_down`
//! and `store_back` (the revocation store's outages, with `failed` and `down_for_s` at the
//! end: `outage`), `readiness_changed` (`/readyz` flipped, with `ready` and `reason`).

/// The target audit events are logged on.
pub const TARGET: &str = "audit";

/// A user agent as logged: at most 200 visible characters.
pub fn user_agent(headers: &http::HeaderMap) -> String {
    headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

/// `audit!("login_ok", user = %name, ip = %ip)`: an info event on the audit target.
#[macro_export]
macro_rules! audit {
    ($event:literal $(, $($field:tt)*)?) => {
        ::tracing::info!(target: "audit", event = $event $(, $($field)*)?)
    };
}
