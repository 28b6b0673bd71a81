//! The command line: `tessera serve | keys | user | db` parsed by clap, and the operator commands.

pub mod admin;
pub mod args;
