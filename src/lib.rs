//! turnpike: a STUN/TURN server (RFC 8489, RFC 8656) with a minimal WebRTC
//! signaling endpoint.
//!
//! * [`proto`]: the sans-IO protocol core (no sockets, clock or randomness of its own).
//! * [`net`]: the tokio drivers that run the core in N shards over UDP, TCP, TLS and relay sockets.
//! * [`http`]: the HTTP surface: `/ws` signaling, `/ice-servers`, the demo page, metrics, health.
//! * [`process`]: process-wide services that net and http share: clock, randomness, TLS, status.
//! * [`config`]: the TOML schema, its defaults and validation.

pub mod config;
pub mod http;
pub mod net;
pub mod process;
pub mod proto;
