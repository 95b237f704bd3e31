//! Revocations this process wrote or heard, as they happen: what open tunnels (WebSockets)
//! listen to, so a logout ends them at once instead of at their next re-check. Process-wide
//! (one store per process); a listener that hears about a session or user re-checks it with
//! the store before acting, so an event never closes anything by itself.

use std::sync::OnceLock;
use tokio::sync::broadcast;

/// What was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// One login session.
    Session(String),
    /// Every session of a user (a cut-off).
    User(String),
}

impl Revoked {
    /// Whether this may concern the session `sid` of `sub`.
    pub fn concerns(&self, sid: &str, sub: &str) -> bool {
        match self {
            Revoked::Session(s) => s == sid,
            Revoked::User(u) => u == sub,
        }
    }
}

fn bus() -> &'static broadcast::Sender<Revoked> {
    static BUS: OnceLock<broadcast::Sender<Revoked>> = OnceLock::new();
    // A slow listener that falls this far behind re-checks (it sees `Lagged`).
    BUS.get_or_init(|| broadcast::channel(1024).0)
}

/// Tells the listeners (none: nothing happens).
pub fn publish(event: Revoked) {
    let _ = bus().send(event);
}

/// Listens from now on.
pub fn subscribe() -> broadcast::Receiver<Revoked> {
    bus().subscribe()
}
