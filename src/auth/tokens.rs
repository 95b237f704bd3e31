//! Issuing and verifying access and refresh tokens. Verification accepts only the configured
//! algorithm, requires and checks iss, aud, exp, nbf (with leeway), and checks the `type`
//! claim itself, since jsonwebtoken does not.

use super::keys::KeySet;
use crate::config::TokensConfig;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    Access,
    Refresh,
}

/// Claims as issued.
#[derive(Serialize)]
struct IssuedClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: &'a str,
    sid: &'a str,
    #[serde(rename = "type")]
    typ: TokenType,
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<&'a [String]>,
}

/// Claims of a verified token. Strict types: a claim of the wrong JSON type fails the token.
#[derive(Clone, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    pub sid: String,
    #[serde(rename = "type")]
    pub typ: TokenType,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // jti and sid identify live sessions: keep them out of logs.
        f.debug_struct("Claims")
            .field("sub", &self.sub)
            .field("typ", &self.typ)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused (never echoed with the token itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is expired")]
    Expired,
    #[error("the token is not valid")]
    Invalid,
    #[error("wrong token type")]
    WrongType,
    #[error("the token has been revoked")]
    Revoked,
}

impl TokenError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "the token is expired",
            Self::Invalid => "the token is not valid",
            Self::WrongType => "wrong token type",
            Self::Revoked => "the token has been revoked",
        }
    }
}

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8192;

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn random_id() -> String {
    let mut b = [0u8; 16];
    // aws-lc's RNG only fails if the OS has no entropy source at all.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        b = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            .to_le_bytes();
    }
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A freshly issued token with the facts callers need.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub jti: String,
    pub exp: u64,
}

pub struct Tokens {
    keys: Arc<KeySet>,
    header: Header,
    validation: Validation,
    issuer: String,
    audience: String,
    pub access_ttl: u64,
    pub refresh_ttl: u64,
    pub leeway: u64,
}

impl Tokens {
    pub fn new(cfg: &TokensConfig, keys: Arc<KeySet>) -> Self {
        let mut validation = Validation::new(keys.algorithm);
        validation.set_issuer(&[&cfg.issuer]);
        validation.set_audience(&[&cfg.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.leeway = cfg.leeway.as_secs();
        let mut header = Header::new(keys.algorithm);
        header.kid = Some(keys.kid.clone());
        header.typ = Some("JWT".to_owned());
        Tokens {
            keys,
            header,
            validation,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            access_ttl: cfg.access_ttl.as_secs(),
            refresh_ttl: cfg.refresh_ttl.as_secs(),
            leeway: cfg.leeway.as_secs(),
        }
    }

    /// Signs a token. `iat` may be a second ahead of the clock, see `Auth::issue_time`.
    pub fn issue(
        &self,
        typ: TokenType,
        sub: &str,
        sid: &str,
        roles: Option<&[String]>,
        iat: u64,
        exp: u64,
    ) -> Result<Issued, String> {
        let jti = random_id();
        let claims = IssuedClaims {
            iss: &self.issuer,
            aud: &self.audience,
            sub,
            iat,
            nbf: iat.min(now_secs()),
            exp,
            jti: &jti,
            sid,
            typ,
            roles,
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.keys.encoding)
            .map_err(|e| format!("signing failed: {e}"))?;
        Ok(Issued { token, jti, exp })
    }

    /// Verifies signature and claims and that the token is of type `want`.
    pub fn verify(&self, token: &str, want: TokenType) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN || token.is_empty() {
            return Err(TokenError::Invalid);
        }
        // A kid naming some other key is refused outright; none at all is fine.
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.kid.as_deref().is_some_and(|k| k != self.keys.kid) {
            return Err(TokenError::Invalid);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.keys.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let claims = data.claims;
        if claims.typ != want {
            return Err(TokenError::WrongType);
        }
        if claims.sub.is_empty() || claims.jti.is_empty() || claims.sid.is_empty() {
            return Err(TokenError::Invalid);
        }
        if want == TokenType::Access && claims.roles.is_none() {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}
