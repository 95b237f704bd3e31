//! Issuing and verifying access and refresh tokens. Verification accepts only the configured
//! algorithm, requires and checks iss, aud, exp, nbf (with leeway), and checks the `type`
//! claim itself, since jsonwebtoken does not.

mod batch;
mod cache;
mod claims;
mod entry;
mod intern;
mod jws;
mod memo;
mod sketch;

use super::keys::KeySet;
use crate::clock::now_secs;
use crate::config::TokensConfig;
use crate::ids::{random_id, RngError};
use cache::VerifiedCache;
pub use claims::Claims;
use claims::{Grants, GrantsKey, Principal};
use jsonwebtoken::Header;
pub use memo::{LastToken, NoMemo, TokenMemo};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    Access,
    Refresh,
}

/// Claims as issued.
#[derive(Serialize)]
struct IssuedClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: &'a str,
    sid: &'a str,
    #[serde(rename = "type")]
    typ: TokenType,
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idp: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amr: Option<&'a [String]>,
}

/// How a session was signed in: the identity provider (`[[login.oidc]]` name; None: the
/// gateway's own password form) and the authentication methods used (`amr`: `pwd`, `otp`,
/// or what the provider reported).
#[derive(Debug, Clone, Copy, Default)]
pub struct Via<'a> {
    pub idp: Option<&'a str>,
    pub amr: Option<&'a [String]>,
}

/// Claims as a token carries them. Strict types: a claim of the wrong JSON type, or a
/// missing one, fails the token.
#[derive(Deserialize)]
struct TokenClaims {
    iss: String,
    aud: jws::Audience,
    sub: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
    sid: String,
    #[serde(rename = "type")]
    typ: TokenType,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    idp: Option<String>,
    #[serde(default)]
    amr: Option<Vec<String>>,
}

impl TokenClaims {
    fn grants(&self) -> GrantsKey<'_> {
        GrantsKey {
            roles: self.roles.as_deref(),
            idp: self.idp.as_deref(),
            amr: self.amr.as_deref(),
        }
    }
}

/// Why a token was refused (never echoed with the token itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is expired")]
    Expired,
    #[error("the token is not valid")]
    Invalid,
    #[error("wrong token type")]
    WrongType,
    #[error("the token has been revoked")]
    Revoked,
    /// The revocation store may have lost what it knew before this moment (a restart of the
    /// memory store, a Redis that lost its data): every token from before it is refused.
    #[error("issued before the revocation store's epoch")]
    BeforeEpoch,
    #[error("the refresh token was already used; the session is revoked")]
    RefreshReused,
    #[error("the session is no longer valid")]
    SessionUnknown,
    #[error("the user no longer exists")]
    UserGone,
}

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error(transparent)]
    Rng(#[from] RngError),
    #[error("a subject or role is not header-safe text")]
    Unsafe,
}

/// What may travel in an identity header: visible ASCII, no comma (roles are joined by it).
pub fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8192;

/// A freshly signed token and the claims it carries.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub claims: Claims,
}

/// Signs and verifies the gateway's tokens with its key set.
pub struct Tokens {
    keys: Arc<KeySet>,
    cache: VerifiedCache,
    header: Header,
    reader: jws::Reader,
    issuer: String,
    audience: String,
    leeway: u64,
    /// Cache lookups [hit, miss] (`authgate_token_cache_lookups_total`).
    cache_lookups: [prometheus_client::metrics::counter::Counter; 2],
    /// Tells these `Tokens` from those of another configuration (see `memo`).
    owner: u64,
}

impl Tokens {
    pub fn new(cfg: &TokensConfig, keys: Arc<KeySet>) -> Self {
        let reader = jws::Reader::new(&keys, &cfg.issuer, &cfg.audience, cfg.leeway.as_secs());
        let mut header = Header::new(keys.algorithm);
        header.kid = Some(keys.kid.clone());
        header.typ = Some("JWT".to_owned());
        Tokens {
            keys,
            cache: VerifiedCache::new(cfg.cache_capacity),
            header,
            reader,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway: cfg.leeway.as_secs(),
            cache_lookups: Default::default(),
            owner: memo::next_owner(),
        }
    }

