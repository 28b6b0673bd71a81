//! Usernames (RFC 8265 UsernameCaseMapped): any text is parsed or refused, and a parsed name is
//! a fixed point — its canonical form, and the form as typed, parse to the same canonical name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::domain::username::Username;

fuzz_target!(|text: &str| {
    let Ok(name) = Username::parse(text) else {
        return;
    };
    let again = Username::parse(name.canonical()).expect("a canonical name parses");
    assert_eq!(again.canonical(), name.canonical(), "idempotent");
    let typed = Username::parse(name.as_typed()).expect("the typed form parses");
    assert_eq!(typed.canonical(), name.canonical());
});
