//! Leaf utilities with no knowledge of the service: the clock and strict JSON objects.

pub mod clock;
pub mod strict_json;
