//! The security core against the memory store, without HTTP.
use super::*;
use crate::auth::keys::{Generate, KeySet};
use crate::config::{Algorithm, KeySource, TokensConfig};
use crate::store::MemoryStore;
use std::collections::HashMap;

const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn sessions(rotate_refresh: bool) -> Sessions {
    let cfg = TokensConfig {
        issuer: "authgate".into(),
        audience: "authgate".into(),
        algorithm: Algorithm::HS256,
        key: KeySource::Secret(vec![9; 32]),
        access_ttl: Duration::from_secs(60),
        refresh_ttl: Duration::from_secs(600),
        leeway: Duration::ZERO,
        rotate_refresh,
        refresh_reuse_grace: Duration::ZERO,
        cache_capacity: 100,
        previous: Vec::new(),
        secret_files: Vec::new(),
    };
    let keys = KeySet::load(&cfg, Generate::No).unwrap();
    let user = User {
        name: "alice".into(),
        password_hash: crate::auth::passwords::hash_password(b"pw-alice").unwrap(),
        roles: vec!["user".into()],
        ..User::default()
    };
    let users = UserStore::File {
        path: "unused.toml".into(),
        users: std::sync::RwLock::new(HashMap::from([(user.name.clone(), user)])),
        keys: HashMap::new(),
    };
    let policy = SessionPolicy {
        access_ttl: cfg.access_ttl,
        refresh_ttl: cfg.refresh_ttl,
        leeway: cfg.leeway,
        rotate_refresh,
        reuse_grace: Duration::ZERO,
        max_failures_per_user: 2,
        max_failures_per_ip: 100,
        failure_window: Duration::from_secs(60),
        on_store_error: OnStoreError::Deny,
        providers: HashMap::new(),
    };
    Sessions::new(
        Tokens::new(&cfg, Arc::new(keys)),
        Store::Memory(MemoryStore::new()),
        users,
        Arc::new(Hasher::new(1, 0).unwrap()),
        policy,
        Arc::new(Metrics::new()),
        crate::auth::factors::Factors::new(
            crate::config::SecondFactor::Optional,
            None,
            "authgate",
            b"test",
        ),
    )
    .unwrap()
}

async fn access_ok(s: &Sessions, pair: &Pair) -> bool {
    s.verify(&pair.access.token, TokenType::Access)
        .await
        .is_ok()
}

#[tokio::test]
async fn login_rotate_reuse_and_logout() {
    let s = sessions(true);
    let first = s.login("alice", "pw-alice", IP).await.unwrap();
    assert!(access_ok(&s, &first).await);
    assert_eq!(first.access.claims.roles(), Some(&["user".to_owned()][..]));
    // The issued claims are the ones verification sees.
    let verified = s
        .verify(&first.access.token, TokenType::Access)
        .await
        .unwrap();
    assert_eq!(verified, first.access.claims);
    // An access token never refreshes; a refresh token never opens a route.
    assert!(s.refresh(&first.access.token).await.is_err());
    assert!(s.verify(&first.refresh, TokenType::Access).await.is_err());

    let second = s.refresh(&first.refresh).await.unwrap();
    assert!(second.refresh_is_new && second.refresh != first.refresh);
    assert_eq!(
        second.session_exp, first.session_exp,
        "a refresh never extends"
    );
    // Replaying the spent token kills the whole session, the new pair included.
    assert!(matches!(
        s.refresh(&first.refresh).await,
        Err(GatewayError::InvalidToken(_))
    ));
    assert!(!access_ok(&s, &second).await);
    assert!(s.refresh(&second.refresh).await.is_err());

    let third = s.login("alice", "pw-alice", IP).await.unwrap();
    let fourth = s.login("alice", "pw-alice", IP).await.unwrap();
    s.logout(&third.access.claims, false).await.unwrap();
    assert!(!access_ok(&s, &third).await);
    assert!(access_ok(&s, &fourth).await, "only that session ends");
    s.logout(&fourth.access.claims, true).await.unwrap();
    assert!(!access_ok(&s, &fourth).await);
    assert!(s.refresh(&fourth.refresh).await.is_err());
}

#[tokio::test]
async fn without_rotation_the_refresh_token_is_kept() {
    let s = sessions(false);
    let first = s.login("alice", "pw-alice", IP).await.unwrap();
    let next = s.refresh(&first.refresh).await.unwrap();
    assert!(!next.refresh_is_new);
    assert_eq!(next.refresh, first.refresh);
    assert!(s.refresh(&first.refresh).await.is_ok());
}

#[tokio::test]
async fn wrong_passwords_are_throttled_and_unknown_users_fail_alike() {
    let s = sessions(true);
    for _ in 0..2 {
        assert!(matches!(
            s.login("alice", "wrong", IP).await,
            Err(GatewayError::InvalidCredentials)
        ));
    }
    assert!(matches!(
        s.login("alice", "pw-alice", IP).await,
        Err(GatewayError::TooManyAttempts { .. })
    ));
    assert!(matches!(
        s.login("nobody", "pw", IP).await,
        Err(GatewayError::InvalidCredentials)
    ));
}

#[test]
fn revocation_records_outlive_every_token_they_cover() {
    let s = sessions(true);
    assert_eq!(s.policy().revocation_ttl(), Duration::from_secs(601));
}
