//! The sans-IO protocol core.
//!
//! Nothing in here opens a socket, reads the clock, spawns a task or draws
//! random numbers: the drivers in [`crate::net`] pass bytes, addresses and
//! the current time in, and carry out the effects that come back. This is
//! what lets every protocol rule be tested with fake time, and what lets N
//! independent cores (one per shard) run side by side.

pub mod auth;
pub mod channel_data;
#[cfg(test)]
mod fuzz_smoke;
pub mod peer_filter;
pub mod server;
#[cfg(test)]
mod server_tests;
pub mod stats;
pub mod stream_framing;
pub mod stun;
pub mod token_bucket;
