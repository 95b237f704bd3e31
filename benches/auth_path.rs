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

fn tokens(alg: Algorithm, cache_capacity: usize) -> Tokens {
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
        cache_capacity,
        previous: Vec::new(),
        secret_files: Vec::new(),
    };
    let keys = match alg {
        Algorithm::HS256 => KeySet::load(&cfg, Generate::No).unwrap(),
        _ => KeySet::from_pem(alg, generate(alg).unwrap().as_bytes()).unwrap(),
    };
    Tokens::new(&cfg, Arc::new(keys))
}

/// A token like the gateway's: a session id of 16 random bytes (what the cache packs).
fn access_token(t: &Tokens, roles: &[String]) -> String {
    let now = now_secs();
    t.issue(
        TokenType::Access,
        "alice",
        &authgate::ids::random_id().unwrap(),
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
        // A miss: 4,096 distinct tokens cycled through a cache of 16 (what a token never
        // seen costs: signature and claims checked, then offered to the cache).
        let t = tokens(alg, 16);
        let many: Vec<String> = (0..4096).map(|_| access_token(&t, &roles)).collect();
        let mut i = 0;
        c.bench_function(&format!("verify/{alg:?} (miss)"), |b| {
            b.iter(|| {
                i = (i + 1) % many.len();
                t.verify(&many[i], TokenType::Access).unwrap()
            })
        });
        let t = tokens(alg, 100_000);
        let tok = access_token(&t, &roles);
        c.bench_function(&format!("verify/{alg:?} (cache hit)"), |b| {
            b.iter(|| t.verify(&tok, TokenType::Access).unwrap())
        });
    }
    let mem = MemoryStore::new();
    mem.revoke_session("other", Duration::from_secs(60));
    c.bench_function("revocation/memory", |b| {
        b.iter(|| mem.check("sid-1", "alice"))
    });

    let t = tokens(Algorithm::HS256, 100_000);
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

/// Single sign-on's callback without the network: an RS256 ID token validated against the
/// provider's JWKS, then a session started (memory store); beside a password login's argon2
/// verification, which it should stay well under.
fn bench_oidc(c: &mut Criterion) {
    use authgate::auth::oidc::id_token::{verify_id_token, Expect};
    use authgate::auth::oidc::provider::{parse_keys, Discovered, Metadata, Provider};
    use authgate::auth::sessions::Principal;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.toml"), "").unwrap();
    std::fs::write(
        dir.path().join("secret"),
        "bench-secret-bench-secret-bench-secret!!",
    )
    .unwrap();
    let issuer = "http://127.0.0.1:9";
    let text = format!(
        "[tokens]\nalgorithm = \"HS256\"\nsecret_file = \"secret\"\n[users]\nfile = \"users.toml\"\n\
         [[login.oidc]]\nname = \"idp\"\nissuer = \"{issuer}\"\nclient_id = \"gw\"\n\
         [[routes]]\npath = \"/**\"\nauth = \"public\"\n[forward_auth]\nonly = true\n"
    );
    let config = authgate::Config::from_str(&dir.path().join("authgate.toml"), &text).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let keys = Arc::new(KeySet::load(&config.tokens, Generate::No).unwrap());
    let auth = authgate::auth::Auth::new(
        &config,
        keys,
        authgate::store::Store::Memory(MemoryStore::new()),
        Arc::new(authgate::metrics::Metrics::new()),
    )
    .unwrap();
    let idp = KeySet::from_pem(
        Algorithm::RS256,
        generate(Algorithm::RS256).unwrap().as_bytes(),
    )
    .unwrap();
    let jwks: serde_json::Value = serde_json::from_str(idp.jwks.as_deref().unwrap()).unwrap();
    let provider = Provider::with_discovered(
        config.login.oidc[0].clone(),
        Discovered {
            meta: Metadata {
                issuer: issuer.into(),
                authorization_endpoint: format!("{issuer}/a"),
                token_endpoint: format!("{issuer}/t"),
                jwks_uri: format!("{issuer}/k"),
                end_session_endpoint: None,
                id_token_signing_alg_values_supported: Some(vec!["RS256".into()]),
                token_endpoint_auth_methods_supported: None,
                authorization_response_iss_parameter_supported: true,
            },
            algs: vec![jsonwebtoken::Algorithm::RS256],
            keys: parse_keys(&jwks),
        },
    );
    let now = now_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(idp.kid.clone());
    let id_token = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"iss": issuer, "aud": "gw", "sub": "u1", "iat": now, "exp": now + 3600,
            "nonce": "n", "preferred_username": "carol", "sid": "s"}),
        &idp.encoding,
    )
    .unwrap();
    let expect = Expect {
        issuer,
        client_id: "gw",
        leeway: 30,
    };
    let roles = vec!["user".to_owned()];
    c.bench_function("oidc/callback (RS256 ID token + session start)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let claims = verify_id_token(&provider, &id_token, &expect, "n")
                    .await
                    .unwrap();
                let name = claims["preferred_username"].as_str().unwrap();
                auth.sessions()
                    .start_for(&Principal {
                        name,
                        roles: &roles,
                        via: Default::default(),
                    })
                    .await
                    .unwrap()
            })
        })
    });
    let hash = authgate::auth::passwords::hash_password(b"a-password").unwrap();
    c.bench_function("password/argon2id verify (the gateway's parameters)", |b| {
        b.iter(|| {
            assert!(authgate::auth::passwords::verify_password(
                b"a-password",
                &hash
            ))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench, bench_oidc
}
criterion_main!(benches);
