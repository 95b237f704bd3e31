//! The last access token verified on one connection, so that the next request of a
//! keep-alive client (which sends the same token again and again) skips the token's digest
//! and the cache lookup: a comparison of the token's bytes instead of SHA-256 over them
//! (0.3 us on a CPU with SHA extensions, more without) and a shard's lock.
//!
//! What a remembered token is still checked for on every request: that it is byte for byte
//! the one verified (compared in constant time: a connection may carry several users'
//! requests, behind a proxy), that these `Tokens` verified it (a reload with other keys makes
//! new `Tokens`, and a remembered token from the old ones is not used), and its expiry; the
//! revocation check follows as for every token. Only access tokens are remembered.

use super::Claims;
use std::sync::atomic::{AtomicU64, Ordering};

/// Tells one `Tokens` from another (a reload makes new ones, maybe with other keys).
pub(super) fn next_owner() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The last access token verified on a connection.
#[derive(Default)]
pub struct LastToken {
    /// The `Tokens` that verified it (0: nothing remembered).
    owner: u64,
    /// Its text; the buffer is kept for the next one.
    token: Vec<u8>,
    claims: Option<Claims>,
}

impl LastToken {
    /// The claims of `token` if it is the one remembered, by `owner`, and not expired at
    /// `now` (with `leeway`).
    pub(super) fn recall(&self, owner: u64, token: &str, now: u64, leeway: u64) -> Option<Claims> {
        if self.owner != owner {
            return None;
        }
        let claims = self.claims.as_ref()?;
        if !constant_time_eq(&self.token, token.as_bytes()) {
            return None;
        }
        (claims.exp.saturating_add(leeway) >= now).then(|| claims.clone())
    }

    /// Remembers `token`, just verified by `owner`, in place of the last one.
    pub(super) fn remember(&mut self, owner: u64, token: &str, claims: &Claims) {
        self.owner = owner;
        self.token.clear();
        self.token.extend_from_slice(token.as_bytes());
        self.claims = Some(claims.clone());
    }

    /// Forgets the token (its buffer too).
    pub fn forget(&mut self) {
        *self = LastToken::default();
    }
}

/// Where a caller keeps the `LastToken` of the connection a request came on (the gateway:
/// in the connection's memo). `with_last` runs `f` on it, or does nothing when it is not at
/// hand (another request of the same HTTP/2 connection holds it): the token is then verified
/// through the cache as usual.
pub trait TokenMemo: Sync {
    fn with_last(&self, f: &mut dyn FnMut(&mut LastToken));
}

/// No connection to remember on (the gateway's own endpoints): every token is looked up.
pub struct NoMemo;

impl TokenMemo for NoMemo {
    fn with_last(&self, _: &mut dyn FnMut(&mut LastToken)) {}
}

/// Compares without an early exit, so timing tells nothing about how much matched (the
/// remembered token may be another user's, on a connection a proxy shares).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, exp: u64) -> Claims {
        Claims::machine(sub, "sid", vec!["user".to_owned()], Some(exp))
    }

    #[test]
    fn only_the_same_token_of_the_same_tokens_unexpired_is_recalled() {
        let mut last = LastToken::default();
        assert!(last.recall(0, "", 0, 0).is_none(), "nothing remembered");
        last.remember(7, "aaaa.bbbb.cccc", &claims("alice", 100));
        let got = last
            .recall(7, "aaaa.bbbb.cccc", 100, 0)
            .map(|c| c.sub().to_owned());
        assert_eq!(got.as_deref(), Some("alice"));
        // Another `Tokens` (a reload), one byte off, a prefix, a longer text.
        assert!(last.recall(8, "aaaa.bbbb.cccc", 100, 0).is_none());
        assert!(last.recall(7, "aaaa.bbbb.cccd", 100, 0).is_none());
        assert!(last.recall(7, "aaaa.bbbb.ccc", 100, 0).is_none());
        assert!(last.recall(7, "aaaa.bbbb.cccc.", 100, 0).is_none());
        // Expiry, with the leeway.
        assert!(last.recall(7, "aaaa.bbbb.cccc", 101, 0).is_none());
        assert!(last.recall(7, "aaaa.bbbb.cccc", 105, 5).is_some());
        assert!(last.recall(7, "aaaa.bbbb.cccc", 106, 5).is_none());
        // The next token takes its place.
        last.remember(7, "dddd.eeee.ffff", &claims("bob", 100));
        assert!(last.recall(7, "aaaa.bbbb.cccc", 50, 0).is_none());
        let got = last
            .recall(7, "dddd.eeee.ffff", 50, 0)
            .map(|c| c.sub().to_owned());
        assert_eq!(got.as_deref(), Some("bob"));
        last.forget();
        assert!(last.recall(7, "dddd.eeee.ffff", 50, 0).is_none());
        assert_eq!(last.token.capacity(), 0, "forget frees the buffer");
    }

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"xbc"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
