//! How long an upgraded tunnel (a WebSocket) may live: until its session is revoked (logout,
//! logout-everywhere, `authgate revoke`, refresh reuse, a removed user), noticed at once when
//! this process wrote or heard the revocation and otherwise at the next re-check every
//! `server.tunnel_recheck`; or until its session has expired (the access token, and for a
//! cookie session the refresh cookie too).

use crate::auth::tokens::{Claims, TokenType};
use crate::auth::{cookies, Auth};
use crate::clock::now_secs;
use crate::error::GatewayError;
use crate::store::events;
use http::HeaderMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Resolves when the tunnel must end.
pub type Guard = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The guard of a tunnel opened by `claims` (from a cookie when `via_cookie`).
pub fn guard(
    auth: Arc<Auth>,
    claims: Claims,
    headers: &HeaderMap,
    via_cookie: bool,
    secure: bool,
    every: Duration,
) -> Guard {
    // A cookie session lives on through its refresh cookie (the page refreshes it).
    let refresh_end = via_cookie
        .then(|| cookies::get(headers, cookies::names(secure).refresh))
        .flatten()
        .and_then(|t| auth.sessions().tokens().verify(t, TokenType::Refresh).ok())
        .filter(|r| r.sid() == claims.sid())
        .map(|r| r.exp);
    let end = claims.exp.max(refresh_end.unwrap_or(0));
    Box::pin(watch(auth, claims, end, every))
}

async fn watch(auth: Arc<Auth>, claims: Claims, end: u64, every: Duration) {
    let mut heard = events::subscribe();
    loop {
        let left = Duration::from_secs(end.saturating_sub(now_secs()));
        let wait = every.min(left).max(Duration::from_millis(100));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            event = heard.recv() => match event {
                Ok(e) if !e.concerns(claims.sid(), claims.sub()) => continue,
                // Ours, or we fell behind (`Lagged`) or the bus is gone: look at the store.
                _ => {}
            }
        }
        if now_secs() >= end {
            tracing::info!(user = %claims.sub(), "session expired: closing its tunnel");
            return;
        }
        // (The store being down is no reason: a blip must not cut every socket; look again
        // next time.)
        if let Err(GatewayError::InvalidToken(why)) = auth
            .sessions()
            .check_revocation(claims.sid(), claims.sub(), claims.iat)
            .await
        {
            tracing::info!(user = %claims.sub(), reason = %why, "session ended: closing its tunnel");
            return;
        }
    }
}
