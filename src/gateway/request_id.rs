//! Request ids: kept from the client when sane, else a per-process random prefix and a
//! counter (unique, cheap: no RNG call per request). And the W3C trace context the upstream
//! gets: the caller's `traceparent` when valid; one of a higher version re-written as
//! version 00 with the caller's ids and sampled flag; else (an invalid one, or none while spans
//! are exported) a new trace whose ids are random (16 bytes of trace id, 8 of span id, from a
//! per-thread ChaCha seeded by the system RNG: unguessable and never repeating, without a
//! system call per request). A request without one, while no spans are exported, gets none:
//! nobody would read that trace, and making it cost every request an RNG draw and two
//! allocations.

use crate::ids::{random_id, RngError};
use http::{HeaderMap, HeaderValue};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
pub const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

pub struct RequestIds {
    prefix: String,
    counter: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Result<RequestIds, RngError> {
        Ok(RequestIds {
            prefix: random_id()?,
            counter: AtomicU64::new(0),
        })
    }

    /// The client's `X-Request-Id` when it is short printable ASCII, else a new one.
    pub fn for_request(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(id) = headers.get(X_REQUEST_ID).filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(u8::is_ascii_graphic)
        }) {
            return id.clone();
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // The random id's base64url alphabet and hex digits: always a valid header value.
        HeaderValue::try_from(numbered_id(&self.prefix, n))
            .unwrap_or_else(|_| HeaderValue::from_static("-"))
    }

    /// The `traceparent` the upstream gets instead of the client's: None when the client's
    /// is a valid version 00 one (it goes on as it is), or when it sent none and `start` is
    /// false (no spans are exported: nothing is added).
    pub fn traceparent_for(&self, headers: &HeaderMap, start: bool) -> Option<Traceparent> {
        let mut given = headers.get_all(TRACEPARENT).iter();
        let first = given.next();
        if first.is_none() && !start {
            return None;
        }
        if let (Some(v), None) = (first, given.next()) {
            if valid_traceparent(v.as_bytes()) {
                return None;
            }
            if let Some(v) = from_higher_version(v.as_bytes()) {
                return Some(Traceparent {
                    value: v,
                    new_trace: false,
                });
            }
        }
        // A trace starts here: this hop decides, and asks the upstream to record it.
        let (trace, span) = random_ids()?;
        let mut t = String::with_capacity(55);
        t.push_str("00-");
        push_hex(&mut t, &trace);
        t.push('-');
        push_hex(&mut t, &span);
        t.push_str("-01");
        HeaderValue::try_from(t).ok().map(|value| Traceparent {
            value,
            new_trace: true,
        })
    }
}

/// A `traceparent` for the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traceparent {
    pub value: HeaderValue,
    /// A new trace id: the client's `tracestate` (of another trace, or none) must not follow.
    pub new_trace: bool,
}

thread_local! {
    /// Seeded once per thread from the system RNG (aws-lc); ChaCha12 after that.
    static TRACE_RNG: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// 16 random bytes of trace id and 8 of span id, neither all zero (invalid in W3C). None only
/// when the system RNG cannot seed this thread's generator (then no trace is started).
fn random_ids() -> Option<([u8; 16], [u8; 8])> {
    TRACE_RNG.with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        if slot.is_none() {
            *slot = Some(StdRng::from_seed(crate::ids::random_bytes::<32>().ok()?));
        }
        let rng = slot.as_mut()?;
        let mut trace = [0u8; 16];
        let mut span = [0u8; 8];
        rng.fill_bytes(&mut trace);
        rng.fill_bytes(&mut span);
        // Probability 2^-128 and 2^-64; the spec forbids all zeros, so never send them.
        if trace == [0; 16] {
            trace[15] = 1;
        }
        if span == [0; 8] {
            span[7] = 1;
        }
        Some((trace, span))
    })
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
}

/// W3C Trace Context: `00-<32 hex>-<16 hex>-<2 hex>`, lower-case, ids not all zero.
pub fn valid_traceparent(v: &[u8]) -> bool {
    v.len() == 55 && v.get(..3) == Some(b"00-") && valid_fields(v)
}

/// The ids and flags after the version, in the version 00 layout.
fn valid_fields(v: &[u8]) -> bool {
    let hex = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let nonzero = |s: &[u8]| s.iter().any(|b| *b != b'0');
    v.get(2) == Some(&b'-')
        && v.get(35) == Some(&b'-')
        && v.get(52) == Some(&b'-')
        && v.get(3..35).is_some_and(|t| hex(t) && nonzero(t))
        && v.get(36..52).is_some_and(|p| hex(p) && nonzero(p))
        && v.get(53..55).is_some_and(hex)
}

