//! The second factor's use cases: enrol, confirm, present at login and re-authentication,
//! replace recovery codes, remove; and an operator's reset.
//!
//! A code is checked against the secret opened from its seal (`token::sealing`), then its time
//! step is recorded by one conditional write that only a step later than the last recorded one
//! passes — so a code is accepted once, whoever presents it, on whichever replica
//! (RFC 6238 §5.2). A recovery code is consumed the same way.

use super::{Auth, AuthError, Authenticated, Cancellation, Result};
use crate::domain::ids::{SessionId, UserId};
use crate::domain::secret::SecretString;
use crate::domain::session::Factors;
use crate::domain::totp::{self, RecoveryCode, TotpCode, TotpSecret};
use crate::store::{Credentials, StoreError, TotpChange, TotpFactor};
use crate::token::sealing;
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::Zeroizing;

/// What sealed secrets are sealed for (the associated data binds it).
const PURPOSE: &str = "totp secret";
/// The issuer authenticator apps show beside the account.
const ISSUER: &str = "Tessera";

/// The second factor presented with a password.
#[derive(Debug, Clone)]
pub enum SecondFactor {
    Totp(TotpCode),
    Recovery(RecoveryCode),
}

/// A new factor's secret, shown once.
pub struct Enrolment {
    pub secret: Zeroizing<String>,
    pub otpauth_uri: Zeroizing<String>,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrolment(..)")
    }
}

/// How code checks ended, for `tessera_totp_verifications_total{outcome}`.
#[derive(Debug, Default)]
pub struct TotpCounters {
    /// accepted, rejected (wrong code), replayed (a used step), recovery (a recovery code used)
    outcomes: [AtomicU64; 4],
}

pub const TOTP_OUTCOMES: [&str; 4] = ["accepted", "rejected", "replayed", "recovery"];

/// One code check's end, in [`TOTP_OUTCOMES`] order.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Accepted,
    Rejected,
    Replayed,
    Recovery,
}

