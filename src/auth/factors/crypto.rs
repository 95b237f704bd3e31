//! The factor key (`login.factor_key_file`): second-factor secrets are sealed under it with
//! AES-256-GCM, bound to the user they belong to, so a users file or a Redis dump alone
//! gives no one a user's TOTP secret, and a sealed secret copied to another user fails.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::Engine as _;
use std::path::{Path, PathBuf};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// What sealed text starts with (the format's version).
const PREFIX: &str = "v1.";

/// Why the factor key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FactorKeyError {
    #[error("no factor key is configured: set login.factor_key_file (second factors of a Redis user store need one every replica mounts)")]
    NotConfigured,
    #[error("factor key {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("factor key {}: it holds {len} bytes; it needs at least 32 (e.g. `head -c 32 /dev/urandom > {}`)", path.display(), path.display())]
    TooShort { path: PathBuf, len: usize },
    #[error("no random numbers")]
    Rng,
}

/// Sealed text that does not open: another key, another user, or altered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a second-factor record does not open under the factor key (another key, another user, or altered)")]
pub struct Unseal;

pub struct FactorKey(LessSafeKey);

impl std::fmt::Debug for FactorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FactorKey(..)")
    }
}

impl FactorKey {
    /// The key derived from `material` (the file's bytes; at least 32).
    pub fn derive(material: &[u8]) -> FactorKey {
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &[b"authgate factor key v1\0".as_slice(), material].concat(),
        );
        // A 32-byte key for AES-256: cannot fail.
        let key = UnboundKey::new(&AES_256_GCM, digest.as_ref())
            .unwrap_or_else(|_| unreachable!("SHA-256 gives 32 bytes"));
        FactorKey(LessSafeKey::new(key))
    }

    /// Reads the key file; with `create`, a missing one is made (32 random bytes, mode 0600;
    /// two processes creating it at once agree on whichever came first).
    pub fn load(path: &Path, create: bool) -> Result<FactorKey, FactorKeyError> {
        let io = |source| FactorKeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => Self::checked(path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let bytes = crate::ids::random_bytes::<32>().map_err(|_| FactorKeyError::Rng)?;
                let text = B64.encode(bytes) + "\n";
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                {
                    Ok(mut f) => {
                        f.write_all(text.as_bytes()).map_err(io)?;
                        f.sync_all().map_err(io)?;
                        tracing::info!(path = %path.display(), "created the factor key (second factors are sealed under it: keep it, and back it up with the users file)");
                        Self::checked(path, text.as_bytes())
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load(path, false)
                    }
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    fn checked(path: &Path, bytes: &[u8]) -> Result<FactorKey, FactorKeyError> {
        let material = bytes.trim_ascii();
        if material.len() < 32 {
            return Err(FactorKeyError::TooShort {
                path: path.to_path_buf(),
                len: material.len(),
            });
        }
        Ok(Self::derive(material))
    }

    /// `plain` sealed for `context` (the user it belongs to, and what it is).
    pub fn seal(&self, context: &str, plain: &[u8]) -> Result<String, FactorKeyError> {
        let nonce = crate::ids::random_bytes::<NONCE_LEN>().map_err(|_| FactorKeyError::Rng)?;
        let mut data = plain.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .map_err(|_| FactorKeyError::Rng)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{PREFIX}{}", B64.encode(out)))
    }

    /// What `seal` sealed for `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, Unseal> {
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| B64.decode(b).ok())
            .ok_or(Unseal)?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(Unseal);
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unseal)?;
        let mut data = data.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| Unseal)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_user_and_key() {
        let k = FactorKey::derive(&[7u8; 32]);
        let s = k.seal("totp\0alice", b"secret").unwrap_or_default();
        assert!(s.starts_with("v1."));
        assert!(!s.contains("secret"));
        assert_eq!(k.open("totp\0alice", &s), Ok(b"secret".to_vec()));
        assert_eq!(k.open("totp\0bob", &s), Err(Unseal));
        assert_eq!(
            FactorKey::derive(&[8u8; 32]).open("totp\0alice", &s),
            Err(Unseal)
        );
        let mut altered = s.clone();
        altered.pop();
        altered.push(if s.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(k.open("totp\0alice", &altered), Err(Unseal));
        assert_eq!(k.open("totp\0alice", "v1."), Err(Unseal));
        assert_ne!(
            s,
            k.seal("totp\0alice", b"secret").unwrap_or_default(),
            "a fresh nonce each time"
        );
    }

    #[test]
    fn a_missing_key_file_is_created_private_and_then_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("factor.key");
        assert!(matches!(
            FactorKey::load(&path, false),
            Err(FactorKeyError::Io { .. })
        ));
        let a = FactorKey::load(&path, true).unwrap_or_else(|e| panic!("{e}"));
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        let b = FactorKey::load(&path, true).unwrap_or_else(|e| panic!("{e}"));
        let sealed = a.seal("x", b"y").unwrap_or_default();
        assert_eq!(
            b.open("x", &sealed),
            Ok(b"y".to_vec()),
            "the same key again"
        );
        std::fs::write(&path, "short").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            FactorKey::load(&path, false),
            Err(FactorKeyError::TooShort { len: 5, .. })
        ));
    }
}
