//! CSRF for cookie sessions: a cookie-authenticated unsafe request must prove it came from
//! our pages, with the session's CSRF value as `X-CSRF-Token` or as the `csrf_token` field of
//! a urlencoded or multipart form (whose body is then read, bounded, and forwarded as read).
//! This is the route's `csrf = "token"` mode; the default is the origin rule (`crate::origin`). The value is
//! bound to the session: an HMAC of its `sid` under a key derived from the signing key, so any
//! replica can check it without state, and a cookie planted by a sibling subdomain is worth
//! nothing (it is not compared with anything the client sends).

use super::form::{field, is_form, read_limited, BodyLimits};
use crate::body::{full, Body};
use crate::error::GatewayError;
use base64::Engine;
use http::{Method, Request};
use hyper::body::Incoming;

/// Methods that change nothing, so need no CSRF proof.
pub fn is_safe_method(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The key CSRF values are made with.
#[derive(Clone)]
pub struct CsrfKey(aws_lc_rs::hmac::Key);

impl CsrfKey {
    /// Derived from the signing key's secret material: stable across restarts and replicas
    /// that share the key, and unguessable without it.
    pub fn derive(secret: &[u8]) -> CsrfKey {
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &[b"authgate csrf v1\0".as_slice(), secret].concat(),
        );
        CsrfKey(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            digest.as_ref(),
        ))
    }

    /// The CSRF value of login session `sid`.
    pub fn token(&self, sid: &str) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.0, sid.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag.as_ref()[..24])
    }
}

/// Passes the request on (with its body, read or not) when it carries `expected`, the
/// session's CSRF value.
pub async fn check(
    req: Request<Incoming>,
    expected: &str,
    limits: BodyLimits,
) -> Result<Request<Body>, GatewayError> {
    let header = header_value(req.headers());
    if matches(header, expected) {
        return Ok(req.map(Body::Incoming));
    }
    let boundary = super::form::multipart_boundary(req.headers());
    if header.is_some() || !(is_form(req.headers()) || boundary.is_some()) {
        return Err(GatewayError::Csrf);
    }
    let (parts, body) = req.into_parts();
    let bytes = read_limited(body, limits).await?;
    let given = match &boundary {
        Some(b) => super::form::multipart_field(&bytes, b, "csrf_token"),
        None => field(&bytes, "csrf_token"),
    };
    if !matches(given.as_deref(), expected) {
        return Err(GatewayError::Csrf);
    }
    Ok(Request::from_parts(parts, full(bytes)))
}

/// The request's `X-CSRF-Token` header, if any.
pub fn header_value(headers: &http::HeaderMap) -> Option<&str> {
    headers.get("x-csrf-token").and_then(|v| v.to_str().ok())
}

/// `given` is the session's CSRF value.
pub fn matches(given: Option<&str>, expected: &str) -> bool {
    given.is_some_and(|g| constant_time_eq(g, expected))
}

/// Compares without an early exit, so timing tells nothing about how much matched.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
        assert!(constant_time_eq("", ""));
    }

    #[test]
    fn csrf_values_are_bound_to_the_session_and_the_key() {
        let k = CsrfKey::derive(b"key one");
        assert_eq!(k.token("sid-1"), k.token("sid-1"));
        assert_ne!(k.token("sid-1"), k.token("sid-2"));
        assert_ne!(k.token("sid-1"), CsrfKey::derive(b"key two").token("sid-1"));
        assert_eq!(k.token("s").len(), 32);
    }
}