impl TotpCounters {
    fn count(&self, outcome: Outcome) {
        if let Some(counter) = self.outcomes.get(outcome as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> [u64; 4] {
        std::array::from_fn(|i| {
            self.outcomes
                .get(i)
                .map_or(0, |counter| counter.load(Ordering::Relaxed))
        })
    }
}

impl Auth {
    /// Starts a pending factor after re-authentication with the password; a pending one is
    /// replaced. [`AuthError::TotpAlreadyActive`] if one is active (the store refuses it).
    pub fn enrol_totp(
        &self,
        caller: &Authenticated,
        password: &SecretString,
        now: i64,
        cancel: &Cancellation,
    ) -> Result<Enrolment> {
        let credentials = self.reauthenticate(caller, password, now, cancel)?;
        let secret = TotpSecret::random();
        let sealed = self.seal(&credentials.user_id, &secret)?;
        if !self.store.enrol_totp(&credentials.user_id, &sealed, now)? {
            return Err(AuthError::TotpAlreadyActive);
        }
        Ok(Enrolment {
            secret: secret.base32(),
            otpauth_uri: secret.otpauth_uri(ISSUER, caller.profile.username.as_typed()),
        })
    }

    /// Activates the pending factor with a current code: ten recovery codes, shown once, and
    /// every other session of the user ends (they were started with one factor).
    pub fn confirm_totp(
        &self,
        caller: &Authenticated,
        code: &TotpCode,
        now: i64,
    ) -> Result<Vec<Zeroizing<String>>> {
        let user = &caller.profile.id;
        let factor = self
            .factor_of(user)?
            .filter(|f| !f.active)
            .ok_or(AuthError::NoPendingTotp)?;
        let secret = self.open(user, &factor)?;
        let Some(step) = secret.verify(code, now, factor.last_step) else {
            self.totp.count(Outcome::Rejected);
            return Err(AuthError::WrongTotpCode);
        };
        let (shown, digests) = fresh_recovery_codes();
        let mut change = self.ending_sessions(user, Some(&caller.claims.claims().sid), now);
        change.step = step;
        change.recovery_digests = &digests;
        if !self.store.confirm_totp(&change)? {
            self.totp.count(Outcome::Replayed);
            return Err(AuthError::WrongTotpCode);
        }
        self.totp.count(Outcome::Accepted);
        Ok(shown)
    }

    /// Replaces the recovery codes, after the password and a current code (or a recovery code).
    pub fn replace_recovery_codes(
        &self,
        caller: &Authenticated,
        password: &SecretString,
        second: Option<&SecondFactor>,
        now: i64,
        cancel: &Cancellation,
    ) -> Result<Vec<Zeroizing<String>>> {
        let credentials =
            self.reauthenticate_with_second_factor(caller, password, second, now, cancel)?;
        let (shown, digests) = fresh_recovery_codes();
        if !self
            .store
            .replace_recovery_codes(&credentials.user_id, &digests)?
        {
            return Err(AuthError::NoActiveTotp);
        }
        Ok(shown)
    }

    /// Removes the factor after the password and a current code (or a recovery code) — a
    /// pending factor protected nothing, so removing it needs no code; every other session
    /// ends.
    pub fn remove_totp(
        &self,
        caller: &Authenticated,
        password: &SecretString,
        second: Option<&SecondFactor>,
        now: i64,
        cancel: &Cancellation,
    ) -> Result<()> {
        let credentials =
            self.reauthenticate_with_second_factor(caller, password, second, now, cancel)?;
        let keep = Some(&caller.claims.claims().sid);
        let change = self.ending_sessions(&credentials.user_id, keep, now);
        if !self.store.remove_totp(&change)? {
            return Err(AuthError::NoActiveTotp);
        }
        Ok(())
    }

    /// The password, then — when the account has an active factor — a current code (or a
    /// recovery code): what every sensitive change asks for.
    pub(super) fn reauthenticate_with_second_factor(
        &self,
        caller: &Authenticated,
        password: &SecretString,
        second: Option<&SecondFactor>,
        now: i64,
        cancel: &Cancellation,
    ) -> Result<Credentials> {
        let credentials = self.reauthenticate(caller, password, now, cancel)?;
        self.second_factor_for_reauthentication(&credentials.user_id, second, now)?;
        Ok(credentials)
    }

    /// A factor change that ends every session of `user` but `keep`, each id denylisted until
    /// every access token it issued has expired.
    fn ending_sessions<'a>(
        &self,
        user: &'a UserId,
        keep: Option<&'a SessionId>,
        now: i64,
    ) -> TotpChange<'a> {
        TotpChange {
            user,
            step: 0,
            recovery_digests: &[],
            keep,
            now,
            tokens_expire_by: now.saturating_add(self.settings.token_ttl),
        }
    }

    /// At login, after the password matched: the factors the session will carry. An active
    /// factor needs a code — [`AuthError::TotpRequired`] without one — and a wrong, replayed or
    /// used code is [`AuthError::InvalidCredentials`], the same answer as a wrong password.
    pub(super) fn second_factor_at_login(
        &self,
        user: &UserId,
        second: Option<&SecondFactor>,
        now: i64,
    ) -> Result<Factors> {
        let Some(factor) = self.factor_of(user)?.filter(|f| f.active) else {
            return Ok(Factors::Password);
        };
        let Some(second) = second else {
            return Err(AuthError::TotpRequired);
        };
        if self.accept(user, &factor, second, now)? {
            Ok(Factors::PasswordAndOtp)
        } else {
            Err(AuthError::InvalidCredentials)
        }
    }

    /// Re-authentication for a sensitive change (password, deletion, the factor itself): with
    /// an active factor, a code must come with the password.
    pub(super) fn second_factor_for_reauthentication(
        &self,
        user: &UserId,
        second: Option<&SecondFactor>,
        now: i64,
    ) -> Result<()> {
        let Some(factor) = self.factor_of(user)?.filter(|f| f.active) else {
            return Ok(());
        };
        match second {
            Some(second) if self.accept(user, &factor, second, now)? => Ok(()),
            _ => Err(AuthError::WrongSecondFactor),
        }
    }

