//! What a verified token says, laid out to be cached by the hundred thousand: the per-token
//! part (`iat`, `exp`, `sid`, `jti`, type) inline, and who it speaks for (`Principal`:
//! subject, roles, sign-in method, and the roles' header value) behind one pointer that every
//! token of the same user shares (interned by the verified-token cache).

use super::TokenType;
use http::HeaderValue;
use std::sync::Arc;

/// Claims of a verified (or just issued) token. Cheap to clone: one reference count, the rest
/// is copied.
#[derive(Clone)]
pub struct Claims {
    user: Arc<Principal>,
    pub iat: u64,
    pub exp: u64,
    sid: Id,
    jti: Id,
    pub typ: TokenType,
}

impl Claims {
    pub(super) fn new(
        user: Arc<Principal>,
        iat: u64,
        exp: u64,
        sid: &str,
        jti: &str,
        typ: TokenType,
    ) -> Self {
        Claims {
            user,
            iat,
            exp,
            sid: Id::new(sid),
            jti: Id::new(jti),
            typ,
        }
    }

    /// The claims of a machine credential (an API key, a Basic pair): no token behind them.
    pub fn machine(sub: &str, sid: &str, roles: Vec<String>, exp: Option<u64>) -> Claims {
        let grants = Grants::new(GrantsKey {
            roles: Some(&roles),
            idp: None,
            amr: None,
        });
        let user = Arc::new(Principal::new(sub, Arc::new(grants)));
        let now = crate::clock::now_secs();
        Claims::new(
            user,
            now,
            exp.unwrap_or(u64::MAX),
            sid,
            "",
            TokenType::Access,
        )
    }

    /// The user name (`sub`).
    pub fn sub(&self) -> &str {
        self.user.sub()
    }

    /// The login session (`sid`).
    pub fn sid(&self) -> &str {
        self.sid.as_str()
    }

    /// The token's unique id (`jti`).
    pub fn jti(&self) -> &str {
        self.jti.as_str()
    }

    /// The `roles` claim (access tokens carry one, refresh tokens none).
    pub fn roles(&self) -> Option<&[String]> {
        self.user.grants.roles.as_deref()
    }

    /// The identity provider that signed the session in (absent: the password form).
    pub fn idp(&self) -> Option<&str> {
        self.user.grants.idp.as_deref()
    }

    /// Authentication methods (RFC 8176 values) as the provider reported them.
    pub fn amr(&self) -> Option<&[String]> {
        self.user.grants.amr.as_deref()
    }

    /// The values of the identity headers (subject, roles) for the upstream; `None` for a
    /// value that is not header-safe (never issued so, see `Tokens::issue`). The roles' value
    /// is made once per role set and shared; the subject's is a copy of its text: keeping a
    /// `HeaderValue` per user cost three allocations (~100 B) for each user in the cache.
    pub fn identity_values(&self) -> [Option<HeaderValue>; 2] {
        [
            HeaderValue::from_str(self.sub()).ok(),
            self.user.grants.roles_value.clone(),
        ]
    }

    /// The shared part, for the cache to keep.
    pub(super) fn user(&self) -> &Arc<Principal> {
        &self.user
    }

    /// Gives up the shared part, for the cache to release it from its intern table.
    pub(super) fn into_principal(self) -> Arc<Principal> {
        self.user
    }
}

impl PartialEq for Claims {
    fn eq(&self, other: &Self) -> bool {
        self.iat == other.iat
            && self.exp == other.exp
            && self.typ == other.typ
            && self.sid() == other.sid()
            && self.jti() == other.jti()
            && (Arc::ptr_eq(&self.user, &other.user) || *self.user == *other.user)
    }
}

impl Eq for Claims {}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // jti and sid identify live sessions: keep them out of logs.
        f.debug_struct("Claims")
            .field("sub", &self.sub())
            .field("typ", &self.typ)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

/// `sid`, `jti` or a subject: ours are 22 base64url characters, kept inline (no allocation);
/// a longer one (never issued by this gateway for `sid` and `jti`, but valid) is shared text.
#[derive(Clone, PartialEq, Eq)]
enum Id {
    Inline { len: u8, bytes: [u8; INLINE_ID] },
    Long(Arc<str>),
}

/// The length of `ids::random_id`.
const INLINE_ID: usize = 22;

