//! TOTP (RFC 6238) as authenticator apps speak it: SHA-1, 6 digits, 30-second steps, one
//! step of skew either way. Which step a code matched is returned, so the caller can accept
//! each code once.

use totp_rs::{Algorithm, Secret, Totp};

/// Secret length in bytes (160 bits, as RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;

fn totp(secret: &[u8], issuer: &str, account: &str) -> Option<Totp> {
    totp_rs::Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret.to_vec())
        .with_issuer(Some(label_safe(issuer)))
        .with_account_name(label_safe(account))
        .build()
        .ok()
}

/// The otpauth label may not hold `:`; an empty issuer is not one.
fn label_safe(s: &str) -> String {
    let t: String = s.chars().filter(|c| *c != ':' && !c.is_control()).collect();
    if t.trim().is_empty() {
        "authgate".to_owned()
    } else {
        t.trim().to_owned()
    }
}

/// A new random secret.
pub fn new_secret() -> Result<[u8; SECRET_BYTES], crate::ids::RngError> {
    crate::ids::random_bytes::<SECRET_BYTES>()
}

/// The secret as authenticator apps take it typed in (base32, no padding).
pub fn secret_text(secret: &[u8]) -> String {
    Secret::from(secret.to_vec()).to_base32()
}

/// `otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=...` (what the QR code carries).
pub fn uri(secret: &[u8], issuer: &str, account: &str) -> Option<String> {
    totp(secret, issuer, account)?.to_url().ok()
}

/// The step whose code `code` is, at `now` (skew: the steps before and after count too).
pub fn check(secret: &[u8], code: &str, now: u64) -> Option<u64> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret, "authgate", "user")?.check(code, now)
}

/// The code of the step `now` falls in.
pub fn code_at(secret: &[u8], now: u64) -> Option<String> {
    Some(totp(secret, "authgate", "user")?.generate(now).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows (its 8-digit codes, last six digits).
    #[test]
    fn rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (t, code8) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code_at(secret, t).as_deref(), Some(&code8[2..]), "T = {t}");
        }
    }

    #[test]
    fn one_step_of_skew_and_no_more() {
        let secret = [3u8; SECRET_BYTES];
        let now = 1_700_000_015;
        let step = now / 30;
        let code = code_at(&secret, now).unwrap_or_default();
        assert_eq!(check(&secret, &code, now), Some(step));
        assert_eq!(check(&secret, &code, now + 30), Some(step), "one step late");
        assert_eq!(
            check(&secret, &code, now - 30),
            Some(step),
            "one step early"
        );
        assert_eq!(check(&secret, &code, now + 60), None);
        assert_eq!(check(&secret, "12345", now), None);
        assert_eq!(check(&secret, "12345a", now), None);
    }

    #[test]
    fn the_uri_is_what_authenticator_apps_read() {
        let secret = [1u8; SECRET_BYTES];
        let u = uri(&secret, "My: App", "alice").unwrap_or_default();
        assert!(u.starts_with("otpauth://totp/"), "{u}");
        assert!(
            u.contains(&format!("secret={}", secret_text(&secret))),
            "{u}"
        );
        assert!(u.contains("alice"), "{u}");
        assert!(!u.contains("algorithm=SHA256"), "{u}");
    }
}
