//! User accounts: a TOML file (`[[user]] name, password_hash, roles`) or Redis hashes.

use super::api_keys::ApiKey;
use super::{RedisStore, Store, StoreError};
use crate::auth::passwords::HashCost;
use crate::config::{UsersBackend, UsersConfig};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password_hash: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// The TOTP secret, sealed under the factor key (`authgate users totp`, the account
    /// page); never the secret itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<String>,
    /// The SHA-256 (hex) of each unused recovery code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery_codes: Vec<String>,
    /// Passkeys (WebAuthn credentials), each sealed under the factor key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passkeys: Vec<String>,
}

impl User {
    /// Whether this user has a second factor to give.
    pub fn has_factor(&self) -> bool {
        self.totp.is_some() || !self.passkeys.is_empty()
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<User>,
    /// API keys (`authgate keys create`): their SHA-256, never the key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    key: Vec<ApiKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a user name is 1-64 characters of letters, digits, . _ - @, starting and ending with a letter or digit")]
pub struct InvalidName;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role {0:?}: a role is 1-64 characters of letters, digits, . _ - : (it travels in a comma-separated header)")]
pub struct InvalidRole(pub String);

/// Roles reach the upstream as one comma-separated header value: plain text only.
pub fn validate_role(role: &str) -> Result<(), InvalidRole> {
    let ok = !role.is_empty()
        && role.len() <= 64
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(InvalidRole(role.to_owned()))
    }
}

/// Why the user store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum UserStoreError {
    #[error("cannot read users file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("users file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("users file {}: user {user:?}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        user: String,
        reason: String,
    },
    #[error("cannot write users file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("users.backend = \"redis\" needs revocation.backend = \"redis\"")]
    NeedsRedis,
    #[error("users file {} does not exist: every login would fail. Create it with `authgate users add NAME --config CONFIG`, or mount it (a Kubernetes Secret with the key users.toml)", path.display())]
    Missing { path: PathBuf },
}

/// Names are what tokens carry as `sub`, what the upstream reads in a header and what Redis
/// keys contain: keep them plain (no `.`, `..` or `-` alone, nothing that starts or ends with
/// punctuation).
pub fn validate_name(name: &str) -> Result<(), InvalidName> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(InvalidName)
    }
}

