//! The second factor: TOTP (RFC 6238) over HOTP (RFC 4226), and single-use recovery codes.
//!
//! Parameters are the authenticator apps' defaults — HMAC-SHA-1, 6 digits, 30-second steps —
//! because Google Authenticator and others ignore anything else in the `otpauth://` URI. SHA-1's
//! collision weakness does not touch HOTP: it needs only HMAC-SHA-1 to be a PRF (RFC 4226 §A.4,
//! RFC 6238 §5.1). The secret is 160 random bits (RFC 4226 §4 recommends 160).
//!
//! A code is accepted for the current step and one step either side (clock skew, RFC 6238 §5.2),
//! and never for a step at or before the last one accepted for that user: §5.2 forbids accepting
//! one code twice. Storage records the accepted step atomically, so of two logins presenting one
//! code only one can record it.

use super::validation::FieldError;
use crate::crypto::ct::constant_time_eq;
use crate::crypto::random;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};
use std::fmt;
use zeroize::Zeroizing;

/// Seconds per step (RFC 6238's X).
pub const PERIOD: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Steps accepted either side of the current one.
pub const SKEW_STEPS: i64 = 1;
/// Bytes of a secret: 160 bits.
pub const SECRET_BYTES: usize = 20;
/// Recovery codes issued at once.
pub const RECOVERY_CODES: usize = 10;
/// Base32 characters per recovery code: 10 × 5 = 50 bits.
const RECOVERY_CHARS: usize = 10;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

type HmacSha1 = hmac::Hmac<sha1::Sha1>;

/// Where a user's factor stands, as `GET /v1/users/me` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TotpStatus {
    #[default]
    Off,
    /// Enrolled, not yet confirmed with a code: logins do not ask for one.
    Pending,
    Active,
}

impl TotpStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Pending => "pending",
            Self::Active => "active",
        }
    }

    /// From the profile query's column: `NULL` (no factor), `'pending'` or `'active'`.
    pub fn from_stored(text: Option<&str>) -> Self {
        match text {
            Some("active") => Self::Active,
            Some(_) => Self::Pending,
            None => Self::Off,
        }
    }
}

/// A TOTP shared secret. Debug never shows it; memory is wiped on drop.
#[derive(Clone)]
pub struct TotpSecret(Zeroizing<[u8; SECRET_BYTES]>);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

impl TotpSecret {
    /// 160 bits from the OS CSPRNG.
    pub fn random() -> Self {
        Self(Zeroizing::new(random::bytes::<SECRET_BYTES>()))
    }

    /// A secret read back from storage; `None` if it is not exactly 160 bits.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let array: [u8; SECRET_BYTES] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(array)))
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_slice()
    }

    /// RFC 4648 base32 without padding (160 bits are exactly 32 characters): what apps take.
    pub fn base32(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(32));
        let mut buffer = 0u64;
        let mut bits = 0;
        for byte in self.0.iter() {
            buffer = (buffer << 8) | u64::from(*byte);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                let index = usize::try_from((buffer >> bits) & 31).unwrap_or(0);
                out.push(char::from(BASE32.get(index).copied().unwrap_or(b'A')));
            }
        }
        out
    }

    /// From the base32 an enrolment showed (case, spaces and padding ignored); `None` unless it
    /// is exactly 160 bits.
    pub fn from_base32(text: &str) -> Option<Self> {
        let mut bytes = Vec::with_capacity(SECRET_BYTES);
        let mut buffer = 0u64;
        let mut bits = 0;
        for c in text.chars().filter(|c| !matches!(c, ' ' | '=')) {
            let value = BASE32
                .iter()
                .position(|b| char::from(*b) == c.to_ascii_uppercase())?;
            buffer = (buffer << 5) | u64::try_from(value).ok()?;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                bytes.push(u8::try_from((buffer >> bits) & 0xff).ok()?);
            }
        }
        let secret = Self::from_bytes(&bytes);
        bytes.fill(0);
        secret
    }

    /// The code for time step `step`.
    pub fn code_at(&self, step: i64) -> String {
        let counter = u64::try_from(step).unwrap_or(0);
        format!("{:06}", hotp(self.expose(), counter, DIGITS))
    }

    /// The step `code` matches at `now` — the current one or one either side, and only one later
    /// than `last_used` — or `None`. Every candidate is computed and compared in constant time.
    pub fn verify(&self, code: &TotpCode, now: i64, last_used: Option<i64>) -> Option<i64> {
        let current = step_at(now);
        let mut matched = None;
        for step in current - SKEW_STEPS..=current + SKEW_STEPS {
            let fresh = last_used.is_none_or(|last| step > last);
            let equal = constant_time_eq(self.code_at(step).as_bytes(), code.0.as_bytes());
            if equal && fresh && matched.is_none() {
                matched = Some(step);
            }
        }
        matched
    }

    /// The `otpauth://` URI of Google's Key Uri Format, which authenticator apps read from a QR
    /// code: the label `ISSUER:ACCOUNT` and the issuer percent-encoded.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> Zeroizing<String> {
        let label = format!("{}:{}", percent(issuer), percent(account));
        Zeroizing::new(format!(
            "otpauth://totp/{label}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={PERIOD}",
            self.base32().as_str(),
            percent(issuer)
        ))
    }
}

