//! A user's own view of their sessions: what is recorded when one starts (where from, how),
//! the list, and ending one of them or all the others. Ownership is checked against the
//! user's own list, so a sid of someone else's session ends nothing.

use super::{Principal, Sessions};
use crate::clock::now_secs;
use crate::error::GatewayError;
use crate::store::SessionInfo;
use std::net::IpAddr;

/// Where a sign-in came from, kept with its session for the sessions page.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignIn<'a> {
    pub ip: Option<IpAddr>,
    /// The `User-Agent` header as sent (it is cleaned before it is kept).
    pub user_agent: Option<&'a str>,
}

impl<'a> SignIn<'a> {
    /// A sign-in from `ip` with the request's `User-Agent`.
    pub fn of(ip: IpAddr, headers: &'a http::HeaderMap) -> SignIn<'a> {
        SignIn {
            ip: Some(ip),
            user_agent: headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        }
    }
}

/// How much of a user agent is kept.
const MAX_USER_AGENT: usize = 200;

/// Printable ASCII only (safe in a header, a log line or a terminal), at most
/// `MAX_USER_AGENT` characters.
pub fn clean_user_agent(ua: &str) -> String {
    ua.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(MAX_USER_AGENT)
        .collect()
}

/// How the session signed in: `password`, or `oidc:<provider>`.
pub fn method_of(who: &Principal<'_>) -> String {
    match who.via.idp {
        None => "password".to_owned(),
        Some(idp) => format!("oidc:{idp}"),
    }
}

impl Sessions {
    /// The record kept for a session starting now as `sid` at `iat`.
    pub(super) fn session_info(
        &self,
        who: &Principal<'_>,
        from: &SignIn<'_>,
        sid: &str,
        iat: u64,
    ) -> SessionInfo {
        SessionInfo {
            sid: sid.to_owned(),
            started: iat,
            last_refresh: None,
            ip: from.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            user_agent: from.user_agent.map(clean_user_agent).unwrap_or_default(),
            method: method_of(who),
            expires: now_secs() + self.policy.revocation_ttl().as_secs(),
        }
    }

    /// Notes a refresh (the page's "last active"); a store that fails here fails nothing.
    pub(super) async fn note_refresh(&self, sub: &str, sid: &str) {
        if let Err(e) = self.store.touch_session(sub, sid, now_secs()).await {
            self.metrics.store_errors.inc();
            tracing::warn!(error = %e, "could not note a session's refresh");
        }
    }

    /// The user's live sessions, newest first.
    pub async fn list(&self, sub: &str) -> Result<Vec<SessionInfo>, GatewayError> {
        self.store
            .sessions_of(sub)
            .await
            .map_err(|e| self.store_down(e))
    }

    /// Ends session `sid` if it is one of `sub`'s live sessions; false when it is not.
    pub async fn end_own(&self, sub: &str, sid: &str) -> Result<bool, GatewayError> {
        let own = self.list(sub).await?.iter().any(|s| s.sid == sid);
        if own {
            self.end_session(sub, sid)
                .await
                .map_err(|e| self.store_down(e))?;
            tracing::info!(user = %sub, "session revoked by its user");
        }
        Ok(own)
    }

    /// Ends every live session of `sub` but `current`; how many were ended.
    pub async fn end_others(&self, sub: &str, current: &str) -> Result<usize, GatewayError> {
        let mut ended = 0;
        for s in self.list(sub).await? {
            if s.sid != current {
                self.end_session(sub, &s.sid)
                    .await
                    .map_err(|e| self.store_down(e))?;
                ended += 1;
            }
        }
        tracing::info!(user = %sub, ended, "other sessions revoked by their user");
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_are_kept_printable_and_short() {
        assert_eq!(clean_user_agent("Mozilla/5.0 (X11)"), "Mozilla/5.0 (X11)");
        assert_eq!(clean_user_agent("a\r\nb\té"), "a??b??");
        assert_eq!(clean_user_agent(&"x".repeat(500)).len(), MAX_USER_AGENT);
    }
}
