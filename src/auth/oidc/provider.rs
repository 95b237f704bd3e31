//! One identity provider at run time: its discovery document and signing keys, fetched at
//! start (in the background: a provider that is down does not stop the gateway) and on
//! demand, with the keys refetched at most once per `REFETCH_EVERY` when an ID token names a
//! `kid` the gateway does not have (the provider rotated its keys).

use super::http::{Client, FetchError};
use crate::config::OidcProviderConfig;
use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Unknown `kid`s refetch the keys at most this often.
const REFETCH_EVERY: Duration = Duration::from_secs(10);

/// Algorithms an ID token may be signed with: asymmetric only (never `none`, never HS*: an
/// HMAC "signed" with the provider's public key would verify against it).
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The parts of the discovery document the gateway uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Option<Vec<String>>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

/// One signing key of the provider and the algorithms it may verify.
pub struct ProviderKey {
    pub kid: Option<String>,
    pub algs: Vec<Algorithm>,
    pub key: DecodingKey,
}

/// What discovery found.
pub struct Discovered {
    pub meta: Metadata,
    /// The algorithms the provider says it signs ID tokens with, that the gateway accepts.
    pub algs: Vec<Algorithm>,
    pub keys: Vec<ProviderKey>,
}

/// Why a provider cannot be used now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("the discovery document is not usable: {0}")]
    Metadata(String),
}

pub struct Provider {
    pub cfg: OidcProviderConfig,
    client: Client,
    state: ArcSwapOption<Discovered>,
    /// One discovery (or key refetch) at a time.
    fetching: tokio::sync::Mutex<()>,
    last_key_fetch: Mutex<Option<Instant>>,
}

fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        _ => "HMAC",
    }
}

/// The accepted algorithm named `name`.
pub fn asymmetric(name: &str) -> Option<Algorithm> {
    ASYMMETRIC.into_iter().find(|a| alg_name(*a) == name)
}

/// The signing keys of a JWKS document the gateway can use; others are skipped (encryption
/// keys, symmetric keys, unknown types).
pub fn parse_keys(doc: &serde_json::Value) -> Vec<ProviderKey> {
    let Some(keys) = doc.get("keys").and_then(|k| k.as_array()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for k in keys {
        if k.get("use").is_some_and(|u| u != "sig") {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) else {
            continue;
        };
        let family: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => ASYMMETRIC[..6].to_vec(),
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => continue,
            },
            AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
            // A symmetric key is never an identity provider's signing key for us.
            _ => continue,
        };
        // A key that names its algorithm is used with that one only.
        let algs = match k.get("alg").and_then(|a| a.as_str()) {
            Some(name) => match asymmetric(name).filter(|a| family.contains(a)) {
                Some(a) => vec![a],
                None => continue,
            },
            None => family,
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        out.push(ProviderKey {
            kid: jwk.common.key_id.clone(),
            algs,
            key,
        });
    }
    out
}

impl Provider {
    pub fn new(cfg: OidcProviderConfig) -> Provider {
        Provider {
            client: Client::new(cfg.tls.clone()),
            cfg,
            state: ArcSwapOption::empty(),
            fetching: tokio::sync::Mutex::new(()),
            last_key_fetch: Mutex::new(None),
        }
    }

