//! Path normalization: never panics; idempotent; the judged path never holds `//`, `/./`,
//! `/../`, an encoded slash, a backslash or NUL; forwarding the `forward` view and normalizing
//! it again (what the upstream would do) judges the same path; and a servlet container behind
//! us (Tomcat's reading, written out below apart from the gateway's code) serves the path we
//! judged, whether it is handed the raw path (forward-auth: nginx and Caddy pass it on) or
//! the forward view (proxy mode).
#![no_main]

use authgate::path::normalize;
use libfuzzer_sys::fuzz_target;

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Tomcat's order (CoyoteAdapter): cut `;params` from every segment, decode, merge `//`,
/// resolve `/./` and `/../` (above the root: refused, None). Decoding here is of unreserved
/// escapes only, with the others' hex upper-cased, the way the gateway spells its views (an
/// escaped reserved character stays data in both readings).
fn servlet_reading(raw: &str) -> Option<String> {
    let mut segments = Vec::new();
    for seg in raw.strip_prefix('/')?.split('/') {
        let seg = seg.split(';').next().unwrap_or_default();
        let mut out = String::new();
        let mut rest = seg;
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            let hex = rest.get(at + 1..at + 3)?;
            let byte = u8::from_str_radix(hex, 16).ok()?;
            if unreserved(byte) {
                out.push(char::from(byte));
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            rest = &rest[at + 3..];
        }
        out.push_str(rest);
        segments.push(out);
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut directory = false;
    for seg in &segments {
        directory = matches!(seg.as_str(), "" | "." | "..");
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                kept.pop()?;
            }
            s => kept.push(s),
        }
    }
    let mut path: String = kept.iter().flat_map(|s| ["/", s]).collect();
    if directory || path.is_empty() {
        path.push('/');
    }
    Some(path)
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = normalize(raw) else {
        return;
    };
    let judged = p.judged.as_ref();
    assert!(judged.starts_with('/'), "{raw:?} -> {judged:?}");
    for bad in ["//", "/./", "/../", "\\", "\0"] {
        assert!(
            !judged.contains(bad),
            "{raw:?} -> judged {judged:?} holds {bad:?}"
        );
    }
    assert!(
        !judged.ends_with("/.") && !judged.ends_with("/.."),
        "{raw:?} -> {judged:?}"
    );
    let upper = judged.to_ascii_uppercase();
    assert!(!upper.contains("%2F") && !upper.contains("%5C") && !upper.contains("%00"));
    // Idempotent on both views.
    let again = normalize(judged).expect("a judged path normalizes again");
    assert_eq!(
        again.judged, judged,
        "judged view of {raw:?} is not a fixed point"
    );
    let forwarded = normalize(&p.forward).expect("a forwarded path normalizes again");
    assert_eq!(
        forwarded.forward, p.forward,
        "forward view of {raw:?} is not a fixed point"
    );
    assert_eq!(
        forwarded.judged, judged,
        "the upstream would judge {raw:?} differently"
    );
    // No path we accept is one a servlet container serves as another.
    let empty_is_root = if raw.is_empty() { "/" } else { raw };
    for (view, sent) in [("raw", empty_is_root), ("forward", p.forward.as_ref())] {
        assert_eq!(
            servlet_reading(sent).as_deref(),
            Some(judged),
            "a servlet container reads the {view} path {sent:?} (of {raw:?}) otherwise"
        );
    }
});
