//! Signing and verification keys: loaded once from PEM or a secret, with their RFC 7638
//! thumbprint as `kid` and the public JWKS document.

use crate::config::{Algorithm, KeySource, TokensConfig};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{DecodingKey, EncodingKey};
use std::path::{Path, PathBuf};

/// Why a key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key {} does not exist; create one with `authgate keygen --alg {alg:?} --out {}`", path.display(), path.display())]
    Missing { path: PathBuf, alg: Algorithm },
    #[error("cannot read signing key {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signing key {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("not a usable {alg:?} key: {reason}; create one with `authgate keygen --alg {alg:?}`")]
    Parse { alg: Algorithm, reason: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error(transparent)]
    Rng(#[from] crate::ids::RngError),
}

/// Whether a missing development key may be created (only `serve` says yes, and only when
/// the config sets `tokens.generate_missing_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generate {
    Yes,
    No,
}

/// What `KeySet::resolve` found.
pub enum Resolved {
    Loaded(KeySet),
    /// The key file is missing and the config allows `serve` to generate it.
    WillGenerate(PathBuf),
}

/// The gateway's one signing key and what verifies it.
pub struct KeySet {
    pub algorithm: jsonwebtoken::Algorithm,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    pub kid: String,
    /// `{"keys":[...]}` for `/.well-known/jwks.json`; None for HS256 (a secret is not published).
    pub jwks: Option<String>,
    /// Verify-only keys of earlier rotations, by `kid`.
    previous: Vec<(String, DecodingKey)>,
}

fn bad_jwks(e: serde_json::Error) -> KeyError {
    KeyError::Generate(format!("JWKS: {e}"))
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

pub fn jwt_algorithm(alg: Algorithm) -> jsonwebtoken::Algorithm {
    match alg {
        Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
    }
}

impl KeySet {
    /// The signing key's secret material (for keys derived from it, such as CSRF's).
    pub fn secret_material(&self) -> &[u8] {
        self.encoding.as_bytes()
    }

    /// The signing key the config names. With `Generate::Yes` a missing key file is created
    /// first when the config allows it; with `Generate::No` nothing is ever written.
    pub fn resolve(cfg: &TokensConfig, generate: Generate) -> Result<Resolved, KeyError> {
        match Self::resolve_one(cfg, &cfg.key, generate)? {
            Resolved::Loaded(mut current) => {
                for source in &cfg.previous {
                    let Resolved::Loaded(old) = Self::resolve_one(cfg, source, Generate::No)?
                    else {
                        continue;
                    };
                    current.add_previous(old)?;
                }
                Ok(Resolved::Loaded(current))
            }
            other => Ok(other),
        }
    }

    /// A verify-only key of an earlier rotation: tokens it signed stay valid, its public
    /// part stays in JWKS.
    fn add_previous(&mut self, old: KeySet) -> Result<(), KeyError> {
        if old.kid == self.kid {
            return Ok(());
        }
        if let (Some(doc), Some(old_doc)) = (&self.jwks, &old.jwks) {
            let mut set: serde_json::Value = serde_json::from_str(doc).map_err(bad_jwks)?;
            let old_set: serde_json::Value = serde_json::from_str(old_doc).map_err(bad_jwks)?;
            if let (Some(keys), Some(old_keys)) =
                (set["keys"].as_array_mut(), old_set["keys"].as_array())
            {
                keys.extend(old_keys.iter().cloned());
            }
            self.jwks = Some(set.to_string());
        }
        self.previous.push((old.kid, old.decoding));
        Ok(())
    }

    /// Every key that verifies tokens, by `kid`: the current one first, then the previous.
    pub fn verification_keys(&self) -> impl Iterator<Item = (&str, &DecodingKey)> {
        std::iter::once((self.kid.as_str(), &self.decoding))
            .chain(self.previous.iter().map(|(kid, key)| (kid.as_str(), key)))
    }

    fn resolve_one(
        cfg: &TokensConfig,
        key: &KeySource,
        generate: Generate,
    ) -> Result<Resolved, KeyError> {
        let algorithm = jwt_algorithm(cfg.algorithm);
        match key {
            KeySource::Secret(secret) => {
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret);
                Ok(Resolved::Loaded(KeySet {
                    algorithm,
                    encoding: EncodingKey::from_secret(secret),
                    decoding: DecodingKey::from_secret(secret),
                    // A hash of the secret names it without revealing it.
                    kid: URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]),
                    jwks: None,
                    previous: Vec::new(),
                }))
            }
            KeySource::Pem {
                path,
                generate_if_missing,
            } => {
                if !path.exists() {
                    match (generate_if_missing, generate) {
                        (true, Generate::Yes) => {
                            write_new_key(path, cfg.algorithm)?;
                            tracing::warn!(path = %path.display(), "generated a new signing key (tokens.generate_missing_key = true); use a managed key in production");
                        }
                        (true, Generate::No) => return Ok(Resolved::WillGenerate(path.clone())),
                        (false, _) => {
                            return Err(KeyError::Missing {
                                path: path.clone(),
                                alg: cfg.algorithm,
                            })
                        }
                    }
                }
                let pem = std::fs::read(path).map_err(|source| KeyError::Read {
                    path: path.clone(),
                    source,
                })?;
                Self::from_pem(cfg.algorithm, &pem)
                    .map(Resolved::Loaded)
                    .map_err(|e| KeyError::Invalid {
                        path: path.clone(),
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// `resolve` for callers that need the key now: a key still to be generated is an error.
    pub fn load(cfg: &TokensConfig, generate: Generate) -> Result<KeySet, KeyError> {
        match Self::resolve(cfg, generate)? {
            Resolved::Loaded(k) => Ok(k),
            Resolved::WillGenerate(path) => Err(KeyError::Missing {
                path,
                alg: cfg.algorithm,
            }),
        }
    }

    pub fn from_pem(alg: Algorithm, pem: &[u8]) -> Result<KeySet, KeyError> {
        let algorithm = jwt_algorithm(alg);
        let hint = |e: jsonwebtoken::errors::Error| KeyError::Parse {
            alg,
            reason: format!("not a PKCS#8 private key ({e})"),
        };
        let encoding = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            Algorithm::HS256 => {
                return Err(KeyError::Parse {
                    alg,
                    reason: "HS256 takes a secret, not a PEM key".to_owned(),
                })
            }
        }
        .map_err(hint)?;
        let mut jwk = match alg {
            Algorithm::EdDSA => ed25519_jwk(&encoding).map_err(|reason| KeyError::Parse {
                alg,
                reason: reason.into_owned(),
            })?,
            _ => Jwk::from_encoding_key(&encoding, algorithm).map_err(hint)?,
        };
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(hint)?;
        jwk.common = CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(key_algorithm(alg)),
            key_id: Some(kid.clone()),
            ..Default::default()
        };
        let decoding = DecodingKey::from_jwk(&jwk).map_err(hint)?;
        let jwks =
            serde_json::to_string(&JwkSet { keys: vec![jwk] }).map_err(|e| KeyError::Parse {
                alg,
                reason: e.to_string(),
            })?;
        Ok(KeySet {
            algorithm,
            encoding,
            decoding,
            kid,
            jwks: Some(jwks),
            previous: Vec::new(),
        })
    }
}

fn key_algorithm(alg: Algorithm) -> KeyAlgorithm {
    match alg {
        Algorithm::HS256 => KeyAlgorithm::HS256,
        Algorithm::RS256 => KeyAlgorithm::RS256,
        Algorithm::ES256 => KeyAlgorithm::ES256,
        Algorithm::EdDSA => KeyAlgorithm::EdDSA,
    }
}

/// Ed25519 public JWK from a PKCS#8 v1 or v2 private key (jsonwebtoken only reads v1). The
/// error is the reason, for `KeyError::Parse`.
fn ed25519_jwk(encoding: &EncodingKey) -> Result<Jwk, std::borrow::Cow<'static, str>> {
    use aws_lc_rs::signature::KeyPair;
    let pair =
        aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(encoding.as_bytes())
            .map_err(|e| std::borrow::Cow::Owned(format!("not an Ed25519 PKCS#8 key: {e}")))?;
    Ok(Jwk {
        common: CommonParameters::default(),
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        }),
    })
}

