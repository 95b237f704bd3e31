//! The sign-in in flight: state, nonce, PKCE verifier, `next` and the redirect URL, carried by
//! the browser in a short-lived, HttpOnly cookie signed with a key derived from the gateway's
//! signing key, so any replica that shares the key can finish the flow and no server keeps
//! anything until the callback. The cookie binds the flow to the browser that started it:
//! a callback URL finished in another browser (login CSRF) has no cookie to match.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// How long a sign-in may take at the provider.
pub const FLOW_TTL: u64 = 600;

/// The cookie's name (`__Host-` over TLS: only this host, over HTTPS, may set it).
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-authgate_oidc"
    } else {
        "authgate_oidc"
    }
}

/// What the cookie carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// The provider's name.
    pub p: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub next: String,
    pub redirect_uri: String,
    /// Unix seconds after which the cookie is refused.
    pub exp: u64,
}

/// Signs and opens flow cookies.
pub struct FlowKey(aws_lc_rs::hmac::Key);

impl FlowKey {
    pub fn derive(secret: &[u8]) -> FlowKey {
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &[b"authgate oidc flow v1\0".as_slice(), secret].concat(),
        );
        FlowKey(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            digest.as_ref(),
        ))
    }

    pub fn seal(&self, flow: &Flow) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(flow).unwrap_or_default());
        let tag = aws_lc_rs::hmac::sign(&self.0, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The flow, if the cookie is ours, unaltered and not expired.
    pub fn open(&self, cookie: &str, now: u64) -> Option<Flow> {
        let (body, tag) = cookie.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        aws_lc_rs::hmac::verify(&self.0, body.as_bytes(), &tag).ok()?;
        let flow: Flow = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        (flow.exp >= now).then_some(flow)
    }
}

/// A PKCE verifier (43 base64url characters, 256 random bits) and its S256 challenge.
pub fn pkce() -> Result<(String, String), crate::ids::RngError> {
    let verifier = URL_SAFE_NO_PAD.encode(crate::ids::random_bytes::<32>()?);
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    Ok((verifier, challenge))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(exp: u64) -> Flow {
        Flow {
            p: "corp".into(),
            state: "s".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            next: "/app".into(),
            redirect_uri: "https://app.example/auth/oidc/corp/callback".into(),
            exp,
        }
    }

    #[test]
    fn a_sealed_flow_opens_only_unaltered_and_in_time() {
        let key = FlowKey::derive(b"secret");
        let sealed = key.seal(&flow(100));
        assert_eq!(key.open(&sealed, 50), Some(flow(100)));
        assert_eq!(key.open(&sealed, 101), None, "expired");
        assert_eq!(FlowKey::derive(b"other").open(&sealed, 50), None);
        let (body, tag) = sealed.split_once('.').unwrap_or_default();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Flow {
                next: "//evil".into(),
                ..flow(100)
            })
            .unwrap_or_default(),
        );
        assert_eq!(key.open(&format!("{forged}.{tag}"), 50), None);
        assert!(key.open(body, 50).is_none());
    }

    /// RFC 7636 appendix B.
    #[test]
    fn s256_challenge_matches_the_rfc() {
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let c = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            v.as_bytes(),
        ));
        assert_eq!(c, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        let (v2, c2) = pkce().unwrap_or_default();
        assert_eq!(v2.len(), 43);
        assert_ne!(v2, c2);
    }
}