/// The time step containing `now` (RFC 6238's T, with T0 = 0).
pub fn step_at(now: i64) -> i64 {
    now.div_euclid(PERIOD)
}

/// HOTP (RFC 4226 §5.3): HMAC-SHA-1 of the big-endian counter, dynamically truncated, modulo
/// 10^digits.
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let Ok(mut mac) = HmacSha1::new_from_slice(secret) else {
        return 0; // HMAC takes keys of any length: never taken
    };
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest.get(19).copied().unwrap_or(0) & 0x0f);
    let word = digest
        .get(offset..offset + 4)
        .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
        .map_or(0, u32::from_be_bytes);
    (word & 0x7fff_ffff) % 10u32.pow(digits)
}

/// A code as typed: exactly six ASCII digits (spaces, which apps show in the middle, removed).
#[derive(Clone, PartialEq, Eq)]
pub struct TotpCode(String);

impl fmt::Debug for TotpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpCode(..)")
    }
}

impl TotpCode {
    pub fn parse(field: &'static str, text: &str) -> Result<Self, FieldError> {
        let digits: String = text.chars().filter(|c| *c != ' ').collect();
        if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(digits))
        } else {
            Err(FieldError::new(
                field,
                "invalid_code",
                "must be the 6 digits your authenticator app shows",
            ))
        }
    }
}

/// A recovery code as typed: 10 base32 characters, case and dashes or spaces ignored.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryCode(Zeroizing<String>);

impl fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryCode(..)")
    }
}

impl RecoveryCode {
    pub fn parse(field: &'static str, text: &str) -> Result<Self, FieldError> {
        let normal: String = text
            .chars()
            .filter(|c| !matches!(c, '-' | ' '))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if normal.len() == RECOVERY_CHARS && normal.bytes().all(|b| BASE32.contains(&b)) {
            Ok(Self(Zeroizing::new(normal)))
        } else {
            Err(FieldError::new(
                field,
                "invalid_code",
                "must be one of your recovery codes (xxxxx-xxxxx)",
            ))
        }
    }

    /// What storage keeps: SHA-256, base64url. A fast digest is enough for 50 random bits
    /// checked online behind the softlock (the same argument as introspection clients'
    /// secrets); a dump alone gives no code.
    pub fn digest(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.0.as_bytes()))
    }
}

