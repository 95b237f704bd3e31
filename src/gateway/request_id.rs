//! Request ids: kept from the client when sane, else a per-process random prefix and a
//! counter (unique, cheap: no RNG call per request).

use crate::ids::{random_id, RngError};
use http::{HeaderMap, HeaderValue};
use std::sync::atomic::{AtomicU64, Ordering};

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
