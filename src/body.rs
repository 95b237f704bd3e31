//! The one body type of the request path, and small constructors for it.

use crate::error::GatewayError;
use crate::upstream::PooledBody;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Bodies the gateway sends either way: its own small ones, a client's or an upstream's
/// stream. An enum rather than a boxed trait object, so forwarding a request or answering
/// with a buffered body allocates nothing for the body itself.
pub enum Body {
    /// Nothing, or the rest of one buffer (taken by the first poll).
    Full(Option<Bytes>),
    /// A stream from a peer, as hyper read it.
    Incoming(Incoming),
    /// An upstream stream that gives its connection back to the pool at its end.
    Pooled(PooledBody),
}

pub fn full(data: impl Into<Bytes>) -> Body {
    let data = data.into();
    Body::Full((!data.is_empty()).then_some(data))
}

pub fn empty() -> Body {
    Body::Full(None)
}

impl From<Incoming> for Body {
    fn from(body: Incoming) -> Self {
        Body::Incoming(body)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Body::Incoming(b) => Pin::new(b).poll_frame(cx),
            Body::Pooled(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(data) => data.is_none(),
            Body::Incoming(b) => b.is_end_stream(),
            Body::Pooled(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Body::Incoming(b) => b.size_hint(),
            Body::Pooled(b) => b.size_hint(),
        }
    }
}

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body::Body as _;

    #[tokio::test]
    async fn full_and_empty_bodies_report_their_size_and_end() {
        let b = full("abc");
        assert_eq!(b.size_hint().exact(), Some(3));
        assert!(!b.is_end_stream());
        assert_eq!(&b.collect().await.unwrap().to_bytes()[..], b"abc");
        for b in [empty(), full("")] {
            assert_eq!(b.size_hint().exact(), Some(0));
            assert!(b.is_end_stream());
            assert!(b.collect().await.unwrap().to_bytes().is_empty());
        }
    }
}