    /// Counts cache lookups on these counters [hit, miss] from now on.
    pub fn count_cache_lookups(
        mut self,
        counters: [prometheus_client::metrics::counter::Counter; 2],
    ) -> Self {
        self.cache_lookups = counters;
        self
    }

    /// The signing key set.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// The `kid` new tokens carry.
    pub fn kid(&self) -> &str {
        &self.keys.kid
    }

    /// The public JWKS document (None for HS256).
    pub fn jwks(&self) -> Option<&str> {
        self.keys.jwks.as_deref()
    }

    /// Signs a token and returns it with the claims it carries. `iat` may be ahead of the
    /// clock, see `Sessions::issue_time`.
    pub fn issue(
        &self,
        typ: TokenType,
        sub: &str,
        sid: &str,
        roles: Option<&[String]>,
        iat: u64,
        exp: u64,
    ) -> Result<Issued, IssueError> {
        self.issue_via(typ, sub, sid, roles, Via::default(), iat, exp)
    }

    /// `issue` for a session an identity provider signed in (`idp`, `amr` claims).
    #[allow(clippy::too_many_arguments)]
    pub fn issue_via(
        &self,
        typ: TokenType,
        sub: &str,
        sid: &str,
        roles: Option<&[String]>,
        via: Via<'_>,
        iat: u64,
        exp: u64,
    ) -> Result<Issued, IssueError> {
        // Whatever the user store holds, a token never carries text that could split or
        // forge a header at the upstream.
        if !header_safe(sub) || !roles.unwrap_or(&[]).iter().all(|r| header_safe(r)) {
            return Err(IssueError::Unsafe);
        }
        let jti = random_id()?;
        let claims = IssuedClaims {
            iss: &self.issuer,
            aud: &self.audience,
            sub,
            iat,
            nbf: iat.min(now_secs()),
            exp,
            jti: &jti,
            sid,
            typ,
            roles,
            idp: via.idp,
            amr: via.amr,
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.keys.encoding)?;
        // Not interned: the cache interns when the token comes back.
        let grants = Grants::new(GrantsKey {
            roles,
            idp: via.idp,
            amr: via.amr,
        });
        let user = Arc::new(Principal::new(sub, Arc::new(grants)));
        Ok(Issued {
            token,
            claims: Claims::new(user, iat, exp, sid, &jti, typ),
        })
    }

    /// Verifies signature and claims and that the token is of type `want`.
    pub fn verify(&self, token: &str, want: TokenType) -> Result<Claims, TokenError> {
        let claims = match self.lookup(token)? {
            Lookup::Hit(claims) => claims,
            Lookup::Miss(key, now) => self.admit(key, self.reader.read(token, now)?, now),
        };
        Self::of_type(claims, want)
    }

    /// `verify` for a request's access token: first against the token last verified on the
    /// request's connection (kept in `memo`; see `memo`), which counts as a cache hit; a
    /// token the cache does not hold has its signature checked with other requests' (see
    /// `batch`).
    pub async fn verify_access(
        &self,
        token: &str,
        memo: &dyn TokenMemo,
    ) -> Result<Claims, TokenError> {
        let mut recalled = None;
        memo.with_last(&mut |last| {
            recalled = last.recall(self.owner, token, now_secs(), self.leeway);
        });
        if let Some(claims) = recalled {
            self.cache_lookups[0].inc();
            return Ok(claims);
        }
        let claims = match self.lookup(token)? {
            Lookup::Hit(claims) => claims,
            Lookup::Miss(key, now) => {
                let verified = self.reader.read_batched(token, now).await?;
                self.admit(key, verified, now)
            }
        };
        let claims = Self::of_type(claims, TokenType::Access)?;
        memo.with_last(&mut |last| last.remember(self.owner, token, &claims));
        Ok(claims)
    }

    /// The cache's claims for `token` (counted as a hit), or its key (a miss); a cached
    /// token that expired is refused here.
    fn lookup(&self, token: &str) -> Result<Lookup, TokenError> {
        if token.len() > MAX_TOKEN_LEN || token.is_empty() {
            return Err(TokenError::Invalid);
        }
        let now = now_secs();
        let key = cache::key_of(token);
        let [hits, misses] = &self.cache_lookups;
        match self.cache.get(&key) {
            Some(c) if c.exp.saturating_add(self.leeway) >= now => {
                hits.inc();
                Ok(Lookup::Hit(c))
            }
            Some(_) => {
                hits.inc();
                Err(TokenError::Expired)
            }
            None => {
                misses.inc();
                Ok(Lookup::Miss(key, now))
            }
        }
    }

