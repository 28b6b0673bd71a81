//! Where the database is, decided once — where the command line or the configuration is read —
//! and carried down as a type: a SQLite file, or a PostgreSQL URL. Nothing below re-reads a
//! path to guess which it holds.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL. It may carry a password, so it is printed only
    /// without one ([`fmt::Display`], [`fmt::Debug`]).
    Postgres(String),
}

impl DbLocation {
    /// A URL with a PostgreSQL scheme is PostgreSQL; anything else is a SQLite file path.
    pub fn parse(text: &str) -> Self {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Self::Postgres(text.to_owned())
        } else {
            Self::Sqlite(PathBuf::from(text))
        }
    }

    /// For clap: every string names a location.
    pub fn from_arg(text: &str) -> Result<Self, std::convert::Infallible> {
        Ok(Self::parse(text))
    }

    /// The backend's name, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// The SQLite file, if this is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Self::Sqlite(path) => Some(path),
            Self::Postgres(_) => None,
        }
    }
}

impl From<&Path> for DbLocation {
    fn from(path: &Path) -> Self {
        path.to_str()
            .map_or_else(|| Self::Sqlite(path.to_path_buf()), Self::parse)
    }
}

/// A SQLite file as an absolute path (when it exists), a PostgreSQL URL without its password.
impl fmt::Display for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => {
                let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                write!(f, "{}", shown.display())
            }
            Self::Postgres(url) => f.write_str(&without_password(url)),
        }
    }
}

impl fmt::Debug for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&without_password(url))
                .finish(),
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user@host/db`; anything else unchanged.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_decided_by_its_scheme_once() {
        assert_eq!(
            DbLocation::parse("postgresql://u@h/d"),
            DbLocation::Postgres("postgresql://u@h/d".into())
        );
        assert_eq!(
            DbLocation::parse("data/postgres://not-a-url.db"),
            DbLocation::Sqlite("data/postgres://not-a-url.db".into())
        );
        assert_eq!(DbLocation::parse("t.db").backend(), "sqlite");
    }

    #[test]
    fn a_shown_postgres_url_never_carries_its_password() {
        for (url, shown) in [
            (
                "postgres://tessera:s3cr%40t@db:5432/tessera",
                "postgres://tessera@db:5432/tessera",
            ),
            (
                "postgresql://u:p@h/d?sslmode=require",
                "postgresql://u@h/d?sslmode=require",
            ),
            ("postgres://u@h/d", "postgres://u@h/d"),
            ("postgres://h/d", "postgres://h/d"),
            ("postgres://u:a@b@h/d", "postgres://u@h/d"),
        ] {
            let location = DbLocation::parse(url);
            assert_eq!(location.to_string(), shown);
            assert!(!format!("{location:?}").contains(":p@"), "{location:?}");
            assert!(!format!("{location:?}").contains("s3cr"), "{location:?}");
        }
        let shown = DbLocation::parse("relative/t.db").to_string();
        assert!(shown.ends_with("relative/t.db"));
    }
}
