//! argon2id password hashing and verification on tokio's blocking pool, behind a bound: at
//! most one hash per core runs, a short queue waits, and beyond it callers get 503 at once,
//! so a login storm cannot starve proxied traffic of threads.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Passwords longer than this are refused (argon2 itself takes up to 2^32-1 bytes; the cap
/// bounds the work a request can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("too many password checks in progress")]
    Busy,
    #[error("password hashing failed")]
    Failed,
}

/// Hashes with OWASP's argon2id defaults (m=19456 KiB, t=2, p=1).
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing failed: {e}"))
}

/// Verifies against any argon2 PHC string (argon2id, argon2i, argon2d; any parameters).
pub fn verify_password(password: &[u8], phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default().verify_password(password, &hash).is_ok(),
        Err(_) => false,
    }
}

pub struct Hasher {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Verified against when the user does not exist, so that both cost the same.
    dummy: String,
}

impl Hasher {
    pub fn new(concurrency: usize) -> Result<Self, String> {
        let n = if concurrency == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            concurrency
        };
        Ok(Hasher {
            permits: Arc::new(Semaphore::new(n)),
            waiting: AtomicUsize::new(0),
            max_waiting: n * 16,
            dummy: hash_password(b"authgate-dummy-password-for-unknown-users")?,
        })
    }

    /// Verifies `password` against `phc`, or against the dummy hash when there is no user.
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool, HashError> {
        let phc = phc.unwrap_or(&self.dummy).to_owned();
        let password = password.to_owned();
        let known = phc != self.dummy;
        self.run(move || known && verify_password(password.as_bytes(), &phc))
            .await
    }

    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let password = password.to_owned();
        self.run(move || hash_password(password.as_bytes()).ok())
            .await?
            .ok_or(HashError::Failed)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Busy);
        }
        let permit = self.permits.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let permit = permit.map_err(|_| HashError::Failed)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|_| HashError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash_password(b"correct horse").unwrap_or_default();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password(b"correct horse", &h));
        assert!(!verify_password(b"correct hors", &h));
        assert!(!verify_password(b"x", "not a phc string"));
    }

    #[test]
    fn long_passwords_are_not_truncated() {
        let long = vec![b'a'; 200];
        let h = hash_password(&long).unwrap_or_default();
        let mut other = long.clone();
        other[199] = b'b';
        assert!(verify_password(&long, &h));
        assert!(!verify_password(&other, &h));
    }
}
