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

/// The boundary of a `multipart/form-data` body, if it is one.
pub fn multipart_boundary(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let (kind, params) = ct.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty() && b.len() <= 70)
    })
}

/// The value of the plain (non-file) field `name` of a `multipart/form-data` body.
pub fn multipart_field(body: &[u8], boundary: &str, name: &str) -> Option<String> {
    let delimiter = format!("--{boundary}");
    let text = body;
    let mut parts = split_bytes(text, delimiter.as_bytes()).into_iter().skip(1);
    let wanted = format!("name=\"{name}\"");
    parts.find_map(|part| {
        let part = part.strip_prefix(b"\r\n")?;
        let end = find(part, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&part[..end]).ok()?;
        let disposition = head
            .split("\r\n")
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
        let is_it = disposition.split(';').any(|p| p.trim() == wanted)
            && !disposition.contains("filename=");
        if !is_it {
            return None;
        }
        let value = &part[end + 4..];
        let value = value.strip_suffix(b"\r\n").unwrap_or(value);
        std::str::from_utf8(value).ok().map(str::to_owned)
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split_bytes<'a>(mut hay: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(at) = find(hay, sep) {
        out.push(&hay[..at]);
        hay = &hay[at + sep.len()..];
    }
    out.push(hay);
    out
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
mod multipart_tests {
    use super::*;

    #[test]
    fn the_token_field_of_a_multipart_form() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\ncsrf_token\r\n--XyZ\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\nT0KEN\r\n--XyZ--\r\n";
        assert_eq!(
            multipart_field(body, "XyZ", "csrf_token").as_deref(),
            Some("T0KEN")
        );
        assert_eq!(
            multipart_field(body, "XyZ", "title").as_deref(),
            Some("hello")
        );
        // A file part named like the field is not the field.
        assert_eq!(multipart_field(body, "XyZ", "file"), None);
        assert_eq!(multipart_field(b"garbage", "XyZ", "csrf_token"), None);
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("multipart/form-data; boundary=\"XyZ\""),
        );
        assert_eq!(multipart_boundary(&h).as_deref(), Some("XyZ"));
    }
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
