//! A cached verification packed into 48 bytes: the user's shared record, `iat` and `exp` as
//! 32-bit seconds, and `sid` and `jti` as the 16 random bytes their 22 base64url characters
//! spell. A token whose claims do not pack exactly (times past 2106, ids the gateway did not
//! make) is not cached but verified on every request: rare, and never wrong.

use super::claims::{Claims, Principal};
use super::TokenType;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::sync::Arc;

/// The claims of one cached token, but for its type (kept in the shard's flag byte, where
/// it costs no padding).
pub(super) struct Entry {
    user: Arc<Principal>,
    iat: u32,
    exp: u32,
    sid: [u8; 16],
    jti: [u8; 16],
}

impl Entry {
    /// Packs `claims`; gives them back when they do not pack exactly.
    pub(super) fn pack(claims: Claims) -> Result<(Entry, TokenType), Claims> {
        let packed = (|| {
            Some(Entry {
                user: claims.user().clone(),
                iat: u32::try_from(claims.iat).ok()?,
                exp: u32::try_from(claims.exp).ok()?,
                sid: id_bytes(claims.sid())?,
                jti: id_bytes(claims.jti())?,
            })
        })();
        match packed {
            Some(entry) => Ok((entry, claims.typ)),
            None => Err(claims),
        }
    }

    /// The claims again, exactly as they were packed.
    pub(super) fn unpack(&self, typ: TokenType) -> Option<Claims> {
        let (mut sid, mut jti) = ([0u8; ID_LEN], [0u8; ID_LEN]);
        Some(Claims::new(
            self.user.clone(),
            self.iat.into(),
            self.exp.into(),
            id_text(&self.sid, &mut sid)?,
            id_text(&self.jti, &mut jti)?,
            typ,
        ))
    }

    pub(super) fn exp(&self) -> u64 {
        self.exp.into()
    }

    pub(super) fn into_user(self) -> Arc<Principal> {
        self.user
    }
}

/// The length of `ids::random_id`: 16 bytes in base64url without padding.
const ID_LEN: usize = 22;

/// The bytes `id` spells, when it is the one spelling of them (22 characters, unused low
/// bits zero, which the decoder checks), so that `id_text` gives `id` back.
fn id_bytes(id: &str) -> Option<[u8; 16]> {
    let mut bytes = [0u8; 16];
    if id.len() != ID_LEN {
        return None;
    }
    let n = URL_SAFE_NO_PAD.decode_slice(id, &mut bytes).ok()?;
    (n == bytes.len()).then_some(bytes)
}

fn id_text<'a>(bytes: &[u8; 16], buf: &'a mut [u8; ID_LEN]) -> Option<&'a str> {
    let n = URL_SAFE_NO_PAD.encode_slice(bytes, buf).ok()?;
    std::str::from_utf8(buf.get(..n)?).ok()
}

#[cfg(test)]
mod tests {
    use super::super::claims::{Grants, GrantsKey};
    use super::*;

    fn claims(iat: u64, exp: u64, sid: &str, jti: &str) -> Claims {
        let user = Arc::new(Principal::new(
            "u",
            Arc::new(Grants::new(GrantsKey::default())),
        ));
        Claims::new(user, iat, exp, sid, jti, TokenType::Refresh)
    }

    #[test]
    fn an_entry_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 48);
    }

    #[test]
    fn claims_unpack_as_they_were_packed() {
        for _ in 0..100 {
            let [sid, jti] = [0; 2].map(|_| crate::ids::random_id().unwrap_or_default());
            let c = claims(1_700_000_000, u64::from(u32::MAX), &sid, &jti);
            let Ok((entry, typ)) = Entry::pack(c.clone()) else {
                panic!("{sid} {jti} do not pack");
            };
            assert_eq!(entry.unpack(typ).as_ref(), Some(&c));
            assert_eq!((entry.exp(), typ), (c.exp, TokenType::Refresh));
        }
    }

    /// Claims that would not come back the same are not packed at all.
    #[test]
    fn what_does_not_pack_exactly_is_refused() {
        let id = "AAAAAAAAAAAAAAAAAAAAAA";
        assert!(Entry::pack(claims(0, 1, id, id)).is_ok());
        for (iat, exp, sid, jti) in [
            (0, 1 << 32, id, id),
            (1 << 32, 1, id, id),
            (0, 1, "s", id),
            (0, 1, id, ""),
            // The same bytes as "AAA...A" but for the unused low bits: two spellings of them.
            (0, 1, id, "AAAAAAAAAAAAAAAAAAAAAB"),
            (0, 1, "AAAAAAAAAAAAAAAAAAAAA=", id),
            (0, 1, "AAAAAAAAAAAAAAAAAAAAA+", id),
            (0, 1, "AAAAAAAAAAAAAAAAAAAAAAA", id),
        ] {
            let c = claims(iat, exp, sid, jti);
            assert_eq!(
                Entry::pack(c.clone()).err(),
                Some(c),
                "{iat} {exp} {sid} {jti}"
            );
        }
    }
}
