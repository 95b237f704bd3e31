//! Request-target normalization: the one place that turns the path a client sent into the
//! path that route rules judge and the upstream receives. Pure and table-tested.
//!
//! Why so strict: a gateway and its upstream must agree on what a path means, or a rule on
//! `/admin/**` can be walked around (`/public/..;/admin`, `/%2e%2e/admin`, `/admin%2Fx`).
//! Anything two servers could read differently is refused with 400 instead of guessed: a
//! servlet container strips `;params` and then merges the empty segment that leaves
//! (`/public/;/../admin` is `/admin` to Tomcat), while a reader that keeps `;` as a segment
//! lets `..` remove it (`/public/admin`). So a segment empty before its `;`, and a `.`/`..`
//! that carries `;params`, have no reading we could bet on.

use std::borrow::Cow;
use std::fmt;

/// The two views of a normalized path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath<'a> {
    /// What the upstream receives: segments keep their `;params`.
    pub forward: Cow<'a, str>,
    /// What route rules judge: each segment cut at its first `;`.
    pub judged: Cow<'a, str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    EncodedSlash,
    Backslash,
    Nul,
    ControlChar,
    BadPercent,
    AboveRoot,
    /// `/;x/`, `/..;x/`, `/.;/`: servers disagree on what such a segment is.
    ParamOnEmptyOrDot,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAbsolute => "the path must start with /",
            Self::EncodedSlash => "encoded / or \\ in the path",
            Self::Backslash => "backslash in the path",
            Self::Nul => "NUL in the path",
            Self::ControlChar => "control character in the path",
            Self::BadPercent => "invalid percent-encoding in the path",
            Self::AboveRoot => "the path climbs above the root",
            Self::ParamOnEmptyOrDot => "a path parameter on an empty or dot segment",
        })
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes percent-encoded unreserved characters, upper-cases the hex of the rest, and refuses
/// what could split or hide a segment.
fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                    return Err(PathError::BadPercent);
                };
                let (Some(h), Some(l)) = (hex(h), hex(l)) else {
                    return Err(PathError::BadPercent);
                };
                let v = h << 4 | l;
                match v {
                    b'/' | b'\\' => return Err(PathError::EncodedSlash),
                    0 => return Err(PathError::Nul),
                    v if is_unreserved(v) => out.push(char::from(v)),
                    v => {
                        out.push('%');
                        out.push(char::from(b"0123456789ABCDEF"[usize::from(v >> 4)]));
                        out.push(char::from(b"0123456789ABCDEF"[usize::from(v & 15)]));
                    }
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            b if b < 0x20 || b == 0x7f => return Err(PathError::ControlChar),
            b => {
                // Non-ASCII never reaches here through hyper's URI parser; keep it verbatim.
                if b.is_ascii() {
                    out.push(char::from(b));
                } else {
                    return Err(PathError::BadPercent);
                }
            }
        }
        i += 1;
    }
    Ok(out)
}

/// True when normalization cannot change `raw`: only unreserved characters and single
/// slashes, and no segment that is `.` or `..`.
fn is_plain(raw: &str) -> bool {
    // One pass over the bytes (every request): no substring searches.
    let mut prev = 0u8;
    for c in raw.bytes() {
        if prev == b'/' && (c == b'/' || c == b'.') {
            return false;
        }
        if c != b'/' && !is_unreserved(c) {
            return false;
        }
        prev = c;
    }
    true
}

/// Normalizes the path part of a request target.
pub fn normalize(raw: &str) -> Result<NormalizedPath<'_>, PathError> {
    if raw.is_empty() {
        return Ok(NormalizedPath {
            forward: Cow::Borrowed("/"),
            judged: Cow::Borrowed("/"),
        });
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_plain(raw) {
        // The common case: nothing to decode, resolve or cut; both views are the input.
        return Ok(NormalizedPath {
            forward: Cow::Borrowed(raw),
            judged: Cow::Borrowed(raw),
        });
    }
    let decoded = decode_unreserved(raw)?;
    let mut stack: Vec<(&str, &str)> = Vec::new(); // (full segment, judged part)
    let mut trailing_slash = false;
    for seg in decoded[1..].split('/') {
        let (base, params) = match seg.split_once(';') {
            Some((base, _)) => (base, true),
            None => (seg, false),
        };
        if params && matches!(base, "" | "." | "..") {
            return Err(PathError::ParamOnEmptyOrDot);
        }
        trailing_slash = matches!(base, "" | "." | "..");
        match base {
            "" | "." => {}
            ".." => {
                stack.pop().ok_or(PathError::AboveRoot)?;
            }
            base => stack.push((seg, base)),
        }
    }
    let mut forward = String::with_capacity(decoded.len());
    let mut judged = String::with_capacity(decoded.len());
    for (full, base) in &stack {
        forward.push('/');
        forward.push_str(full);
        judged.push('/');
        judged.push_str(base);
    }
    // Both views have the same segments, so they end the same way.
    if trailing_slash || forward.is_empty() {
        forward.push('/');
        judged.push('/');
    }
    Ok(NormalizedPath {
        forward: Cow::Owned(forward),
        judged: Cow::Owned(judged),
    })
}

