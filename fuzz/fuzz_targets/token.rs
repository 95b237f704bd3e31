//! Token reading and verification: never panics, and never accepts a token the signer in this
//! target did not produce (arbitrary text, or one of its tokens with bytes changed), nor one
//! of the wrong type. Both HS256 and EdDSA signers, with a previous key each. An ID-token
//! mode does the same for single sign-on: the provider's validation accepts only the ID token
//! the provider signed, for this client, issuer and nonce.
#![no_main]

use authgate::auth::keys::{Generate, KeySet};
use authgate::auth::tokens::{TokenType, Tokens};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

struct Signer {
    tokens: Tokens,
    access: String,
    refresh: String,
}

fn signer(alg: &str) -> Signer {
    let dir =
        std::env::temp_dir().join(format!("authgate-fuzz-token-{}-{alg}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = match alg {
        "HS256" => {
            std::fs::write(
                dir.join("secret"),
                "fuzz-secret-0123456789-abcdefghijklmnop",
            )
            .unwrap();
            std::fs::write(dir.join("old"), "old-secret-0123456789-abcdefghijklmnopqr").unwrap();
            "secret_file = \"secret\"\nprevious_secret_files = [\"old\"]"
        }
        _ => {
            let pem = authgate::auth::keys::generate(authgate::config::Algorithm::EdDSA).unwrap();
            std::fs::write(dir.join("ed.pem"), pem).unwrap();
            let old = authgate::auth::keys::generate(authgate::config::Algorithm::EdDSA).unwrap();
            std::fs::write(dir.join("old.pem"), old).unwrap();
            "signing_key_file = \"ed.pem\"\nprevious_key_files = [\"old.pem\"]"
        }
    };
    std::fs::write(dir.join("users.toml"), "").unwrap();
    let text = format!(
        "[tokens]\nalgorithm = \"{alg}\"\n{key}\n[users]\nfile = \"users.toml\"\n\
         [[routes]]\npath = \"/**\"\nauth = \"public\"\n[forward_auth]\nonly = true\n"
    );
    let config = authgate::Config::from_str(&dir.join("authgate.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}"));
    let keys = KeySet::load(&config.tokens, Generate::No).unwrap();
    let tokens = Tokens::new(&config.tokens, Arc::new(keys));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let roles = vec!["user".to_owned()];
    let exp = now + 3600 * 24 * 365;
    let access = tokens
        .issue(TokenType::Access, "alice", "sid-1", Some(&roles), now, exp)
        .unwrap()
        .token;
    let refresh = tokens
        .issue(TokenType::Refresh, "alice", "sid-1", None, now, exp)
        .unwrap()
        .token;
    Signer {
        tokens,
        access,
        refresh,
    }
}

/// An identity provider (its EdDSA key from a KeySet, published as a JWKS) and one ID token
/// it signed.
struct IdProvider {
    provider: authgate::auth::oidc::provider::Provider,
    id_token: String,
    runtime: tokio::runtime::Runtime,
}

fn id_provider() -> &'static IdProvider {
    static P: OnceLock<IdProvider> = OnceLock::new();
    P.get_or_init(|| {
        use authgate::auth::oidc::provider::{parse_keys, Discovered, Metadata, Provider};
        let dir = std::env::temp_dir().join(format!("authgate-fuzz-idp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = authgate::auth::keys::generate(authgate::config::Algorithm::EdDSA).unwrap();
        std::fs::write(dir.join("ed.pem"), pem).unwrap();
        std::fs::write(dir.join("users.toml"), "").unwrap();
        let issuer = "http://127.0.0.1:9";
        let text = format!(
            "[tokens]\nalgorithm = \"EdDSA\"\nsigning_key_file = \"ed.pem\"\n[users]\nfile = \"users.toml\"\n\
             [[login.oidc]]\nname = \"idp\"\nissuer = \"{issuer}\"\nclient_id = \"gw\"\n\
             [[routes]]\npath = \"/**\"\nauth = \"public\"\n[forward_auth]\nonly = true\n"
        );
        let config = authgate::Config::from_str(&dir.join("authgate.toml"), &text)
            .unwrap_or_else(|e| panic!("{e}"));
        let keys = KeySet::load(&config.tokens, Generate::No).unwrap();
        let jwks: serde_json::Value = serde_json::from_str(keys.jwks.as_deref().unwrap()).unwrap();
        let meta = Metadata {
            issuer: issuer.to_owned(),
            authorization_endpoint: format!("{issuer}/a"),
            token_endpoint: format!("{issuer}/t"),
            jwks_uri: format!("{issuer}/k"),
            end_session_endpoint: None,
            id_token_signing_alg_values_supported: Some(vec!["EdDSA".to_owned()]),
            token_endpoint_auth_methods_supported: None,
            authorization_response_iss_parameter_supported: true,
        };
        let discovered = Discovered {
            meta,
            algs: vec![jsonwebtoken::Algorithm::EdDSA],
            keys: parse_keys(&jwks),
        };
        let provider = Provider::with_discovered(config.login.oidc[0].clone(), discovered);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(keys.kid.clone());
        let claims = serde_json::json!({
            "iss": issuer, "aud": "gw", "sub": "u1", "iat": now, "exp": now + 3600 * 24 * 365,
            "nonce": "the-nonce", "preferred_username": "carol",
        });
        let id_token = jsonwebtoken::encode(&header, &claims, &keys.encoding).unwrap();
        IdProvider {
            provider,
            id_token,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    })
}

fn id_token_mode(mutate: bool, rest: &[u8]) {
    use authgate::auth::oidc::id_token::{verify_id_token, Expect};
    let p = id_provider();
    let token = if mutate {
        let mut b = p.id_token.clone().into_bytes();
        for pair in rest.chunks_exact(2) {
            let i = usize::from(pair[0]) * b.len() / 256;
            b[i] ^= pair[1];
        }
        match String::from_utf8(b) {
            Ok(t) => t,
            Err(_) => return,
        }
    } else {
        match std::str::from_utf8(rest) {
            Ok(t) => t.to_owned(),
            Err(_) => return,
        }
    };
    let expect = Expect {
        issuer: "http://127.0.0.1:9",
        client_id: "gw",
        leeway: 30,
    };
    let result = p
        .runtime
        .block_on(verify_id_token(&p.provider, &token, &expect, "the-nonce"));
    if let Ok(claims) = result {
        assert_eq!(token, p.id_token, "accepted an ID token the provider never signed");
        assert_eq!(claims["sub"], "u1");
    }
}

fn signers() -> &'static [Signer; 2] {
    static S: OnceLock<[Signer; 2]> = OnceLock::new();
    S.get_or_init(|| [signer("HS256"), signer("EdDSA")])
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 8 != 0 {
        return id_token_mode(mode & 2 != 0, rest);
    }
    let s = &signers()[usize::from(mode & 1)];
    // Even modes: the input is the token. Odd: one of the signer's tokens, its bytes changed
    // where the input says (pairs of position, xor mask), which reaches deep into the JWS.
    let token: String = if mode & 2 == 0 {
        match std::str::from_utf8(rest) {
            Ok(t) => t.to_owned(),
            Err(_) => return,
        }
    } else {
        let base = if mode & 4 == 0 { &s.access } else { &s.refresh };
        let mut b = base.clone().into_bytes();
        for pair in rest.chunks_exact(2) {
            let i = usize::from(pair[0]) * b.len() / 256;
            b[i] ^= pair[1];
        }
        match String::from_utf8(b) {
            Ok(t) => t,
            Err(_) => return,
        }
    };
    for want in [TokenType::Access, TokenType::Refresh] {
        if let Ok(claims) = s.tokens.verify(&token, want) {
            let genuine = match want {
                TokenType::Access => &s.access,
                TokenType::Refresh => &s.refresh,
            };
            assert_eq!(&token, genuine, "accepted a token the signer never made");
            assert_eq!(claims.sub(), "alice");
            assert_eq!(claims.typ, want);
        }
    }
});
