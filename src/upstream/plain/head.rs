//! An answer's head parsed (framing and keep-alive decided as RFC 9112 says), and a
//! request's head written.

use super::PlainError;
use crate::upstream::Overlay;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};

/// A response head larger than this is refused (hyper's own limit).
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// Headers in one response head (hyper's default too).
const MAX_HEADERS: usize = 100;

/// How the answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    Close,
}

/// A parsed answer head.
#[derive(Debug)]
pub struct Head {
    pub response: Response<()>,
    pub framing: Framing,
    /// The connection may carry the next request once the body is read.
    pub keep_alive: bool,
}

/// Whether a token list (`Connection`, `Transfer-Encoding`) holds `token`.
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The one length all Content-Length values (and list members) agree on.
fn content_length(value: &HeaderValue) -> Result<u64, PlainError> {
    let mut length = None;
    for part in value.as_bytes().split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(PlainError::Malformed("invalid Content-Length"));
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != n) {
            return Err(PlainError::Malformed("Content-Length values differ"));
        }
        length = Some(n);
    }
    length.ok_or(PlainError::Malformed("invalid Content-Length"))
}

/// Whether a `Connection` value holds nothing but the options the gateway acts on itself
/// (`close`, `keep-alive`): such a header is not kept (it would be stripped anyway).
fn only_options(value: &HeaderValue) -> bool {
    value.as_bytes().split(|b| *b == b',').all(|t| {
        let t = t.trim_ascii();
        t.is_empty() || t.eq_ignore_ascii_case(b"close") || t.eq_ignore_ascii_case(b"keep-alive")
    })
}

/// The names nearly every answer has, spelled as servers send them (or in lower case, as
/// HTTP/2-minded ones do): found by length and one comparison. Any other spelling or name
/// goes through `HeaderName::from_bytes`, which lower-cases it into a buffer and looks it
/// up among all the standard names (about 120 instructions a name).
fn common_name(raw: &[u8]) -> Option<HeaderName> {
    let (name, canonical): (HeaderName, &[u8]) = match raw.len() {
        4 => (header::DATE, b"Date"),
        6 => (header::SERVER, b"Server"),
        10 => (header::CONNECTION, b"Connection"),
        12 => (header::CONTENT_TYPE, b"Content-Type"),
        14 => (header::CONTENT_LENGTH, b"Content-Length"),
        _ => return None,
    };
    (raw == canonical || raw == name.as_str().as_bytes()).then_some(name)
}

/// Up to this much read (a typical answer's head and small body), the bytes are copied out
/// and the connection's read buffer is kept for the next answer: a copy this small costs
/// less than the allocator's path for a new 8 KiB buffer. More is handed over whole.
const COPY_UP_TO: usize = 1024;

