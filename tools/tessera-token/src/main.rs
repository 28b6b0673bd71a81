//! `tessera-token`: look inside a Tessera access token, or verify one exactly as the server does.
//!
//! Pass `-` to read the token from stdin: a token typed as an argument lands in shell history.
//! Paths (the database too), issuer, audience, leeway and lifetime default to the server's, and
//! read the same `TESSERA_*` variables, so on the server's host it needs no flags.
//!
//! `verify` exits 0 only for a token the server would accept now — revocation included; 1 for
//! one it would refuse; 2 when it could not tell (no key file, no database, not a token); and 3
//! when asked not to check revocation (`--no-db`) and the signature and claims hold: a script
//! that tests for 0 never takes a logged-out token for a live one.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use tessera::auth::{self, AuthError, TokenRejection};
use tessera::config::DEFAULT_DB_PATH;
use tessera::config::{
    DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEFAULT_KEYS_PATH, DEFAULT_LEEWAY, DEFAULT_TOKEN_TTL,
};
use tessera::domain::session::SessionPolicy;
use tessera::store::{self, DbLocation};
use tessera::support::clock;
use tessera::token::inspect::inspect;
use tessera::token::{Codec, Keyring, ValidationPolicy};

#[derive(Debug, Parser)]
#[command(
    name = "tessera-token",
    version,
    about = "Inspect and verify Tessera access tokens"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode without a key: header, claims, times, and every problem the server would see
    /// (except the MAC, which needs the key).
    Inspect {
        /// The token, or `-` to read it from stdin.
        token: String,
        #[command(flatten)]
        options: Options,
    },
    /// Check the MAC, the claims and revocation — the server's own code path. Exit 0: the server
    /// would accept it; 1: it would not; 2: could not tell; 3: valid, revocation not checked
    /// (--no-db).
    Verify {
        /// The token, or `-` to read it from stdin.
        token: String,
        /// JWK Set file holding the server's keys.
        #[arg(long, env = "TESSERA_KEYS", default_value = DEFAULT_KEYS_PATH)]
        keys: PathBuf,
        /// The server's database, where revocation (logged out, stale generation, user deleted)
        /// and the token's session (live, ended, expired, reuse-revoked) are checked — a SQLite
        /// file or a postgres:// URL (password in PGPASSWORD).
        #[arg(long, env = "TESSERA_DB", hide_env_values = true, default_value = DEFAULT_DB_PATH, value_parser = DbLocation::from_arg)]
        db: DbLocation,
        /// Check only the signature and claims; the exit code is then 3, never 0.
        #[arg(long)]
        no_db: bool,
        /// Session idle timeout in seconds: the server's --session-idle.
        #[arg(long, env = "TESSERA_SESSION_IDLE", default_value_t = SessionPolicy::default().idle_timeout)]
        session_idle: i64,
        #[command(flatten)]
        options: Options,
    },
}

