//! Second-factor records of the user store: a user's sealed TOTP secret and the hashes of
//! their unused recovery codes (in `users.toml` for the file store, in the user's Redis hash
//! otherwise). Sealing and checking are `auth::factors`'; this only keeps the records.

use super::users::{read_file, write_file, User, UserStore, UserStoreError};
use redis::AsyncCommands;

/// Removes one recovery code's hash from a user's list, atomically.
const TAKE_RECOVERY: &str = r#"
local v = redis.call('HGET', KEYS[1], 'recovery')
if not v then return 0 end
local out = {}
local found = 0
for c in string.gmatch(v, '[^,]+') do
  if found == 0 and c == ARGV[1] then found = 1 else table.insert(out, c) end
end
if found == 1 then redis.call('HSET', KEYS[1], 'recovery', table.concat(out, ',')) end
return found
"#;

impl UserStore {
    /// Changes user `name`'s record in the users file (and in this process's copy, so the
    /// change counts before the watcher reloads the file); `Ok(false)`: no such user.
    fn edit_file_user(&self, name: &str, edit: impl Fn(&mut User)) -> Result<bool, UserStoreError> {
        let UserStore::File { path, users, .. } = self else {
            return Ok(false);
        };
        let mut all = read_file(path)?;
        let Some(u) = all.iter_mut().find(|u| u.name == name) else {
            return Ok(false);
        };
        edit(u);
        write_file(path, &all)?;
        let mut mine = users
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(u) = mine.get_mut(name) {
            edit(u);
        }
        Ok(true)
    }

    /// Sets (or with `None` removes) user `name`'s sealed TOTP secret; `Ok(false)`: no such
    /// user.
    pub async fn set_totp(&self, name: &str, sealed: Option<&str>) -> Result<bool, UserStoreError> {
        match self {
            UserStore::File { .. } => {
                self.edit_file_user(name, |u| u.totp = sealed.map(str::to_owned))
            }
            UserStore::Redis(r) => {
                if self.get(name).await?.is_none() {
                    return Ok(false);
                }
                let mut c = r.connection();
                let key = r.keys().user(name);
                match sealed {
                    Some(s) => {
                        r.timed("user_set_totp", c.hset::<_, _, _, ()>(key, "totp", s))
                            .await?
                    }
                    None => {
                        r.timed("user_set_totp", c.hdel::<_, _, ()>(key, "totp"))
                            .await?
                    }
                }
                Ok(true)
            }
        }
    }

    /// Replaces user `name`'s recovery codes (their hashes); `Ok(false)`: no such user.
    pub async fn set_recovery_codes(
        &self,
        name: &str,
        hashes: &[String],
    ) -> Result<bool, UserStoreError> {
        match self {
            UserStore::File { .. } => {
                self.edit_file_user(name, |u| u.recovery_codes = hashes.to_vec())
            }
            UserStore::Redis(r) => {
                if self.get(name).await?.is_none() {
                    return Ok(false);
                }
                let mut c = r.connection();
                r.timed(
                    "user_set_recovery",
                    c.hset::<_, _, _, ()>(r.keys().user(name), "recovery", hashes.join(",")),
                )
                .await?;
                Ok(true)
            }
        }
    }

    /// Replaces user `name`'s passkeys (each sealed); `Ok(false)`: no such user.
    pub async fn set_passkeys(
        &self,
        name: &str,
        sealed: &[String],
    ) -> Result<bool, UserStoreError> {
        match self {
            UserStore::File { .. } => self.edit_file_user(name, |u| u.passkeys = sealed.to_vec()),
            UserStore::Redis(r) => {
                if self.get(name).await?.is_none() {
                    return Ok(false);
                }
                let mut c = r.connection();
                let text = serde_json::to_string(sealed).unwrap_or_else(|_| "[]".to_owned());
                r.timed(
                    "user_set_passkeys",
                    c.hset::<_, _, _, ()>(r.keys().user(name), "passkeys", text),
                )
                .await?;
                Ok(true)
            }
        }
    }

    /// Removes one recovery code (its hash) from user `name`'s list: true when it was there.
    pub async fn take_recovery_code(&self, name: &str, hash: &str) -> Result<bool, UserStoreError> {
        match self {
            UserStore::File { .. } => {
                let present = self
                    .get(name)
                    .await?
                    .is_some_and(|u| u.recovery_codes.iter().any(|h| h == hash));
                if present {
                    self.edit_file_user(name, |u| u.recovery_codes.retain(|h| h != hash))?;
                }
                Ok(present)
            }
            UserStore::Redis(r) => {
                let mut c = r.connection();
                let script = redis::Script::new(TAKE_RECOVERY);
                let mut inv = script.key(r.keys().user(name));
                inv.arg(hash);
                let found: i64 = r
                    .timed("user_take_recovery", inv.invoke_async(&mut c))
                    .await?;
                Ok(found == 1)
            }
        }
    }
}
