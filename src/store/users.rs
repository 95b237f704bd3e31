//! User accounts: a TOML file (`[[user]] name, password_hash, roles`) or Redis hashes.

use super::{bounded, RedisStore, Store, StoreError};
use crate::config::{UsersBackend, UsersConfig};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password_hash: String,
    #[serde(default)]
    pub roles: Vec<String>,
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
}

/// Names are what tokens carry as `sub` and what Redis keys contain: keep them plain.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err("a user name is 1-64 characters of letters, digits, . _ - @".to_owned())
    }
}

pub enum UserStore {
    File {
        path: PathBuf,
        users: HashMap<String, User>,
    },
    Redis(RedisStore),
}

pub fn read_file(path: &Path) -> Result<Vec<User>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read users file {}: {e}", path.display())),
    };
    let file: UsersFile =
        toml::from_str(&text).map_err(|e| format!("users file {}: {e}", path.display()))?;
    let mut seen = std::collections::HashSet::new();
    for u in &file.user {
        validate_name(&u.name)
            .map_err(|e| format!("users file {}: user {:?}: {e}", path.display(), u.name))?;
        if !seen.insert(u.name.as_str()) {
            return Err(format!(
                "users file {}: user {:?} appears twice",
                path.display(),
                u.name
            ));
        }
        argon2::password_hash::phc::PasswordHash::new(&u.password_hash).map_err(|e| {
            format!(
                "users file {}: user {:?}: password_hash is not a PHC string: {e}",
                path.display(),
                u.name
            )
        })?;
    }
    Ok(file.user)
}

pub fn write_file(path: &Path, users: &[User]) -> Result<(), String> {
    let text = toml::to_string_pretty(&UsersFile {
        user: users.to_vec(),
    })
    .map_err(|e| format!("cannot encode users: {e}"))?;
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
}

impl UserStore {
    pub fn open(cfg: &UsersConfig, store: &Store) -> Result<UserStore, String> {
        match &cfg.backend {
            UsersBackend::File(path) => {
                let users = read_file(path)?
                    .into_iter()
                    .map(|u| (u.name.clone(), u))
                    .collect();
                Ok(UserStore::File {
                    path: path.clone(),
                    users,
                })
            }
            UsersBackend::Redis => store.redis().cloned().map(UserStore::Redis).ok_or_else(|| {
                "users.backend = \"redis\" needs revocation.backend = \"redis\"".to_owned()
            }),
        }
    }

    pub async fn get(&self, name: &str) -> Result<Option<User>, StoreError> {
        match self {
            UserStore::File { users, .. } => Ok(users.get(name).cloned()),
            UserStore::Redis(r) => {
                let mut c = r.connection();
                let (hash, roles): (Option<String>, Option<String>) = bounded(
                    r.timeout(),
                    c.hmget(r.key("user", name), &["hash", "roles"]),
                )
                .await?;
                Ok(hash.map(|password_hash| User {
                    name: name.to_owned(),
                    password_hash,
                    roles: split_roles(roles.as_deref().unwrap_or("")),
                }))
            }
        }
    }

    /// Creates a user; `Ok(false)` when the name is taken.
    pub async fn create(&self, user: &User) -> Result<bool, String> {
        match self {
            UserStore::File { path, .. } => {
                let mut all = read_file(path)?;
                if all.iter().any(|u| u.name == user.name) {
                    return Ok(false);
                }
                all.push(user.clone());
                write_file(path, &all)?;
                Ok(true)
            }
            UserStore::Redis(r) => {
                let mut c = r.connection();
                let key = r.key("user", &user.name);
                let created: bool =
                    bounded(r.timeout(), c.hset_nx(&key, "hash", &user.password_hash))
                        .await
                        .map_err(|e| e.to_string())?;
                if created {
                    let mut pipe = redis::pipe();
                    pipe.hset(&key, "roles", user.roles.join(","))
                        .ignore()
                        .sadd(r.key("users", "all"), &user.name)
                        .ignore();
                    bounded(r.timeout(), pipe.query_async::<()>(&mut c))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(created)
            }
        }
    }

    /// Removes a user; `Ok(false)` when there was none.
    pub async fn remove(&self, name: &str) -> Result<bool, String> {
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
                pipe.del(r.key("user", name))
                    .srem(r.key("users", "all"), name)
                    .ignore();
                let (n,): (u64,) = bounded(r.timeout(), pipe.query_async(&mut c))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(n > 0)
            }
        }
    }

    pub async fn set_roles(&self, name: &str, roles: &[String]) -> Result<bool, String> {
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
                if self.get(name).await.map_err(|e| e.to_string())?.is_none() {
                    return Ok(false);
                }
                let mut c = r.connection();
                bounded(
                    r.timeout(),
                    c.hset::<_, _, _, ()>(r.key("user", name), "roles", roles.join(",")),
                )
                .await
                .map_err(|e| e.to_string())?;
                Ok(true)
            }
        }
    }

    pub async fn list(&self) -> Result<Vec<User>, String> {
        match self {
            UserStore::File { path, .. } => read_file(path),
            UserStore::Redis(r) => {
                let mut c = r.connection();
                let mut names: Vec<String> =
                    bounded(r.timeout(), c.smembers(r.key("users", "all")))
                        .await
                        .map_err(|e| e.to_string())?;
                names.sort();
                let mut out = Vec::new();
                for n in names {
                    if let Some(u) = self.get(&n).await.map_err(|e| e.to_string())? {
                        out.push(u);
                    }
                }
                Ok(out)
            }
        }
    }
}

fn split_roles(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}
