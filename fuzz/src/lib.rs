//! Shared harness for turnpike's cargo-fuzz targets (see `README.md`).
//!
//! The fuzz targets in `fuzz_targets/` are thin: each calls one function of
//! this crate, so that the same checks also run under `cargo test` here (on
//! the seeds) without libFuzzer. Only turnpike's public API is used.
//!
//! * [`message`]: exercise every accessor of a parsed STUN message and
//!   check what it returns against the raw bytes.
//! * [`channel`]: the ChannelData parser and the stream framer.
//! * [`filter`]: the peer filter and CIDR parsing.
//! * [`server`]: a [`turnpike::proto::server::Server`] with a fake relay
//!   binder, driven by a byte program that can also *sign* requests, so
//!   that authenticated Allocate, Refresh, CreatePermission and ChannelBind
//!   get past the long-term credential check.
//! * [`program`]: builds such programs, for seeds and tests.
//! * [`nat`]: Binding with RFC 5780 NAT behaviour discovery, on every
//!   address of a server's address pairs and beside them.
//! * [`signal`]: signaling protocol v1 client messages.
//! * [`proxy`]: the PROXY protocol header a load balancer sends first.
//! * [`fleet`]: the messages and records instances of a fleet read from
//!   Redis.
//! * [`redis_push`]: what Redis sends on the fleet's subscribed
//!   connection.
//! * [`session`]: the signaling state machine (sessions, rooms, outboxes)
//!   driven by a byte program of several sessions.

pub mod channel;
pub mod filter;
pub mod fleet;
pub mod message;
pub mod nat;
pub mod program;
pub mod proxy;
pub mod redis_push;
pub mod server;
pub mod session;
pub mod signal;

/// Lower-case hex of `bytes`, for assertion messages (reproducers).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
