//! Tessera: a small authentication service.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod demo;
pub mod http;
pub mod http_client;
pub mod lockout;
pub mod password;
pub mod password_policy;
pub mod profile_text;
pub mod random;
pub mod store;
pub mod strict_json;
pub mod token;
pub mod username;
