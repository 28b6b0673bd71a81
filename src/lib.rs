//! Tessera: a small authentication service — register, log in, read your details, log out.
//!
//! How the pieces fit, bottom to top; each layer imports only from those before it:
//! - [`support`] (the clock, strict JSON) and [`crypto`] (constant-time compare, the CSPRNG) are
//!   leaves with no knowledge of the service.
//! - [`domain`] holds the types that are valid once built — ids, usernames, profile text,
//!   secrets, passwords and their policy, new users — and the softlock arithmetic. No I/O.
//! - [`token`] is the codec: our HS256 compact JWS, pure and clock-free, with the keyring.
//! - [`store`] is the storage seam: the [`store::Store`] trait, with SQLite behind it.
//! - [`auth`] holds the use cases over a `Store`, the codec and the hashing pool; no HTTP.
//! - [`http`] is the hyper edge: routing, bodies, Bearer extraction, problem+json, limits.
//! - [`config`] and [`app`] assemble them; [`cli`] is the command line and operator commands.
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
