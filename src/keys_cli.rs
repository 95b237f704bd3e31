//! `authgate keys create|list|revoke`: API keys in the configured user store (the users file's
//! `[[key]]` tables, or Redis). A key is printed once, at creation; only its SHA-256 is kept.

use anyhow::{bail, Result};
use authgate::config::Config;
use authgate::store::api_keys::{self, ApiKey};
use authgate::store::users::{validate_name, validate_role};
use authgate::store::Store;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum KeysAction {
    /// Create a key and print it once (`agk_...`)
    Create {
        #[arg(long)]
        name: String,
        /// Roles the key carries (comma-separated)
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// The user it acts as (the identity header); default: the key's name
        #[arg(long)]
        user: Option<String>,
        /// Lifetime, e.g. 90d (default: until revoked)
        #[arg(long)]
        expires: Option<String>,
        /// Route patterns it may open (comma-separated, e.g. "/api/**"); default: every
        /// route with api_keys = true
        #[arg(long, value_delimiter = ',')]
        routes: Vec<String>,
    },
    /// Name, roles, user, created, expires, last used (Redis store), routes
    List,
    /// Remove a key; with a Redis store it is refused at once on every replica
    Revoke { name: String },
}

fn date(secs: u64) -> String {
    authgate::clock::utc_text(secs)
}

pub async fn run(config: &Config, action: KeysAction) -> Result<ExitCode> {
    let (store, users) = crate::open_user_store(config)?;
    match action {
        KeysAction::Create {
            name,
            roles,
            user,
            expires,
            routes,
        } => {
            validate_name(&name)?;
            if let Some(u) = &user {
                validate_name(u)?;
            }
            for r in &roles {
                validate_role(r)?;
            }
            for r in &routes {
                authgate::route::Pattern::parse(r).map_err(|e| anyhow::anyhow!("--routes: {e}"))?;
            }
            let now = authgate::clock::now_secs();
            let expires = match expires {
                Some(e) => Some(
                    now + authgate::config::parse_duration(&e)
                        .map_err(|m| anyhow::anyhow!("--expires: {m}"))?
                        .as_secs(),
                ),
                None => None,
            };
            let key = api_keys::generate()?;
            let record = ApiKey {
                name: name.clone(),
                sha256: api_keys::digest(&key),
                roles,
                user,
                created: now,
                expires,
                routes,
            };
            if !users.add_key(&record).await? {
                bail!("a key named {name:?} exists already (revoke it first)");
            }
            eprintln!(
                "created key {name}; it is shown once: store it now (only its SHA-256 is kept)"
            );
            println!("{key}");
        }
        KeysAction::List => {
            println!("name\troles\tuser\tcreated\texpires\tlast_used\troutes");
            for k in users.keys().await? {
                let used = store
                    .key_last_used(&k.name)
                    .await
                    .ok()
                    .flatten()
                    .map_or_else(|| "-".to_owned(), date);
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    k.name,
                    k.roles.join(","),
                    k.user.as_deref().unwrap_or("-"),
                    date(k.created),
                    k.expires.map_or_else(|| "never".to_owned(), date),
                    used,
                    if k.routes.is_empty() {
                        "*".to_owned()
                    } else {
                        k.routes.join(",")
                    }
                );
            }
        }
        KeysAction::Revoke { name } => {
            let Some(k) = users.remove_key(&name).await? else {
                bail!("no key {name:?}");
            };
            // Through the revocation store: every replica refuses it at its next request.
            if let Store::Redis(_) = &store {
                let left = k.expires.map_or(400 * 86_400, |e| {
                    e.saturating_sub(authgate::clock::now_secs())
                });
                store
                    .revoke_session(k.subject(), &k.sid(), Duration::from_secs(left.max(60)))
                    .await?;
                println!("revoked {name}: refused on every replica now");
            } else {
                println!(
                    "revoked {name}: removed from the users file; a running gateway drops it at its next reload (a change to the file reloads within seconds)"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::date(0), "1970-01-01 00:00 UTC");
        assert_eq!(super::date(1_764_936_000), "2025-12-05 12:00 UTC");
        assert_eq!(super::date(951_782_400), "2000-02-29 00:00 UTC");
    }
}