/// Percent-encodes everything outside unreserved characters and `/` (for `?next=`).
pub fn encode_component(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, forward, judged) for paths that normalize.
    const OK: &[(&str, &str, &str)] = &[
        ("/", "/", "/"),
        ("", "/", "/"),
        ("/a", "/a", "/a"),
        ("/a/b", "/a/b", "/a/b"),
        ("/a/b/", "/a/b/", "/a/b/"),
        ("//a", "/a", "/a"),
        ("/a//b", "/a/b", "/a/b"),
        ("/a///b//", "/a/b/", "/a/b/"),
        ("/a/./b", "/a/b", "/a/b"),
        ("/a/.", "/a/", "/a/"),
        ("/./a", "/a", "/a"),
        ("/a/b/..", "/a/", "/a/"),
        ("/a/b/../c", "/a/c", "/a/c"),
        ("/public/../admin", "/admin", "/admin"),
        ("/%61dmin", "/admin", "/admin"),
        ("/%41%42%43", "/ABC", "/ABC"),
        ("/a%2Eb", "/a.b", "/a.b"),
        ("/a/%2e%2e/b", "/b", "/b"),
        ("/a/%2E/b", "/a/b", "/a/b"),
        ("/x/.%2e/admin", "/admin", "/admin"),
        ("/%7euser", "/~user", "/~user"),
        ("/a%2db_c", "/a-b_c", "/a-b_c"),
        ("/sp%20ace", "/sp%20ace", "/sp%20ace"),
        ("/caf%c3%a9", "/caf%C3%A9", "/caf%C3%A9"),
        ("/q%3fx", "/q%3Fx", "/q%3Fx"),
        ("/pct%25", "/pct%25", "/pct%25"),
        ("/app;jsessionid=1", "/app;jsessionid=1", "/app"),
        (
            "/app;jsessionid=1/page",
            "/app;jsessionid=1/page",
            "/app/page",
        ),
        ("/a;/b", "/a;/b", "/a/b"),
        ("/a;x=1/..", "/", "/"),
        ("/a/b;v=2/../c", "/a/c", "/a/c"),
        ("/...;x", "/...;x", "/..."),
        ("/a/..b;x", "/a/..b;x", "/a/..b"),
        ("/a;b;c", "/a;b;c", "/a"),
        ("/a%3Bb", "/a%3Bb", "/a%3Bb"),
        ("/A/B", "/A/B", "/A/B"),
        ("/a/b/c/../../d", "/a/d", "/a/d"),
        ("/..a/b", "/..a/b", "/..a/b"),
        ("/a../b", "/a../b", "/a../b"),
        ("/...", "/...", "/..."),
        ("/a/b/./../c/./d/", "/a/c/d/", "/a/c/d/"),
        ("/admin/", "/admin/", "/admin/"),
        ("/x/..", "/", "/"),
    ];

    const BAD: &[(&str, PathError)] = &[
        ("/..", PathError::AboveRoot),
        ("/../etc/passwd", PathError::AboveRoot),
        ("/a/../../b", PathError::AboveRoot),
        ("/%2e%2e/admin", PathError::AboveRoot),
        ("/..;/admin", PathError::ParamOnEmptyOrDot),
        // Issue 18: a `;params` segment that `..` removes here, but a servlet container merges
        // away (then `..` climbs one further): `/public/;/../admin/x` was judged public.
        ("/public/;/../admin/x", PathError::ParamOnEmptyOrDot),
        ("/public/;x=1/../admin/x", PathError::ParamOnEmptyOrDot),
        ("/public/a/;/../../admin/x", PathError::ParamOnEmptyOrDot),
        (
            "/public/;jsessionid=A/../admin/x",
            PathError::ParamOnEmptyOrDot,
        ),
        ("/;", PathError::ParamOnEmptyOrDot),
        ("/;x=1/", PathError::ParamOnEmptyOrDot),
        ("/;jsessionid=A/", PathError::ParamOnEmptyOrDot),
        ("/a/;x/b", PathError::ParamOnEmptyOrDot),
        ("/a//;x", PathError::ParamOnEmptyOrDot),
        ("/public/..;/admin", PathError::ParamOnEmptyOrDot),
        ("/public/..;x=y/admin", PathError::ParamOnEmptyOrDot),
        ("/public/..;", PathError::ParamOnEmptyOrDot),
        ("/a/.;x/b", PathError::ParamOnEmptyOrDot),
        ("/a/.;", PathError::ParamOnEmptyOrDot),
        ("/a/%2e;x/b", PathError::ParamOnEmptyOrDot),
        ("/a/%2E%2e;/b", PathError::ParamOnEmptyOrDot),
        ("/a%2Fb", PathError::EncodedSlash),
        ("/a%2fb", PathError::EncodedSlash),
        ("/a%5Cb", PathError::EncodedSlash),
        ("/a%5cb", PathError::EncodedSlash),
        ("/a\\b", PathError::Backslash),
        ("/a%00b", PathError::Nul),
        ("/a\0b", PathError::Nul),
        ("/a%", PathError::BadPercent),
        ("/a%2", PathError::BadPercent),
        ("/a%zz", PathError::BadPercent),
        ("/a%g0", PathError::BadPercent),
        ("/a\tb", PathError::ControlChar),
        ("a/b", PathError::NotAbsolute),
        ("*", PathError::NotAbsolute),
        ("/a/../../", PathError::AboveRoot),
        ("/sp%2face", PathError::EncodedSlash),
    ];

    #[test]
    fn normalization_table() {
        let mut checked = 0;
        for (input, forward, judged) in OK {
            let got = normalize(input).unwrap_or_else(|e| panic!("{input:?} failed: {e}"));
            assert_eq!(got.forward, *forward, "forward of {input:?}");
            assert_eq!(got.judged, *judged, "judged of {input:?}");
            checked += 1;
        }
        for (input, err) in BAD {
            assert_eq!(normalize(input), Err(*err), "{input:?}");
            checked += 1;
        }
        assert!(checked >= 60, "only {checked} cases");
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for (input, forward, _) in OK {
            if forward.is_empty() {
                continue;
            }
            let once = normalize(input).unwrap_or_else(|e| panic!("{e}"));
            let twice = normalize(&once.forward).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(once, twice, "{input:?}");
        }
    }
}

