//! Request ids: kept from the client when sane, else a per-process random prefix and a
//! counter (unique, cheap: no RNG call per request).

use crate::ids::{random_id, RngError};
use http::{HeaderMap, HeaderValue};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct RequestIds {
    prefix: String,
    counter: AtomicU64,
    /// W3C trace context for requests that come without one: a per-process random half of
    /// each trace id and span id, and a counter for the other half.
    trace_prefix: u64,
    span_mask: u64,
    traces: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Result<RequestIds, RngError> {
        let [a, b]: [u64; 2] = {
            let bytes: [u8; 16] = crate::ids::random_bytes()?;
            let (x, y) = bytes.split_at(8);
            [
                u64::from_le_bytes(x.try_into().unwrap_or_default()),
                u64::from_le_bytes(y.try_into().unwrap_or_default()),
            ]
        };
        Ok(RequestIds {
            prefix: random_id()?,
            counter: AtomicU64::new(0),
            trace_prefix: a | 1,
            span_mask: b,
            traces: AtomicU64::new(0),
        })
    }

    /// The client's `X-Request-Id` when it is short printable ASCII, else a new one.
    pub fn for_request(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(id) = headers.get("x-request-id").filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(u8::is_ascii_graphic)
        }) {
            return id.clone();
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // The random id's base64url alphabet and hex digits: always a valid header value.
        HeaderValue::try_from(numbered_id(&self.prefix, n))
            .unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

impl RequestIds {
    /// The `traceparent` the upstream gets: None when the client's is valid (it goes on as it
    /// is), else a new trace (version 00, sampled).
    pub fn traceparent_for(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let mut given = headers.get_all("traceparent").iter();
        if let (Some(v), None) = (given.next(), given.next()) {
            if valid_traceparent(v.as_bytes()) {
                return None;
            }
        }
        let n = self.traces.fetch_add(1, Ordering::Relaxed);
        let span = (n ^ self.span_mask) | 1;
        let mut t = String::with_capacity(55);
        t.push_str("00-");
        push_hex(&mut t, self.trace_prefix);
        push_hex(&mut t, n);
        t.push('-');
        push_hex(&mut t, span);
        t.push_str("-01");
        HeaderValue::try_from(t).ok()
    }
}

fn push_hex(out: &mut String, v: u64) {
    for shift in (0..16).rev() {
        out.push(char::from(
            b"0123456789abcdef"[((v >> (shift * 4)) & 0xf) as usize],
        ));
    }
}

/// W3C Trace Context: `00-<32 hex>-<16 hex>-<2 hex>`, lower-case, ids not all zero.
pub fn valid_traceparent(v: &[u8]) -> bool {
    let hex = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let nonzero = |s: &[u8]| s.iter().any(|b| *b != b'0');
    v.len() == 55
        && v.get(..3) == Some(b"00-")
        && v.get(35) == Some(&b'-')
        && v.get(52) == Some(&b'-')
        && v.get(3..35).is_some_and(|t| hex(t) && nonzero(t))
        && v.get(36..52).is_some_and(|p| hex(p) && nonzero(p))
        && v.get(53..55).is_some_and(hex)
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

    #[test]
    fn traceparent_is_kept_when_valid_and_made_when_not() {
        let ids = RequestIds::new().unwrap_or_else(|e| panic!("{e}"));
        let mut h = HeaderMap::new();
        let mine = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert("traceparent", HeaderValue::from_static(mine));
        assert_eq!(ids.traceparent_for(&h), None);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            h.insert("traceparent", HeaderValue::from_static(bad));
            let made = ids
                .traceparent_for(&h)
                .unwrap_or_else(|| panic!("{bad} kept"));
            assert!(valid_traceparent(made.as_bytes()), "{made:?}");
        }
        let a = ids.traceparent_for(&HeaderMap::new()).unwrap();
        let b = ids.traceparent_for(&HeaderMap::new()).unwrap();
        assert_ne!(a, b);
        assert!(valid_traceparent(a.as_bytes()));
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
