//! Outages, reported without flooding the log: while the revocation store (or an upstream)
//! keeps failing, its first failure is logged in full, then at most one line every
//! `log.repeat_every` (default 60 s) says how many failed since the last line and for how
//! long it has been down; the first success after that logs that it answers again, with the
//! episode's count. For the store, the start and the end of an outage are also audit events
//! (`store_down`, `store_back`). Process-wide (kept in `Metrics`), so a reload in the middle
//! of an outage neither repeats its first line nor loses its end.
//!
//! Nothing here locks on the request path: a success costs one atomic load while all is well.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// `log.repeat_every` when not set.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(60);

/// Milliseconds since the first call, plus one: 0 stays free to mean "never".
fn now_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_millis())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// What a failure should say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The first failure of an outage: log it in full.
    First,
    /// `repeat_every` has passed since the last line: `failed` failures since it (this one
    /// included), down for `down_for`.
    Again { failed: u64, down_for: Duration },
    /// Counted, not logged.
    Quiet,
}

/// The end of an outage: how many calls failed in it, and how long it lasted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    pub failed: u64,
    pub down_for: Duration,
}

/// One thing that can be down (the store, an upstream).
#[derive(Debug)]
pub struct Episode {
    /// Shared with every episode of the same `Outages` (`log.repeat_every`, in ms).
    every_ms: Arc<AtomicU64>,
    /// When the outage began (`now_ms`); 0: up.
    down_since: AtomicU64,
    /// When the last line about it was written.
    last_said: AtomicU64,
    /// Failures since that line.
    unsaid: AtomicU64,
    /// Failures in this outage.
    failed: AtomicU64,
}

impl Episode {
    fn new(every_ms: Arc<AtomicU64>) -> Episode {
        Episode {
            every_ms,
            down_since: AtomicU64::new(0),
            last_said: AtomicU64::new(0),
            unsaid: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Counts a failure and says whether to log it.
    pub fn failed(&self) -> Report {
        let now = now_ms();
        self.failed.fetch_add(1, Ordering::Relaxed);
        if self
            .down_since
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.last_said.store(now, Ordering::Release);
            self.unsaid.store(0, Ordering::Release);
            return Report::First;
        }
        let last = self.last_said.load(Ordering::Acquire);
        let every = self.every_ms.load(Ordering::Relaxed);
        // One caller wins the line; the others count.
        if now.saturating_sub(last) >= every
            && self
                .last_said
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let since = self.down_since.load(Ordering::Acquire);
            return Report::Again {
                failed: self.unsaid.swap(0, Ordering::AcqRel) + 1,
                down_for: Duration::from_millis(now.saturating_sub(since)),
            };
        }
        self.unsaid.fetch_add(1, Ordering::Relaxed);
        Report::Quiet
    }

    /// A success: the end of the outage when there was one (once, to one caller).
    pub fn answered(&self) -> Option<Recovery> {
        if self.down_since.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let since = self.down_since.swap(0, Ordering::AcqRel);
        if since == 0 {
            return None;
        }
        self.unsaid.store(0, Ordering::Release);
        Some(Recovery {
            failed: self.failed.swap(0, Ordering::AcqRel),
            down_for: Duration::from_millis(now_ms().saturating_sub(since)),
        })
    }
}

/// Every outage the process reports.
#[derive(Debug)]
pub struct Outages {
    every_ms: Arc<AtomicU64>,
    store: Episode,
    upstreams: Mutex<HashMap<String, Arc<Episode>>>,
}

