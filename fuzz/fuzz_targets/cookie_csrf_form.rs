//! Cookie, CSRF and form readers on arbitrary bytes: never panic; a cookie value read is a
//! piece of the header without `;`; a CSRF header matches only the exact expected token; a
//! form field decodes from the body.
#![no_main]

use authgate::auth::{cookies, csrf, form};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head, body) = data.split_at(data.len() / 2);
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(head) {
        h.insert(http::header::COOKIE, v.clone());
        h.insert("x-csrf-token", v.clone());
        h.insert(http::header::CONTENT_TYPE, v);
    }
    for secure in [false, true] {
        let n = cookies::names(secure);
        for name in [n.access, n.refresh, n.csrf] {
            if let Some(v) = cookies::get(&h, name) {
                assert!(!v.contains(';'), "{v:?}");
                let raw = h.get(http::header::COOKIE).unwrap().as_bytes();
                assert!(v.is_empty() || raw.windows(v.len()).any(|w| w == v.as_bytes()));
            }
        }
    }
    let given = csrf::header_value(&h);
    let expected = csrf::CsrfKey::derive(b"fuzz-secret").token("sid-1");
    assert_eq!(
        csrf::matches(given, &expected),
        given == Some(expected.as_str()),
        "{given:?}"
    );
    let _ = form::is_form(&h);
    for name in ["username", "password", "next", "csrf_token", "all"] {
        let _ = form::field(body, name);
    }
});
