//! The domain: types that are valid once constructed and the rules about them — ids, usernames,
//! profile text, passwords and their policy, accounts, the softlock arithmetic. No I/O, no HTTP,
//! no SQL; the only dependency inward is [`crate::crypto`].

pub mod client;
pub mod ids;
pub mod lockout;
pub mod password;
pub mod password_policy;
pub mod profile_text;
pub mod secret;
pub mod session;
pub mod totp;
pub mod user;
pub mod username;
pub mod validation;