/// W3C Trace Context, "Versioning of traceparent": a version above 00 (never `ff`) is read
/// for its trace id, parent id and only the sampled bit of its flags, when what follows them
/// is the end or a `-`; passed on as version 00 with the caller's sampling decision.
fn from_higher_version(v: &[u8]) -> Option<HeaderValue> {
    let version = v.get(..2)?;
    let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    if !version.iter().all(hex) || version == b"00" || version == b"ff" {
        return None;
    }
    if !valid_fields(v) || v.len() > 55 && v.get(55) != Some(&b'-') {
        return None;
    }
    let flags = v.get(53..55)?;
    let sampled = u8::from_str_radix(std::str::from_utf8(flags).ok()?, 16).ok()? & 1;
    let mut t = Vec::with_capacity(55);
    t.extend_from_slice(b"00");
    t.extend_from_slice(v.get(2..53)?);
    t.extend_from_slice(if sampled == 1 { b"01" } else { b"00" });
    HeaderValue::from_bytes(&t).ok()
}

/// `{prefix}-{n in lower-case hex}`, without the formatting machinery (once per request).
fn numbered_id(prefix: &str, n: u64) -> String {
    let mut id = String::with_capacity(prefix.len() + 17);
    id.push_str(prefix);
    id.push('-');
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        let nibble = (n >> (shift * 4)) & 0xf;
        id.push(char::from(b"0123456789abcdef"[nibble as usize]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_ids_are_prefix_dash_hex() {
        for n in [0, 1, 9, 10, 15, 16, 255, 4096, 0xdead_beef, u64::MAX] {
            assert_eq!(numbered_id("p", n), format!("p-{n:x}"));
        }
    }

    fn made(ids: &RequestIds, h: &HeaderMap) -> Traceparent {
        ids.traceparent_for(h, true)
            .unwrap_or_else(|| panic!("{h:?}: kept"))
    }

    #[test]
    fn traceparent_is_kept_when_valid_and_made_when_not() {
        let ids = RequestIds::new().unwrap_or_else(|e| panic!("{e}"));
        let mut h = HeaderMap::new();
        for mine in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Not sampled by the caller: that decision goes on too.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        ] {
            h.insert("traceparent", HeaderValue::from_static(mine));
            assert_eq!(ids.traceparent_for(&h, true), None);
        }
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "garbage",
        ] {
            h.insert("traceparent", HeaderValue::from_static(bad));
            let t = made(&ids, &h);
            assert!(t.new_trace, "{bad}");
            assert!(valid_traceparent(t.value.as_bytes()), "{t:?}");
            assert!(
                !t.value.as_bytes().starts_with(b"00-4bf92f"),
                "{bad}: {t:?}"
            );
        }
    }

    #[test]
    fn without_span_export_a_trace_is_started_only_for_an_invalid_one() {
        let ids = RequestIds::new().unwrap_or_else(|e| panic!("{e}"));
        let mut h = HeaderMap::new();
        assert_eq!(ids.traceparent_for(&h, false), None);
        assert!(made(&ids, &h).new_trace);
        h.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        let t = ids
            .traceparent_for(&h, false)
            .unwrap_or_else(|| panic!("an invalid one is replaced"));
        assert!(
            t.new_trace && valid_traceparent(t.value.as_bytes()),
            "{t:?}"
        );
    }

    #[test]
    fn a_higher_version_goes_on_as_00_with_the_callers_ids_and_sampled_bit() {
        let ids = RequestIds::new().unwrap_or_else(|e| panic!("{e}"));
        let mut h = HeaderMap::new();
        for (given, sent) in [
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-08-more-fields",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            ),
            (
                "02-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ] {
            h.insert("traceparent", HeaderValue::from_static(given));
            let t = made(&ids, &h);
            assert_eq!((t.value.to_str().ok(), t.new_trace), (Some(sent), false));
        }
    }

    #[test]
    fn new_trace_ids_are_random_and_never_repeat() {
        let ids = std::sync::Arc::new(RequestIds::new().unwrap_or_else(|e| panic!("{e}")));
        let per_thread = 5000;
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let ids = ids.clone();
                std::thread::spawn(move || {
                    (0..per_thread)
                        .map(|_| made(&ids, &HeaderMap::new()).value)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<HeaderValue> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_else(|_| panic!("thread")))
            .collect();
        let mut traces = std::collections::HashSet::new();
        let mut spans = std::collections::HashSet::new();
        // Each half of the trace id varies (no per-process prefix, no counter).
        let mut high = std::collections::HashSet::new();
        let mut low = std::collections::HashSet::new();
        for t in &all {
            let b = t.as_bytes();
            assert!(valid_traceparent(b), "{t:?}");
            assert_eq!(b.get(53..), Some(&b"01"[..]), "a new trace is sampled");
            traces.insert(b.get(3..35).map(<[u8]>::to_vec));
            spans.insert(b.get(36..52).map(<[u8]>::to_vec));
            high.insert(b.get(3..19).map(<[u8]>::to_vec));
            low.insert(b.get(19..35).map(<[u8]>::to_vec));
        }
        let n = 2 * per_thread;
        assert_eq!((traces.len(), spans.len()), (n, n));
        assert_eq!((high.len(), low.len()), (n, n));
    }

    #[test]
    fn sane_client_ids_are_kept_others_replaced() {
        let ids = RequestIds::new().unwrap_or_else(|e| panic!("{e}"));
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(ids.for_request(&h), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_ne!(ids.for_request(&h), "has space");
        assert_ne!(ids.for_request(&h), ids.for_request(&h));
    }
}
