//! Issuing and verifying access and refresh tokens. Verification accepts only the configured
//! algorithm, requires and checks iss, aud, exp, nbf (with leeway), and checks the `type`
//! claim itself, since jsonwebtoken does not.

use super::keys::KeySet;
use crate::clock::now_secs;
use crate::config::TokensConfig;
use crate::ids::{random_id, RngError};
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

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

/// How a session was signed in, when not by the gateway's own password form: the identity
/// provider (`[[login.oidc]]` name) and the authentication methods it reported.
#[derive(Debug, Clone, Copy)]
pub struct Via<'a> {
    pub idp: &'a str,
    pub amr: Option<&'a [String]>,
}

/// Claims of a verified token. Strict types: a claim of the wrong JSON type fails the token.
#[derive(Clone, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    pub sid: String,
    #[serde(rename = "type")]
    pub typ: TokenType,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// The identity provider that signed the session in (absent: the password form).
    #[serde(default)]
    pub idp: Option<String>,
    /// Authentication methods (RFC 8176 values) as the provider reported them.
    #[serde(default)]
    pub amr: Option<Vec<String>>,
    /// `sub` and the joined roles as header values, made on first use and shared by every
    /// request the (cached) token authenticates.
    #[serde(skip)]
    identity_values: std::sync::OnceLock<[Option<http::HeaderValue>; 2]>,
}

impl Claims {
    /// The claims of a machine credential (an API key, a Basic pair): no token behind them.
    pub fn machine(sub: &str, sid: &str, roles: Vec<String>, exp: Option<u64>) -> Claims {
        Claims {
            sub: sub.to_owned(),
            iat: now_secs(),
            exp: exp.unwrap_or(u64::MAX),
            jti: String::new(),
            sid: sid.to_owned(),
            typ: TokenType::Access,
            roles: Some(roles),
            idp: None,
            amr: None,
            identity_values: std::sync::OnceLock::new(),
        }
    }

    /// The values of the identity headers (subject, roles) for the upstream; `None` for a
    /// value that is not header-safe (never issued so, see `Tokens::issue`).
    pub fn identity_values(&self) -> &[Option<http::HeaderValue>; 2] {
        self.identity_values.get_or_init(|| {
            let roles = self.roles.as_deref().unwrap_or(&[]).join(",");
            [
                http::HeaderValue::from_str(&self.sub).ok(),
                http::HeaderValue::try_from(roles).ok(),
            ]
        })
    }
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // jti and sid identify live sessions: keep them out of logs.
        f.debug_struct("Claims")
            .field("sub", &self.sub)
            .field("typ", &self.typ)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
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
fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8192;

/// A freshly signed token and the claims it carries.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub claims: Arc<Claims>,
}

/// The hasher of the verified-token cache (`VerifiedCache`): the tail of the token's
/// signature, 16 base64url characters, ~96 bits that only the signer chooses. SipHash over the
/// whole token was a third of a cached check. Flooding one bucket is not possible: only
/// tokens whose signature verified are inserted, and a lookup still compares the whole token.
#[derive(Default)]
struct SignatureTail(u64);

