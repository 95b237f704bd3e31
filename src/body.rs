//! The one body type of the request path, and small constructors for it.

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Why a body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// The client sent nothing for `server.body_read_timeout`: the stream is cut, so the
    /// upstream sees an incomplete request, never one that looks whole.
    #[error("the request body stalled")]
    Stalled,
    /// An upstream's answer read by the gateway itself (the plain exchange) broke off or
    /// was malformed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A body read by the gateway's own code (an upstream's answer from the plain exchange).
pub type Streamed = Box<dyn http_body::Body<Data = Bytes, Error = BodyError> + Send + Sync + Unpin>;

/// A peer's stream whose every gap between two frames is bounded (`body_read_timeout`).
pub struct Gapped {
    body: Incoming,
    gap: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Gapped {
    pub fn new(body: Incoming, gap: Duration) -> Gapped {
        Gapped {
            body,
            gap,
            timer: Box::pin(tokio::time::sleep(gap)),
        }
    }
}

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
    /// A client's stream with bounded gaps (`Gapped`).
    Gapped(Box<Gapped>),
    /// A stream the gateway reads itself.
    Streamed(Streamed),
    /// What was buffered first, then the rest; the memory budget the buffer holds is given
    /// back when the body is dropped.
    Chain(
        Option<Bytes>,
        Box<Body>,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ),
    /// A whole buffered body holding its share of the memory budget.
    Held(Option<Bytes>, Option<tokio::sync::OwnedSemaphorePermit>),
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

type Polled = Poll<Option<Result<Frame<Bytes>, BodyError>>>;

/// A held (budgeted) body is written in pieces of this size.
const HELD_PIECE: usize = 64 * 1024;

fn hyper_frame(p: Poll<Option<Result<Frame<Bytes>, hyper::Error>>>) -> Polled {
    p.map(|o| o.map(|r| r.map_err(BodyError::Hyper)))
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        match self.get_mut() {
            Body::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Body::Held(data, permit) => {
                // In pieces, the budget held until the last is taken: the writer asks for the
                // next only when the client has read enough, so a slow reader's answer counts
                // against `max_buffered` until it has (nearly) been sent, not only until it
                // was handed over whole.
                let piece = match data {
                    Some(d) if d.len() > HELD_PIECE => Some(d.split_to(HELD_PIECE)),
                    _ => {
                        *permit = None;
                        data.take()
                    }
                };
                Poll::Ready(piece.map(|d| Ok(Frame::data(d))))
            }
            Body::Incoming(b) => hyper_frame(Pin::new(b).poll_frame(cx)),
            Body::Tracked(b, hook) => {
                let polled = Pin::new(&mut *b).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => fire(hook),
                    Poll::Ready(Some(Ok(_))) if b.is_end_stream() => fire(hook),
                    // A half-read response cannot be reused: drop the hook uncalled.
                    Poll::Ready(Some(Err(_))) => *hook = None,
                    _ => {}
                }
                hyper_frame(polled)
            }
            Body::Gapped(g) => {
                let g = &mut **g;
                match Pin::new(&mut g.body).poll_frame(cx) {
                    Poll::Ready(frame) => {
                        let deadline = tokio::time::Instant::now() + g.gap;
                        g.timer.as_mut().reset(deadline);
                        Poll::Ready(frame.map(|r| r.map_err(BodyError::Hyper)))
                    }
                    Poll::Pending => match g.timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Stalled))),
                        Poll::Pending => Poll::Pending,
                    },
                }
            }
            Body::Chain(head, rest, _) => match head.take() {
                Some(d) => Poll::Ready(Some(Ok(Frame::data(d)))),
                None => Pin::new(&mut **rest).poll_frame(cx),
            },
            Body::Streamed(s) => Pin::new(&mut **s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(data) | Body::Held(data, _) => data.is_none(),
            Body::Incoming(b) | Body::Tracked(b, _) => b.is_end_stream(),
            Body::Gapped(g) => g.body.is_end_stream(),
            Body::Chain(head, rest, _) => head.is_none() && rest.is_end_stream(),
            Body::Streamed(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(data) | Body::Held(data, _) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Body::Incoming(b) | Body::Tracked(b, _) => b.size_hint(),
            Body::Gapped(g) => g.body.size_hint(),
            Body::Streamed(s) => s.size_hint(),
            Body::Chain(head, rest, _) => {
                let n = head.as_ref().map_or(0, |d| d.len() as u64);
                let r = rest.size_hint();
                let mut h = SizeHint::new();
                h.set_lower(r.lower() + n);
                if let Some(u) = r.upper() {
                    h.set_upper(u + n);
                }
                h
            }
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

    /// A held body goes out in pieces and keeps its share of the budget until the last one
    /// is taken (regression: handed over whole, its budget came back while a slow client
    /// still had the whole answer to read).
    #[tokio::test]
    async fn a_held_body_keeps_its_budget_until_its_last_piece() {
        let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(1000));
        let permit = budget.clone().try_acquire_many_owned(200).ok();
        let mut b = Body::Held(Some(Bytes::from(vec![7u8; 200 * 1024])), permit);
        let mut pieces = 0;
        let mut total = 0;
        while let Some(frame) = http_body_util::BodyExt::frame(&mut b).await {
            let data = frame.unwrap().into_data().unwrap();
            total += data.len();
            pieces += 1;
            if total < 200 * 1024 {
                assert_eq!(budget.available_permits(), 800, "given back before the end");
            }
        }
        assert_eq!((total, pieces), (200 * 1024, 4));
        assert_eq!(budget.available_permits(), 1000);
    }

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