    /// Caches a token just verified, with its user interned; returns its claims.
    fn admit(&self, key: cache::TokenKey, t: TokenClaims, now: u64) -> Claims {
        let user = self.cache.principal(&t.sub, t.grants());
        let c = Claims::new(user, t.iat, t.exp, &t.sid, &t.jti, t.typ);
        self.cache.insert(key, c.clone(), now);
        c
    }

    /// `claims` if of type `want` (an access token also needs its roles).
    fn of_type(claims: Claims, want: TokenType) -> Result<Claims, TokenError> {
        if claims.typ != want {
            return Err(TokenError::WrongType);
        }
        if want == TokenType::Access && claims.roles().is_none() {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

/// What the cache knew of a token: its claims, or nothing (the token's key and the time of
/// the lookup).
enum Lookup {
    Hit(Claims),
    Miss(cache::TokenKey, u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeySource;
    use std::time::Duration;

    fn tokens() -> Tokens {
        let cfg = config();
        let keys =
            KeySet::load(&cfg, crate::auth::keys::Generate::No).unwrap_or_else(|e| panic!("{e}"));
        Tokens::new(&cfg, Arc::new(keys))
    }

    /// `tokens` with a new Ed25519 key.
    fn ed25519_tokens() -> Tokens {
        let alg = crate::config::Algorithm::EdDSA;
        let pem = crate::auth::keys::generate(alg).unwrap_or_else(|e| panic!("{e}"));
        let keys = KeySet::from_pem(alg, pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        Tokens::new(&config(), Arc::new(keys))
    }

    fn config() -> TokensConfig {
        TokensConfig {
            issuer: "authgate".into(),
            audience: "authgate".into(),
            algorithm: crate::config::Algorithm::HS256,
            key: KeySource::Secret(vec![7; 32]),
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(600),
            leeway: Duration::from_secs(0),
            rotate_refresh: true,
            refresh_reuse_grace: Duration::ZERO,
            cache_capacity: 100,
            previous: Vec::new(),
            secret_files: Vec::new(),
        }
    }

    /// A session id as the gateway makes them: the cache packs only those.
    fn sid() -> String {
        random_id().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn cached_tokens_still_get_type_and_expiry_checks() {
        let t = tokens();
        let now = now_secs();
        let roles = vec!["r".to_owned()];
        let access = t
            .issue(TokenType::Access, "u", &sid(), Some(&roles), now, now + 60)
            .unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..2 {
            assert!(t.verify(&access.token, TokenType::Access).is_ok());
            assert_eq!(
                t.verify(&access.token, TokenType::Refresh).err(),
                Some(TokenError::WrongType)
            );
        }
        // A cached token past its exp is refused without re-verifying.
        let c = t
            .verify(&access.token, TokenType::Access)
            .unwrap_or_else(|e| panic!("{e}"));
        let stale = Claims::new(
            c.clone().into_principal(),
            c.iat,
            now - 1,
            c.sid(),
            c.jti(),
            c.typ,
        );
        t.cache.insert(cache::key_of("stale.token.x"), stale, now);
        assert_eq!(
            t.verify("stale.token.x", TokenType::Access).err(),
            Some(TokenError::Expired)
        );
        // Flipping one signature character is a different key in the cache and fails.
        let mut tampered = access.token.clone();
        let last = tampered.pop().unwrap_or('A');
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(t.verify(&tampered, TokenType::Access).is_err());
    }

    /// Issued claims and the same token's verified (interned, cached) claims agree, on a miss
    /// and on a hit, also for the rare claims.
    #[test]
    fn verified_claims_are_the_issued_ones() {
        let t = tokens();
        let now = now_secs();
        let roles = vec!["a".to_owned(), "b".to_owned()];
        let amr = vec!["pwd".to_owned(), "otp".to_owned()];
        let via = Via {
            idp: Some("corp"),
            amr: Some(&amr),
        };
        let sid = sid();
        let issued = t
            .issue_via(
                TokenType::Access,
                "u",
                &sid,
                Some(&roles),
                via,
                now,
                now + 60,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..2 {
            let c = t
                .verify(&issued.token, TokenType::Access)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c, issued.claims);
            assert_eq!(
                (c.sub(), c.sid(), c.jti()),
                ("u", sid.as_str(), issued.claims.jti())
            );
            assert_eq!((c.idp(), c.amr()), (Some("corp"), Some(&amr[..])));
            assert_eq!(c.roles(), Some(&roles[..]));
            let [sub, roles] = c
                .identity_values()
                .map(|v| v.map(|v| v.as_bytes().to_vec()));
            assert_eq!(
                (sub.as_deref(), roles.as_deref()),
                (Some(&b"u"[..]), Some(&b"a,b"[..]))
            );
        }
        // The second time came from the cache.
        assert_eq!(t.cache_lookups[0].get(), 1);
        let refresh = t
            .issue(TokenType::Refresh, "u", &sid, None, now, now + 60)
            .unwrap_or_else(|e| panic!("{e}"));
        let c = t
            .verify(&refresh.token, TokenType::Refresh)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.roles(), c.idp(), c.amr()), (None, None, None));
        assert_eq!(c, refresh.claims);
    }

    /// Two tokens of one user share one principal in the cache.
    #[test]
    fn tokens_of_one_user_share_their_principal() {
        let t = tokens();
        let now = now_secs();
        let roles = vec!["r".to_owned()];
        let verified: Vec<Claims> = (0..3)
            .map(|_| {
                let issued = t
                    .issue(TokenType::Access, "u", &sid(), Some(&roles), now, now + 60)
                    .unwrap_or_else(|e| panic!("{e}"));
                t.verify(&issued.token, TokenType::Access)
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        let [a, b, c] = [0, 1, 2].map(|i| verified[i].clone().into_principal());
        assert!(Arc::ptr_eq(&a, &b) && Arc::ptr_eq(&b, &c));
    }

    /// Requests that miss the cache together on one worker have their signatures checked
    /// together (`batch`), each still answered for its own token: a forged one among them is
    /// refused alone, the others are cached.
    #[test]
    fn access_tokens_missing_together_are_each_answered() {
        let t = Arc::new(ed25519_tokens());
        let now = now_secs();
        let roles = vec!["r".to_owned()];
        let mut tokens: Vec<String> = (0..12)
            .map(|i| {
                t.issue(
                    TokenType::Access,
                    &format!("u{i}"),
                    &sid(),
                    Some(&roles),
                    now,
                    now + 60,
                )
                .unwrap_or_else(|e| panic!("{e}"))
                .token
            })
            .collect();
        // Token 3 with another token's signature; token 7 is a refresh token.
        let stolen = tokens[0].rsplit_once('.').map(|(_, s)| s.to_owned());
        let head = tokens[3].rsplit_once('.').map(|(h, _)| h.to_owned());
        tokens[3] = format!(
            "{}.{}",
            head.unwrap_or_default(),
            stolen.unwrap_or_default()
        );
        tokens[7] = t
            .issue(TokenType::Refresh, "u7", &sid(), None, now, now + 60)
            .unwrap_or_else(|e| panic!("{e}"))
            .token;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let answers = rt.block_on(async {
            let all = tokens.iter().cloned().map(|token| {
                let t = t.clone();
                tokio::spawn(async move {
                    t.verify_access(&token, &NoMemo)
                        .await
                        .map(|c| c.sub().to_owned())
                })
            });
            let mut answers = Vec::new();
            for task in all.collect::<Vec<_>>() {
                answers.push(task.await.unwrap_or_else(|e| panic!("{e}")));
            }
            answers
        });
        for (i, answer) in answers.iter().enumerate() {
            let want = match i {
                3 => Err(TokenError::Invalid),
                7 => Err(TokenError::WrongType),
                _ => Ok(format!("u{i}")),
            };
            assert_eq!(answer, &want, "token {i}");
        }
        assert_eq!(t.cache_lookups[1].get(), 12, "all missed the cache");
        assert!(
            batch::LARGEST.with(|l| l.get()) >= 12,
            "and were checked together"
        );
        // Now cached: the forged one still is not.
        for (i, token) in tokens.iter().enumerate() {
            let cached = t.cache.get(&cache::key_of(token)).is_some();
            assert_eq!(cached, i != 3, "token {i}");
        }
    }
}
