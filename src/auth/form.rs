//! Reading the small bodies the gateway itself looks at (login and refresh JSON or forms, a
//! CSRF form field): whole, bounded, and with the contract's errors.

use crate::error::GatewayError;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};

/// How much of a body the gateway reads, and how long it waits for each piece.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// The longest gap between two reads (a trickled body is 408, not a held connection).
    pub read_gap: std::time::Duration,
}

/// Reads a whole request body within `limits`: 413 beyond the size, 408 when it stalls, 400
/// if it breaks off.
pub async fn read_limited(
    body: hyper::body::Incoming,
    limits: BodyLimits,
) -> Result<Bytes, GatewayError> {
    let mut body = Limited::new(body, limits.max_bytes);
    let mut out = bytes::BytesMut::new();
    loop {
        let frame = tokio::time::timeout(limits.read_gap, body.frame())
            .await
            .map_err(|_| GatewayError::RequestTimeout)?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                GatewayError::BodyTooLarge
            } else {
                GatewayError::BadRequest("could not read the request body".to_owned())
            }
        })?;
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// True for `application/x-www-form-urlencoded` bodies.
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
}

/// The first value of `name` in a urlencoded form or query string.
pub fn field(text: &[u8], name: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(text)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_decoded() {
        assert_eq!(field(b"a=1&next=%2Fx%3Fy", "next").as_deref(), Some("/x?y"));
        assert_eq!(field(b"a=1", "next"), None);
        assert_eq!(field(b"%ZZ=&&", "next"), None);
    }
}
