//! Path normalization: never panics; idempotent; the judged path never holds `//`, `/./`,
//! `/../`, an encoded slash, a backslash or NUL; forwarding the `forward` view and normalizing
//! it again (what the upstream would do) judges the same path.
#![no_main]

use authgate::path::normalize;
use libfuzzer_sys::fuzz_target;

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
});
