//! Second-factor input: TOTP codes, recovery codes, base32 secrets and sealed secrets. Anything
//! is parsed or refused, never a panic; what parses is a fixed point (a code's digits parse to
//! the same code, a recovery code in any accepted spelling has one digest, a secret read from
//! base32 writes back to base32 that reads to the same secret); and a sealed value that is not
//! exactly what the key sealed never opens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::domain::totp::{RecoveryCode, TotpCode, TotpSecret};
use tessera::token::sealing;

fuzz_target!(|text: &str| {
    if let Ok(code) = TotpCode::parse("totp_code", text) {
        let digits: String = text.chars().filter(|c| *c != ' ').collect();
        assert_eq!(digits.len(), 6);
        assert!(digits.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(TotpCode::parse("totp_code", &digits).ok(), Some(code));
    }
    if let Ok(code) = RecoveryCode::parse("recovery_code", text) {
        let lower = RecoveryCode::parse("recovery_code", &text.to_ascii_lowercase())
            .expect("case does not matter");
        assert_eq!(lower.digest(), code.digest());
    }
    if let Some(secret) = TotpSecret::from_base32(text) {
        let again = TotpSecret::from_base32(&secret.base32()).expect("our base32 reads back");
        assert_eq!(again.expose(), secret.expose());
    }
    static KEYRING: std::sync::OnceLock<tessera::token::Keyring> = std::sync::OnceLock::new();
    let keyring = KEYRING.get_or_init(|| {
        tessera::token::Keyring::from_secret(tessera_fuzz::KID, tessera_fuzz::SECRET)
            .expect("a valid keyring")
    });
    if let Ok(plain) = sealing::open(keyring, "totp secret", "user", text) {
        // Only a value this key sealed opens: sealing is randomised, so an input that opens was
        // found by the fuzzer only if it forged the tag — which must never happen.
        panic!("a value the fuzzer made opened: {} bytes", plain.len());
    }
});
