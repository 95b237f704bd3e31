//! Reading a token that missed the cache: the compact JWS split once, its protected header
//! read once, its signature checked with a key prepared when the key set loaded, then its
//! claims read and checked (RFC 7515, RFC 7519).
//!
//! jsonwebtoken still signs. It verified too, at about 5 us a token on top of the signature
//! (the header parsed three times and the claims twice, the key copied into a boxed verifier
//! each time), and its Ed25519 check through aws-lc decoded the public key's point on every
//! call. Here an Ed25519 key is decoded once (ed25519-dalek; RFC 8032 5.1.7 without the
//! cofactor, S < L required: the check BoringSSL and aws-lc make), and a request's token is
//! checked in a batch with others that missed the cache at the same time (`batch`); HS256,
//! RS256 and ES256 go to jsonwebtoken's aws-lc provider for the signature alone.

use super::batch::Ed25519Key;
use super::{TokenClaims, TokenError};
use crate::auth::keys::KeySet;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::borrow::Cow;

/// A key that checks signatures, prepared once.
enum Verifier {
    Ed25519(Ed25519Key),
    /// HS256, RS256, ES256.
    Provider(DecodingKey),
}

impl Verifier {
    fn new(algorithm: Algorithm, key: &DecodingKey) -> Self {
        if algorithm == Algorithm::EdDSA {
            let point = key
                .try_get_as_bytes()
                .ok()
                .and_then(|b| <&[u8; 32]>::try_from(b).ok())
                .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(b).ok());
            if let Some(point) = point {
                return Verifier::Ed25519(Ed25519Key::new(point));
            }
        }
        // A key ed25519-dalek cannot decode goes to the provider, which refuses what it
        // cannot use: no token is accepted that the provider would refuse.
        Verifier::Provider(key.clone())
    }

    fn verify(&self, algorithm: Algorithm, signed: &[u8], signature: &str) -> bool {
        match self {
            Verifier::Ed25519(key) => {
                ed25519_signature(signature).is_some_and(|sig| key.verify(signed, &sig))
            }
            Verifier::Provider(key) => {
                jsonwebtoken::crypto::verify(signature, signed, key, algorithm).unwrap_or(false)
            }
        }
    }

    /// `verify`, in a batch with other requests' signatures when the key allows one.
    async fn verify_batched(&self, algorithm: Algorithm, signed: &[u8], signature: &str) -> bool {
        match self {
            Verifier::Ed25519(key) => match ed25519_signature(signature) {
                Some(sig) => key.verify_batched(signed, sig).await,
                None => false,
            },
            Verifier::Provider(_) => self.verify(algorithm, signed, signature),
        }
    }
}

/// An Ed25519 signature's 64 bytes from base64url.
fn ed25519_signature(signature: &str) -> Option<[u8; 64]> {
    let mut sig = [0u8; 64];
    match URL_SAFE_NO_PAD.decode_slice(signature, &mut sig) {
        Ok(64) => Some(sig),
        _ => None,
    }
}

