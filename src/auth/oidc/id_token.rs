//! Validating what a provider signs: ID tokens (OpenID Connect Core 3.1.3.7) and back-channel
//! logout tokens (Back-Channel Logout 1.0, 2.6). Signature by one of the provider's keys with
//! an algorithm it advertises (asymmetric only), `iss` equal to the configured issuer, `aud`
//! holding the client id (and `azp` equal to it when present or when `aud` has several), `exp`
//! and `iat` with the configured leeway; then each kind's own claims.

use super::provider::{Discovered, Provider};
use crate::clock::now_secs;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

/// Tokens longer than this are refused before parsing.
const MAX_LEN: usize = 16 * 1024;

/// A logout token older than this is refused (its `jti` is remembered this long).
pub const LOGOUT_TOKEN_MAX_AGE: u64 = 300;

const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Why a token from the provider was refused (logged and counted; never shown with the
/// token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("not a signed JWT")]
    Malformed,
    #[error("signed with an algorithm the provider does not advertise or the gateway refuses")]
    Algorithm,
    #[error("signed by no key of the provider")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("issued in the future or without iat")]
    IssuedAt,
    #[error("issuer is not the configured one")]
    Issuer,
    #[error("audience does not hold the client id (or azp is not it)")]
    Audience,
    #[error("nonce does not match this sign-in")]
    Nonce,
    #[error("a required claim is missing or of the wrong type")]
    Claims,
    #[error("not a back-channel logout token")]
    NotLogout,
}

/// What the token must say besides its signature.
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub leeway: u64,
}

/// Verifies signature and the common claims; returns every claim.
pub async fn verify(
    provider: &Provider,
    token: &str,
    expect: &Expect<'_>,
) -> Result<Map<String, Value>, IdTokenError> {
    if token.len() > MAX_LEN {
        return Err(IdTokenError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| IdTokenError::Malformed)?;
    if header.crit.is_some() {
        return Err(IdTokenError::Malformed);
    }
    let discovered = provider.discovered().ok_or(IdTokenError::Signature)?;
    if !discovered.algs.contains(&header.alg) {
        return Err(IdTokenError::Algorithm);
    }
    let kid = header.kid.as_deref();
    let first = check(&discovered, token, header.alg, kid, expect);
    // A kid the gateway does not know: the provider may have rotated; look again once.
    let claims = match first {
        Err(IdTokenError::Signature) if kid.is_some() && !knows(&discovered, kid) => {
            if !provider.refetch_keys().await {
                return Err(IdTokenError::Signature);
            }
            let again = provider.discovered().ok_or(IdTokenError::Signature)?;
            check(&again, token, header.alg, kid, expect)?
        }
        other => other?,
    };
    common_claims(&claims, expect)?;
    Ok(claims)
}

fn knows(d: &Discovered, kid: Option<&str>) -> bool {
    d.keys.iter().any(|k| k.kid.as_deref() == kid)
}

fn check(
    d: &Discovered,
    token: &str,
    alg: Algorithm,
    kid: Option<&str>,
    expect: &Expect<'_>,
) -> Result<Map<String, Value>, IdTokenError> {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.set_issuer(&[expect.issuer]);
    validation.set_audience(&[expect.client_id]);
    validation.set_required_spec_claims(&["iss", "aud"]);
    validation.validate_exp = false; // checked below: logout tokens may lack exp
    validation.validate_nbf = true;
    validation.leeway = expect.leeway;
    let candidates = d
        .keys
        .iter()
        .filter(|k| k.algs.contains(&alg))
        .filter(|k| kid.is_none() || k.kid.as_deref() == kid);
    let mut last = IdTokenError::Signature;
    for k in candidates {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind as K;
                last = match e.kind() {
                    K::InvalidSignature | K::InvalidEcdsaKey | K::InvalidRsaKey(_) => {
                        IdTokenError::Signature
                    }
                    K::InvalidIssuer => return Err(IdTokenError::Issuer),
                    K::InvalidAudience => return Err(IdTokenError::Audience),
                    K::ImmatureSignature => return Err(IdTokenError::IssuedAt),
                    K::MissingRequiredClaim(_) => return Err(IdTokenError::Claims),
                    K::InvalidAlgorithm => return Err(IdTokenError::Algorithm),
                    _ => IdTokenError::Malformed,
                };
            }
        }
    }
    Err(last)
}

