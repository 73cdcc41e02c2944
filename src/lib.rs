//! turnpike: a STUN/TURN server (RFC 8489, RFC 8656) with a minimal WebRTC
//! signaling endpoint.
//!
//! * [`proto`]: the sans-IO protocol core (no sockets, clock or randomness of its own).
//! * [`net`]: the tokio drivers that run the core in N shards over UDP, TCP, TLS and relay sockets.
//! * [`http`]: the HTTP surface: the `/ws` upgrade, `/ice-servers`, the demo page, metrics, health.
//! * [`signaling`]: WebSocket signaling rooms, a sans-IO switchboard and its drivers.
//! * [`fleet`]: every byte to and from Redis: rooms and revocations shared by a fleet.
//! * [`admin`]: the operator's admin API (its own loopback listener) and the client of `turnpike admin`.
//! * [`process`]: process-wide services that net and http share: clock, randomness, TLS, status.
//! * [`config`]: the TOML schema, its defaults and validation.
//! * [`selftest`]: a TURN client that checks a deployment (`turnpike selftest`).
//!
//! Nothing outside tests may `unwrap`, `expect` or `panic!`: input from the
//! network never takes the server down. The lint below enforces it; the one
//! exception (the OS random number generator failing, in
//! [`process::random`]) is marked where it is.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod admin;
pub mod config;
pub mod fleet;
pub mod http;
pub mod net;
pub mod process;
pub mod proto;
pub mod selftest;
pub mod signaling;

#[cfg(test)]
mod layers;
