//! What the second-factor tests share: an independent RFC 6238 implementation (codes
//! computed from what the gateway printed or showed), and axe-core run on a page in Chromium.

use super::webdriver::Driver;
use serde_json::json;

/// RFC 4648 base32 (no padding), as otpauth URIs and the set-up page carry secrets.
pub fn base32(text: &str) -> Vec<u8> {
    let mut bits = 0u64;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.trim().trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => panic!("not base32: {text}"),
        };
        bits = (bits << 5) | u64::from(v);
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

/// RFC 6238 TOTP (HMAC-SHA-1, 6 digits, 30 s) at `t`.
pub fn totp_at(secret: &[u8], t: u64) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = aws_lc_rs::hmac::sign(&key, &(t / 30).to_be_bytes());
    let h = mac.as_ref();
    let off = usize::from(h[19] & 0xf);
    let bin = (u32::from(h[off] & 0x7f) << 24)
        | (u32::from(h[off + 1]) << 16)
        | (u32::from(h[off + 2]) << 8)
        | u32::from(h[off + 3]);
    format!("{:06}", bin % 1_000_000)
}

/// axe-core from npm (installed by scripts/oidc-setup.sh beside the OpenID Provider).
pub fn axe_source() -> String {
    let dir = std::env::var_os("AUTHGATE_OIDC_PROVIDER_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/oidc-provider")
        });
    let path = dir.join("node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run ./scripts/test.sh (scripts/oidc-setup.sh installs axe-core)",
            path.display()
        )
    })
}

/// Runs axe-core on the current page: no violations.
pub async fn no_axe_violations(b: &Driver, axe: &str, what: &str) {
    b.js(&format!("{axe}\nreturn true;")).await;
    let v = b
        .script(
            "const done = arguments[arguments.length - 1];\
             axe.run(document).then(r => done(r.violations.map(v => v.id + ': ' + v.help + ' @ ' + \
             v.nodes.map(n => n.target.join(' ')).join(', ')))).catch(e => done(['axe failed: ' + e]));",
        )
        .await;
    assert_eq!(v, json!([]), "axe-core on {what}");
}
