//! Password normalisation (RFC 8265 OpaqueString): any text is normalised or refused, and
//! normalising a normalised password changes nothing — so what was hashed at registration is
//! what a login with the same password hashes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::domain::password::Password;

fuzz_target!(|text: &str| {
    let Ok(password) = Password::normalize(text) else {
        return;
    };
    let again = Password::normalize(password.as_str()).expect("a normalised password normalises");
    assert_eq!(again.as_str(), password.as_str(), "idempotent");
});