fn number(claims: &Map<String, Value>, name: &str) -> Option<u64> {
    claims.get(name).and_then(Value::as_u64)
}

/// `aud`/`azp`, `iat`, `exp` (when present), a string `sub`.
fn common_claims(claims: &Map<String, Value>, expect: &Expect<'_>) -> Result<(), IdTokenError> {
    let now = now_secs();
    let several = claims
        .get("aud")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() > 1);
    match claims.get("azp") {
        Some(Value::String(azp)) if azp == expect.client_id => {}
        Some(_) => return Err(IdTokenError::Audience),
        None if several => return Err(IdTokenError::Audience),
        None => {}
    }
    let iat = number(claims, "iat").ok_or(IdTokenError::IssuedAt)?;
    if iat > now + expect.leeway {
        return Err(IdTokenError::IssuedAt);
    }
    match claims.get("exp") {
        None => {}
        Some(v) => {
            let exp = v.as_u64().ok_or(IdTokenError::Claims)?;
            if exp.saturating_add(expect.leeway) < now {
                return Err(IdTokenError::Expired);
            }
        }
    }
    match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => {}
        None => {}
        Some(_) => return Err(IdTokenError::Claims),
    }
    Ok(())
}

/// An ID token: the common checks, plus `exp` required and `nonce` equal to this sign-in's.
pub async fn verify_id_token(
    provider: &Provider,
    token: &str,
    expect: &Expect<'_>,
    nonce: &str,
) -> Result<Map<String, Value>, IdTokenError> {
    let claims = verify(provider, token, expect).await?;
    if number(&claims, "exp").is_none() {
        return Err(IdTokenError::Claims);
    }
    if !matches!(claims.get("sub"), Some(Value::String(_))) {
        return Err(IdTokenError::Claims);
    }
    match claims.get("nonce") {
        Some(Value::String(n)) if crate::auth::csrf::matches(Some(n), nonce) => Ok(claims),
        _ => Err(IdTokenError::Nonce),
    }
}

/// Whom a logout token ends: the provider's session, its user, or both named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutTarget {
    pub sid: Option<String>,
    pub sub: Option<String>,
    pub jti: String,
}

/// A back-channel logout token: the common checks, plus the logout event, `sid` and/or
/// `sub`, a `jti`, no `nonce`, and issued within the last `LOGOUT_TOKEN_MAX_AGE` seconds.
pub async fn verify_logout_token(
    provider: &Provider,
    token: &str,
    expect: &Expect<'_>,
) -> Result<LogoutTarget, IdTokenError> {
    let claims = verify(provider, token, expect).await?;
    if claims.contains_key("nonce") {
        return Err(IdTokenError::NotLogout);
    }
    let event = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(BACKCHANNEL_EVENT));
    if !event.is_some_and(Value::is_object) {
        return Err(IdTokenError::NotLogout);
    }
    let iat = number(&claims, "iat").ok_or(IdTokenError::IssuedAt)?;
    if iat + LOGOUT_TOKEN_MAX_AGE + expect.leeway < now_secs() {
        return Err(IdTokenError::Expired);
    }
    let text = |name: &str| -> Result<Option<String>, IdTokenError> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 512 => Ok(Some(s.clone())),
            Some(_) => Err(IdTokenError::Claims),
        }
    };
    let sid = text("sid")?;
    let sub = text("sub")?;
    let jti = text("jti")?.ok_or(IdTokenError::Claims)?;
    if sid.is_none() && sub.is_none() {
        return Err(IdTokenError::Claims);
    }
    Ok(LogoutTarget { sid, sub, jti })
}