impl std::hash::Hasher for SignatureTail {
    fn write(&mut self, bytes: &[u8]) {
        let tail = &bytes[bytes.len().saturating_sub(16)..];
        let mut buf = [0u8; 16];
        buf[16 - tail.len()..].copy_from_slice(tail);
        let (a, b) = buf.split_at(8);
        let a = u64::from_le_bytes(a.try_into().unwrap_or_default());
        let b = u64::from_le_bytes(b.try_into().unwrap_or_default());
        self.0 = (self.0.rotate_left(5) ^ a ^ b.rotate_left(29) ^ bytes.len() as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One cached verification: the claims, and whether it was used since the eviction hand
/// last passed it (CLOCK's reference bit).
struct CacheEntry {
    claims: Arc<Claims>,
    used: std::sync::atomic::AtomicBool,
}

/// A shard: the entries, and their keys in a ring the eviction hand walks (the keys are
/// shared, not copied).
#[derive(Default)]
struct CacheShard {
    map: HashMap<Arc<str>, CacheEntry, std::hash::BuildHasherDefault<SignatureTail>>,
    ring: std::collections::VecDeque<Arc<str>>,
}

impl CacheShard {
    /// Makes room for one entry: the hand drops the first entry that is expired or unused
    /// since it last passed (giving used ones a second chance). O(1) amortized; a scan over
    /// the whole shard on every insert made a gateway with more active users than the cache
    /// holds a third as fast.
    fn evict_one(&mut self, now: u64) {
        use std::sync::atomic::Ordering;
        // Every entry is passed at most twice: the second time its bit is clear.
        for _ in 0..=2 * self.ring.len() {
            let Some(key) = self.ring.pop_front() else {
                return;
            };
            let Some(entry) = self.map.get(&key) else {
                continue;
            };
            if entry.claims.exp >= now && entry.used.swap(false, Ordering::Relaxed) {
                self.ring.push_back(key);
                continue;
            }
            self.map.remove(&key);
            return;
        }
    }
}

/// Verified tokens, so that a token's signature is checked once, not on every request.
/// Keyed by the whole token; an entry is used only until the token's `exp` (+ leeway). Type
/// and revocation are still checked on every request. Bounded: a full shard evicts by CLOCK
/// (expired or not used since the hand last passed), one entry per insert.
struct VerifiedCache {
    shards: Vec<RwLock<CacheShard>>,
    per_shard: usize,
}

const CACHE_SHARDS: usize = 16;

impl VerifiedCache {
    fn new(capacity: usize) -> Self {
        VerifiedCache {
            shards: (0..CACHE_SHARDS)
                .map(|_| RwLock::new(CacheShard::default()))
                .collect(),
            per_shard: capacity.div_ceil(CACHE_SHARDS).max(1),
        }
    }

    fn shard(&self, token: &str) -> &RwLock<CacheShard> {
        // The signature's last bytes are as good as random; no hashing needed to pick a shard.
        let b = token.as_bytes();
        let i = b
            .len()
            .checked_sub(2)
            .map_or(0, |i| usize::from(b[i]) ^ usize::from(b[i + 1]));
        &self.shards[i % CACHE_SHARDS]
    }

    fn get(&self, token: &str) -> Option<Arc<Claims>> {
        let shard = self.shard(token).read().unwrap_or_else(|p| p.into_inner());
        let entry = shard.map.get(token)?;
        // A relaxed store under the read lock: hits never take the write lock.
        if !entry.used.load(std::sync::atomic::Ordering::Relaxed) {
            entry.used.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Some(entry.claims.clone())
    }

    fn insert(&self, token: &str, claims: Arc<Claims>, now: u64) {
        let mut shard = self.shard(token).write().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = shard.map.get_mut(token) {
            entry.claims = claims;
            return;
        }
        while shard.map.len() >= self.per_shard && !shard.ring.is_empty() {
            shard.evict_one(now);
        }
        let key: Arc<str> = Arc::from(token);
        shard.ring.push_back(key.clone());
        shard.map.insert(
            key,
            CacheEntry {
                claims,
                used: std::sync::atomic::AtomicBool::new(false),
            },
        );
    }
}

/// Signs and verifies the gateway's tokens with its key set.
pub struct Tokens {
    keys: Arc<KeySet>,
    cache: VerifiedCache,
    header: Header,
    validation: Validation,
    issuer: String,
    audience: String,
    leeway: u64,
    /// Cache lookups [hit, miss] (`authgate_token_cache_lookups_total`).
    cache_lookups: [prometheus_client::metrics::counter::Counter; 2],
}

impl Tokens {
    pub fn new(cfg: &TokensConfig, keys: Arc<KeySet>) -> Self {
        let mut validation = Validation::new(keys.algorithm);
        validation.set_issuer(&[&cfg.issuer]);
        validation.set_audience(&[&cfg.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.leeway = cfg.leeway.as_secs();
        let mut header = Header::new(keys.algorithm);
        header.kid = Some(keys.kid.clone());
        header.typ = Some("JWT".to_owned());
        Tokens {
            keys,
            cache: VerifiedCache::new(cfg.cache_capacity),
            header,
            validation,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway: cfg.leeway.as_secs(),
            cache_lookups: Default::default(),
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
        self.issue_via(typ, sub, sid, roles, None, iat, exp)
    }

    /// `issue` for a session an identity provider signed in (`idp`, `amr` claims).
    #[allow(clippy::too_many_arguments)]
    pub fn issue_via(
        &self,
        typ: TokenType,
        sub: &str,
        sid: &str,
        roles: Option<&[String]>,
        via: Option<Via<'_>>,
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
            idp: via.map(|v| v.idp),
            amr: via.and_then(|v| v.amr),
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.keys.encoding)?;
        let claims = Claims {
            sub: sub.to_owned(),
            iat,
            exp,
            jti,
            sid: sid.to_owned(),
            typ,
            roles: roles.map(<[String]>::to_vec),
            idp: via.map(|v| v.idp.to_owned()),
            amr: via.and_then(|v| v.amr.map(<[String]>::to_vec)),
            identity_values: std::sync::OnceLock::new(),
        };
        Ok(Issued {
            token,
            claims: Arc::new(claims),
        })
    }

    /// Verifies signature and claims and that the token is of type `want`.
    pub fn verify(&self, token: &str, want: TokenType) -> Result<Arc<Claims>, TokenError> {
        if token.len() > MAX_TOKEN_LEN || token.is_empty() {
            return Err(TokenError::Invalid);
        }
        let now = now_secs();
        let cached = self.cache.get(token);
        let [hits, misses] = &self.cache_lookups;
        if cached.is_some() {
            hits.inc();
        } else {
            misses.inc();
        }
        let claims = match cached {
            Some(c) if c.exp.saturating_add(self.leeway) >= now => c,
            Some(_) => return Err(TokenError::Expired),
            None => {
                let c = Arc::new(self.verify_uncached(token)?);
                self.cache.insert(token, c.clone(), now);
                c
            }
        };
        if claims.typ != want {
            return Err(TokenError::WrongType);
        }
        if want == TokenType::Access && claims.roles.is_none() {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    /// Signature and registered claims, without the cache.
    fn verify_uncached(&self, token: &str) -> Result<Claims, TokenError> {
        // The key is chosen by kid (current or a previous one); a kid naming no key we have is
        // refused outright; none at all means the current key.
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        // RFC 7515 4.1.11: a `crit` extension we do not understand (we understand none) makes
        // the token invalid.
        if header.crit.is_some() {
            return Err(TokenError::Invalid);
        }
        let key = self
            .keys
            .decoding_for(header.kid.as_deref())
            .ok_or(TokenError::Invalid)?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid,
                }
            })?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.jti.is_empty() || claims.sid.is_empty() {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeySource;
    use std::time::Duration;

    fn tokens() -> Tokens {
        let cfg = TokensConfig {
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
        };
        let keys =
            KeySet::load(&cfg, crate::auth::keys::Generate::No).unwrap_or_else(|e| panic!("{e}"));
        Tokens::new(&cfg, Arc::new(keys))
    }

    #[test]
    fn cached_tokens_still_get_type_and_expiry_checks() {
        let t = tokens();
        let now = now_secs();
        let roles = vec!["r".to_owned()];
        let access = t
            .issue(TokenType::Access, "u", "s", Some(&roles), now, now + 60)
            .unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..2 {
            assert!(t.verify(&access.token, TokenType::Access).is_ok());
            assert_eq!(
                t.verify(&access.token, TokenType::Refresh).err(),
                Some(TokenError::WrongType)
            );
        }
        // A cached token past its exp is refused without re-verifying.
        let stale = Arc::new(Claims {
            exp: now - 1,
            ..(*t
                .verify(&access.token, TokenType::Access)
                .unwrap_or_else(|e| panic!("{e}")))
            .clone()
        });
        t.cache.insert("stale.token.x", stale, now);
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

    fn cached_claims(sub: &str) -> Arc<Claims> {
        Arc::new(Claims {
            sub: sub.into(),
            iat: 0,
            exp: u64::MAX,
            jti: "j".into(),
            sid: "s".into(),
            typ: TokenType::Access,
            roles: None,
            idp: None,
            amr: None,
            identity_values: Default::default(),
        })
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = VerifiedCache::new(32);
        let claims = cached_claims("u");
        for i in 0..10_000 {
            cache.insert(&format!("token-{i}"), claims.clone(), 0);
        }
        let total: usize = cache
            .shards
            .iter()
            .map(|s| s.read().map_or(0, |m| m.map.len()))
            .sum();
        assert!(total <= 32 + CACHE_SHARDS, "{total}");
        // Eviction drops single entries, never a whole shard: the newest token is still there.
        assert!(cache.get("token-9999").is_some());
    }

    /// CLOCK: an entry used since the hand last passed survives one more round; an unused
    /// one goes first; an expired one goes whatever its bit.
    #[test]
    fn eviction_order_gives_used_entries_a_second_chance() {
        let mut shard = CacheShard::default();
        let claims = |exp: u64| {
            let mut c = (*cached_claims("u")).clone();
            c.exp = exp;
            Arc::new(c)
        };
        for (k, exp) in [("a", 100), ("b", 100), ("c", 100)] {
            let key: Arc<str> = Arc::from(k);
            shard.ring.push_back(key.clone());
            shard.map.insert(
                key,
                CacheEntry {
                    claims: claims(exp),
                    used: std::sync::atomic::AtomicBool::new(k == "a"),
                },
            );
        }
        shard.evict_one(50);
        assert!(shard.map.contains_key("a") && !shard.map.contains_key("b"));
        shard.evict_one(50);
        assert!(shard.map.contains_key("a") && !shard.map.contains_key("c"));
        // Past its exp, "a" goes although it was used.
        if let Some(e) = shard.map.get("a") {
            e.used.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        shard.evict_one(1000);
        assert!(shard.map.is_empty() && shard.ring.is_empty());
    }

    #[test]
    fn tokens_sharing_a_signature_tail_are_still_told_apart() {
        let cache = VerifiedCache::new(64);
        let claims = cached_claims;
        let tail = ".sig-sig-sig-sig-sig";
        cache.insert(&format!("aaa{tail}"), claims("a"), 0);
        cache.insert(&format!("bbb{tail}"), claims("b"), 0);
        assert_eq!(
            cache.get(&format!("aaa{tail}")).map(|c| c.sub.clone()),
            Some("a".into())
        );
        assert_eq!(
            cache.get(&format!("bbb{tail}")).map(|c| c.sub.clone()),
            Some("b".into())
        );
        assert!(cache.get(&format!("ccc{tail}")).is_none());
        assert!(cache.get("").is_none());
    }
}