/// Parses an answer head at the start of `buf`. Complete: the head (header values are
/// slices of one `Bytes`, no copy per value) and the bytes that followed it; `buf` is left
/// empty (its capacity kept when the bytes were few enough to copy). None: the head is not
/// complete yet, `buf` is as it was.
pub fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<(Head, Bytes)>, PlainError> {
    let copied = buf.len() <= COPY_UP_TO;
    let all = if copied {
        Bytes::copy_from_slice(buf)
    } else {
        std::mem::take(buf).freeze()
    };
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        &all,
        &mut slots,
    );
    let len = match status {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if all.len() > MAX_HEAD => {
            return Err(PlainError::Malformed("head too large"))
        }
        Ok(httparse::Status::Partial) if copied => return Ok(None),
        Ok(httparse::Status::Partial) => {
            *buf = all
                .try_into_mut()
                .unwrap_or_else(|all| BytesMut::from(&all[..]));
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    buf.clear();
    let status = StatusCode::from_u16(parsed.code.unwrap_or(0))
        .map_err(|_| PlainError::Malformed("invalid status"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let (mut close, mut keep) = (false, false);
    let mut length: Option<u64> = None;
    // Some(chunked?) once a Transfer-Encoding came: the last coding of the last one decides.
    let mut coding: Option<bool> = None;
    for h in parsed.headers.iter() {
        let name = match common_name(h.name.as_bytes()) {
            Some(name) => name,
            None => HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| PlainError::Malformed("invalid header name"))?,
        };
        let value = HeaderValue::from_maybe_shared(all.slice_ref(h.value))
            .map_err(|_| PlainError::Malformed("invalid header value"))?;
        if name == header::CONNECTION {
            close |= has_token(&value, "close");
            keep |= has_token(&value, "keep-alive");
            if only_options(&value) {
                continue;
            }
        } else if name == header::TRANSFER_ENCODING {
            let last = value.as_bytes().rsplit(|b| *b == b',').next();
            coding = Some(last.is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked")));
            // Hop-by-hop: the gateway frames the body to the client itself.
            continue;
        } else if name == header::CONTENT_LENGTH {
            let n = content_length(&value)?;
            if length.is_some_and(|l| l != n) {
                return Err(PlainError::Malformed("Content-Length values differ"));
            }
            length = Some(n);
        } else if name.as_str() == "keep-alive" {
            continue;
        }
        headers.append(name, value);
    }
    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut keep_alive = match version {
        Version::HTTP_11 => !close,
        _ => keep && !close,
    };
    let framing = match (no_body, coding, length) {
        (true, ..) => Framing::Empty,
        (false, Some(chunked), _) => {
            // A length beside a coding is never trusted, nor the connection after it.
            if length.is_some() {
                headers.remove(header::CONTENT_LENGTH);
                keep_alive = false;
            }
            if chunked {
                Framing::Chunked
            } else {
                Framing::Close
            }
        }
        (false, None, Some(n)) => Framing::Length(n),
        (false, None, None) => Framing::Close,
    };
    if framing == Framing::Close {
        keep_alive = false;
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    let head = Head {
        response,
        framing,
        keep_alive,
    };
    Ok(Some((head, all.slice(len..))))
}

/// Writes the request head (method, origin-form target, the map's headers, then the
/// gateway's `added` ones) to `out`, and the body after it when one goes with the request.
pub fn write_request(
    parts: &http::request::Parts,
    added: &Overlay,
    body: Option<&Bytes>,
    out: &mut Vec<u8>,
) {
    debug_assert!(added.disjoint(&parts.headers));
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in parts.headers.iter().chain(added.iter()) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
}

/// Sets the length the body has (or `0` for a method whose empty body must still be
/// declared); a request here never has a transfer coding.
pub fn declare_length(parts: &mut http::request::Parts, body: Option<&Bytes>) {
    match body {
        Some(b) => {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
        }
        None if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH)
            && !parts.headers.contains_key(header::CONTENT_LENGTH) =>
        {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn head(text: &str, head_request: bool) -> Result<Option<Head>, PlainError> {
        let mut buf = BytesMut::from(text.as_bytes());
        let parsed = parse_head(&mut buf, head_request)?;
        match &parsed {
            Some(_) => assert!(buf.is_empty()),
            None => assert_eq!(&buf[..], text.as_bytes(), "kept whole until complete"),
        }
        Ok(parsed.map(|(h, _)| h))
    }

    fn framing(text: &str) -> (Framing, bool) {
        let h = head(text, false).unwrap().unwrap();
        (h.framing, h.keep_alive)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                (Framing::Length(5), true),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                (Framing::Length(5), true),
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
                (Framing::Length(5), true),
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                (Framing::Chunked, true),
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n",
                (Framing::Chunked, true),
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
                (Framing::Close, false),
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
                (Framing::Chunked, false),
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", (Framing::Close, false)),
            (
                "HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n",
                (Framing::Empty, true),
            ),
            (
                "HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
                (Framing::Empty, true),
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive, Close\r\n\r\n",
                (Framing::Length(5), false),
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n",
                (Framing::Length(5), false),
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 5\r\nconnection: Keep-Alive\r\n\r\n",
                (Framing::Length(5), true),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(framing(text), want, "{text}");
        }
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true));
        assert_eq!(h.response.headers()["content-length"], "9", "kept for HEAD");
        let h = head(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(!h.response.headers().contains_key("content-length"));
    }

    /// The shortcut gives what the general parse gives, for its names in either spelling,
    /// and leaves every other name (other case, same length) to it.
    #[test]
    fn common_names_match_the_general_parse() {
        for raw in [
            "Date",
            "date",
            "Server",
            "server",
            "Connection",
            "connection",
            "Content-Type",
            "content-type",
            "Content-Length",
            "content-length",
        ] {
            let general = HeaderName::from_bytes(raw.as_bytes()).ok();
            assert_eq!(common_name(raw.as_bytes()), general, "{raw}");
        }
        for raw in [
            "DATE",
            "Vary",
            "Content-TYPE",
            "X-Served-By",
            "Connexion",
            "",
        ] {
            assert_eq!(common_name(raw.as_bytes()), None, "{raw}");
        }
        let h = head(
            "HTTP/1.1 200 OK\r\nDATE: x\r\nServer: s\r\ncontent-length: 0\r\nVary: a\r\n\r\n",
            false,
        )
        .ok()
        .flatten()
        .map(|h| h.response);
        let names: Vec<String> = h
            .iter()
            .flat_map(|r| r.headers().keys())
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["date", "server", "content-length", "vary"]);
    }

    #[test]
    fn bad_lengths_and_heads_are_refused() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0x10\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\x01b\r\n\r\n",
            "HTTX/1.1 200 OK\r\n\r\n",
        ] {
            assert!(head(text, false).is_err(), "{text:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        assert!(head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), false).is_err());
        let long = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD + 1));
        assert!(head(&long, false).is_err());
        assert!(head("HTTP/1.1 200 OK\r\nx: a", false).unwrap().is_none());
    }

    #[test]
    fn the_head_is_split_off_and_values_are_slices_of_it() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 201 Created\r\nX-A: one\r\nx-a: two\r\nServer: s\r\ncontent-length: 4\r\n\r\nbody"[..]);
        let (h, rest) = parse_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(&rest[..], b"body");
        assert_eq!(h.response.status(), 201);
        let values: Vec<_> = h.response.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["one", "two"]);
        assert_eq!(h.response.headers()["server"], "s");
    }

    #[test]
    fn a_small_answer_leaves_the_read_buffer_for_the_next_and_a_large_one_takes_it() {
        let small = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let mut buf = BytesMut::with_capacity(8192);
        buf.extend_from_slice(small);
        let at = buf.as_ptr();
        let (h, rest) = parse_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(
            (h.response.status(), &rest[..]),
            (StatusCode::OK, &b"ok"[..])
        );
        assert!(buf.is_empty());
        assert_eq!(buf.capacity(), 8192, "kept");
        buf.extend_from_slice(small);
        assert_eq!(buf.as_ptr(), at, "the same buffer, no new allocation");
        drop(h);

        let body = "x".repeat(COPY_UP_TO);
        let large = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-a: one\r\n\r\n{body}",
            body.len()
        );
        let mut buf = BytesMut::from(large.as_bytes());
        let at = buf.as_ptr();
        let (h, rest) = parse_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(h.response.headers()["x-a"], "one");
        assert_eq!(rest, body.as_bytes());
        assert_eq!(
            rest.as_ptr(),
            at.wrapping_add(large.len() - body.len()),
            "not copied"
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn requests_are_written_with_their_length() {
        let (mut parts, ()) = http::Request::post("/a?b=c")
            .header("host", "up")
            .header("x-two", "1")
            .header("x-two", "2")
            .body(())
            .unwrap()
            .into_parts();
        declare_length(&mut parts, None);
        let mut out = Vec::new();
        write_request(&parts, &Overlay::default(), None, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a?b=c HTTP/1.1\r\nhost: up\r\nx-two: 1\r\nx-two: 2\r\ncontent-length: 0\r\n\r\n"
        );
        let body = Bytes::from_static(b"k=v");
        declare_length(&mut parts, Some(&body));
        let mut out = Vec::new();
        write_request(&parts, &Overlay::default(), Some(&body), &mut out);
        assert!(out.ends_with(b"content-length: 3\r\n\r\nk=v"));
        let (mut parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        declare_length(&mut parts, None);
        assert!(
            !parts.headers.contains_key("content-length"),
            "a GET declares nothing"
        );
    }
}
