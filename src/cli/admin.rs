//! Operator commands: keys, users and the database, straight on the files (no server needed).
//! Each returns the text to print, so tests can check it.

use crate::cli::args::{ClientAction, DbAction, KeysAction, SessionAction, UserAction};
use crate::config::MAX_TOKEN_TTL;
use crate::domain::client::{self, BadClientName, ClientName};
use crate::domain::ids::SessionId;
use crate::domain::session::{EndReason, SessionPolicy};
use crate::domain::username::{Username, UsernameError};
use crate::store::{self, DbLocation, StoreError};
use crate::support::clock;
use crate::token::{JwkSet, KeyError, Keyring};
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid username: {0}")]
    Username(#[from] UsernameError),
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    #[error("no live session {0:?}: unknown, or already ended")]
    NoSuchSession(String),
    #[error(
        "cannot read from the database when servers last signed with the key ({0}); pass the \
         servers' --db, or --force"
    )]
    SigningRecordUnreadable(StoreError),
    #[error("integrity check failed: {0}")]
    Integrity(String),
    #[error(transparent)]
    ClientName(#[from] BadClientName),
    #[error("no client named {0:?}")]
    NoSuchClient(String),
    #[error("{0:?} has no second factor")]
    NoSecondFactor(String),
    #[error("second-factor secrets could not be resealed under the signing key: {0}")]
    Reseal(crate::auth::AuthError),
}

/// `tessera client …`: the resource servers allowed to introspect tokens.
pub fn client(action: &ClientAction, db: &DbLocation) -> Result<String, AdminError> {
    let store = store::open_existing(db)?;
    match action {
        ClientAction::Add { name } => {
            let name = ClientName::parse(name)?;
            let secret = client::new_secret();
            store.add_client(&name, &client::secret_digest(secret.expose()), clock::now())?;
            Ok(format!(
                "client {name} added. Its secret, shown this once (only a digest is stored):\n\
                 {secret}\n\
                 It authenticates POST /v1/introspect with HTTP Basic ({name} and the secret); \
                 keep both out of argv (README, walkthrough step 9).\n",
                secret = secret.expose()
            ))
        }
        ClientAction::List => {
            let mut out = String::from("name\tcreated_at\n");
            for record in store.list_clients()? {
                let _ = writeln!(
                    out,
                    "{}\t{}",
                    record.name,
                    clock::rfc3339(record.created_at)
                );
            }
            Ok(out)
        }
        ClientAction::Remove { name } => {
            let parsed = ClientName::parse(name)?;
            if store.remove_client(&parsed)? {
                Ok(format!(
                    "client {parsed} removed: its next introspection request is refused\n"
                ))
            } else {
                Err(AdminError::NoSuchClient(name.clone()))
            }
        }
    }
}

pub fn keys(action: &KeysAction, path: &Path) -> Result<String, AdminError> {
    match action {
        KeysAction::Generate => {
            let set = JwkSet::create(path)?;
            Ok(format!(
                "created {} (mode 0600) with signing key {}\n",
                path.display(),
                set.keys.first().map_or("", |key| key.kid.as_str())
            ))
        }
        KeysAction::Rotate => {
            let mut set = JwkSet::load(path)?;
            let kid = set.rotate(clock::now());
            Keyring::from_set(&set, path)?;
            set.save(path)?;
            Ok(format!(
                "key {kid} added in front of {file}: it signs new tokens from now on. A server \
                 running on this file picks it up within a second (SIGHUP: at once) and logs \
                 \"keyring reloaded\"; a replica with its own copy, once it has this file. Older \
                 keys still verify; `keys retire` takes one once no server has signed with it \
                 for one token lifetime.\n",
                file = path.display()
            ))
        }
        KeysAction::Add => {
            let mut set = JwkSet::load(path)?;
            let kid = set.add();
            Keyring::from_set(&set, path)?;
            set.save(path)?;
            Ok(format!(
                "key {kid} added to {file} to verify only: a server running on this file accepts \
                 tokens it signs within a second. Once every replica has it, `keys promote {kid}`.\n",
                file = path.display()
            ))
        }
        KeysAction::Promote { kid } => {
            let mut set = JwkSet::load(path)?;
            set.promote(kid, clock::now())?;
            Keyring::from_set(&set, path)?;
            set.save(path)?;
            Ok(format!(
                "key {kid} is first in {file}: it signs new tokens from now on, on a server \
                 running on this file within a second (SIGHUP: at once). The key before it \
                 verifies until retired.\n",
                file = path.display()
            ))
        }
        KeysAction::List => {
            let set = JwkSet::load(path)?;
            Keyring::from_set(&set, path)?;
            let mut out = String::new();
            for key in set.list() {
                let role = if key.signing {
                    "signs+verifies"
                } else {
                    "verifies"
                };
                let _ = writeln!(out, "{}\t{} bits\t{role}", key.kid, key.bits);
            }
            Ok(out)
        }
        KeysAction::Retire {
            kid,
            force,
            token_ttl,
            leeway,
            db,
        } => {
            let mut set = JwkSet::load(path)?;
            let (signed_until, resealed) = match store::open_existing(db) {
                Ok(store) => {
                    // Second-factor secrets sealed under the key that goes are resealed under
                    // the signing key first, or they could never be opened again.
                    let keyring = Keyring::from_set(&set, path)?;
                    let resealed = crate::auth::reseal_all(store.as_ref(), &keyring)
                        .map_err(AdminError::Reseal)?;
                    (store.signing_until(kid)?, resealed)
                }
                Err(_) if *force => (None, 0),
                Err(error) => return Err(AdminError::SigningRecordUnreadable(error)),
            };
            set.retire(
                kid,
                clock::now(),
                token_ttl.saturating_add(*leeway),
                *force,
                signed_until,
            )?;
            set.save(path)?;
            Ok(format!(
                "resealed {resealed} second-factor secret(s) under the signing key\n\
                 retired key {kid} from {file}: a server running on this file refuses tokens it \
                 signed within a second (SIGHUP: at once); a replica with its own copy, once it \
                 has this file.\n",
                file = path.display()
            ))
        }
    }
}

