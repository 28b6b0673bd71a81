//! Tessera: a small authentication service — register, log in, read your details, log out.
//!
//! How the pieces fit, bottom to top (lower layers never import upper ones):
//! - [`token`] is the codec: our HS256 compact JWS, pure and clock-free, with the keyring.
//! - [`password`] hashes with argon2id on the [`hash_pool`] threads; [`password_policy`] decides what is acceptable;
//!   [`username`] canonicalises names; [`profile_text`] cleans free-text fields;
//!   [`lockout`] is the per-account softlock arithmetic.
//! - [`store`] is SQLite and nothing else: users, the denylist, generations, the login ledger.
//! - [`auth`] holds the use cases, combining token + password + store, with no HTTP in sight.
//! - [`http`] is the hyper edge: routing, bodies, Bearer extraction, problem+json, limits.
//! - [`app`] assembles them from [`config`]; [`admin`] and [`demo`] are operator commands.
//!
//! Support: [`strict_json`] (duplicate-refusing JSON objects), [`random`] (the OS CSPRNG),
//! [`clock`] (the one place that reads the time), [`http_client`] (for the demo and tests).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod http;
pub mod store;
pub mod support;
pub mod token;