/// Creates a user unless its name is taken, ignoring case (`Admin` beside `admin` would be
/// a second account that looks like the first in every log and header).
const CREATE_USER: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local lower = string.lower(ARGV[1])
for _, n in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if string.lower(n) == lower then return 0 end
end
redis.call('HSET', KEYS[1], 'hash', ARGV[2], 'roles', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"#;

pub enum UserStore {
    File {
        path: PathBuf,
        /// Written through by the gateway's own changes (second factors), so they count
        /// before the watcher's reload.
        users: std::sync::RwLock<HashMap<String, User>>,
        /// API keys by SHA-256.
        keys: HashMap<String, ApiKey>,
    },
    Redis(Box<RedisStore>),
}

pub fn read_file(path: &Path) -> Result<Vec<User>, UserStoreError> {
    read_all(path).map(|f| f.user)
}

/// The API keys of a users file.
pub fn read_keys(path: &Path) -> Result<Vec<ApiKey>, UserStoreError> {
    read_all(path).map(|f| f.key)
}

fn read_all(path: &Path) -> Result<UsersFile, UserStoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(UsersFile::default()),
        Err(source) => {
            return Err(UserStoreError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let file: UsersFile = toml::from_str(&text).map_err(|e| UserStoreError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let invalid = |u: &User, reason: String| UserStoreError::Invalid {
        path: path.to_path_buf(),
        user: u.name.clone(),
        reason,
    };
    let mut seen = std::collections::HashSet::new();
    for u in &file.user {
        validate_name(&u.name).map_err(|e| invalid(u, e.to_string()))?;
        for r in &u.roles {
            validate_role(r).map_err(|e| invalid(u, e.to_string()))?;
        }
        if !seen.insert(u.name.to_ascii_lowercase()) {
            return Err(invalid(
                u,
                "appears twice (names are compared ignoring case)".to_owned(),
            ));
        }
        argon2::password_hash::phc::PasswordHash::new(&u.password_hash)
            .map_err(|e| invalid(u, format!("password_hash is not a PHC string: {e}")))?;
    }
    let mut names = std::collections::HashSet::new();
    for k in &file.key {
        let bad = |reason: String| UserStoreError::Invalid {
            path: path.to_path_buf(),
            user: format!("key {}", k.name),
            reason,
        };
        validate_name(&k.name).map_err(|e| bad(e.to_string()))?;
        if let Some(u) = &k.user {
            validate_name(u).map_err(|e| bad(format!("user: {e}")))?;
        }
        for r in &k.roles {
            validate_role(r).map_err(|e| bad(e.to_string()))?;
        }
        if k.sha256.len() != 43 {
            return Err(bad("sha256 is not a base64url SHA-256".to_owned()));
        }
        if !names.insert(k.name.clone()) {
            return Err(bad("appears twice".to_owned()));
        }
    }
    Ok(file)
}

/// Replaces the users file's users (its keys kept) by rename, so a reader never sees half a
/// file.
pub fn write_file(path: &Path, users: &[User]) -> Result<(), UserStoreError> {
    let key = read_keys(path)?;
    write_all(
        path,
        &UsersFile {
            user: users.to_vec(),
            key,
        },
    )
}

/// Replaces the users file's API keys (its users kept).
pub fn write_keys(path: &Path, keys: &[ApiKey]) -> Result<(), UserStoreError> {
    let user = read_file(path)?;
    write_all(
        path,
        &UsersFile {
            user,
            key: keys.to_vec(),
        },
    )
}

fn write_all(path: &Path, file: &UsersFile) -> Result<(), UserStoreError> {
    let text = toml::to_string_pretty(file).map_err(|e| UserStoreError::Parse {
        path: path.to_path_buf(),
        message: format!("cannot encode users: {e}"),
    })?;
    let write_error = |source| UserStoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("toml.tmp");
    // The new file gets the old one's mode (a 0600 file of hashes must not become 0644); a
    // new users file is 0600.
    let mode = std::fs::metadata(path).map_or(0o600, |m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o7777
    });
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(write_error)?;
        // The umask may have narrowed `mode` at creation: set it exactly.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(write_error)?;
        f.write_all(text.as_bytes()).map_err(write_error)?;
        f.sync_all().map_err(write_error)?;
    }
    std::fs::rename(&tmp, path).map_err(write_error)
}

/// Refuses a user whose hash needs more argon2 memory than `max_hash_memory` bytes: every
/// wrong password for them would cost that much (a few parallel ones exhaust a sidecar).
fn check_cost(path: &Path, u: &User, max_hash_memory: u64) -> Result<(), UserStoreError> {
    match HashCost::of(&u.password_hash) {
        Some(c) if c.memory_bytes() > max_hash_memory => Err(UserStoreError::Invalid {
            path: path.to_path_buf(),
            user: u.name.clone(),
            reason: format!(
                "its password hash needs {} MiB of memory ({c}), over login.max_hash_memory \
                 ({} MiB): hash the password again with `authgate hash-password`, or raise \
                 login.max_hash_memory",
                c.memory_bytes() >> 20,
                max_hash_memory >> 20
            ),
        }),
        _ => Ok(()),
    }
}

impl UserStore {
    /// Opens the configured store; a users file's hashes must each fit `max_hash_memory`.
    pub fn open(
        cfg: &UsersConfig,
        store: &Store,
        max_hash_memory: u64,
    ) -> Result<UserStore, UserStoreError> {
        match &cfg.backend {
            UsersBackend::File(path) => {
                if !path.exists() {
                    return Err(UserStoreError::Missing { path: path.clone() });
                }
                let file = read_all(path)?;
                for u in &file.user {
                    check_cost(path, u, max_hash_memory)?;
                }
                let users = std::sync::RwLock::new(
                    file.user.into_iter().map(|u| (u.name.clone(), u)).collect(),
                );
                let keys = file
                    .key
                    .into_iter()
                    .map(|k| (k.sha256.clone(), k))
                    .collect();
                Ok(UserStore::File {
                    path: path.clone(),
                    users,
                    keys,
                })
            }
            UsersBackend::Redis => store
                .redis()
                .cloned()
                .map(|r| UserStore::Redis(Box::new(r)))
                .ok_or(UserStoreError::NeedsRedis),
        }
    }

    /// The costliest hash parameters of the store (at least the gateway's own): what an
    /// unknown user's dummy verification must cost. Redis users are hashed by the gateway.
    pub fn costliest(&self) -> HashCost {
        match self {
            UserStore::File { users, .. } => read_lock(users)
                .values()
                .filter_map(|u| HashCost::of(&u.password_hash))
                .fold(HashCost::ours(), HashCost::max),
            UserStore::Redis(_) => HashCost::ours(),
        }
    }

    /// Replaces a user's password hash (Redis; the file store is the operator's, read-only
    /// here): `Ok(false)` when it cannot.
    pub async fn set_hash(&self, name: &str, hash: &str) -> Result<bool, UserStoreError> {
        match self {
            UserStore::File { .. } => Ok(false),
            UserStore::Redis(r) => {
                let mut c = r.connection();
                r.timed(
                    "user_set_hash",
                    c.hset::<_, _, _, ()>(r.keys().user(name), "hash", hash),
                )
                .await?;
                Ok(true)
            }
        }
    }

    /// The file store's users as name -> (roles, password hash), to tell what a reload changed;
    /// `None` for Redis (its users change through the gateway or the CLI, not a reload).
    pub fn snapshot(&self) -> Option<HashMap<String, (Vec<String>, String)>> {
        match self {
            UserStore::File { users, .. } => Some(
                read_lock(users)
                    .iter()
                    .map(|(n, u)| (n.clone(), (u.roles.clone(), u.password_hash.clone())))
                    .collect(),
            ),
            UserStore::Redis(_) => None,
        }
    }

    pub async fn get(&self, name: &str) -> Result<Option<User>, StoreError> {
        match self {
            UserStore::File { users, .. } => Ok(read_lock(users).get(name).cloned()),
            UserStore::Redis(r) => {
                let mut c = r.connection();
                type Fields = (
                    Option<String>,
                    Option<String>,
                    Option<String>,
                    Option<String>,
                    Option<String>,
                );
                let (hash, roles, totp, recovery, passkeys): Fields = r
                    .timed(
                        "user_get",
                        c.hmget(
                            r.keys().user(name),
                            &["hash", "roles", "totp", "recovery", "passkeys"],
                        ),
                    )
                    .await?;
                Ok(hash.map(|password_hash| User {
                    name: name.to_owned(),
                    password_hash,
                    roles: split_roles(roles.as_deref().unwrap_or("")),
                    totp: totp.filter(|t| !t.is_empty()),
                    recovery_codes: split_roles(recovery.as_deref().unwrap_or("")),
                    passkeys: passkeys
                        .and_then(|p| serde_json::from_str(&p).ok())
                        .unwrap_or_default(),
                }))
            }
        }
    }

    /// Creates a user; `Ok(false)` when the name is taken.
    pub async fn create(&self, user: &User) -> Result<bool, UserStoreError> {
        match self {
            UserStore::File { path, users, .. } => {
                let mut all = read_file(path)?;
                if all.iter().any(|u| u.name.eq_ignore_ascii_case(&user.name)) {
                    return Ok(false);
                }
                all.push(user.clone());
                write_file(path, &all)?;
                users
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(user.name.clone(), user.clone());
                Ok(true)
            }
            UserStore::Redis(r) => {
                let mut c = r.connection();
                let script = redis::Script::new(CREATE_USER);
                let mut inv = script.key(r.keys().user(&user.name));
                inv.key(r.keys().user_index())
                    .arg(&user.name)
                    .arg(&user.password_hash)
                    .arg(user.roles.join(","));
                let created: i64 = r.timed("user_create", inv.invoke_async(&mut c)).await?;
                Ok(created == 1)
            }
        }
    }

    /// Removes a user; `Ok(false)` when there was none.
    pub async fn remove(&self, name: &str) -> Result<bool, UserStoreError> {
        match self {
            UserStore::File { path, .. } => {
                let mut all = read_file(path)?;
                let before = all.len();
                all.retain(|u| u.name != name);
                if all.len() == before {
                    return Ok(false);
                }
                write_file(path, &all)?;
                Ok(true)
            }
            UserStore::Redis(r) => {
                let mut c = r.connection();
                let mut pipe = redis::pipe();
                pipe.del(r.keys().user(name))
                    .srem(r.keys().user_index(), name)
                    .ignore();
                let (n,): (u64,) = r.timed("user_remove", pipe.query_async(&mut c)).await?;
                Ok(n > 0)
            }
        }
    }

    pub async fn set_roles(&self, name: &str, roles: &[String]) -> Result<bool, UserStoreError> {
        match self {
            UserStore::File { path, .. } => {
                let mut all = read_file(path)?;
                let Some(u) = all.iter_mut().find(|u| u.name == name) else {
                    return Ok(false);
                };
                u.roles = roles.to_vec();
                write_file(path, &all)?;
                Ok(true)
            }
            UserStore::Redis(r) => {
                if self.get(name).await?.is_none() {
                    return Ok(false);
                }
                let mut c = r.connection();
                r.timed(
                    "user_set_roles",
                    c.hset::<_, _, _, ()>(r.keys().user(name), "roles", roles.join(",")),
                )
                .await?;
                Ok(true)
            }
        }
    }

    pub async fn list(&self) -> Result<Vec<User>, UserStoreError> {
        match self {
            UserStore::File { path, .. } => read_file(path),
            UserStore::Redis(r) => {
                let mut c = r.connection();
                let mut names: Vec<String> = r
                    .timed("user_list", c.smembers(r.keys().user_index()))
                    .await?;
                names.sort();
                let mut out = Vec::new();
                for n in names {
                    if let Some(u) = self.get(&n).await? {
                        out.push(u);
                    }
                }
                Ok(out)
            }
        }
    }
}

impl UserStore {
    /// The API key whose SHA-256 is `sha256`.
    pub async fn key(&self, sha256: &str) -> Result<Option<ApiKey>, StoreError> {
        match self {
            UserStore::File { keys, .. } => Ok(keys.get(sha256).cloned()),
            UserStore::Redis(r) => {
                let mut c = r.connection();
                let json: Option<String> = r
                    .timed("key_get", c.hget(r.keys().api_keys(), sha256))
                    .await?;
                Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
            }
        }
    }

    /// Every API key (`keys list`).
    pub async fn keys(&self) -> Result<Vec<ApiKey>, UserStoreError> {
        let mut out = match self {
            UserStore::File { path, .. } => read_keys(path)?,
            UserStore::Redis(r) => {
                let mut c = r.connection();
                let all: HashMap<String, String> =
                    r.timed("key_list", c.hgetall(r.keys().api_keys())).await?;
                all.values()
                    .filter_map(|j| serde_json::from_str(j).ok())
                    .collect()
            }
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Adds a key; `Ok(false)` when its name is taken.
    pub async fn add_key(&self, key: &ApiKey) -> Result<bool, UserStoreError> {
        if self.keys().await?.iter().any(|k| k.name == key.name) {
            return Ok(false);
        }
        match self {
            UserStore::File { path, .. } => {
                let mut all = read_keys(path)?;
                all.push(key.clone());
                write_keys(path, &all)?;
            }
            UserStore::Redis(r) => {
                let mut c = r.connection();
                let json = serde_json::to_string(key).map_err(|e| UserStoreError::Parse {
                    path: PathBuf::from("redis"),
                    message: e.to_string(),
                })?;
                r.timed(
                    "key_add",
                    c.hset::<_, _, _, ()>(r.keys().api_keys(), &key.sha256, json),
                )
                .await?;
            }
        }
        Ok(true)
    }

    /// Removes the key named `name`; returns it.
    pub async fn remove_key(&self, name: &str) -> Result<Option<ApiKey>, UserStoreError> {
        let Some(found) = self.keys().await?.into_iter().find(|k| k.name == name) else {
            return Ok(None);
        };
        match self {
            UserStore::File { path, .. } => {
                let mut all = read_keys(path)?;
                all.retain(|k| k.name != name);
                write_keys(path, &all)?;
            }
            UserStore::Redis(r) => {
                let mut c = r.connection();
                r.timed(
                    "key_remove",
                    c.hdel::<_, _, ()>(r.keys().api_keys(), &found.sha256),
                )
                .await?;
            }
        }
        Ok(Some(found))
    }
}

/// The file store's users, readable even after a panic elsewhere held the lock.
pub(super) fn read_lock(
    users: &std::sync::RwLock<HashMap<String, User>>,
) -> std::sync::RwLockReadGuard<'_, HashMap<String, User>> {
    users
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) fn split_roles(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_roles_are_plain_text() {
        for ok in ["alice", "a", "bob.smith", "x_y-z", "me@example.com", "A1"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "-",
            "_a",
            "a.",
            "a b",
            "a\r\nb",
            "ünï",
            &"x".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        for ok in ["admin", "app:reader", "team-1"] {
            assert!(validate_role(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a,b", "a b", "x\ny"] {
            assert!(validate_role(bad).is_err(), "{bad:?}");
        }
    }

    /// Regression: `users add` turned a 0600 users file (password hashes) into 0644.
    #[test]
    fn rewriting_the_users_file_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("users.toml");
        let hash = crate::auth::passwords::hash_password(b"pw").unwrap_or_default();
        let alice = User {
            name: "alice".into(),
            password_hash: hash,
            ..User::default()
        };
        write_file(&path, std::slice::from_ref(&alice)).unwrap_or_else(|e| panic!("{e}"));
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or_default()
        };
        assert_eq!(mode(&path), 0o600, "a new users file is private");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))
            .unwrap_or_else(|e| panic!("{e}"));
        write_file(&path, &[alice]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode(&path), 0o640, "the mode an operator chose stays");
    }

    #[test]
    fn a_users_file_may_not_hold_one_name_twice_in_any_case() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("u.toml");
        let hash = crate::auth::passwords::hash_password(b"pw").unwrap_or_default();
        let text = format!(
            "[[user]]\nname = \"admin\"\npassword_hash = \"{hash}\"\n\n[[user]]\nname = \"Admin\"\npassword_hash = \"{hash}\"\n"
        );
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        let err = read_file(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("appears twice"), "{err}");
    }
}
