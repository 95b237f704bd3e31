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
//! end: `outage`), `readiness_changed` (`/readyz` flipped, with `ready` and `reason`);
//! second factors: `factor_enrolled`, `factor_removed`, `recovery_code_used`,
//! `recovery_codes_created`, `second_factor_failed`, `password_ok_second_factor_next`.
//!
//! A lockout under a password spray would be a line per refused attempt: `lockout` is written
//! for the first refusal of a user or address, then at most once a minute per key as
//! `lockout_repeated` with the count of refusals since (`Repeats`).

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

/// What a repeated event should say: the first in full, then a count at most once per
/// `every` per key. Bounded: past `MAX_KEYS` keys the oldest period starts over.
pub struct Repeats {
    every: std::time::Duration,
    seen: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u64)>>,
}

/// What to write for one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Say {
    /// The first of its key (or the first after a quiet `every`): the event itself.
    First,
    /// `every` has passed: this many occurrences since the last line (this one included).
    Count(u64),
    /// Counted, not written.
    Quiet,
}

const MAX_KEYS: usize = 10_000;

impl Repeats {
    pub fn new(every: std::time::Duration) -> Repeats {
        Repeats {
            every,
            seen: Default::default(),
        }
    }

    pub fn occurred(&self, key: &str) -> Say {
        self.occurred_at(key, std::time::Instant::now())
    }

    fn occurred_at(&self, key: &str, now: std::time::Instant) -> Say {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= MAX_KEYS && !seen.contains_key(key) {
            let every = self.every;
            seen.retain(|_, (at, _)| now.duration_since(*at) < every);
            if seen.len() >= MAX_KEYS {
                seen.clear();
            }
        }
        match seen.get_mut(key) {
            None => {
                seen.insert(key.to_owned(), (now, 0));
                Say::First
            }
            Some((at, n)) => {
                *n += 1;
                if now.duration_since(*at) < self.every {
                    return Say::Quiet;
                }
                let count = *n;
                *at = now;
                *n = 0;
                Say::Count(count)
            }
        }
    }
}

/// `audit!("login_ok", user = %name, ip = %ip)`: an info event on the audit target.
#[macro_export]
macro_rules! audit {
    ($event:literal $(, $($field:tt)*)?) => {
        ::tracing::info!(target: "audit", event = $event $(, $($field)*)?)
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_repeated_event_is_written_once_then_counted() {
        let r = Repeats::new(Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(r.occurred_at("ip:1", t), Say::First);
        for i in 1..100 {
            assert_eq!(
                r.occurred_at("ip:1", t + Duration::from_millis(i)),
                Say::Quiet
            );
        }
        assert_eq!(r.occurred_at("ip:2", t), Say::First, "keys are apart");
        assert_eq!(
            r.occurred_at("ip:1", t + Duration::from_secs(61)),
            Say::Count(100)
        );
        assert_eq!(
            r.occurred_at("ip:1", t + Duration::from_secs(62)),
            Say::Quiet
        );
    }
}
