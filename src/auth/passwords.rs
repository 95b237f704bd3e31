//! argon2id password hashing and verification on a small low-priority thread pool behind a
//! bounded queue: at most one hash per core runs, a short queue waits, beyond it callers get
//! 503 at once, and the scheduler prefers proxied traffic, so a login storm cannot starve it.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use std::sync::Arc;

/// Passwords longer than this are refused (argon2 itself takes up to 2^32-1 bytes; the cap
/// bounds the work a request can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub enum HashError {
    #[error("too many password checks in progress")]
    Busy,
    #[error("password hashing failed")]
    Failed,
    #[error("password hashing failed: {0}")]
    Argon2(#[from] argon2::password_hash::Error),
    #[error("cannot start the password hashing threads")]
    Start(#[source] Arc<std::io::Error>),
}

/// Hashes with OWASP's argon2id defaults (m=19456 KiB, t=2, p=1).
pub fn hash_password(password: &[u8]) -> Result<String, HashError> {
    Ok(Argon2::default().hash_password(password)?.to_string())
}

/// What verifying a stored hash costs: its argon2 parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HashCost {
    /// Memory in KiB (`m`), then passes (`t`) and lanes (`p`): ordered by what costs most.
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl HashCost {
    /// The gateway's own parameters (what `hash_password` writes).
    pub fn ours() -> HashCost {
        let d = argon2::Params::default();
        HashCost {
            m_kib: d.m_cost(),
            t: d.t_cost(),
            p: d.p_cost(),
        }
    }

    /// The parameters of a PHC string (None when it is not one argon2 can verify).
    pub fn of(phc: &str) -> Option<HashCost> {
        let hash = PasswordHash::new(phc).ok()?;
        let params = argon2::Params::try_from(&hash).ok()?;
        Some(HashCost {
            m_kib: params.m_cost(),
            t: params.t_cost(),
            p: params.p_cost(),
        })
    }

    pub fn memory_bytes(&self) -> u64 {
        u64::from(self.m_kib) * 1024
    }

    /// The most expensive of two: the memory (what the dummy must match in time and
    /// resident size) and the passes, each at its largest.
    pub fn max(self, other: HashCost) -> HashCost {
        HashCost {
            m_kib: self.m_kib.max(other.m_kib),
            t: self.t.max(other.t),
            p: self.p.max(other.p),
        }
    }
}

impl std::fmt::Display for HashCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "m={},t={},p={}", self.m_kib, self.t, self.p)
    }
}

/// A hash of a fixed password with `cost`: what unknown users are verified against, so that
/// they cost what the costliest known user costs (else the answer's timing tells them apart).
pub fn dummy_hash(cost: HashCost) -> Result<String, HashError> {
    let params =
        argon2::Params::new(cost.m_kib, cost.t, cost.p, None).map_err(|_| HashError::Failed)?;
    let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let hash = argon
        .hash_password(b"authgate-dummy-password-for-unknown-users")?
        .to_string();
    // Its memory (19 MiB with the default parameters) was freed, not yet given back.
    crate::memory::give_back();
    Ok(hash)
}

/// Verifies against any argon2 PHC string (argon2id, argon2i, argon2d; any parameters).
pub fn verify_password(password: &[u8], phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default().verify_password(password, &hash).is_ok(),
        Err(_) => false,
    }
}

