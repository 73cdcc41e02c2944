//! Shared helpers of the black-box tests, one concept a file:
//! * [`server`]: the server builder, a `turnpike` child on loopback
//!   ([`TestServer`], changed as [`ServerSetup`] says), and
//!   [`shared_port`], one with a single TLS port shared by TURN and HTTPS;
//! * [`turn_client`]: the TURN client (UDP, TCP, TLS; one-shot STUN
//!   exchanges; the `turn` crate) and [`ws_client`]: the signaling client;
//! * [`echo`]: UDP and TCP echo peers;
//! * [`nat_behaviour`]: a client of RFC 5780's NAT behaviour tests,
//!   written from the RFC;
//! * [`metrics`]: one sample of `/metrics`, and bounded waits for them;
//! * [`credentials`], [`ports`], [`pki`], [`http`], [`scratch`],
//!   [`process`]: what those are built of;
//! * [`uclient`]: the summary coturn's `turnutils_uclient` prints;
//!   [`coturn`]: coturn's `turnserver`, a second TURN server;
//!   [`selftest_run`]: `turnpike selftest` run and its JSON report read;
//! * [`aiortc_call`]: the aiortc call script run and its account read;
//! * [`browser`], [`call_summary`], [`private_network`], [`redis_server`],
//!   [`pebble`]: headless Chromium, the network namespaces it and the NAT
//!   tests need, a real Redis, a real ACME CA;
//! * [`machine`]: which calls run alone, and which beside others.
//!
//! Everything stays on 127.0.0.1 (or in a namespace of the test's own),
//! and every wait is bounded in time and in count.

// each test binary uses a different subset
#![allow(dead_code, unused_imports)]
// The clock rule of clippy.toml is for the sans-IO core; black-box tests
// bound their waits with the real clock.
#![allow(clippy::disallowed_methods)]

pub mod aiortc_call;
pub mod browser;
pub mod call_summary;
pub mod coturn;
pub mod credentials;
pub mod echo;
pub mod http;
pub mod machine;
pub mod metrics;
pub mod nat_behaviour;
pub mod pebble;
pub mod pki;
pub mod ports;
pub mod private_network;
pub mod process;
pub mod redis_server;
pub mod scratch;
pub mod selftest_run;
pub mod server;
pub mod shared_port;
pub mod turn_client;
pub mod uclient;
pub mod ws_client;

pub use browser::*;
pub use credentials::*;
pub use echo::*;
pub use http::*;
pub use metrics::*;
pub use pki::*;
pub use ports::*;
pub use private_network::*;
pub use process::*;
pub use scratch::*;
pub use server::*;
pub use turn_client::*;
pub use ws_client::{id_of, JoinWith, WsClient, PATIENCE};
