//! Ed25519 signatures of tokens that missed the cache, checked together.
//!
//! One check costs a double scalar multiplication and a point compression (about 30 us here).
//! n signatures under the same key can be checked with one multi-scalar multiplication over
//! their `R` points, the base point and the key (Bernstein et al., "High-speed high-security
//! signatures", 5): eight cost about 13 us each, sixteen about 11. A gateway whose users
//! outnumber its token cache misses on many requests at once; each miss queues its signature
//! here and waits, and one task per worker thread, run after the requests that were ready
//! with it, checks what queued meanwhile. A miss alone is checked alone, one scheduling pass
//! later.
//!
//! The equation, with z_i random 128-bit scalars drawn for this batch (unknown to whoever made
//! the signatures):
//!
//! ```text
//! [-sum z_i S_i] B + sum [z_i] R_i + [sum z_i k_i] A = 0,   k_i = SHA-512(R_i || A || M_i)
//! ```
//!
//! Without the cofactor, as the single check (RFC 8032 5.1.7 as BoringSSL and aws-lc make
//! it). If every signature holds, so does the sum; if one does not, the sum holds with
//! probability about 2^-128, and a failed batch is checked signature by signature, so a bad
//! token costs its neighbours one more check and is refused alone. Where the two checks
//! could differ: an `R` with a small-order component. Nobody without the signing key can
//! make a signature with one that either check accepts (`k` depends on the bytes of `R`),
//! and whoever has the key can sign any token anyway. A key with a small-order component
//! (ours never have one; a configured public key might) is not batched.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// More at once gains little (about 9 us a signature at 64) and keeps the first one waiting.
const MOST: usize = 32;

/// An Ed25519 public key, decoded once; batched only when it has no small-order component.
#[derive(Clone, Copy)]
pub(super) struct Ed25519Key {
    key: ed25519_dalek::VerifyingKey,
    batched: bool,
}

impl Ed25519Key {
    pub(super) fn new(key: ed25519_dalek::VerifyingKey) -> Ed25519Key {
        Ed25519Key {
            key,
            batched: key.to_edwards().is_torsion_free(),
        }
    }

    /// The single check of `signature` over `message`.
    pub(super) fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        ed25519_dalek::Verifier::verify(&self.key, message, &sig).is_ok()
    }

    /// `verify`, with whatever else this thread's requests queue before the checking task
    /// runs (see `check`).
    pub(super) async fn verify_batched(&self, message: &[u8], signature: [u8; 64]) -> bool {
        if !self.batched {
            return self.verify(message, &signature);
        }
        check(Signed::new(*self, message, signature)).await
    }
}

/// One signature to check: the key, the signed text, the signature.
pub(super) struct Signed {
    key: Ed25519Key,
    message: Vec<u8>,
    signature: [u8; 64],
}

impl Signed {
    fn new(key: Ed25519Key, message: &[u8], signature: [u8; 64]) -> Signed {
        Signed {
            key,
            message: message.to_vec(),
            signature,
        }
    }

    fn holds_alone(&self) -> bool {
        self.key.verify(&self.message, &self.signature)
    }
}

/// Whether each signature holds: one equation for them all when they all do, else each
/// checked alone.
pub(super) fn check_all(all: &[Signed]) -> Vec<bool> {
    let mut holds = Vec::with_capacity(all.len());
    for part in all.chunks(MOST) {
        if part.len() > 1 && batch_holds(part) {
            holds.extend(part.iter().map(|_| true));
        } else {
            holds.extend(part.iter().map(Signed::holds_alone));
        }
    }
    holds
}

