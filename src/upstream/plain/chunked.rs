//! The chunked transfer coding of an upstream's answer (RFC 9112 §7.1), decoded in place from
//! the connection's read buffer: data comes out as slices of that buffer (no copy), the
//! control lines are read a byte at a time and bounded. Trailers are read and dropped, as an
//! HTTP/1.1 client that never asked for them (`TE: trailers`) may.

use bytes::{Buf, Bytes, BytesMut};

/// A chunk extension or trailer section longer than this is refused.
const MAX_LINE: usize = 4096;
/// All trailer lines together.
const MAX_TRAILERS: usize = 16 * 1024;

/// What the buffer gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The next piece of the body.
    Data(Bytes),
    /// The buffer is used up before the body's end: read more.
    More,
    /// The last chunk and the trailers are through; whatever is left in the buffer is not
    /// part of this answer.
    Done,
}

/// Why a chunked body is malformed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct ChunkError(&'static str);

impl ChunkError {
    pub fn reason(&self) -> &'static str {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size; `digits` counts them (at least one is needed).
    Size {
        value: u64,
        digits: u32,
    },
    /// Spaces after the size, before `;` or the line's end.
    SizeSpace {
        value: u64,
    },
    /// A chunk extension, ignored to the line's end.
    Ext {
        value: u64,
        len: usize,
    },
    /// The size line's `\r` came; `\n` must follow.
    SizeLf {
        value: u64,
    },
    /// Bytes of chunk data still to come.
    Data(u64),
    /// The `\r\n` after a chunk's data.
    DataCr,
    DataLf,
    /// A trailer line (`len` bytes so far; an empty one ends the body).
    Trailer {
        len: usize,
    },
    TrailerLf {
        len: usize,
    },
    Done,
}

#[derive(Debug)]
pub struct Decoder {
    state: State,
    trailers: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            trailers: 0,
        }
    }
}

fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

impl Decoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes from `buf` what this body owns: the next data piece, or control bytes until the
    /// buffer is empty (`More`) or the body ends (`Done`).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, ChunkError> {
        loop {
            match self.state {
                State::Done => return Ok(Step::Done),
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let rest = left - n as u64;
                    self.state = if rest == 0 {
                        State::DataCr
                    } else {
                        State::Data(rest)
                    };
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                _ => {
                    let Some(&b) = buf.first() else {
                        return Ok(Step::More);
                    };
                    buf.advance(1);
                    self.state = self.next(b)?;
                }
            }
        }
    }

    /// The state after one control byte.
    fn next(&mut self, b: u8) -> Result<State, ChunkError> {
        Ok(match self.state {
            State::Size { value, digits } => match (hex(b), b) {
                (Some(d), _) => State::Size {
                    value: value
                        .checked_mul(16)
                        .and_then(|v| v.checked_add(d))
                        .ok_or(ChunkError("chunk size too large"))?,
                    digits: digits + 1,
                },
                _ if digits == 0 => return Err(ChunkError("chunk size expected")),
                (None, b' ' | b'\t') => State::SizeSpace { value },
                (None, b';') => State::Ext { value, len: 0 },
                (None, b'\r') => State::SizeLf { value },
                _ => return Err(ChunkError("invalid byte in chunk size")),
            },
            State::SizeSpace { value } => match b {
                b' ' | b'\t' => State::SizeSpace { value },
                b';' => State::Ext { value, len: 0 },
                b'\r' => State::SizeLf { value },
                _ => return Err(ChunkError("invalid byte after chunk size")),
            },
            State::Ext { value, len } => match b {
                b'\r' => State::SizeLf { value },
                b'\n' => return Err(ChunkError("bare LF in chunk extension")),
                _ if len >= MAX_LINE => return Err(ChunkError("chunk extension too long")),
                _ => State::Ext {
                    value,
                    len: len + 1,
                },
            },
            State::SizeLf { value } => match (b, value) {
                (b'\n', 0) => State::Trailer { len: 0 },
                (b'\n', n) => State::Data(n),
                _ => return Err(ChunkError("CRLF expected after chunk size")),
            },
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size {
                value: 0,
                digits: 0,
            },
            State::DataCr | State::DataLf => {
                return Err(ChunkError("CRLF expected after chunk data"))
            }
            State::Trailer { len } => match b {
                b'\r' => State::TrailerLf { len },
                b'\n' => return Err(ChunkError("bare LF in trailer")),
                _ => {
                    self.trailers += 1;
                    if len >= MAX_LINE || self.trailers > MAX_TRAILERS {
                        return Err(ChunkError("trailers too long"));
                    }
                    State::Trailer { len: len + 1 }
                }
            },
            State::TrailerLf { len } => match (b, len) {
                (b'\n', 0) => State::Done,
                (b'\n', _) => State::Trailer { len: 0 },
                _ => return Err(ChunkError("CRLF expected after trailer")),
            },
            // Handled by `decode` without a byte.
            State::Data(_) | State::Done => self.state,
        })
    }
}

