//! The `mfa_token`: what a right password earns when a second factor must follow. Signed
//! with its own key (derived from the signing key, under another label), typed, five minutes
//! long, spent when the factor is given, and not a JWT: no endpoint but
//! `/auth/login/totp` and the enrolment form takes it.

use crate::auth::tokens::TokenError;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const PREFIX: &str = "mfa.";
/// How long the second step may take.
pub const TTL_SECS: u64 = 300;
/// Longer is not a token of ours.
const MAX_LEN: usize = 1024;

/// What the holder may do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Give a code (TOTP or recovery) of an enrolled factor.
    Code,
    /// Enrol a first factor (`second_factor = "required"`, none yet).
    Enrol,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub sub: String,
    pub jti: String,
    pub exp: u64,
    #[serde(rename = "for")]
    pub purpose: Purpose,
}

pub struct ChallengeKey(aws_lc_rs::hmac::Key);

impl ChallengeKey {
    pub fn derive(secret: &[u8]) -> ChallengeKey {
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &[b"authgate mfa token v1\0".as_slice(), secret].concat(),
        );
        ChallengeKey(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            digest.as_ref(),
        ))
    }

    pub fn issue(
        &self,
        sub: &str,
        purpose: Purpose,
        now: u64,
    ) -> Result<String, crate::ids::RngError> {
        let c = Challenge {
            sub: sub.to_owned(),
            jti: crate::ids::random_id()?,
            exp: now + TTL_SECS,
            purpose,
        };
        let body = B64.encode(serde_json::to_vec(&c).unwrap_or_default());
        let tag = aws_lc_rs::hmac::sign(&self.0, body.as_bytes());
        Ok(format!("{PREFIX}{body}.{}", B64.encode(tag.as_ref())))
    }

    /// The challenge `token` carries, if it is ours, unexpired and for `purpose`.
    pub fn verify(&self, token: &str, purpose: Purpose, now: u64) -> Result<Challenge, TokenError> {
        if token.len() > MAX_LEN {
            return Err(TokenError::Invalid);
        }
        let (body, tag) = token
            .strip_prefix(PREFIX)
            .and_then(|t| t.split_once('.'))
            .ok_or(TokenError::Invalid)?;
        let tag = B64.decode(tag).map_err(|_| TokenError::Invalid)?;
        aws_lc_rs::hmac::verify(&self.0, body.as_bytes(), &tag).map_err(|_| TokenError::Invalid)?;
        let json = B64.decode(body).map_err(|_| TokenError::Invalid)?;
        let c: Challenge = serde_json::from_slice(&json).map_err(|_| TokenError::Invalid)?;
        if c.purpose != purpose {
            return Err(TokenError::WrongType);
        }
        if c.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_is_typed_signed_and_short_lived() {
        let k = ChallengeKey::derive(b"signing secret");
        let t = k.issue("alice", Purpose::Code, 1000).unwrap_or_default();
        let c = k
            .verify(&t, Purpose::Code, 1001)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.sub.as_str(), c.exp), ("alice", 1000 + TTL_SECS));
        assert_eq!(
            k.verify(&t, Purpose::Enrol, 1001),
            Err(TokenError::WrongType)
        );
        assert_eq!(
            k.verify(&t, Purpose::Code, 1000 + TTL_SECS),
            Err(TokenError::Expired)
        );
        assert_eq!(
            ChallengeKey::derive(b"other").verify(&t, Purpose::Code, 1001),
            Err(TokenError::Invalid)
        );
        let forged = t.replacen("mfa.", "mfa.x", 1);
        assert_eq!(
            k.verify(&forged, Purpose::Code, 1001),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            k.verify("eyJhbGciOi.x.y", Purpose::Code, 1001),
            Err(TokenError::Invalid)
        );
    }
}
