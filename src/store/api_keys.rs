//! API keys as the user store keeps them: never the key, only its SHA-256 (a key is 256
//! random bits: a fast hash is enough, and a lookup by it costs no argon2), with the name,
//! roles, optional user, creation and expiry times and the paths it may open. In the users
//! file as `[[key]]` tables; in Redis as one hash (`<prefix>apikeys`: SHA-256 -> JSON).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Every key starts with this.
pub const PREFIX: &str = "agk_";

/// One stored key.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// What it is called (`keys revoke NAME`, `X-Auth-Key`); a user name's alphabet.
    pub name: String,
    /// base64url(SHA-256(key)).
    pub sha256: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// The user it acts as (the identity header); absent: the key's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Route patterns (`/api/**`) it may open besides needing `api_keys = true` there;
    /// empty: every such route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl ApiKey {
    /// Who the upstream is told the caller is.
    pub fn subject(&self) -> &str {
        self.user.as_deref().unwrap_or(&self.name)
    }

    /// The revocation store's "session" of this key: revoking it refuses the key on every
    /// replica at once; a new key of the same name is another session.
    pub fn sid(&self) -> String {
        format!(
            "k:{}:{}",
            self.name,
            &self.sha256[..self.sha256.len().min(12)]
        )
    }
}

/// base64url(SHA-256(key)).
pub fn digest(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        key.as_bytes(),
    ))
}

/// A new key: `agk_` + 32 random bytes in base64url (43 characters).
pub fn generate() -> Result<String, crate::ids::RngError> {
    let bytes = crate::ids::random_bytes::<32>()?;
    Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// True for text shaped like a key (checked before any lookup).
pub fn looks_like_key(s: &str) -> bool {
    s.len() == PREFIX.len() + 43
        && s.starts_with(PREFIX)
        && s[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_shaped_and_hashed() {
        let k = generate().unwrap_or_default();
        assert!(looks_like_key(&k), "{k}");
        assert!(!looks_like_key("agk_short"));
        assert!(!looks_like_key(&k.replace("agk_", "xyz_")));
        assert_eq!(digest(&k).len(), 43);
        assert_ne!(digest(&k), digest(&generate().unwrap_or_default()));
    }
}