/// Decodes a whole body given at once (tests and the fuzz target): the data, or the error.
pub fn decode_all(input: &[u8]) -> Result<(Vec<u8>, bool), ChunkError> {
    let mut buf = BytesMut::from(input);
    let mut d = Decoder::default();
    let mut out = Vec::new();
    loop {
        match d.decode(&mut buf)? {
            Step::Data(b) => out.extend_from_slice(&b),
            Step::More => return Ok((out, false)),
            Step::Done => return Ok((out, true)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fed a byte at a time, the decoder gives what it gives fed at once.
    fn bytewise(input: &[u8]) -> Result<(Vec<u8>, bool, usize), ChunkError> {
        let mut d = Decoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for (i, &b) in input.iter().enumerate() {
            buf.extend_from_slice(&[b]);
            loop {
                match d.decode(&mut buf)? {
                    Step::Data(b) => out.extend_from_slice(&b),
                    Step::More => break,
                    Step::Done => return Ok((out, true, input.len() - i - 1)),
                }
            }
        }
        Ok((out, false, 0))
    }

    #[test]
    fn chunks_extensions_and_trailers_decode_whole_or_a_byte_at_a_time() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
            (b"A;name=value\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (
                b"00003 \t;x\r\nabc\r\n0\r\nExpires: never\r\nX-A: b\r\n\r\n",
                b"abc",
            ),
            (b"0\r\n\r\n", b""),
        ];
        for (input, body) in cases {
            let (out, done) = decode_all(input).unwrap();
            assert!(done, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(&out[..], *body);
            let (out, done, left) = bytewise(input).unwrap();
            assert_eq!((&out[..], done, left), (*body, true, 0));
        }
    }

    #[test]
    fn bytes_after_the_last_chunk_are_left_in_the_buffer() {
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK"[..]);
        let mut d = Decoder::default();
        assert_eq!(
            d.decode(&mut buf),
            Ok(Step::Data(Bytes::from_static(b"abc")))
        );
        assert_eq!(d.decode(&mut buf), Ok(Step::Done));
        assert!(d.is_done());
        assert_eq!(&buf[..], b"HTTP/1.1 200 OK");
    }

    #[test]
    fn an_unfinished_body_asks_for_more() {
        for input in [
            &b"5\r\nhel"[..],
            b"5\r\nhello\r",
            b"5\r\nhello\r\n0\r\n",
            b"",
        ] {
            assert!(!decode_all(input).unwrap().1);
        }
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let huge_ext = [&b"1;"[..], &[b'x'; MAX_LINE + 1], b"\r\na\r\n0\r\n\r\n"].concat();
        let long_trailers = [&b"0\r\n"[..], &[b'x'; MAX_LINE + 1], b"\r\n\r\n"].concat();
        for input in [
            &b"\r\n"[..],
            b"g\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"1 2\r\n",
            b"ffffffffffffffffff\r\n",
            b"0\r\nX: y\n\r\n",
            b"-1\r\n",
            &huge_ext,
            &long_trailers,
        ] {
            assert!(
                decode_all(input).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert!(bytewise(input).is_err());
        }
    }
}
