//! Real-HTTP integration tests, compiled into one binary (each `tests/*.rs` file would be its
//! own binary and its own link).

mod abuse;
mod account;
mod attacks;
mod bad_input;
mod crash;
mod docs;
mod helpers;
mod integrity;
mod operations;
mod races;
mod registration;
mod sessions;