/// The batch equation over `part` (false also when a signature cannot be in one: an `S` not
/// below the group order, an `R` that is not a canonical point encoding).
fn batch_holds(part: &[Signed]) -> bool {
    let mut z = vec![0u8; 16 * part.len()];
    if aws_lc_rs::rand::fill(&mut z).is_err() {
        return false;
    }
    let mut scalars = Vec::with_capacity(part.len() + 2);
    let mut points = Vec::with_capacity(part.len() + 2);
    let mut base = Scalar::ZERO;
    // The keys of this batch (one, but for tokens signed before a rotation) with their
    // coefficients.
    let mut keys: Vec<(&ed25519_dalek::VerifyingKey, Scalar)> = Vec::with_capacity(1);
    for (one, z) in part.iter().zip(z.chunks_exact(16)) {
        let (r, s) = one.signature.split_at(32);
        let (Ok(r), Ok(s)) = (<[u8; 32]>::try_from(r), <[u8; 32]>::try_from(s)) else {
            return false;
        };
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)) else {
            return false;
        };
        if !canonical(&r) {
            return false;
        }
        let Some(r_point) = CompressedEdwardsY(r).decompress() else {
            return false;
        };
        let mut wide = [0u8; 32];
        wide[..16].copy_from_slice(z);
        let z = Scalar::from_bytes_mod_order(wide);
        let k = challenge(&r, one.key.key.as_bytes(), &one.message);
        base -= z * s;
        match keys.iter_mut().find(|(key, _)| **key == one.key.key) {
            Some((_, c)) => *c += z * k,
            None => keys.push((&one.key.key, z * k)),
        }
        scalars.push(z);
        points.push(r_point);
    }
    scalars.push(base);
    points.push(ED25519_BASEPOINT_POINT);
    for (key, c) in keys {
        scalars.push(c);
        points.push(key.to_edwards());
    }
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}

/// k = SHA-512(R || A || M) mod L.
fn challenge(r: &[u8; 32], a: &[u8; 32], message: &[u8]) -> Scalar {
    let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA512);
    h.update(r);
    h.update(a);
    h.update(message);
    let mut wide = [0u8; 64];
    wide.copy_from_slice(h.finish().as_ref());
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// Whether `y` (the sign bit aside) is below 2^255 - 19: the single check compares encodings,
/// so a batch takes only encodings the single check could match.
fn canonical(r: &[u8; 32]) -> bool {
    let top = r[31] & 0x7f == 0x7f;
    let middle = r[1..31].iter().all(|&b| b == 0xff);
    !(top && middle && r[0] >= 0xed)
}

/// What queued on one thread since its checking task was spawned.
#[derive(Default)]
struct Queue {
    waiting: Vec<(Signed, oneshot::Sender<bool>)>,
    scheduled: bool,
}

thread_local! {
    static QUEUE: Arc<Mutex<Queue>> = Arc::default();
}

/// Checks `signed`, with whatever else this thread's requests queue before the checking task
/// runs. Outside a tokio runtime, at once.
async fn check(signed: Signed) -> bool {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return signed.holds_alone();
    };
    let (tx, rx) = oneshot::channel();
    let queue = QUEUE.with(Arc::clone);
    let spawn = {
        let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
        q.waiting.push((signed, tx));
        !std::mem::replace(&mut q.scheduled, true)
    };
    if spawn {
        // Spawned, not run here: a request that gives up (its client gone) must not take
        // the others' checks with it. On a current-thread runtime (every worker's) it runs
        // after the tasks that are ready now, which may queue more.
        runtime.spawn(run(Turn(Some(queue))));
    }
    // The task checks every queued signature and answers each; dropped unanswered only when
    // the runtime shuts down, and then nothing is accepted.
    rx.await.unwrap_or(false)
}

/// A checking task's claim on a queue, until it takes the queue's signatures.
struct Turn(Option<Arc<Mutex<Queue>>>);

impl Turn {
    /// What queued; the next signature to queue schedules another task.
    fn take(&mut self) -> Vec<(Signed, oneshot::Sender<bool>)> {
        let Some(queue) = self.0.take() else {
            return Vec::new();
        };
        let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
        q.scheduled = false;
        std::mem::take(&mut q.waiting)
    }
}

impl Drop for Turn {
    /// A task dropped before it ran (its runtime shutting down) answers nobody (their checks
    /// fail) and leaves the queue able to schedule another.
    fn drop(&mut self) {
        drop(self.take());
    }
}

async fn run(mut turn: Turn) {
    let waiting = turn.take();
    let (signed, answers): (Vec<Signed>, Vec<_>) = waiting.into_iter().unzip();
    tracing::trace!(
        signatures = signed.len(),
        "token signatures checked together"
    );
    #[cfg(test)]
    LARGEST.with(|l| l.set(l.get().max(signed.len())));
    for (holds, answer) in check_all(&signed).into_iter().zip(answers) {
        let _ = answer.send(holds);
    }
}

