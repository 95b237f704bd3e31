//! The shared store's vocabulary: every Redis key and channel name (`Keys`) and the one
//! message type published on the revocation channel (`RevocationEvent`). The Lua scripts,
//! the writer and the mirror all take their names and messages from here.

use std::sync::Arc;

/// Names of every key the gateway keeps in Redis, under `revocation.key_prefix`.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: Arc<str>,
    /// Redis Cluster: every key of one user carries the user as a hash tag (one slot).
    cluster: bool,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.into(),
            cluster: false,
        }
    }

    /// Names for a Redis Cluster: each user's keys in one slot, so a revocation check is one
    /// `MGET` to one node and the rotation and cut-off scripts stay atomic.
    pub fn clustered(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.into(),
            cluster: true,
        }
    }

    fn key(&self, user: &str, kind: &str, id: &str) -> String {
        let mut k =
            String::with_capacity(self.prefix.len() + user.len() + kind.len() + id.len() + 3);
        k.push_str(&self.prefix);
        if self.cluster {
            k.push('{');
            k.push_str(user);
            k.push('}');
        }
        k.push_str(kind);
        k.push(':');
        k.push_str(id);
        k
    }

    /// Present while the login session `sid` of `user` is revoked.
    pub fn revoked_session(&self, user: &str, sid: &str) -> String {
        self.key(user, "sid", sid)
    }

    /// The user's cut-off: tokens issued at or before it are revoked.
    pub fn cutoff(&self, user: &str) -> String {
        self.key(user, "cut", user)
    }

    /// The refresh-rotation state of a session (hash: cur, prev, at, tok).
    pub fn refresh(&self, user: &str, sid: &str) -> String {
        self.key(user, "rt", sid)
    }

    /// A login-failure counter (`u:<name>` or `ip:<addr>`).
    pub fn failures(&self, counter: &str) -> String {
        self.key(counter, "fail", counter)
    }

    /// A user record of the Redis user store (hash: hash, roles).
    pub fn user(&self, name: &str) -> String {
        self.key(name, "user", name)
    }

    /// The set of every user name in the Redis user store.
    pub fn user_index(&self) -> String {
        self.key("", "users", "all")
    }

    /// The Redis user store's API keys (hash: SHA-256 -> JSON record).
    pub fn api_keys(&self) -> String {
        self.key("", "apikeys", "all")
    }

    /// When API key `name` was last used (Unix seconds).
    pub fn key_used(&self, name: &str) -> String {
        self.key(name, "keyused", name)
    }

    /// A single-use mark (`Store::mark_once`): an OIDC state or a logout token's `jti`.
    pub fn once(&self, key: &str) -> String {
        self.key(key, "once", key)
    }

    /// A set of linked members (`Store::link`): an identity provider's session or subject ->
    /// the gateway's sessions or users it started.
    pub fn link(&self, key: &str) -> String {
        self.key(key, "link", key)
    }

    /// The user's sessions by start time (sorted set of sids): the sessions page.
    pub fn session_index(&self, user: &str) -> String {
        self.key(user, "sess", user)
    }

    /// The user's session records (hash: sid -> JSON, `r:<sid>` -> last refresh).
    pub fn session_info(&self, user: &str) -> String {
        self.key(user, "sinfo", user)
    }

    /// The user a session belongs to (in the sid's own slot), for a revoke given a sid.
    pub fn session_owner(&self, sid: &str) -> String {
        self.key(sid, "sown", sid)
    }

    /// The second the store's state began (see `RedisStore`); one key for every user.
    pub fn epoch(&self) -> String {
        format!("{}epoch", self.prefix)
    }

    /// The pub/sub channel revocations are published on.
    pub fn channel(&self) -> String {
        format!("{}revocations", self.prefix)
    }

    /// SCAN patterns for the mirror's full copy.
    pub fn revoked_session_pattern(&self) -> String {
        format!("{}*sid:*", self.prefix)
    }

    pub fn cutoff_pattern(&self) -> String {
        format!("{}*cut:*", self.prefix)
    }

    /// The id part of a key named by `kind` (`sid` or `cut`), hash tag or not.
    pub fn id_of<'k>(&self, key: &'k str, kind: &str) -> Option<&'k str> {
        let rest = key.strip_prefix(&*self.prefix)?;
        let rest = match rest.strip_prefix('{') {
            Some(tagged) => tagged.split_once('}')?.1,
            None => rest,
        };
        rest.strip_prefix(kind)?.strip_prefix(':')
    }
}

