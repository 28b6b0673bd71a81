//! Real-HTTP integration tests, compiled into one binary (each `tests/*.rs` file would be its
//! own binary and its own link).
#![allow(clippy::indexing_slicing)] // test code: a bad index is a failed test

mod abuse;
mod account;
mod attacks;
mod bad_input;
mod crash;
mod db_outages;
mod docs;
mod forward_auth;
mod gateway;
mod helpers;
mod http_client;
mod integrity;
mod introspection;
mod key_reload;
mod operations;
mod races;
mod refresh;
mod registration;
mod replica_view;
mod replicas;
mod schema_parity;
mod second_factor;
mod sessions;
mod tcp_proxy;
mod trusted_proxies;