/// The protected header: what it must say, and a `crit` we would have to refuse.
#[derive(Deserialize)]
struct Protected<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(default, borrow)]
    kid: Option<Cow<'a, str>>,
    /// RFC 7515 4.1.11: an extension we do not understand (we understand none) makes the
    /// token invalid.
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// The `aud` claim: one string (what the gateway issues) or an array of them (RFC 7519 4.1.3).
pub(super) enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn names(&self, audience: &str) -> bool {
        match self {
            Audience::One(a) => a == audience,
            Audience::Many(all) => all.iter().any(|a| a == audience),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = Audience;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Audience, E> {
                Ok(Audience::One(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Audience, A::Error> {
                let mut all = Vec::new();
                while let Some(a) = seq.next_element::<String>()? {
                    all.push(a);
                }
                Ok(Audience::Many(all))
            }
        }
        d.deserialize_any(Either)
    }
}

/// Everything a token is checked against: the algorithm, the keys by `kid`, the issuer and
/// audience, the clock leeway.
pub(super) struct Reader {
    algorithm: Algorithm,
    /// The current key first, then the previous ones, by `kid`.
    keys: Vec<(String, Verifier)>,
    issuer: String,
    audience: String,
    leeway: u64,
}

impl Reader {
    pub(super) fn new(keys: &KeySet, issuer: &str, audience: &str, leeway: u64) -> Self {
        Reader {
            algorithm: keys.algorithm,
            keys: keys
                .verification_keys()
                .map(|(kid, key)| (kid.to_owned(), Verifier::new(keys.algorithm, key)))
                .collect(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway,
        }
    }

    /// The key a token naming `kid` is checked with: the current one when it names none; a
    /// `kid` we have no key for is refused outright.
    fn key(&self, kid: Option<&str>) -> Option<&Verifier> {
        match kid {
            None => self.keys.first().map(|(_, v)| v),
            Some(kid) => self.keys.iter().find(|(k, _)| k == kid).map(|(_, v)| v),
        }
    }

    /// Signature first, then the claims: a token whose signature fails says nothing more
    /// than "invalid", even when it has expired.
    pub(super) fn read(&self, token: &str, now: u64) -> Result<TokenClaims, TokenError> {
        let opened = self.open(token)?;
        if !opened
            .key
            .verify(self.algorithm, opened.signed.as_bytes(), opened.signature)
        {
            return Err(TokenError::Invalid);
        }
        self.claims(opened.payload, now)
    }

    /// `read`, its signature checked in a batch with other requests' (`batch`) when the key
    /// allows one.
    pub(super) async fn read_batched(
        &self,
        token: &str,
        now: u64,
    ) -> Result<TokenClaims, TokenError> {
        let opened = self.open(token)?;
        let signed = opened.signed.as_bytes();
        if !opened
            .key
            .verify_batched(self.algorithm, signed, opened.signature)
            .await
        {
            return Err(TokenError::Invalid);
        }
        self.claims(opened.payload, now)
    }

    /// The compact form split, the protected header read, the key chosen.
    fn open<'t>(&self, token: &'t str) -> Result<Opened<'_, 't>, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let signed = token
            .get(..header.len() + 1 + payload.len())
            .ok_or(TokenError::Invalid)?;
        let header = decode(header)?;
        let header: Protected<'_> =
            serde_json::from_slice(&header).map_err(|_| TokenError::Invalid)?;
        if header.alg.parse::<Algorithm>().ok() != Some(self.algorithm) || header.crit.is_some() {
            return Err(TokenError::Invalid);
        }
        let key = self.key(header.kid.as_deref()).ok_or(TokenError::Invalid)?;
        Ok(Opened {
            key,
            signed,
            payload,
            signature,
        })
    }

    /// The claims of a token whose signature held.
    fn claims(&self, payload: &str, now: u64) -> Result<TokenClaims, TokenError> {
        let payload = decode(payload)?;
        let claims: TokenClaims =
            serde_json::from_slice(&payload).map_err(|_| TokenError::Invalid)?;
        if claims.exp.saturating_add(self.leeway) < now {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now.saturating_add(self.leeway)
            || claims.iss != self.issuer
            || !claims.aud.names(&self.audience)
        {
            return Err(TokenError::Invalid);
        }
        if claims.sub.is_empty() || claims.jti.is_empty() || claims.sid.is_empty() {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

/// A token split, its header read: the key it names, the signed text (header and payload),
/// the payload and the signature, still encoded.
struct Opened<'r, 't> {
    key: &'r Verifier,
    signed: &'t str,
    payload: &'t str,
    signature: &'t str,
}

fn decode(part: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys;
    use crate::config::{Algorithm as Alg, KeySource, TokensConfig};
    use serde_json::{json, Value};
    use std::time::Duration;

    const NOW: u64 = 2_000_000_000;

    fn key_set(alg: Alg) -> KeySet {
        KeySet::from_pem(alg, keys::generate(alg).unwrap().as_bytes()).unwrap()
    }

    /// An HS256 key set whose current secret is `current`, with `previous` ones.
    fn secrets(current: u8, previous: &[u8]) -> KeySet {
        let cfg = TokensConfig {
            issuer: "gw".into(),
            audience: "app".into(),
            algorithm: Alg::HS256,
            key: KeySource::Secret(vec![current; 32]),
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(600),
            leeway: Duration::ZERO,
            rotate_refresh: true,
            refresh_reuse_grace: Duration::ZERO,
            cache_capacity: 10,
            previous: previous
                .iter()
                .map(|b| KeySource::Secret(vec![*b; 32]))
                .collect(),
            secret_files: Vec::new(),
        };
        KeySet::load(&cfg, keys::Generate::No).unwrap()
    }

    fn claims() -> Value {
        json!({
            "iss": "gw", "aud": "app", "sub": "alice", "iat": NOW - 10, "nbf": NOW - 10,
            "exp": NOW + 60, "jti": "j1", "sid": "s1", "type": "access", "roles": ["user"],
        })
    }

    fn sign(keys: &KeySet, header: &jsonwebtoken::Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &keys.encoding).unwrap()
    }

    fn header(keys: &KeySet) -> jsonwebtoken::Header {
        let mut h = jsonwebtoken::Header::new(keys.algorithm);
        h.kid = Some(keys.kid.clone());
        h
    }

    fn reader(keys: &KeySet, leeway: u64) -> Reader {
        Reader::new(keys, "gw", "app", leeway)
    }

    /// A token from its three parts, each JSON or bytes base64url-encoded as given.
    fn raw(header: &Value, claims: &Value, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    #[test]
    fn each_algorithm_reads_its_own_tokens_and_refuses_a_changed_one() {
        for alg in [Alg::HS256, Alg::EdDSA, Alg::ES256, Alg::RS256] {
            let keys = match alg {
                Alg::HS256 => secrets(1, &[]),
                _ => key_set(alg),
            };
            let r = reader(&keys, 0);
            let token = sign(&keys, &header(&keys), &claims());
            let c = r.read(&token, NOW).unwrap();
            assert_eq!((c.sub.as_str(), c.exp), ("alice", NOW + 60), "{alg:?}");
            // Another key of the same algorithm signed it.
            let other = match alg {
                Alg::HS256 => secrets(2, &[]),
                _ => key_set(alg),
            };
            let mut h = header(&keys);
            h.kid = None;
            let forged = sign(&other, &h, &claims());
            assert_eq!(
                r.read(&forged, NOW).err(),
                Some(TokenError::Invalid),
                "{alg:?}"
            );
            // The claims changed under the signature.
            let (head, rest) = token.split_once('.').unwrap();
            let (_, sig) = rest.split_once('.').unwrap();
            let mut more = claims();
            more["roles"] = json!(["admin"]);
            let changed = format!("{head}.{}.{sig}", URL_SAFE_NO_PAD.encode(more.to_string()));
            assert_eq!(
                r.read(&changed, NOW).err(),
                Some(TokenError::Invalid),
                "{alg:?}"
            );
        }
    }

    /// ed25519-dalek accepts exactly what aws-lc accepts: the signature as signed, and none
    /// with a bit flipped, S not reduced (S + L), or a length other than 64.
    #[test]
    fn ed25519_agrees_with_aws_lc() {
        use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let keys = key_set(Alg::EdDSA);
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(keys.encoding.as_bytes()).unwrap();
        let public = pair.public_key().as_ref().to_vec();
        let ours = Verifier::new(keys.algorithm, &keys.decoding);
        assert!(matches!(ours, Verifier::Ed25519(_)));
        let theirs = UnparsedPublicKey::new(&ED25519, &public);
        let agree = |msg: &[u8], sig: &[u8]| {
            let expected = theirs.verify(msg, sig).is_ok();
            let got = ours.verify(keys.algorithm, msg, &URL_SAFE_NO_PAD.encode(sig));
            assert_eq!(got, expected, "sig {sig:02x?}");
            got
        };
        for n in 0..40u8 {
            let msg = vec![n; usize::from(n) * 7];
            let sig = pair.sign(&msg).as_ref().to_vec();
            assert!(agree(&msg, &sig));
            for bit in [0, 7, 100, 255, 256, 300, 511] {
                let mut bad = sig.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(!agree(&msg, &bad));
            }
            // S + L: the same point, a scalar out of range.
            let mut big = sig.clone();
            let mut carry = 0u16;
            for (s, l) in big[32..].iter_mut().zip(L) {
                let sum = u16::from(*s) + u16::from(l) + carry;
                *s = sum as u8;
                carry = sum >> 8;
            }
            assert!(!agree(&msg, &big));
            assert!(!agree(&msg, &sig[..63]));
            let mut long = sig.clone();
            long.push(0);
            assert!(!ours.verify(keys.algorithm, &msg, &URL_SAFE_NO_PAD.encode(&long)));
            assert!(!agree(&msg[..msg.len().saturating_sub(1)], &sig) || msg.is_empty());
        }
    }

    #[test]
    fn the_header_must_name_our_algorithm_and_a_key_we_have_and_no_crit() {
        let keys = key_set(Alg::EdDSA);
        let r = reader(&keys, 0);
        let good = sign(&keys, &header(&keys), &claims());
        let sig = good.rsplit('.').next().unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        for h in [
            json!({"alg": "none", "kid": keys.kid}),
            json!({"alg": "HS256", "kid": keys.kid}),
            json!({"alg": "eddsa", "kid": keys.kid}),
            json!({"kid": keys.kid}),
            json!({"alg": "EdDSA", "kid": "someone-else"}),
            json!({"alg": "EdDSA", "kid": 7}),
            json!({"alg": "EdDSA", "kid": keys.kid, "crit": ["exp"]}),
            json!(["EdDSA"]),
        ] {
            let token = raw(&h, &claims(), &sig);
            assert_eq!(r.read(&token, NOW).err(), Some(TokenError::Invalid), "{h}");
        }
        // The signature covers the header as sent: a header that says the same in other bytes
        // is not the one that was signed.
        let same = raw(&json!({"alg": "EdDSA", "kid": keys.kid}), &claims(), &sig);
        assert_eq!(r.read(&same, NOW).err(), Some(TokenError::Invalid));
        // No kid: the current key. "alg":"none" with no signature at all is refused too.
        let mut h = header(&keys);
        h.kid = None;
        assert!(r.read(&sign(&keys, &h, &claims()), NOW).is_ok());
        let unsigned = raw(&json!({"alg": "none"}), &claims(), b"");
        assert_eq!(r.read(&unsigned, NOW).err(), Some(TokenError::Invalid));
    }

    #[test]
    fn a_previous_key_still_verifies_by_its_kid() {
        let old = secrets(9, &[]);
        let keys = secrets(1, &[9]);
        let r = reader(&keys, 0);
        let token = sign(&old, &header(&old), &claims());
        assert!(r.read(&token, NOW).is_ok());
        // Without its kid it is checked against the current key, and fails.
        let mut h = header(&old);
        h.kid = None;
        assert_eq!(
            r.read(&sign(&old, &h, &claims()), NOW).err(),
            Some(TokenError::Invalid)
        );
        // A key no longer configured verifies nothing.
        let r = reader(&secrets(1, &[]), 0);
        assert_eq!(r.read(&token, NOW).err(), Some(TokenError::Invalid));
    }

    #[test]
    fn the_registered_claims_are_checked() {
        let keys = key_set(Alg::EdDSA);
        let r = reader(&keys, 0);
        let read = |c: &Value, now| r.read(&sign(&keys, &header(&keys), c), now).err();
        let with = |key: &str, value: Value| {
            let mut c = claims();
            c[key] = value;
            c
        };
        let without = |key: &str| {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(key);
            c
        };
        assert_eq!(read(&claims(), NOW), None);
        let invalid = Some(TokenError::Invalid);
        for (key, value, expected) in [
            ("iss", json!("other"), invalid),
            ("aud", json!("other"), invalid),
            // An array names us when it holds our audience.
            ("aud", json!(["other", "app"]), None),
            ("aud", json!(["other"]), invalid),
            ("aud", json!([]), invalid),
            ("aud", json!(["app", 7]), invalid),
            ("aud", json!({"app": 1}), invalid),
            ("nbf", json!(NOW + 5), invalid),
            ("exp", json!(NOW - 1), Some(TokenError::Expired)),
            ("exp", json!(NOW), None),
            ("exp", json!((NOW + 60) as f64 + 0.5), invalid),
            ("exp", json!("2000000060"), invalid),
            ("sub", json!(""), invalid),
            ("type", json!("id"), invalid),
        ] {
            assert_eq!(
                read(&with(key, value.clone()), NOW),
                expected,
                "{key}: {value}"
            );
        }
        for key in [
            "iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid", "type",
        ] {
            assert_eq!(read(&without(key), NOW), Some(TokenError::Invalid), "{key}");
        }
        // Leeway widens exp and nbf alike.
        let lenient = reader(&keys, 5);
        let read5 = |c: &Value| lenient.read(&sign(&keys, &header(&keys), c), NOW).err();
        assert_eq!(read5(&with("exp", json!(NOW - 5))), None);
        assert_eq!(
            read5(&with("exp", json!(NOW - 6))),
            Some(TokenError::Expired)
        );
        assert_eq!(read5(&with("nbf", json!(NOW + 5))), None);
        assert_eq!(
            read5(&with("nbf", json!(NOW + 6))),
            Some(TokenError::Invalid)
        );
        // An expired token with a bad signature is only invalid.
        let other = key_set(Alg::EdDSA);
        let mut h = header(&other);
        h.kid = None;
        let forged = sign(&other, &h, &with("exp", json!(NOW - 100)));
        assert_eq!(r.read(&forged, NOW).err(), Some(TokenError::Invalid));
    }

    #[test]
    fn malformed_compact_forms_are_invalid() {
        let keys = key_set(Alg::EdDSA);
        let r = reader(&keys, 0);
        let good = sign(&keys, &header(&keys), &claims());
        let (h, rest) = good.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        for bad in [
            String::new(),
            "..".to_owned(),
            format!("{h}.{p}"),
            format!("{h}.{p}.{s}."),
            format!("{h}.{p}.{s}.{s}"),
            format!("{h}=.{p}.{s}"),
            format!("{h}.{p}.{s}="),
            format!(
                "{h}.{p}.{}",
                s.replace(|c: char| c.is_ascii_lowercase(), "+")
            ),
            format!("{h}.{p}!.{s}"),
            format!("{h}.{}.{s}", URL_SAFE_NO_PAD.encode("not json")),
        ] {
            assert_eq!(r.read(&bad, NOW).err(), Some(TokenError::Invalid), "{bad}");
        }
        assert!(r.read(&good, NOW).is_ok());
    }
}
