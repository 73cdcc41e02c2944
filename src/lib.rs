//! turnpike: a STUN/TURN server (RFC 8489, RFC 8656) with a minimal WebRTC
//! signaling endpoint.
//!
//! * [`proto`] is the sans-IO protocol core: no sockets, no clock, no
//!   randomness of its own. Every rule lives there and is unit-tested with
//!   fake time.
//! * [`net`] holds the thin tokio drivers that feed it bytes, addresses and
//!   the current time, and carry out what it answers.
//! * [`config`] is the TOML schema, its defaults and validation.

pub mod config;
pub mod http;
pub mod net;
pub mod process;
pub mod proto;