impl Default for Outages {
    fn default() -> Self {
        let every_ms = Arc::new(AtomicU64::new(millis(DEFAULT_EVERY)));
        Outages {
            store: Episode::new(every_ms.clone()),
            every_ms,
            upstreams: Mutex::default(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the gateway does while the store is down (`revocation.on_store_error`), for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhileDown {
    /// Refuses (503): logins, refreshes and, with `deny`, protected requests.
    FailClosed,
    /// `on_store_error = "allow"`: protected requests pass without a revocation check.
    Allowing,
}

impl Outages {
    /// `log.repeat_every` (at start and at each reload).
    pub fn set_every(&self, every: Duration) {
        self.every_ms.store(millis(every), Ordering::Relaxed);
    }

    /// The episode of the upstream with this name (the same one across reloads).
    pub fn upstream(&self, name: &str) -> Arc<Episode> {
        let mut map = self
            .upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(name.to_owned())
            .or_insert_with(|| Arc::new(Episode::new(self.every_ms.clone())))
            .clone()
    }

    /// A store call failed.
    pub fn store_failed(&self, error: &dyn Display, doing: WhileDown) {
        match (self.store.failed(), doing) {
            (Report::First, WhileDown::FailClosed) => {
                tracing::warn!(error = %error, "revocation store unavailable: failing closed (503) until it answers");
                crate::audit!("store_down", error = %error);
            }
            (Report::First, WhileDown::Allowing) => {
                tracing::error!(error = %error, "revocation store unavailable: ALLOWING protected requests without a revocation check (on_store_error = allow)");
                crate::audit!("store_down", error = %error, on_store_error = "allow");
            }
            (Report::Again { failed, down_for }, _) => tracing::warn!(
                error = %error,
                repeated = failed,
                down_for_s = down_for.as_secs(),
                "revocation store still unavailable"
            ),
            (Report::Quiet, _) => {}
        }
    }

    /// A store call succeeded.
    pub fn store_answered(&self) {
        if let Some(r) = self.store.answered() {
            tracing::info!(
                failed = r.failed,
                down_for_s = r.down_for.as_secs(),
                "revocation store answers again"
            );
            crate::audit!(
                "store_back",
                failed = r.failed,
                down_for_s = r.down_for.as_secs()
            );
        }
    }
}

/// An exchange with an upstream failed (its own fault, not the client's).
pub fn upstream_failed(episode: &Episode, upstream: &str, kind: &dyn std::fmt::Debug, error: &str) {
    match episode.failed() {
        Report::First => tracing::warn!(
            upstream = %upstream,
            kind = ?kind,
            error = %error,
            "upstream request failed"
        ),
        Report::Again { failed, down_for } => tracing::warn!(
            upstream = %upstream,
            kind = ?kind,
            error = %error,
            repeated = failed,
            down_for_s = down_for.as_secs(),
            "upstream requests still failing"
        ),
        Report::Quiet => {}
    }
}

/// An upstream answered.
pub fn upstream_answered(episode: &Episode, upstream: &str) {
    if let Some(r) = episode.answered() {
        tracing::info!(
            upstream = %upstream,
            failed = r.failed,
            down_for_s = r.down_for.as_secs(),
            "upstream answers again"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_said_once_then_counted_then_ended() {
        let o = Outages::default();
        o.set_every(Duration::from_secs(3600));
        let e = o.upstream("app");
        assert_eq!(e.answered(), None, "nothing was down");
        assert_eq!(e.failed(), Report::First);
        for _ in 0..9 {
            assert_eq!(e.failed(), Report::Quiet);
        }
        let r = e.answered().unwrap_or_else(|| panic!("no recovery"));
        assert_eq!(r.failed, 10);
        assert_eq!(e.answered(), None, "the end is reported once");
        assert_eq!(e.failed(), Report::First, "a new outage starts over");
    }

    #[test]
    fn after_repeat_every_a_failure_says_how_many_since_the_last_line() {
        let o = Outages::default();
        let e = o.upstream("app");
        o.set_every(Duration::from_secs(3600));
        assert_eq!(e.failed(), Report::First);
        assert_eq!(e.failed(), Report::Quiet);
        assert_eq!(e.failed(), Report::Quiet);
        // Zero: every failure is due a line (what a long enough pause does).
        o.set_every(Duration::ZERO);
        match e.failed() {
            Report::Again { failed, .. } => assert_eq!(failed, 3),
            other => panic!("{other:?}"),
        }
        match e.failed() {
            Report::Again { failed, .. } => assert_eq!(failed, 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(e.answered().map(|r| r.failed), Some(5));
    }

    #[test]
    fn one_episode_per_upstream_name_across_lookups() {
        let o = Outages::default();
        assert!(Arc::ptr_eq(&o.upstream("a"), &o.upstream("a")));
        assert!(!Arc::ptr_eq(&o.upstream("a"), &o.upstream("b")));
    }
}
