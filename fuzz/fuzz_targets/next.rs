//! The `next` redirect check: whatever it lets through resolves, as a browser (WHATWG URL
//! parsing) reads a `Location`, to the gateway's own origin.
#![no_main]

use authgate::auth::cookies::safe_next;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(next) = std::str::from_utf8(data) else {
        return;
    };
    let Some(ok) = safe_next(next) else {
        return;
    };
    // A Location header carries bytes a header value may hold; anything else never leaves.
    if http::HeaderValue::from_str(ok).is_err() {
        return;
    }
    let base = url::Url::parse("https://gw.test/auth/login").unwrap();
    if let Ok(to) = base.join(ok) {
        assert_eq!(to.scheme(), "https", "{next:?} -> {to}");
        assert_eq!(to.host_str(), Some("gw.test"), "{next:?} -> {to}");
        assert_eq!(to.port(), None, "{next:?} -> {to}");
    }
});