impl Id {
    fn new(s: &str) -> Self {
        let mut bytes = [0u8; INLINE_ID];
        match (bytes.get_mut(..s.len()), u8::try_from(s.len())) {
            (Some(dst), Ok(len)) => {
                dst.copy_from_slice(s.as_bytes());
                Id::Inline { len, bytes }
            }
            _ => Id::Long(Arc::from(s)),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Copied from a `str` whole: always UTF-8.
            Id::Inline { len, bytes } => bytes
                .get(..usize::from(*len))
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default(),
            Id::Long(s) => s,
        }
    }
}

/// Who a token speaks for: the subject and what it is granted. One per user in the cache,
/// however many of the user's tokens are cached: one allocation of 48 bytes (a subject of up
/// to 22 bytes inline).
#[derive(PartialEq, Eq)]
pub(crate) struct Principal {
    sub: Id,
    grants: Arc<Grants>,
}

impl Principal {
    pub(super) fn new(sub: &str, grants: Arc<Grants>) -> Self {
        Principal {
            sub: Id::new(sub),
            grants,
        }
    }

    pub(super) fn sub(&self) -> &str {
        self.sub.as_str()
    }

    pub(super) fn grants(&self) -> &Arc<Grants> {
        &self.grants
    }

    pub(super) fn into_grants(self) -> Arc<Grants> {
        self.grants
    }
}

/// The roles (as claimed and as the joined header value) and how the session was signed in.
/// Few distinct ones exist among many users: interned too.
pub(crate) struct Grants {
    roles: Option<Box<[String]>>,
    roles_value: Option<HeaderValue>,
    idp: Option<Box<str>>,
    amr: Option<Box<[String]>>,
}

/// What makes two `Grants` the same (the header value follows from the roles).
#[derive(PartialEq, Eq, Hash, Clone, Copy, Default)]
pub(super) struct GrantsKey<'a> {
    pub roles: Option<&'a [String]>,
    pub idp: Option<&'a str>,
    pub amr: Option<&'a [String]>,
}

impl Grants {
    pub(super) fn new(key: GrantsKey<'_>) -> Self {
        let joined = key.roles.unwrap_or(&[]).join(",");
        Grants {
            roles: key.roles.map(Into::into),
            roles_value: HeaderValue::try_from(joined).ok(),
            idp: key.idp.map(Into::into),
            amr: key.amr.map(Into::into),
        }
    }

    pub(super) fn key(&self) -> GrantsKey<'_> {
        GrantsKey {
            roles: self.roles.as_deref(),
            idp: self.idp.as_deref(),
            amr: self.amr.as_deref(),
        }
    }
}

impl PartialEq for Grants {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Grants {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_inline_up_to_22_bytes_and_exact_beyond() {
        assert_eq!(std::mem::size_of::<Id>(), 24);
        for s in [
            "",
            "s",
            "AAAAAAAAAAAAAAAAAAAAAA",
            "a-longer-session-id-than-ours",
            "é",
        ] {
            let id = Id::new(s);
            assert_eq!(id.as_str(), s);
            assert_eq!(matches!(id, Id::Inline { .. }), s.len() <= INLINE_ID);
        }
    }

    #[test]
    fn subjects_that_cannot_be_header_values_keep_their_text_and_have_none() {
        let grants = || Arc::new(Grants::new(GrantsKey::default()));
        let claims = |sub: &str| {
            let user = Arc::new(Principal::new(sub, grants()));
            Claims::new(user, 0, 0, "s", "j", TokenType::Access)
        };
        let ok = claims("alice");
        let [sub, _] = ok.identity_values();
        assert_eq!(
            (ok.sub(), sub.as_ref().map(HeaderValue::as_bytes)),
            ("alice", Some(&b"alice"[..]))
        );
        let bad = claims("a\nb");
        let [sub, _] = bad.identity_values();
        assert_eq!((bad.sub(), sub.is_none()), ("a\nb", true));
    }

    #[test]
    fn a_principal_is_one_small_allocation() {
        assert_eq!(std::mem::size_of::<Principal>(), 32);
    }

    #[test]
    fn roles_header_value_is_the_joined_roles_and_empty_without_roles() {
        let roles = ["a".to_owned(), "b".to_owned()];
        let key = |roles| GrantsKey {
            roles,
            idp: None,
            amr: None,
        };
        let g = Grants::new(key(Some(&roles[..])));
        assert_eq!(
            g.roles_value.as_ref().map(HeaderValue::as_bytes),
            Some(&b"a,b"[..])
        );
        let none = Grants::new(key(None));
        assert_eq!(
            none.roles_value.as_ref().map(HeaderValue::as_bytes),
            Some(&b""[..])
        );
    }
}