pub fn user(action: &UserAction, db: &DbLocation) -> Result<String, AdminError> {
    let store = store::open_existing(db)?;
    match action {
        UserAction::List => {
            let mut out = String::from("username\tcreated_at\ttoken_generation\tfailed_logins\n");
            for user in store.list_users()? {
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    user.username,
                    clock::rfc3339(user.created_at),
                    user.token_generation,
                    user.failed_logins
                );
            }
            Ok(out)
        }
        UserAction::Revoke { username } => {
            let name = Username::parse(username)?;
            let generation = store
                .revoke_all_of(&name)?
                .ok_or_else(|| AdminError::NoSuchUser(username.clone()))?;
            Ok(format!(
                "ended every session and revoked every token of {username} (token generation \
                 is now {generation})\n"
            ))
        }
        UserAction::TotpReset { username } => {
            let name = Username::parse(username)?;
            let user = store
                .find_credentials(&name)?
                .ok_or_else(|| AdminError::NoSuchUser(username.clone()))?
                .user_id;
            let now = clock::now();
            // Tokens live at most the longest `--token-ttl` a server accepts: every session's id
            // stays denylisted that long, whatever the servers' setting.
            let change = crate::store::TotpChange {
                user: &user,
                step: 0,
                recovery_digests: &[],
                keep: None,
                now,
                tokens_expire_by: now.saturating_add(crate::config::MAX_TOKEN_TTL),
            };
            if !store.remove_totp(&change)? {
                return Err(AdminError::NoSecondFactor(username.clone()));
            }
            Ok(format!(
                "removed the second factor of {username} and ended every session of theirs; \
                 they log in with the password alone and may enrol again\n"
            ))
        }
        UserAction::Unlock { username } => {
            let name = Username::parse(username)?;
            if !store.unlock_user(&name)? {
                return Err(AdminError::NoSuchUser(username.clone()));
            }
            Ok(format!("cleared failed logins of {username}\n"))
        }
    }
}

/// `tessera session …`; `idle_timeout` is the server's `--session-idle`, to tell idle sessions.
pub fn session(
    action: &SessionAction,
    db: &DbLocation,
    idle_timeout: i64,
) -> Result<String, AdminError> {
    let store = store::open_existing(db)?;
    let now = clock::now();
    match action {
        SessionAction::List { username } => {
            let name = Username::parse(username)?;
            let user = store
                .find_credentials(&name)?
                .ok_or_else(|| AdminError::NoSuchUser(username.clone()))?;
            let policy = SessionPolicy {
                idle_timeout,
                ..SessionPolicy::default()
            };
            let mut out = String::from(
                "id	status	created_at	last_used_at	expires_at	client_address	user_agent\n",
            );
            for session in store.sessions_of(&user.user_id)? {
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    session.id,
                    policy.status(&session, now),
                    clock::rfc3339(session.created_at),
                    clock::rfc3339(session.last_used_at),
                    clock::rfc3339(session.expires_at),
                    session
                        .client_address
                        .map_or_else(|| "-".to_owned(), |address| address.to_string()),
                    session.user_agent
                );
            }
            Ok(out)
        }
        SessionAction::Revoke { id } => {
            let session = SessionId::from_string(id.clone());
            // The server's --token-ttl is not known here: keep the session's id on the denylist
            // as long as any accepted lifetime (or until the session's own end, if sooner).
            let tokens_expire_by = now.saturating_add(MAX_TOKEN_TTL);
            if !store.end_session(&session, None, EndReason::Revoked, now, tokens_expire_by)? {
                return Err(AdminError::NoSuchSession(id.clone()));
            }
            Ok(format!(
                "ended session {id}: its refresh token and access tokens no longer work\n"
            ))
        }
    }
}

pub fn db(action: &DbAction, db: &DbLocation) -> Result<String, AdminError> {
    let store = store::open_existing(db)?;
    match action {
        DbAction::Dump => Ok(store.dump()?),
        DbAction::Check => {
            let result = store.integrity_check()?;
            if result == ["ok"] {
                Ok("ok\n".into())
            } else {
                Err(AdminError::Integrity(result.join("; ")))
            }
        }
    }
}
