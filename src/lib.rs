//! Tessera: a small authentication service.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod auth;
pub mod lockout;
pub mod password;
pub mod password_policy;
pub mod profile_text;
pub mod random;
pub mod store;
pub mod strict_json;
pub mod token;
pub mod username;
