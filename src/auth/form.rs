//! Reading the small bodies the gateway itself looks at (login and refresh JSON or forms, a
//! CSRF form field): whole, bounded, and with the contract's errors.

use crate::error::GatewayError;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};

/// Reads a whole request body of at most `limit` bytes: 413 beyond it, 400 if it breaks off.
pub async fn read_limited(
    body: hyper::body::Incoming,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let collected = Limited::new(body, limit).collect().await.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            GatewayError::BodyTooLarge
        } else {
            GatewayError::BadRequest("could not read the request body".to_owned())
        }
    })?;
    Ok(collected.to_bytes())
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
