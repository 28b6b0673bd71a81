//! Leaf cryptography every layer may use: constant-time comparison and the OS-seeded CSPRNG.
//! Nothing here knows about users, tokens, storage or HTTP.

pub mod ct;
pub mod random;