/// Ten fresh recovery codes, shown once as `xxxxx-xxxxx` (lowercase), each 50 random bits.
pub fn new_recovery_codes() -> Vec<(Zeroizing<String>, RecoveryCode)> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let bytes = random::bytes::<8>();
            let bits = u64::from_le_bytes(bytes);
            let chars: String = (0..RECOVERY_CHARS)
                .map(|i| {
                    let index = usize::try_from((bits >> (5 * i)) & 31).unwrap_or(0);
                    char::from(BASE32.get(index).copied().unwrap_or(b'A'))
                })
                .collect();
            let shown = format!("{}-{}", &chars[..5], &chars[5..]).to_ascii_lowercase();
            (Zeroizing::new(shown), RecoveryCode(Zeroizing::new(chars)))
        })
        .collect()
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn percent(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, the SHA-1 rows: the seed "12345678901234567890", 8 digits.
    #[test]
    fn rfc_6238_appendix_b_sha1_vectors() {
        let seed = b"12345678901234567890";
        for (time, expected) in [
            (59, 94_287_082),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ] {
            let step = u64::try_from(step_at(time)).unwrap();
            assert_eq!(hotp(seed, step, 8), expected, "T = {time}");
        }
    }

    /// RFC 4226 Appendix D: the same seed, counters 0–9, 6 digits.
    #[test]
    fn rfc_4226_appendix_d_vectors() {
        let expected = [
            755_224, 287_082, 359_152, 969_429, 338_314, 254_676, 287_922, 162_583, 399_871,
            520_489,
        ];
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(hotp(b"12345678901234567890", counter as u64, 6), *code);
        }
    }

    fn seed() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890").unwrap()
    }

    fn code(text: &str) -> TotpCode {
        TotpCode::parse("totp_code", text).unwrap()
    }

    #[test]
    fn the_current_step_and_one_either_side_are_accepted_and_no_further() {
        let secret = seed();
        let now = 1_111_111_111; // step 37,037,037, 1 s into it
        let step = step_at(now);
        for offset in -1..=1 {
            let presented = code(&secret.code_at(step + offset));
            assert_eq!(secret.verify(&presented, now, None), Some(step + offset));
        }
        for offset in [-2, 2] {
            let presented = code(&secret.code_at(step + offset));
            assert_eq!(
                secret.verify(&presented, now, None),
                None,
                "offset {offset}"
            );
        }
        // The window's edges on the injected clock: the last second of the step before the
        // next one still accepts the previous step's code; the first second after does not.
        let previous = code(&secret.code_at(step - 1));
        let last_second = (step + 1) * PERIOD - 1;
        assert_eq!(secret.verify(&previous, last_second, None), Some(step - 1));
        assert_eq!(secret.verify(&previous, last_second + 1, None), None);
    }

    #[test]
    fn a_step_at_or_before_the_last_one_used_is_refused_inside_its_window() {
        let secret = seed();
        let now = 1_234_567_890;
        let step = step_at(now);
        let current = code(&secret.code_at(step));
        assert_eq!(secret.verify(&current, now, Some(step)), None, "replayed");
        assert_eq!(secret.verify(&current, now, Some(step - 1)), Some(step));
        let earlier = code(&secret.code_at(step - 1));
        assert_eq!(
            secret.verify(&earlier, now, Some(step)),
            None,
            "older than the last"
        );
    }

    #[test]
    fn the_factor_status_reads_back_from_what_the_profile_query_selects() {
        for (stored, status, shown) in [
            (None, TotpStatus::Off, "off"),
            (Some("pending"), TotpStatus::Pending, "pending"),
            (Some("active"), TotpStatus::Active, "active"),
        ] {
            assert_eq!(TotpStatus::from_stored(stored), status);
            assert_eq!(status.as_str(), shown);
        }
        assert_eq!(TotpStatus::default(), TotpStatus::Off);
    }

    #[test]
    fn codes_never_show_in_debug_output() {
        let code = TotpCode::parse("c", "123456").unwrap();
        assert_eq!(format!("{code:?}"), "TotpCode(..)");
        let recovery = RecoveryCode::parse("r", "abcde-fgh23").unwrap();
        assert_eq!(format!("{recovery:?}"), "RecoveryCode(..)");
    }

    /// Each character of a recovery code is 5 bits of its own: no character can be told from
    /// its neighbour (with overlapping bit windows, the next character's low 4 bits would
    /// repeat this one's high 4 — which random characters do one time in 16).
    #[test]
    fn recovery_code_characters_are_independent() {
        let (mut pairs, mut overlapping) = (0, 0);
        for _ in 0..20 {
            for (_, code) in new_recovery_codes() {
                let values: Vec<u8> = code
                    .0
                    .bytes()
                    .map(|c| u8::try_from(BASE32.iter().position(|b| *b == c).unwrap()).unwrap())
                    .collect();
                for pair in values.windows(2) {
                    pairs += 1;
                    if pair[1] & 15 == pair[0] >> 1 {
                        overlapping += 1;
                    }
                }
            }
        }
        // 1,800 pairs, expected 112 (1 in 16); bit windows that overlapped would give all.
        assert!(overlapping * 4 < pairs, "{overlapping} of {pairs}");
    }

    #[test]
    fn codes_are_six_digits_with_spaces_allowed_between() {
        assert!(TotpCode::parse("c", "123 456").is_ok());
        for bad in ["12345", "1234567", "12345a", "１２３４５６", "", "-12345"] {
            assert!(TotpCode::parse("c", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_secret_is_base32_of_160_bits_and_the_uri_follows_the_key_uri_format() {
        let secret = seed();
        assert_eq!(secret.base32().as_str(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let back = TotpSecret::from_base32("gezd gnbv gy3t qojq gezd gnbv gy3t qojq").unwrap();
        assert_eq!(back.expose(), secret.expose());
        assert!(
            TotpSecret::from_base32("GEZDGNBVGY3TQOJQ").is_none(),
            "80 bits"
        );
        assert!(TotpSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1").is_none());
        assert_eq!(
            secret.otpauth_uri("Tessera", "Zoë Ann").as_str(),
            "otpauth://totp/Tessera:Zo%C3%AB%20Ann?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Tessera&algorithm=SHA1&digits=6&period=30"
        );
        assert_ne!(TotpSecret::random().expose(), TotpSecret::random().expose());
        assert_eq!(format!("{:?}", seed()), "TotpSecret(..)");
    }

    #[test]
    fn recovery_codes_are_ten_distinct_50_bit_codes_that_parse_back_to_their_digest() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let mut digests: Vec<String> = codes.iter().map(|(_, code)| code.digest()).collect();
        for (shown, code) in &codes {
            assert_eq!(shown.len(), 11);
            let typed = RecoveryCode::parse("recovery_code", &shown.to_uppercase()).unwrap();
            assert_eq!(typed.digest(), code.digest());
        }
        digests.sort();
        digests.dedup();
        assert_eq!(digests.len(), RECOVERY_CODES);
        for bad in ["abcde-fghi", "abcde-fghij1", "abcde-fgh1j", ""] {
            assert!(RecoveryCode::parse("r", bad).is_err(), "{bad:?}");
        }
    }
}
