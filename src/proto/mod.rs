//! The sans-IO protocol core.
//!
//! Nothing in here opens a socket, reads the clock, spawns a task or draws
//! random numbers: the drivers in [`crate::net`] pass bytes, addresses and
//! the current time in, and carry out the effects that come back. This is
//! what lets every protocol rule be tested with fake time, and what lets N
//! independent cores (one per shard) run side by side.
//!
//! * [`stun`], [`channel_data`], [`stream_framing`]: the wire codecs;
//!   [`proxy_header`]: the PROXY protocol header a load balancer sends;
//! * [`first_bytes`]: TURN or HTTP on the shared TLS port, by ALPN or by
//!   the first bytes;
//! * [`server`]: the STUN/TURN state machine, one per shard;
//! * [`auth`]: long-term and shared-secret credentials, nonces;
//!   [`client`]: the same credentials as a client holds them, and the
//!   requests it signs (the selftest's and the tests' client);
//! * [`peer_filter`]: which peers may be relayed to;
//! * [`quota`], [`live_relays`], [`revocations`]: what every shard shares
//!   (allocation counts, the relays live now, the revoked usernames);
//! * [`addr`], [`method`], [`source`]: the vocabulary; [`stats`]: what
//!   is counted;
//! * [`token_bucket`], [`rate_table`], [`xorshift`]: small tools;
//! * `testkit` (tests and the `testing` feature): what tests share.

pub mod addr;
pub mod auth;
pub mod bandwidth_watch;
pub mod channel_data;
pub mod client;
pub mod first_bytes;
pub mod live_relays;
pub mod method;
pub mod peer_filter;
pub mod proxy_header;
pub mod quota;
pub mod rate_table;
pub mod revocations;
pub mod server;
pub mod source;
pub mod stats;
pub mod stream_framing;
pub mod stun;
#[cfg(any(test, feature = "testing"))]
pub mod testkit;
pub mod token_bucket;
pub mod xorshift;

use std::time::Instant;

/// The current time, sampled once per event by the driver.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// For every lifetime and timer.
    pub mono: Instant,
    /// Wall-clock seconds, for nonce and ephemeral credential expiry.
    pub unix_secs: u64,
}