#[derive(Debug, Args)]
struct Options {
    /// Expected issuer.
    #[arg(long, env = "TESSERA_ISSUER", default_value = DEFAULT_ISSUER)]
    issuer: String,
    /// Expected audience.
    #[arg(long, env = "TESSERA_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    audience: String,
    /// Clock-skew leeway in seconds.
    #[arg(long, env = "TESSERA_LEEWAY", default_value_t = DEFAULT_LEEWAY)]
    leeway: i64,
    /// Longest accepted lifetime (exp - iat) in seconds: the server's --token-ttl.
    #[arg(long, env = "TESSERA_TOKEN_TTL", default_value_t = DEFAULT_TOKEN_TTL)]
    max_lifetime: i64,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

impl Options {
    fn policy(&self) -> ValidationPolicy {
        ValidationPolicy {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            leeway: self.leeway,
            max_lifetime: self.max_lifetime,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Inspect { token, options } => read_token(token).map(|t| run_inspect(&t, options)),
        Command::Verify {
            token,
            keys,
            db,
            no_db,
            session_idle,
            options,
        } => read_token(token).and_then(|t| {
            let sessions = SessionPolicy {
                idle_timeout: *session_idle,
                ..SessionPolicy::default()
            };
            let db = (!*no_db).then_some(db);
            run_verify(&t, keys, db, &sessions, options)
        }),
    };
    match result {
        Ok(report) => {
            print!("{}", report.text);
            ExitCode::from(report.verdict as u8)
        }
        Err(message) => {
            eprintln!("tessera-token: {message}");
            ExitCode::from(2)
        }
    }
}

struct Report {
    text: String,
    verdict: Verdict,
}

/// The exit code: what a script can rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The server would accept it (for `inspect`: no problem found).
    Accepted = 0,
    Refused = 1,
    /// Signature and claims hold; revocation was not checked.
    RevocationNotChecked = 3,
}

fn read_token(argument: &str) -> Result<String, String> {
    let token = if argument == "-" {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        // Only the line break a shell or `echo` adds; whitespace inside is the token's problem.
        input.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        argument.to_owned()
    };
    not_an_access_token(&token).map_or(Ok(token), Err)
}

/// Inputs that are not access tokens at all get a sentence saying what they are.
fn not_an_access_token(token: &str) -> Option<String> {
    if token.trim().is_empty() {
        return Some("no token given: the input is empty".into());
    }
    if token.starts_with(tessera::token::REFRESH_TOKEN_PREFIX) {
        return Some(format!(
            "this is a refresh token ({}…), not an access token: it is opaque, only the server \
             can check it (POST /v1/sessions/refresh), and `tessera session list USERNAME` \
             shows its session",
            tessera::token::REFRESH_TOKEN_PREFIX
        ));
    }
    None
}

fn run_inspect(token: &str, options: &Options) -> Report {
    let now = clock::now();
    let found = inspect(token, now, &options.policy());
    let problems: Vec<String> = found.problems.iter().map(ToString::to_string).collect();
    let verdict = if problems.is_empty() {
        Verdict::Accepted
    } else {
        Verdict::Refused
    };
    if options.json {
        let value = json!({
            "header": found.header,
            "claims": found.claims,
            "problems": problems,
            "signature_checked": false,
        });
        return Report {
            text: format!("{value:#}\n"),
            verdict,
        };
    }
    let mut text = String::new();
    if let Some(header) = &found.header {
        text.push_str(&format!("header:\n{header:#}\n"));
    }
    if let Some(claims) = &found.claims {
        text.push_str(&format!("claims:\n{claims:#}\n"));
        text.push_str(&describe_times(claims, now));
    }
    if problems.is_empty() {
        text.push_str("no problems found (signature not checked: use `verify` with the keys)\n");
    } else {
        text.push_str("the server would reject this token:\n");
        for problem in &problems {
            text.push_str(&format!("  - {problem}\n"));
        }
    }
    Report { text, verdict }
}

fn run_verify(
    token: &str,
    keys: &std::path::Path,
    db: Option<&DbLocation>,
    sessions: &SessionPolicy,
    options: &Options,
) -> Result<Report, String> {
    let keyring = Keyring::load(keys).map_err(|e| e.to_string())?;
    let codec = Codec::new(keyring, options.policy());
    let now = clock::now();
    let mut session = None;
    let outcome = match codec.verify(token, now) {
        Err(error) => Err(error.to_string()),
        Ok(claims) => match db {
            None => Ok((claims.claims().clone(), "not checked (--no-db)".to_owned())),
            Some(location) => {
                if let Some(path) = location.sqlite_path().filter(|path| !path.exists()) {
                    return Err(format!(
                        "no database at {}: pass the server's --db (or TESSERA_DB) to check \
                         revocation, or --no-db to check only the signature and claims",
                        path.display()
                    ));
                }
                let store = store::open_existing(location).map_err(|e| store::cause_chain(&e))?;
                let copy = claims.claims().clone();
                session = Some(match store.session(&copy.sid).map_err(|e| e.to_string())? {
                    Some(record) => sessions.status(&record, now).to_string(),
                    None => "not on file (unknown, pruned, or its user deleted)".to_owned(),
                });
                match auth::check_revocation(store.as_ref(), claims) {
                    Ok((_, None)) => Ok((copy, "active".to_owned())),
                    Ok((_, Some(denial))) => Err(TokenRejection::Revoked(denial).to_string()),
                    Err(AuthError::InvalidToken(rejection)) => Err(rejection.to_string()),
                    Err(other) => return Err(other.to_string()),
                }
            }
        },
    };
    let checked = db.is_some();
    let report = match outcome {
        Ok((claims, revocation)) => {
            let text = if options.json {
                format!(
                    "{:#}\n",
                    // Valid only once revocation was checked: unknown (null) otherwise.
                    json!({"valid": checked.then_some(true), "signature_and_claims_valid": true,
                           "sub": claims.sub, "jti": claims.jti,
                           "sid": claims.sid, "gen": claims.r#gen, "exp": claims.exp,
                           "amr": claims.amr.amr(),
                           "revocation": revocation, "session": session})
                )
            } else {
                let verdict = if checked {
                    "valid"
                } else {
                    "signature and claims valid, revocation NOT checked"
                };
                let mut text = format!(
                    "{verdict}: sub {} sid {} jti {} generation {}; {}\nrevocation: {revocation}\n",
                    claims.sub,
                    claims.sid,
                    claims.jti,
                    claims.r#gen,
                    relative_expiry(claims.exp, now)
                );
                if let Some(session) = &session {
                    text.push_str(&format!("session: {session}\n"));
                }
                text
            };
            let verdict = if checked {
                Verdict::Accepted
            } else {
                Verdict::RevocationNotChecked
            };
            Report { text, verdict }
        }
        Err(reason) => {
            let text = if options.json {
                format!(
                    "{:#}\n",
                    json!({"valid": false, "reason": reason, "session": session})
                )
            } else {
                let mut text = format!("invalid: {reason}\n");
                if let Some(session) = &session {
                    text.push_str(&format!("session: {session}\n"));
                }
                text
            };
            Report {
                text,
                verdict: Verdict::Refused,
            }
        }
    };
    Ok(report)
}

fn describe_times(claims: &Value, now: i64) -> String {
    let mut text = String::new();
    for (name, label) in [("iat", "issued"), ("nbf", "not before"), ("exp", "expires")] {
        if let Some(seconds) = claims[name].as_i64() {
            let when = if name == "exp" {
                relative_expiry(seconds, now)
            } else {
                relative(seconds, now)
            };
            text.push_str(&format!(
                "{label:>10}: {} ({when})\n",
                clock::rfc3339(seconds)
            ));
        }
    }
    text
}

/// "expires in 14m" / "expired 3h ago".
fn relative_expiry(exp: i64, now: i64) -> String {
    if exp > now {
        format!("expires in {}", span(exp - now))
    } else {
        format!("expired {} ago", span(now - exp))
    }
}

fn relative(at: i64, now: i64) -> String {
    if at > now {
        format!("in {}", span(at - now))
    } else {
        format!("{} ago", span(now - at))
    }
}

fn span(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_a_person_would_say_them() {
        assert_eq!(relative_expiry(1000 + 14 * 60, 1000), "expires in 14m");
        assert_eq!(relative_expiry(1000, 1000 + 3 * 3600), "expired 3h ago");
        assert_eq!(relative_expiry(1000, 1030), "expired 30s ago");
        assert_eq!(span(3 * 86_400), "3d");
    }
}
