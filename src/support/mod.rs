//! Leaf utilities with no knowledge of the service: the clock, the log writer and strict JSON
//! objects.

pub mod clock;
pub mod logging;
pub mod strict_json;
