//! Leaf utilities with no knowledge of the service: the clock, the log writer, per-thread
//! shards and strict JSON objects.

pub mod clock;
pub mod logging;
pub mod shards;
pub mod strict_json;