    /// A provider whose discovery is already known (the fuzz target; tests of validation).
    pub fn with_discovered(cfg: OidcProviderConfig, d: Discovered) -> Provider {
        let p = Provider::new(cfg);
        p.state.store(Some(Arc::new(d)));
        p
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// What discovery found, if it has succeeded.
    pub fn discovered(&self) -> Option<Arc<Discovered>> {
        self.state.load_full()
    }

    /// The discovery document and keys: known ones, or fetched now.
    pub async fn discover(&self) -> Result<Arc<Discovered>, ProviderError> {
        if let Some(d) = self.discovered() {
            return Ok(d);
        }
        let _one = self.fetching.lock().await;
        if let Some(d) = self.discovered() {
            return Ok(d);
        }
        let d = Arc::new(self.fetch_all().await?);
        self.state.store(Some(d.clone()));
        tracing::info!(provider = %self.cfg.name, issuer = %self.cfg.issuer, keys = d.keys.len(), "identity provider discovered");
        Ok(d)
    }

    /// Discovers in the background until it succeeds (1 s, 2 s, ... up to a minute apart).
    pub fn discover_in_background(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            loop {
                let Some(p) = me.upgrade() else { return };
                match p.discover().await {
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(provider = %p.cfg.name, error = %e, retry_in = ?wait, "identity provider unreachable; its sign-in button answers 502 until it is reachable");
                    }
                }
                drop(p);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        });
    }

    async fn fetch_all(&self) -> Result<Discovered, ProviderError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        let meta: Metadata = self.client.get_json(&url).await?;
        if meta.issuer != self.cfg.issuer {
            return Err(ProviderError::Metadata(format!(
                "it names issuer {:?}, the configuration {:?} (they must be equal)",
                meta.issuer, self.cfg.issuer
            )));
        }
        for (what, u) in [
            ("authorization_endpoint", Some(&meta.authorization_endpoint)),
            ("token_endpoint", Some(&meta.token_endpoint)),
            ("jwks_uri", Some(&meta.jwks_uri)),
            ("end_session_endpoint", meta.end_session_endpoint.as_ref()),
        ] {
            if let Some(u) = u {
                crate::config::check_provider_url(u, what).map_err(ProviderError::Metadata)?;
            }
        }
        let algs: Vec<Algorithm> = match &meta.id_token_signing_alg_values_supported {
            // OpenID Connect Discovery: RS256 when the provider does not say.
            None => vec![Algorithm::RS256],
            Some(names) => names.iter().filter_map(|n| asymmetric(n)).collect(),
        };
        if algs.is_empty() {
            return Err(ProviderError::Metadata(format!(
                "it signs ID tokens with none of the algorithms the gateway accepts ({:?}; accepted: RS*, PS*, ES256, ES384, EdDSA)",
                meta.id_token_signing_alg_values_supported.unwrap_or_default()
            )));
        }
        let keys = self.fetch_keys(&meta.jwks_uri).await?;
        Ok(Discovered { meta, algs, keys })
    }

    async fn fetch_keys(&self, jwks_uri: &str) -> Result<Vec<ProviderKey>, ProviderError> {
        if let Ok(mut last) = self.last_key_fetch.lock() {
            *last = Some(Instant::now());
        }
        let doc: serde_json::Value = self.client.get_json(jwks_uri).await?;
        let keys = parse_keys(&doc);
        if keys.is_empty() {
            return Err(ProviderError::Metadata(format!(
                "{jwks_uri} holds no signing key the gateway can use"
            )));
        }
        Ok(keys)
    }

    /// The keys again, when an ID token names a `kid` the gateway does not have; at most
    /// once per `REFETCH_EVERY` (a flood of made-up `kid`s cannot turn into a flood of
    /// fetches). True when new keys were loaded.
    pub async fn refetch_keys(&self) -> bool {
        let recent = self
            .last_key_fetch
            .lock()
            .ok()
            .and_then(|l| *l)
            .is_some_and(|t| t.elapsed() < REFETCH_EVERY);
        if recent {
            return false;
        }
        let _one = self.fetching.lock().await;
        let Some(current) = self.discovered() else {
            return false;
        };
        match self.fetch_keys(&current.meta.jwks_uri).await {
            Ok(keys) => {
                self.state.store(Some(Arc::new(Discovered {
                    meta: current.meta.clone(),
                    algs: current.algs.clone(),
                    keys,
                })));
                tracing::info!(provider = %self.cfg.name, "identity provider keys refetched (unknown kid)");
                true
            }
            Err(e) => {
                tracing::warn!(provider = %self.cfg.name, error = %e, "identity provider keys could not be refetched");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_encryption_keys_are_skipped() {
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "h"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "e"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "enc", "use": "enc"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "wrong-alg", "alg": "RS256"}
        ]});
        let keys = parse_keys(&doc);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("e"));
        assert_eq!(keys[0].algs, vec![Algorithm::EdDSA]);
    }

    #[test]
    fn only_asymmetric_algorithms_are_named() {
        assert_eq!(asymmetric("RS256"), Some(Algorithm::RS256));
        assert_eq!(asymmetric("HS256"), None);
        assert_eq!(asymmetric("none"), None);
    }
}
