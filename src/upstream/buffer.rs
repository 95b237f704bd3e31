//! Buffering against slow clients (what nginx does for app servers with few workers): a
//! request body up to `buffer_request_body` is read whole before an upstream connection is
//! taken; up to `buffer_response` of an answer is read as fast as the upstream sends it, so
//! its connection goes back to the pool while a slow client is still reading. All of it is
//! bounded by one memory budget (`server.max_buffered`); past it, bodies stream as before and
//! the overflow is counted.

use crate::body::{Body, BodyError, Gapped};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The memory budget, in KiB permits.
#[derive(Clone)]
pub struct Budget {
    permits: Arc<Semaphore>,
    overflows: prometheus_client::metrics::counter::Counter,
}

fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

impl Budget {
    pub fn new(max_bytes: u64, overflows: prometheus_client::metrics::counter::Counter) -> Budget {
        let permits = usize::try_from(max_bytes / 1024)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Budget {
            permits: Arc::new(Semaphore::new(permits)),
            overflows,
        }
    }

    /// `bytes` of the budget, or None (counted) when it is spent: the body then streams.
    pub fn take(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let permit = self.permits.clone().try_acquire_many_owned(kib(bytes)).ok();
        if permit.is_none() {
            self.overflows.inc();
        }
        permit
    }
}

/// What reading up to a limit found.
pub enum Read {
    /// The whole body.
    Whole(Bytes),
    /// More than the limit: what was read, and the rest.
    Partial(Bytes, Incoming),
}

/// Reads `body` until it ends or more than `limit` bytes have come; every gap between two
/// frames is bounded by `gap` (then `Stalled`).
pub async fn read_up_to(
    mut body: Incoming,
    limit: u64,
    gap: Option<Duration>,
) -> Result<Read, BodyError> {
    let mut buf = BytesMut::new();
    loop {
        let next = match gap {
            Some(g) => tokio::time::timeout(g, body.frame())
                .await
                .map_err(|_| BodyError::Stalled)?,
            None => body.frame().await,
        };
        let Some(frame) = next else {
            return Ok(Read::Whole(buf.freeze()));
        };
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
        }
        if buf.len() as u64 > limit {
            return Ok(Read::Partial(buf.freeze(), body));
        }
    }
}

/// Whether a request carries a body at all (most do not: nothing to buffer or watch).
pub fn has_body(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// A client's request body, made ready for the upstream: read whole when it fits
/// `limit` and the budget (a stall is 408 before any upstream sees it); else streamed with
/// every gap bounded, so a stall cuts the upstream request short instead of completing it.
pub async fn request_body(
    req: http::Request<Body>,
    limit: u64,
    gap: Duration,
    budget: &Budget,
) -> Result<http::Request<Body>, BodyError> {
    let (mut parts, body) = req.into_parts();
    let Body::Incoming(incoming) = body else {
        return Ok(http::Request::from_parts(parts, body));
    };
    // Most requests have no body, and hyper knows (no header lookups for them).
    if http_body::Body::is_end_stream(&incoming) || !has_body(&parts.headers) {
        return Ok(http::Request::from_parts(parts, Body::Incoming(incoming)));
    }
    let declared = http_body::Body::size_hint(&incoming).exact();
    let permit = match limit {
        0 => None,
        _ if declared.is_some_and(|n| n > limit) => None,
        _ => budget.take(declared.unwrap_or(limit)),
    };
    let Some(permit) = permit else {
        let gapped = Body::Gapped(Box::new(Gapped::new(incoming, gap)));
        return Ok(http::Request::from_parts(parts, gapped));
    };
    let body = match read_up_to(incoming, limit, Some(gap)).await? {
        Read::Whole(bytes) => {
            // Whole now: sent with its length (the client's chunking was hop-by-hop).
            parts.headers.remove(http::header::TRANSFER_ENCODING);
            parts.headers.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(bytes.len()),
            );
            Body::Held(Some(bytes), Some(permit))
        }
        Read::Partial(head, rest) => Body::Chain(
            Some(head),
            Box::new(Body::Gapped(Box::new(Gapped::new(rest, gap)))),
            Some(permit),
        ),
    };
    Ok(http::Request::from_parts(parts, body))
}