thread_local! {
    /// The hashing thread's argon2 memory (19 MiB with the default parameters), allocated on
    /// its first verification and reused by every later one: glibc keeps a freed block of that
    /// size (its mmap threshold grows), so a fresh one per verification grew the resident set
    /// with every concurrent login instead of staying at threads x 19 MiB.
    static BLOCKS: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `verify_password` computed in this thread's reusable memory.
pub fn verify_password_in_place(password: &[u8], phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(argon2::Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = argon2::Params::try_from(&hash) else {
        return false;
    };
    let need = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.as_bytes().len()];
    let computed = BLOCKS.with(|cell| {
        let mut blocks = cell.borrow_mut();
        if blocks.len() < need {
            blocks.resize(need, argon2::Block::default());
        }
        argon
            .hash_password_into_with_memory(password, salt, &mut out, &mut blocks[..need])
            .is_ok()
    });
    computed && constant_time_eq(&out, expected.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The password-hashing pool: by default one thread per CPU the process may use, capped by
/// half the cgroup memory limit (`limits::default_hash_threads`), at the lowest CPU priority (nice 19), so
/// that under contention proxied requests win the cores and logins wait; a short bounded queue
/// in front, and beyond it callers get 503 at once instead of piling up.
pub struct Hasher {
    queue: Arc<Queue>,
}

type Job = Box<dyn FnOnce() + Send>;

/// The jobs waiting for a hashing thread. Threads wait on the condition variable (not on a
/// lock held by one of them), so each can time out alone and give its memory back.
struct Queue {
    state: std::sync::Mutex<QueueState>,
    ready: std::sync::Condvar,
    capacity: usize,
    /// A thread idle this long frees its argon2 memory (a sidecar's memory is sized to idle,
    /// not to the last login burst).
    release_after: std::time::Duration,
    /// `authgate_password_hash_*`: waiting, busy, refused.
    gauges: std::sync::OnceLock<crate::metrics::HashPool>,
}

#[derive(Default)]
struct QueueState {
    jobs: std::collections::VecDeque<Job>,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next job; None when the pool is closing. Frees this thread's argon2 memory once
    /// it has been idle for `release_after`.
    fn next(&self, idle_since: &mut Option<std::time::Instant>) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            match idle_since {
                Some(since) if since.elapsed() >= self.release_after => {
                    BLOCKS.with(|cell| *cell.borrow_mut() = Vec::new());
                    crate::memory::give_back();
                    *idle_since = None;
                    tracing::debug!("a password hashing thread gave its memory back");
                }
                _ => {}
            }
            let wait = idle_since.map_or(std::time::Duration::from_secs(3600), |since| {
                self.release_after.saturating_sub(since.elapsed())
            });
            state = self
                .ready
                .wait_timeout(state, wait)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_all();
    }
}

impl Hasher {
    /// `concurrency` threads (0: as many as the CPUs and the memory limit allow, each
    /// holding `hash_memory` bytes once used: the costliest stored hash's).
    pub fn new(concurrency: usize, hash_memory: u64) -> Result<Self, HashError> {
        Self::with_release(concurrency, hash_memory, std::time::Duration::from_secs(60))
    }

    /// `new`, each thread giving its argon2 memory back after `release_after` idle.
    pub fn with_release(
        concurrency: usize,
        hash_memory: u64,
        release_after: std::time::Duration,
    ) -> Result<Self, HashError> {
        let n = if concurrency == 0 {
            crate::limits::default_hash_threads(hash_memory)
        } else {
            concurrency
        };
        tracing::info!(
            threads = n,
            memory_limit = crate::limits::memory_limit(),
            hash_memory_mib = hash_memory >> 20,
            "password hashing threads (each holds hash_memory once used)"
        );
        let queue = Arc::new(Queue {
            state: Default::default(),
            ready: std::sync::Condvar::new(),
            capacity: n * 16,
            release_after,
            gauges: std::sync::OnceLock::new(),
        });
        for i in 0..n {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("authgate-argon2-{i}"))
                .spawn(move || {
                    // Best effort: without it logins merely compete with requests as equals.
                    let _ = thread_priority::set_current_thread_priority(
                        thread_priority::ThreadPriority::Min,
                    );
                    let mut idle_since = None;
                    // None: the Hasher is gone.
                    while let Some(job) = queue.next(&mut idle_since) {
                        let gauges = queue.gauges.get();
                        if let Some(g) = gauges {
                            g.queued.dec();
                            g.busy.inc();
                        }
                        job();
                        if let Some(g) = gauges {
                            g.busy.dec();
                        }
                        // Memory to give back once idle (a job that used none has none).
                        if BLOCKS.with(|cell| !cell.borrow().is_empty()) {
                            idle_since = Some(std::time::Instant::now());
                        }
                    }
                })
                .map_err(|e| HashError::Start(Arc::new(e)))?;
        }
        Ok(Hasher { queue })
    }

    /// Verifies `password` against `phc`, or against `dummy` when there is no user. An
    /// unknown user costs one full verification too (against the dummy hash, made with the
    /// costliest parameters in the user store), so that the answer's timing does not tell
    /// which user names exist.
    pub async fn verify(
        &self,
        password: &str,
        phc: Option<&str>,
        dummy: &str,
    ) -> Result<bool, HashError> {
        let known = phc.is_some();
        let phc = phc.unwrap_or(dummy).to_owned();
        let password = password.to_owned();
        self.run(move || {
            // Verify first, then combine: `known && verify(..)` would skip the work.
            let matches = verify_password_in_place(password.as_bytes(), &phc);
            matches && known
        })
        .await
    }

    /// Reports the pool's queue and saturation to these gauges (once per process: the pool
    /// outlives reloads, and so do the metrics).
    pub fn report_to(&self, gauges: &crate::metrics::HashPool) {
        let _ = self.queue.gauges.set(gauges.clone());
    }

    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let password = password.to_owned();
        self.run(move || hash_password(password.as_bytes())).await?
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        self.submit(work)?.await.map_err(|_| HashError::Failed)
    }

    /// Queues `work` now (or refuses it at once when the queue is full).
    fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<T>, HashError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut state = self.queue.lock();
            if state.closed {
                return Err(HashError::Failed);
            }
            if state.jobs.len() >= self.queue.capacity {
                if let Some(g) = self.queue.gauges.get() {
                    g.refused.inc();
                }
                return Err(HashError::Busy);
            }
            if let Some(g) = self.queue.gauges.get() {
                g.queued.inc();
            }
            state.jobs.push_back(Box::new(move || {
                let _ = tx.send(work());
            }));
        }
        self.queue.ready.notify_one();
        Ok(rx)
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
    fn in_place_verification_agrees_with_the_crate() {
        let h = hash_password(b"correct horse").unwrap_or_default();
        // Another implementation's string, other parameters (m=64 MiB, t=3, p=4).
        let cffi = "$argon2id$v=19$m=65536,t=3,p=4$jHG1ebVWfgrPbovC4chwNA$TJcWkFzShX2cuWtVbPbPBmmkzgv7CzH4z5Kp0XckqS4";
        for _ in 0..2 {
            assert!(verify_password_in_place(b"correct horse", &h));
            assert!(!verify_password_in_place(b"correct hors", &h));
            assert!(verify_password_in_place(b"cffi-password", cffi));
            assert!(!verify_password_in_place(b"cffi-passwore", cffi));
        }
        assert!(!verify_password_in_place(b"x", "not a phc string"));
    }

    #[test]
    fn costs_are_read_from_the_hash_and_the_dummy_matches_the_costliest() {
        let cffi = "$argon2id$v=19$m=65536,t=3,p=4$jHG1ebVWfgrPbovC4chwNA$TJcWkFzShX2cuWtVbPbPBmmkzgv7CzH4z5Kp0XckqS4";
        let big = HashCost::of(cffi);
        assert_eq!(
            big,
            Some(HashCost {
                m_kib: 65536,
                t: 3,
                p: 4
            })
        );
        let ours = HashCost::of(&hash_password(b"x").unwrap_or_default());
        assert_eq!(ours, Some(HashCost::ours()));
        let worst = HashCost::ours().max(big.unwrap_or(HashCost::ours()));
        let dummy = dummy_hash(worst).unwrap_or_default();
        assert_eq!(HashCost::of(&dummy), Some(worst));
        assert!(HashCost::of("not a hash").is_none());
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

#[cfg(test)]
mod pool_tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_answers_busy_instead_of_waiting() {
        let h = Hasher::new(1, 0).unwrap_or_else(|e| panic!("{e}"));
        let gate = std::sync::Arc::new(std::sync::Barrier::new(2));
        let g = gate.clone();
        // Occupy the only worker (it waits on the barrier), then fill the queue: 16 per worker.
        let first = h.submit(move || {
            g.wait();
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        let queued: Vec<_> = (0..16).map(|_| h.submit(|| ())).collect();
        assert!(queued.iter().all(Result::is_ok));
        assert!(matches!(h.submit(|| ()).err(), Some(HashError::Busy)));
        gate.wait();
        assert!(first.unwrap_or_else(|e| panic!("{e}")).await.is_ok());
        for q in queued {
            assert!(q.unwrap_or_else(|e| panic!("{e}")).await.is_ok());
        }
        assert!(
            h.verify("x", None, &dummy_hash(HashCost::ours()).unwrap_or_default())
                .await
                .is_ok_and(|ok| !ok),
            "unknown user must fail"
        );
    }
}