#[cfg(test)]
thread_local! {
    /// The most signatures one task checked on this thread.
    pub(super) static LARGEST: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{self, KeyPair};

    fn keypair() -> signature::Ed25519KeyPair {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 =
            signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap_or_else(|e| panic!("{e}"));
        signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn batch_key(pair: &signature::Ed25519KeyPair) -> Ed25519Key {
        let bytes =
            <[u8; 32]>::try_from(pair.public_key().as_ref()).unwrap_or_else(|e| panic!("{e}"));
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
        let key = Ed25519Key::new(key);
        assert!(key.batched, "a generated key has no small-order component");
        key
    }

    fn signed(pair: &signature::Ed25519KeyPair, key: Ed25519Key, message: &[u8]) -> Signed {
        let sig =
            <[u8; 64]>::try_from(pair.sign(message).as_ref()).unwrap_or_else(|e| panic!("{e}"));
        Signed::new(key, message, sig)
    }

    /// What aws-lc says of each signature, one by one: the reference.
    fn reference(pair: &signature::Ed25519KeyPair, all: &[Signed]) -> Vec<bool> {
        let key = signature::UnparsedPublicKey::new(&signature::ED25519, pair.public_key());
        all.iter()
            .map(|s| key.verify(&s.message, &s.signature).is_ok())
            .collect()
    }

    #[test]
    fn a_batch_of_good_signatures_holds_and_any_bad_one_is_singled_out() {
        let pair = keypair();
        let key = batch_key(&pair);
        let good: Vec<Signed> = (0..40)
            .map(|i| signed(&pair, key, format!("header.payload-{i}").as_bytes()))
            .collect();
        assert!(batch_holds(&good[..2]) && batch_holds(&good[..MOST]));
        assert_eq!(
            check_all(&good),
            vec![true; 40],
            "past MOST: in two equations"
        );
        assert_eq!(check_all(&good[..1]), vec![true]);
        assert!(check_all(&[]).is_empty());

        // One bad signature among good ones, each way it can be bad.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        type Spoil = Box<dyn Fn(&mut Signed)>;
        let mut cases: Vec<(&str, Spoil)> = vec![
            ("message changed", Box::new(|s| s.message[3] ^= 1)),
            ("R changed", Box::new(|s| s.signature[0] ^= 4)),
            ("S changed", Box::new(|s| s.signature[40] ^= 1)),
            (
                // The same scalar mod L, out of range: a malleated signature, refused.
                "S + L",
                Box::new(|s| {
                    let mut carry = 0u16;
                    for (b, l) in s.signature[32..].iter_mut().zip(L) {
                        let sum = u16::from(*b) + u16::from(l) + carry;
                        *b = sum as u8;
                        carry = sum >> 8;
                    }
                }),
            ),
            (
                "R not canonical",
                Box::new(|s| s.signature[..32].fill(0xff)),
            ),
            ("signature zero", Box::new(|s| s.signature = [0; 64])),
        ];
        let other = keypair();
        cases.push((
            "another key's signature",
            Box::new(move |s| {
                s.signature.copy_from_slice(other.sign(&s.message).as_ref());
            }),
        ));
        for (what, spoil) in &cases {
            for at in [0, 5, 15] {
                let mut all: Vec<Signed> = good[..16]
                    .iter()
                    .map(|s| Signed::new(s.key, &s.message, s.signature))
                    .collect();
                if let Some(s) = all.get_mut(at) {
                    spoil(s);
                }
                let want: Vec<bool> = (0..16).map(|i| i != at).collect();
                assert!(!batch_holds(&all), "{what} at {at}: the equation fails");
                assert_eq!(check_all(&all), want, "{what} at {at}");
                assert_eq!(
                    reference(&pair, &all),
                    want,
                    "{what} at {at}: aws-lc agrees"
                );
            }
        }
    }

    #[test]
    fn tokens_of_two_keys_check_together() {
        let (a, b) = (keypair(), keypair());
        let (ka, kb) = (batch_key(&a), batch_key(&b));
        let mut all: Vec<Signed> = (0..12)
            .map(|i| {
                let m = format!("m{i}");
                if i % 3 == 0 {
                    signed(&b, kb, m.as_bytes())
                } else {
                    signed(&a, ka, m.as_bytes())
                }
            })
            .collect();
        assert!(batch_holds(&all));
        // A's signature presented as B's.
        all[1].key = kb;
        assert!(!batch_holds(&all));
        let want: Vec<bool> = (0..12).map(|i| i != 1).collect();
        assert_eq!(check_all(&all), want);
    }

    #[test]
    fn a_key_with_a_small_order_component_is_not_batched() {
        let pair = keypair();
        let key = batch_key(&pair);
        let torsion = curve25519_dalek::constants::EIGHT_TORSION[1];
        let odd = (key.key.to_edwards() + torsion).compress().to_bytes();
        let odd = ed25519_dalek::VerifyingKey::from_bytes(&odd).unwrap_or_else(|e| panic!("{e}"));
        assert!(!Ed25519Key::new(odd).batched);
    }

    #[test]
    fn agrees_with_aws_lc_on_random_damage() {
        // The batch path against aws-lc one by one, over batches of every size up to MOST
        // with bits flipped at random places in random members.
        let pair = keypair();
        let key = batch_key(&pair);
        let mut seed = [0u8; 64];
        aws_lc_rs::rand::fill(&mut seed).unwrap_or_else(|e| panic!("{e}"));
        let mut bytes = seed.iter().cycle().copied().enumerate();
        let mut next = move || {
            bytes
                .next()
                .map_or(0, |(i, b)| b ^ (i as u8).wrapping_mul(31))
        };
        for n in 1..=MOST {
            let mut all: Vec<Signed> = (0..n)
                .map(|i| signed(&pair, key, format!("{n}.{i}").as_bytes()))
                .collect();
            for _ in 0..usize::from(next() % 3) {
                let at = usize::from(next()) % n;
                let bit = usize::from(next()) % (64 * 8);
                all[at].signature[bit / 8] ^= 1 << (bit % 8);
            }
            assert_eq!(check_all(&all), reference(&pair, &all), "batch of {n}");
        }
    }

    #[test]
    fn concurrent_misses_on_one_thread_are_checked_together() {
        let pair = keypair();
        let key = batch_key(&pair);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        LARGEST.with(|l| l.set(0));
        let results = rt.block_on(async {
            let checks = (0..10).map(|i| {
                let mut s = signed(&pair, key, format!("token {i}").as_bytes());
                if i == 4 {
                    s.message.push(b'!');
                }
                tokio::spawn(check(s))
            });
            let mut out = Vec::new();
            for c in checks.collect::<Vec<_>>() {
                out.push(c.await.unwrap_or_else(|e| panic!("{e}")));
            }
            out
        });
        let want: Vec<bool> = (0..10).map(|i| i != 4).collect();
        assert_eq!(results, want);
        assert_eq!(LARGEST.with(|l| l.get()), 10, "one task checked all ten");
        // Outside a runtime: at once, alone.
        assert!(
            futures_util::FutureExt::now_or_never(check(signed(&pair, key, b"x"))).unwrap_or(false)
        );
    }

    #[test]
    fn a_runtime_that_stops_with_checks_queued_leaves_the_queue_working() {
        let pair = keypair();
        let key = batch_key(&pair);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        // Queued, its checking task spawned, and the runtime dropped before either runs.
        let waiting = rt.spawn(check(signed(&pair, key, b"one")));
        rt.block_on(async {
            let mut first = Box::pin(check(signed(&pair, key, b"two")));
            let polled = futures_util::FutureExt::now_or_never(first.as_mut());
            assert!(polled.is_none(), "queued, waiting for its task");
        });
        drop(rt);
        drop(waiting);
        assert!(!QUEUE.with(|q| q.lock().map(|q| q.scheduled).unwrap_or(true)));
        // The next runtime on this thread checks as before.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(rt.block_on(check(signed(&pair, key, b"three"))));
    }
}