#[cfg(test)]
mod property {
    use super::*;

    /// A small deterministic generator: no test dependency, same cases on every run.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    const PIECES: &[&str] = &[
        "/",
        "/",
        "//",
        ".",
        "..",
        "a",
        "b",
        "%2e",
        "%2E",
        "%2f",
        "%5c",
        "%25",
        "%41",
        ";",
        ";x=1",
        "%00",
        "%",
        "%g",
        "~",
        "-",
        "_",
        "\\",
        "?",
        "%3b",
        "admin",
        "public",
        "..;",
        "%2e%2e",
        ";jsessionid=A",
        ".;",
        "/;/",
        "%2e;x",
    ];

    /// How a servlet container reads a path (Tomcat's order): decode unreserved escapes, cut
    /// every segment's `;params`, merge the empty segments that leaves, resolve `.` and `..`.
    /// None: it climbs above the root. Written apart from `normalize`, to check it.
    fn servlet_reading(raw: &str) -> Option<String> {
        let mut decoded = String::new();
        let mut rest = raw;
        while let Some(at) = rest.find('%') {
            decoded.push_str(&rest[..at]);
            let byte = u8::from_str_radix(rest.get(at + 1..at + 3)?, 16).ok()?;
            if is_unreserved(byte) {
                decoded.push(char::from(byte));
            } else {
                decoded.push_str(&rest[at..at + 3].to_ascii_uppercase());
            }
            rest = &rest[at + 3..];
        }
        decoded.push_str(rest);
        let mut out: Vec<&str> = Vec::new();
        let mut dir = true;
        for seg in decoded.split('/').skip(1) {
            let seg = seg.split(';').next()?;
            dir = matches!(seg, "" | "." | "..");
            match seg {
                "" | "." => {}
                ".." => {
                    out.pop()?;
                }
                s => out.push(s),
            }
        }
        let mut path = String::new();
        for seg in &out {
            path.push('/');
            path.push_str(seg);
        }
        if dir || path.is_empty() {
            path.push('/');
        }
        Some(path)
    }

    #[test]
    fn random_paths_never_escape_and_normalize_once() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..50_000 {
            let n = 1 + rng.next() % 12;
            let mut raw = String::from("/");
            for _ in 0..n {
                raw.push_str(PIECES[(rng.next() % PIECES.len() as u64) as usize]);
            }
            let Ok(out) = normalize(&raw) else { continue };
            for view in [&out.forward, &out.judged] {
                assert!(view.starts_with('/'), "{raw:?} -> {view:?}");
                assert!(!view.contains("//"), "{raw:?} -> {view:?}");
                assert!(!view.contains('\\'), "{raw:?} -> {view:?}");
                let lower = view.to_ascii_lowercase();
                assert!(
                    !lower.contains("%2f") && !lower.contains("%2e") && !lower.contains("%5c"),
                    "{raw:?} -> {view:?}"
                );
                for seg in view.split('/') {
                    let base = seg.split(';').next().unwrap_or("");
                    assert!(base != "." && base != "..", "{raw:?} -> {view:?}");
                }
            }
            assert!(!out.judged.contains(';'), "{raw:?} -> {:?}", out.judged);
            // A servlet container behind us, handed the raw path (forward-auth) or the
            // forward view (proxying), serves what we judged.
            for sent in [raw.as_str(), &out.forward] {
                assert_eq!(
                    servlet_reading(sent).as_deref(),
                    Some(out.judged.as_ref()),
                    "{raw:?}: a servlet reads {sent:?} otherwise"
                );
            }
            assert_eq!(
                normalize(&out.forward).as_ref(),
                Ok(&out),
                "not idempotent: {raw:?}"
            );
        }
    }
}
