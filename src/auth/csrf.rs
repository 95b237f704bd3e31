//! CSRF for cookie sessions: a cookie-authenticated unsafe request must prove it came from
//! our pages, with the CSRF cookie's value as `X-CSRF-Token` or as the `csrf_token` field of
//! a urlencoded form (whose body is then read, bounded, and forwarded as read).

use super::cookies;
use super::form::{field, is_form, read_limited, BodyLimits};
use crate::body::{full, Body};
use crate::error::GatewayError;
use http::{Method, Request};
use hyper::body::Incoming;

/// Methods that change nothing, so need no CSRF proof.
pub fn is_safe_method(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Passes the request on (with its body, read or not) when it carries the CSRF value.
pub async fn check(
    req: Request<Incoming>,
    limits: BodyLimits,
) -> Result<Request<Body>, GatewayError> {
    let expected = cookies::get(req.headers(), cookies::CSRF)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or(GatewayError::Csrf)?;
    let header = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok());
    if header.is_some_and(|h| constant_time_eq(h, &expected)) {
        return Ok(req.map(Body::Incoming));
    }
    if header.is_some() || !is_form(req.headers()) {
        return Err(GatewayError::Csrf);
    }
    let (parts, body) = req.into_parts();
    let bytes = read_limited(body, limits).await?;
    if !field(&bytes, "csrf_token").is_some_and(|f| constant_time_eq(&f, &expected)) {
        return Err(GatewayError::Csrf);
    }
    Ok(Request::from_parts(parts, full(bytes)))
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
}
