//! The per-request auth path: token verification (per algorithm) and the revocation check.
//! `cargo bench --bench auth_path`; set BENCH_REDIS_URL to include one Redis round trip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use authgate::auth::keys::{generate, Generate, KeySet};
use authgate::auth::tokens::{TokenType, Tokens};
use authgate::clock::now_secs;
use authgate::config::{Algorithm, KeySource, TokensConfig};
use authgate::store::{MemoryStore, RedisStore};
use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::Arc;
use std::time::Duration;

fn tokens(alg: Algorithm) -> Tokens {
    let key = match alg {
        Algorithm::HS256 => KeySource::Secret(b"bench-secret-bench-secret-bench-secret!!".to_vec()),
        _ => KeySource::Pem {
            path: "unused".into(),
            generate_if_missing: false,
        },
    };
    let cfg = TokensConfig {
        issuer: "authgate".into(),
        audience: "authgate".into(),
        algorithm: alg,
        key,
        access_ttl: Duration::from_secs(900),
        refresh_ttl: Duration::from_secs(3600),
        leeway: Duration::from_secs(30),
        rotate_refresh: true,
        refresh_reuse_grace: Duration::ZERO,
        cache_capacity: 100_000,
        previous: Vec::new(),
        secret_files: Vec::new(),
    };
    let keys = match alg {
        Algorithm::HS256 => KeySet::load(&cfg, Generate::No).unwrap(),
        _ => KeySet::from_pem(alg, generate(alg).unwrap().as_bytes()).unwrap(),
    };
    Tokens::new(&cfg, Arc::new(keys))
}

fn access_token(t: &Tokens, roles: &[String]) -> String {
    let now = now_secs();
    t.issue(
        TokenType::Access,
        "alice",
        "sid-1",
        Some(roles),
        now,
        now + 900,
    )
    .unwrap()
    .token
}

fn bench(c: &mut Criterion) {
    let roles = vec!["user".to_owned()];
    for alg in [
        Algorithm::HS256,
        Algorithm::EdDSA,
        Algorithm::ES256,
        Algorithm::RS256,
    ] {
        let t = tokens(alg);
        let tok = access_token(&t, &roles);
        c.bench_function(&format!("verify/{alg:?}"), |b| {
            b.iter(|| t.verify(&tok, TokenType::Access).unwrap())
        });
    }
    let mem = MemoryStore::new();
    mem.revoke_session("other", Duration::from_secs(60));
    c.bench_function("revocation/memory", |b| {
        b.iter(|| mem.check("sid-1", "alice"))
    });

    let t = tokens(Algorithm::HS256);
    let tok = access_token(&t, &roles);
    c.bench_function("verify+revocation/HS256+memory", |b| {
        b.iter(|| {
            let claims = t.verify(&tok, TokenType::Access).unwrap();
            assert!(!mem.check(claims.sid(), claims.sub()).revokes(claims.iat));
        })
    });

    if let Ok(url) = std::env::var("BENCH_REDIS_URL") {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let redis = rt.block_on(async {
            RedisStore::new(
                &authgate::config::RedisSettings::single(&url),
                "bench:",
                Duration::from_secs(1),
                None,
            )
            .unwrap()
        });
        c.bench_function("revocation/redis (one MGET round trip)", |b| {
            b.iter(|| rt.block_on(redis.check("sid-1", "alice")).unwrap())
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