/// One change to the revocation set, as published for the mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationEvent {
    /// A login session was revoked; the record lives `ttl` seconds.
    Session { sid: String, ttl: u64 },
    /// A user's cut-off (already the maximum the store holds); the record lives `ttl` seconds.
    Cutoff { user: String, cutoff: u64, ttl: u64 },
    /// A heartbeat: the channel works.
    Beat,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a revocation event: {0:?}")]
pub struct DecodeError(pub String);

impl RevocationEvent {
    /// `sid <ttl> <sid>`, `cut <ttl> <user> <cutoff>` or `beat`.
    pub fn encode(&self) -> String {
        match self {
            RevocationEvent::Session { sid, ttl } => format!("sid {ttl} {sid}"),
            RevocationEvent::Cutoff { user, cutoff, ttl } => {
                format!("{}{cutoff}", Self::cutoff_prefix(user, *ttl))
            }
            RevocationEvent::Beat => "beat".to_owned(),
        }
    }

    /// A cut-off event without its number: the CUTOFF script appends the value it stored
    /// (the maximum of the old and the new one), so it publishes exactly `encode()`'s text.
    pub fn cutoff_prefix(user: &str, ttl: u64) -> String {
        format!("cut {ttl} {user} ")
    }

    pub fn decode(text: &str) -> Result<RevocationEvent, DecodeError> {
        let bad = || DecodeError(text.chars().take(80).collect());
        let (kind, rest) = text.split_once(' ').unwrap_or((text, ""));
        match kind {
            "beat" if rest.is_empty() => Ok(RevocationEvent::Beat),
            "sid" => {
                let (ttl, sid) = rest.split_once(' ').ok_or_else(bad)?;
                let ttl = ttl.parse().map_err(|_| bad())?;
                if sid.is_empty() {
                    return Err(bad());
                }
                Ok(RevocationEvent::Session {
                    sid: sid.to_owned(),
                    ttl,
                })
            }
            "cut" => {
                let (ttl, rest) = rest.split_once(' ').ok_or_else(bad)?;
                let (user, cutoff) = rest.rsplit_once(' ').ok_or_else(bad)?;
                Ok(RevocationEvent::Cutoff {
                    user: user.to_owned(),
                    cutoff: cutoff.parse().map_err(|_| bad())?,
                    ttl: ttl.parse().map_err(|_| bad())?,
                })
            }
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        for e in [
            RevocationEvent::Session {
                sid: "abc".into(),
                ttl: 60,
            },
            RevocationEvent::Cutoff {
                user: "some user".into(),
                cutoff: 1_700_000_000,
                ttl: 7,
            },
            RevocationEvent::Beat,
        ] {
            assert_eq!(RevocationEvent::decode(&e.encode()), Ok(e));
        }
        for bad in [
            "",
            "garbage",
            "sid x y",
            "sid 5",
            "cut 1 u",
            "cut x u 5",
            "beat x",
        ] {
            assert!(RevocationEvent::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_ids_parse_back_with_or_without_a_hash_tag() {
        let k = Keys::new("ag:");
        assert_eq!(k.id_of(&k.revoked_session("u", "s1"), "sid"), Some("s1"));
        assert_eq!(k.id_of(&k.cutoff("bob"), "cut"), Some("bob"));
        assert_eq!(k.id_of("ag:{bob}cut:bob", "cut"), Some("bob"));
        assert_eq!(k.id_of("other:cut:bob", "cut"), None);
    }

    /// Cluster: a user's session records share the slot of their refresh and revocation keys
    /// (the listing pipelines them); a sid's owner key lives in the sid's own slot.
    #[test]
    fn session_keys_carry_the_users_hash_tag_in_a_cluster() {
        let k = Keys::clustered("ag:");
        for key in [
            k.session_index("bob"),
            k.session_info("bob"),
            k.refresh("bob", "s1"),
            k.revoked_session("bob", "s1"),
            k.cutoff("bob"),
        ] {
            assert!(key.starts_with("ag:{bob}"), "{key}");
        }
        assert_eq!(k.session_owner("s1"), "ag:{s1}sown:s1");
        assert_eq!(Keys::new("ag:").session_info("bob"), "ag:sinfo:bob");
    }
}
