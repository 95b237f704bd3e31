//! An answer's body streamed as the client reads it.

use super::chunked::{self, Step};
use super::{Conn, Framing, PlainError};
use crate::body::BodyError;
use crate::upstream::pool::Pool;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// A streamed body is read in pieces up to this size.
const STREAM_READ: usize = 32 * 1024;

enum Decode {
    Length(u64),
    Chunked(chunked::Decoder),
    Close,
}

/// An answer's body read as the client takes it; the connection goes back to the pool at
/// its end (when the answer allowed), and is closed when the body is dropped before.
pub struct Stream {
    conn: Option<Conn>,
    decode: Decode,
    keep_alive: bool,
    pool: Arc<Pool>,
}

impl Stream {
    pub fn new(mut conn: Conn, framing: Framing, keep_alive: bool, pool: Arc<Pool>) -> Stream {
        conn.unpend();
        let decode = match framing {
            Framing::Empty => Decode::Length(0),
            Framing::Length(n) => Decode::Length(n),
            Framing::Chunked => Decode::Chunked(chunked::Decoder::default()),
            Framing::Close => Decode::Close,
        };
        Stream {
            conn: Some(conn),
            decode,
            keep_alive,
            pool,
        }
    }

    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_plain(conn, self.keep_alive);
        }
    }

    fn fail(&mut self, e: PlainError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.conn = None;
        let kind = match &e {
            PlainError::Io(e) => e.kind(),
            _ => std::io::ErrorKind::InvalidData,
        };
        Poll::Ready(Some(Err(BodyError::Io(std::io::Error::new(kind, e)))))
    }
}

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.decode {
                Decode::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Decode::Length(left) if !conn.buf.is_empty() => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(conn.buf.len());
                    let data = conn.buf.split_to(n).freeze();
                    *left -= n as u64;
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decode::Chunked(d) => match d.decode(&mut conn.buf) {
                    Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Step::Done) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Step::More) => {}
                    Err(e) => return this.fail(PlainError::Malformed(e.reason())),
                },
                Decode::Close if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decode::Length(_) | Decode::Close => {}
            }
            match ready!(conn.poll_fill(cx, STREAM_READ)) {
                Ok(0) if matches!(this.decode, Decode::Close) => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(PlainError::Malformed("closed before the body's end")),
                Ok(_) => {}
                Err(e) => return this.fail(e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.decode, Decode::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.decode {
            Decode::Length(n) if self.conn.is_some() => SizeHint::with_exact(n),
            Decode::Length(_) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
