//! The core's test kit: what the unit tests, the fuzz crate, the benchmark
//! and the black-box tests share to play a TURN client or a driver. It is
//! compiled for `cargo test` and with the `testing` feature (which the
//! crate's own dev-dependency on itself turns on for `tests/` and
//! `benches/`), never into the shipped binary.
//!
//! * [`core_config`] and [`core_credentials`]: the test core's
//!   configuration, which each test changes with struct-update syntax;
//! * [`client`] (re-exported from [`crate::proto::client`], which
//!   `selftest` ships): long-term credentials as a client holds them, a
//!   message encoder that signs with them, and the 401/438 challenge dance
//!   over any transport;
//! * [`FakeBinder`]: an in-memory [`RelayBinder`](super::server::RelayBinder)
//!   that records every bind and release and checks the core's use of it;
//! * [`FakeRoutes`]: an in-memory fast path
//!   ([`FastPathRoutes`](super::server::FastPathRoutes)) whose routes a
//!   test reads and on which it makes up relayed traffic;
//! * [`rfc5769`]: the RFC 5769 test vectors;
//! * seeded randomness is [`super::xorshift::XorShift`], the same generator
//!   the drivers use.

// Test code: a broken fixture should stop the test loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub use super::client;
mod fake_binder;
mod fake_routes;
pub mod rfc5769;
mod test_core;

pub use client::{encode, Challenge, Cred};
pub use fake_binder::{FakeBinder, FakeBinderState};
pub use fake_routes::{FakeRoutes, FakeRoutesState};
pub use test_core::{core_config, core_credentials, RELAY_IP_V4, RELAY_IP_V6};
