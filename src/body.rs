//! The one body type of the request path, and small constructors for it.

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Called once when a tracked stream has been read to its end (an upstream connection goes
/// back to its pool). Dropped uncalled when the stream fails or is abandoned.
pub struct EndHook(Box<dyn FnOnce() + Send + Sync>);

impl EndHook {
    pub fn new(f: impl FnOnce() + Send + Sync + 'static) -> Self {
        EndHook(Box::new(f))
    }
}

/// Bodies the gateway sends either way: its own small ones, a client's or an upstream's
/// stream. An enum rather than a boxed trait object, so forwarding a request or answering
/// with a buffered body allocates nothing for the body itself.
pub enum Body {
    /// Nothing, or the rest of one buffer (taken by the first poll).
    Full(Option<Bytes>),
    /// A stream from a peer, as hyper read it.
    Incoming(Incoming),
    /// A stream whose end is reported to its hook (an upstream's, whose connection goes back
    /// to the pool then). Boxing the hook costs one allocation, only for streamed bodies.
    Tracked(Incoming, Option<EndHook>),
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
            Body::Tracked(b, hook) => {
                let polled = Pin::new(&mut *b).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => fire(hook),
                    Poll::Ready(Some(Ok(_))) if b.is_end_stream() => fire(hook),
                    // A half-read response cannot be reused: drop the hook uncalled.
                    Poll::Ready(Some(Err(_))) => *hook = None,
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(data) => data.is_none(),
            Body::Incoming(b) | Body::Tracked(b, _) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Body::Incoming(b) | Body::Tracked(b, _) => b.size_hint(),
        }
    }
}

fn fire(hook: &mut Option<EndHook>) {
    if let Some(EndHook(f)) = hook.take() {
        f();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

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
