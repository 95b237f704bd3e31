//! The plain exchange: most requests a gateway forwards are one head and at most a body it
//! already holds (a GET, a form read whole), to a plain-TCP upstream. For those the gateway
//! writes the request itself in one `write` and parses the answer's head with `httparse`,
//! header values kept as slices of the bytes read (a small answer is copied out whole first,
//! so the connection keeps its read buffer; see `head::parse_head`). hyper's client (a task
//! per connection, channels to it, its own buffers) stays for the rest: streamed request
//! bodies, WebSocket upgrades, TLS upstreams.
//!
//! Framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; chunked when it is the
//! final transfer coding, read to the close for any other; else Content-Length (repeated
//! values must agree); else to the close. 1xx answers before the final one are skipped. A
//! connection is kept for the next request only when the answer allowed it (HTTP/1.1 without
//! `Connection: close`, HTTP/1.0 with `keep-alive`) and nothing followed the body.

mod chunked;
mod head;
mod stream;
#[cfg(test)]
mod tests;

pub use chunked::{decode_all, ChunkError, Decoder, Step};
pub use head::{declare_length, parse_head, write_request, Framing, Head};
pub use stream::Stream;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use std::task::{Context, Poll};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// What one read asks for at least.
const READ_AHEAD: usize = 8 * 1024;

/// Why a plain exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum PlainError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("the upstream closed the connection before answering")]
    NoAnswer,
    #[error("the upstream closed the connection within the answer's head")]
    ClosedInHead,
    #[error("the upstream's answer is malformed: {0}")]
    Malformed(&'static str),
    #[error("the upstream's answer is malformed: {0}")]
    Parse(#[from] httparse::Error),
}

/// One keep-alive connection and the bytes read from it but not yet used.
pub struct Conn {
    io: TcpStream,
    /// Where reads land.
    buf: BytesMut,
    /// What came after the answer's head in the same read (often the whole body).
    pending: Bytes,
}

impl Conn {
    pub fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            pending: Bytes::new(),
        }
    }

    /// Moves the bytes after the head to where reads land (a body read in pieces).
    fn unpend(&mut self) {
        if !self.pending.is_empty() {
            self.buf.extend_from_slice(&self.pending);
            self.pending = Bytes::new();
        }
    }

    /// For an idle connection: still open and silent (the upstream neither closed it nor
    /// sent anything unasked). Costs no system call unless the socket was signalled.
    pub fn is_usable(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Whether it can go back to the pool: nothing left unread. The read buffer stays with
    /// the connection up to its usual size (8 KiB; the next answer is read into it with no
    /// allocation, which under load was one of 8 KiB a request); a larger one (grown for a
    /// large head) gives its memory back while the connection idles. An idle connection
    /// lives at most 60 s, and at most 256 idle ones are kept per upstream and worker.
    pub fn idle(&mut self) -> bool {
        if !self.buf.is_empty() || !self.pending.is_empty() {
            return false;
        }
        if self.buf.capacity() > READ_AHEAD {
            self.buf = BytesMut::new();
        }
        true
    }

    /// Reads what the socket has into `buf` (room for `at_least` made first). By
    /// `poll_read`, which marks the socket drained after a short read: the next request's
    /// `is_usable` then costs no system call.
    fn poll_fill(&mut self, cx: &mut Context<'_>, at_least: usize) -> Poll<std::io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < at_least / 2 {
            self.buf.reserve(at_least);
        }
        tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.io), cx, &mut self.buf)
    }

    async fn fill(&mut self, at_least: usize) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx, at_least)).await
    }
}

/// How an exchange on a connection failed, for the pool's choice to retry.
pub enum Failure {
    /// Not a byte of the request left (the connection was found closed): safe to retry.
    Unsent(PlainError),
    /// Sent, and the connection closed before a byte of the answer came.
    NoAnswer,
    Failed(PlainError),
}

/// Writes the request and reads the answer's head, 1xx answers skipped.
pub async fn exchange(
    conn: &mut Conn,
    request: &[u8],
    head_request: bool,
) -> Result<Head, Failure> {
    let written = conn
        .io
        .write(request)
        .await
        .map_err(|e| Failure::Unsent(e.into()))?;
    if written == 0 {
        return Err(Failure::Unsent(PlainError::NoAnswer));
    }
    if written < request.len() {
        conn.io
            .write_all(&request[written..])
            .await
            .map_err(|e| Failure::Failed(e.into()))?;
    }
    let mut answered = false;
    loop {
        if !conn.buf.is_empty() {
            answered = true;
            match parse_head(&mut conn.buf, head_request).map_err(Failure::Failed)? {
                Some((head, _)) if head.response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    return Err(Failure::Failed(PlainError::Malformed(
                        "switched protocols unasked",
                    )))
                }
                Some((head, rest)) if head.response.status().is_informational() => {
                    conn.buf = BytesMut::from(&rest[..]);
                    continue;
                }
                Some((head, rest)) => {
                    conn.pending = rest;
                    return Ok(head);
                }
                None => {}
            }
        }
        match conn.fill(READ_AHEAD).await {
            Ok(0) if !answered => return Err(Failure::NoAnswer),
            Ok(0) => return Err(Failure::Failed(PlainError::ClosedInHead)),
            Ok(_) => {}
            Err(e) if !answered => {
                // A reset before any answer is the same race as a close.
                tracing::debug!(error = %e, "upstream connection failed before answering");
                return Err(Failure::NoAnswer);
            }
            Err(e) => return Err(Failure::Failed(e.into())),
        }
    }
}

/// Reads a body of `n` bytes whole (the caller checked that `n` is small enough to hold).
pub async fn read_whole(conn: &mut Conn, n: u64) -> Result<Bytes, PlainError> {
    let n = usize::try_from(n).map_err(|_| PlainError::Malformed("body too large"))?;
    if conn.pending.len() >= n {
        return Ok(conn.pending.split_to(n));
    }
    conn.unpend();
    if conn.buf.len() < n {
        conn.buf.reserve(n - conn.buf.len());
    }
    while conn.buf.len() < n {
        if conn.fill(READ_AHEAD).await? == 0 {
            return Err(PlainError::Malformed("closed before the body's end"));
        }
    }
    Ok(conn.buf.split_to(n).freeze())
}