    /// Checks a code and records its use atomically; true if accepted.
    fn accept(
        &self,
        user: &UserId,
        factor: &TotpFactor,
        second: &SecondFactor,
        now: i64,
    ) -> Result<bool> {
        match second {
            SecondFactor::Totp(code) => {
                let secret = self.open(user, factor)?;
                let Some(step) = secret.verify(code, now, factor.last_step) else {
                    // A code of a step already used is a replay; anything else is wrong.
                    let replayed = factor.last_step.is_some_and(|last| {
                        secret.verify(code, now, None).is_some_and(|s| s <= last)
                    });
                    self.totp.count(if replayed {
                        Outcome::Replayed
                    } else {
                        Outcome::Rejected
                    });
                    return Ok(false);
                };
                let recorded = self.store.use_totp_step(user, step)?;
                self.totp.count(if recorded {
                    Outcome::Accepted
                } else {
                    Outcome::Replayed
                });
                Ok(recorded)
            }
            SecondFactor::Recovery(code) => {
                let used = self.store.use_recovery_code(user, &code.digest(), now)?;
                self.totp.count(if used {
                    Outcome::Recovery
                } else {
                    Outcome::Rejected
                });
                Ok(used)
            }
        }
    }

    fn factor_of(&self, user: &UserId) -> Result<Option<TotpFactor>> {
        Ok(self.store.totp_factor(user)?)
    }

    fn seal(&self, user: &UserId, secret: &TotpSecret) -> Result<String> {
        sealing::seal(
            self.codec().keyring(),
            PURPOSE,
            user.as_str(),
            secret.expose(),
        )
        .map_err(|e| AuthError::Store(StoreError::Corrupt(e.to_string())))
    }

    /// The factor's secret, opened with the key that sealed it. A seal the key file cannot open
    /// fails closed: 500, and the operator's `tessera user totp-reset` is the way out.
    fn open(&self, user: &UserId, factor: &TotpFactor) -> Result<TotpSecret> {
        let bytes = sealing::open(
            self.codec().keyring(),
            PURPOSE,
            user.as_str(),
            &factor.sealed_secret,
        )
        .map_err(|e| AuthError::Store(StoreError::Corrupt(e.to_string())))?;
        TotpSecret::from_bytes(&bytes).ok_or_else(|| {
            AuthError::Store(StoreError::Corrupt("a TOTP secret of another size".into()))
        })
    }

    pub fn totp_counters(&self) -> [u64; 4] {
        self.totp.snapshot()
    }
}

/// Ten new recovery codes: as shown once, and their digests, which alone are stored.
fn fresh_recovery_codes() -> (Vec<Zeroizing<String>>, Vec<String>) {
    totp::new_recovery_codes()
        .into_iter()
        .map(|(shown, code)| (shown, code.digest()))
        .unzip()
}

/// Reseals every TOTP secret under `keyring`'s signing key (before `tessera keys retire` drops
/// the key that sealed some). Returns how many were resealed.
pub fn reseal_all(
    store: &dyn crate::store::Store,
    keyring: &crate::token::Keyring,
) -> Result<usize> {
    let mut resealed = 0;
    for (user, sealed) in store.sealed_secrets()? {
        if sealing::sealed_by(&sealed) == Some(keyring.signing_kid()) {
            continue;
        }
        let open = |e: sealing::SealError| AuthError::Store(StoreError::Corrupt(e.to_string()));
        let plain = sealing::open(keyring, PURPOSE, user.as_str(), &sealed).map_err(open)?;
        let fresh = sealing::seal(keyring, PURPOSE, user.as_str(), &plain).map_err(open)?;
        if store.reseal_secret(&user, &sealed, &fresh)? {
            resealed += 1;
        }
    }
    Ok(resealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new factor's secret is shown once, to its owner: never in a log line's Debug.
    #[test]
    fn an_enrolments_debug_shows_neither_the_secret_nor_the_uri() {
        let enrolment = Enrolment {
            secret: Zeroizing::new("JBSWY3DPEHPK3PXP".into()),
            otpauth_uri: Zeroizing::new(
                "otpauth://totp/Tessera:kvothe?secret=JBSWY3DPEHPK3PXP&issuer=Tessera".into(),
            ),
        };
        assert_eq!(format!("{enrolment:?}"), "Enrolment(..)");
    }
}
