//! Raw argon2id verification throughput with the gateway's parameters, one thread per core:
//! the yardstick for login throughput in bench/run.py. `argon2_throughput [SECONDS]`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let hash = authgate::auth::passwords::hash_password(b"bench-password").unwrap();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let hash = hash.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    assert!(authgate::auth::passwords::verify_password(
                        b"bench-password",
                        &hash
                    ));
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    println!("{:.1}", total as f64 / start.elapsed().as_secs_f64());
}