/// A new private key as PEM (or, for HS256, a random base64 secret of 48 bytes).
pub fn generate(alg: Algorithm) -> Result<String, KeyError> {
    let pair = match alg {
        Algorithm::HS256 => {
            let secret: [u8; 48] = crate::ids::random_bytes()?;
            return Ok(format!(
                "{}\n",
                base64::engine::general_purpose::STANDARD.encode(secret)
            ));
        }
        Algorithm::EdDSA => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
        Algorithm::ES256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        Algorithm::RS256 => {
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        }
    }
    .map_err(|e| KeyError::Generate(e.to_string()))?;
    Ok(pair.serialize_pem())
}

/// Writes a new key readable by the owner only.
pub fn write_new_key(path: &Path, alg: Algorithm) -> Result<(), KeyError> {
    let pem = generate(alg)?;
    let write_error = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(write_error)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    let mut f = opts.open(path).map_err(write_error)?;
    f.write_all(pem.as_bytes()).map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_with_stable_kids() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let pem = generate(alg).unwrap_or_else(|e| panic!("{e}"));
            let a =
                KeySet::from_pem(alg, pem.as_bytes()).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            let b = KeySet::from_pem(alg, pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(a.kid, b.kid);
            assert_eq!(a.kid.len(), 43, "base64url SHA-256");
            let jwks = a.jwks.unwrap_or_default();
            assert!(jwks.contains(&a.kid), "{jwks}");
            assert!(!jwks.contains("\"d\""), "private part leaked: {jwks}");
        }
    }

    #[test]
    fn wrong_kind_of_key_is_refused() {
        let ed = generate(Algorithm::EdDSA).unwrap_or_default();
        assert!(KeySet::from_pem(Algorithm::ES256, ed.as_bytes()).is_err());
        assert!(KeySet::from_pem(Algorithm::EdDSA, b"garbage").is_err());
    }
}
