//! Refreshing a browser session from its refresh cookie, on the fly, while serving a request;
//! and sharing one such refresh among the requests of one session that arrive together.
//!
//! Tabs loading at once present the same expired session together: the first request rotates,
//! the others wait for it and get its result. What is shared, and for how long, is bounded:
//! - nothing is kept for a token that does not verify (signature, claims, type): a client
//!   sending junk cookies costs no memory (a map keyed by what clients send was a DoS);
//! - entries are keyed by the session id of a verified token and hold its `jti`; a different
//!   token of the same session does not share (it goes through rotation and reuse detection);
//! - a finished result is shared for `refresh_reuse_grace` (zero: only with requests already
//!   waiting for it in this process), and every request that takes a shared result re-checks
//!   the session against the store, so a logout in between ends it at once;
//! - the map holds at most `MAX_SHARED` sessions; past that a refresh simply is not shared.

use super::Sessions;
use crate::auth::cookies;
use crate::auth::tokens::TokenType;
use crate::auth::Identity;
use crate::error::GatewayError;
use http::HeaderMap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A cookie refresh's result: the caller's new identity and the `Set-Cookie` headers.
type Refreshed = Result<(Identity, HeaderMap), GatewayError>;
type Cell = Arc<tokio::sync::OnceCell<Refreshed>>;

/// At most this many sessions are shared at once (each entry is a few hundred bytes).
pub(super) const MAX_SHARED: usize = 4096;

struct Entry {
    sub: String,
    /// The refresh token's `jti`: only the same token shares.
    jti: String,
    /// Set when the refresh finished: shared until then plus the grace.
    done: Option<Instant>,
    cell: Cell,
}

/// Cookie refreshes in flight, or finished within the reuse grace, by session id.
#[derive(Default)]
pub(super) struct Sharing {
    map: Mutex<HashMap<String, Entry>>,
}

/// What a request does with a refresh: run it, wait for another's, or run it alone.
enum Role {
    Leader(Cell),
    Follower(Cell),
    Alone,
}

impl Sharing {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn join(&self, sid: &str, sub: &str, jti: &str, grace: Duration) -> Role {
        let mut map = self.lock();
        let live = |e: &Entry| e.done.is_none_or(|d| d.elapsed() <= grace);
        if let Some(e) = map.get(sid) {
            if live(e) {
                return if e.jti == jti {
                    Role::Follower(e.cell.clone())
                } else {
                    Role::Alone
                };
            }
            map.remove(sid);
        }
        if map.len() >= MAX_SHARED {
            map.retain(|_, e| live(e));
            if map.len() >= MAX_SHARED {
                return Role::Alone;
            }
        }
        let cell = Cell::default();
        map.insert(
            sid.to_owned(),
            Entry {
                sub: sub.to_owned(),
                jti: jti.to_owned(),
                done: None,
                cell: cell.clone(),
            },
        );
        Role::Leader(cell)
    }

    /// The leader's refresh finished: keep it for the grace, or drop it now.
    fn finish(&self, sid: &str, jti: &str, grace: Duration) {
        let mut map = self.lock();
        if grace.is_zero() {
            if map.get(sid).is_some_and(|e| e.jti == jti) {
                map.remove(sid);
            }
        } else if let Some(e) = map.get_mut(sid).filter(|e| e.jti == jti) {
            e.done = Some(Instant::now());
        }
    }

    /// Drops what is shared for one session of `sub`, or (no `sid`) for all of them.
    pub(super) fn forget(&self, sub: &str, sid: Option<&str>) {
        let mut map = self.lock();
        match sid {
            Some(sid) => {
                map.remove(sid);
            }
            None => map.retain(|_, e| e.sub != sub),
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Sessions {
    /// A browser whose access cookie expired (or was dropped at its Max-Age) but whose refresh
    /// cookie is valid: rotate on the fly. Returns the caller's new identity and the
    /// `Set-Cookie` headers for the response; the CSRF cookie keeps its value so open pages
    /// keep working. See the module head for what is shared with parallel requests.
    pub async fn refresh_cookie(
        &self,
        headers: &HeaderMap,
        secure: bool,
    ) -> Result<(Identity, HeaderMap), GatewayError> {
        let token = cookies::get(headers, cookies::names(secure).refresh)
            .ok_or(GatewayError::MissingToken)?;
        // Verified before anything is kept for it.
        let claims = self
            .tokens
            .verify(token, TokenType::Refresh)
            .map_err(GatewayError::InvalidToken)?;
        let grace = self.policy.reuse_grace;
        match self
            .sharing
            .join(claims.sid(), claims.sub(), claims.jti(), grace)
        {
            Role::Alone => self.refresh_cookie_once(token, secure).await,
            Role::Leader(cell) => {
                let result = cell
                    .get_or_init(|| self.refresh_cookie_once(token, secure))
                    .await
                    .clone();
                self.sharing.finish(claims.sid(), claims.jti(), grace);
                result
            }
            Role::Follower(cell) => {
                let (identity, set) = cell
                    .get_or_init(|| self.refresh_cookie_once(token, secure))
                    .await
                    .clone()?;
                // The session may have ended since the refresh: ask the store again.
                let c = &identity.claims;
                self.check_revocation(c.sid(), c.sub(), c.iat).await?;
                Ok((identity, set))
            }
        }
    }

    async fn refresh_cookie_once(&self, token: &str, secure: bool) -> Refreshed {
        let pair = self.refresh(token).await?;
        let mut set = HeaderMap::new();
        cookies::set_session(&mut set, &pair.cookies(), secure);
        let identity = Identity {
            claims: pair.access.claims.clone(),
            via_cookie: true,
            key: None,
        };
        Ok((identity, set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(5);

    #[test]
    fn only_the_same_token_shares_and_only_while_it_may() {
        let s = Sharing::default();
        assert!(matches!(s.join("sid", "u", "j1", GRACE), Role::Leader(_)));
        assert!(matches!(s.join("sid", "u", "j1", GRACE), Role::Follower(_)));
        // Another token of the same session goes through rotation on its own.
        assert!(matches!(s.join("sid", "u", "j0", GRACE), Role::Alone));
        s.finish("sid", "j1", GRACE);
        assert!(matches!(s.join("sid", "u", "j1", GRACE), Role::Follower(_)));
        s.forget("u", None);
        assert_eq!(s.len(), 0, "a logout drops what was shared");
    }

    #[test]
    fn without_a_grace_a_finished_refresh_is_not_shared() {
        let s = Sharing::default();
        assert!(matches!(
            s.join("sid", "u", "j1", Duration::ZERO),
            Role::Leader(_)
        ));
        s.finish("sid", "j1", Duration::ZERO);
        assert_eq!(s.len(), 0);
        assert!(matches!(
            s.join("sid", "u", "j1", Duration::ZERO),
            Role::Leader(_)
        ));
    }

    #[test]
    fn the_map_is_bounded() {
        let s = Sharing::default();
        for i in 0..MAX_SHARED + 100 {
            let _ = s.join(&format!("sid{i}"), "u", "j", GRACE);
        }
        assert_eq!(s.len(), MAX_SHARED);
        assert!(matches!(s.join("one-more", "u", "j", GRACE), Role::Alone));
    }
}
