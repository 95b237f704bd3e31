//! Checks and views of the request head that decide nothing about auth: framing, size, the
//! Host, the target forwarded upstream, and the upgrade asked for.

use crate::error::GatewayError;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request};

/// The Host header, or the authority of an absolute-form or HTTP/2 request target.
pub fn request_host_of<B>(req: &Request<B>) -> Option<HeaderValue> {
    match req.headers().get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    }
}

/// The request target the upstream receives: the client's own when normalization changed
/// nothing (no copy), else the normalized path with the client's query.
pub fn forward_target(uri: &http::Uri, forward: &str) -> Result<PathAndQuery, GatewayError> {
    let unforwardable =
        || GatewayError::BadRequest("the request target cannot be forwarded".to_owned());
    match uri.path_and_query() {
        Some(pq) if pq.path() == forward => Ok(pq.clone()),
        _ => {
            let target = match uri.query() {
                Some(q) => format!("{forward}?{q}"),
                None => forward.to_owned(),
            };
            PathAndQuery::try_from(target).map_err(|_| unforwardable())
        }
    }
}

/// A WebSocket-style upgrade request's protocol (HTTP/1.1 only).
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    wants
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Ambiguous framing is refused even if the parser let it through: the upstream must never
/// see a body boundary that differs from ours.
pub fn check_framing(headers: &HeaderMap) -> Result<(), GatewayError> {
    let te = headers.contains_key(header::TRANSFER_ENCODING);
    let cls: Vec<&HeaderValue> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
    if te && !cls.is_empty() {
        return Err(GatewayError::BadRequest(
            "both Transfer-Encoding and Content-Length".to_owned(),
        ));
    }
    if cls.len() > 1 || cls.first().is_some_and(|v| v.as_bytes().contains(&b',')) {
        return Err(GatewayError::BadRequest(
            "more than one Content-Length".to_owned(),
        ));
    }
    Ok(())
}

pub fn check_head_size<B>(req: &Request<B>, max: usize) -> Result<(), GatewayError> {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if line + headers > max {
        return Err(GatewayError::HeadersTooLarge);
    }
    Ok(())
}
