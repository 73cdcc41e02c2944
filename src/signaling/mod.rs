//! WebSocket signaling: rooms whose peers relay offers, answers and ICE
//! candidates to each other, each peer handed fresh TURN credentials when
//! it joins. The protocol (v1 and its v1.1 additions) is in
//! `docs/signaling.md`, why it is shaped so in `docs/design.md`
//! ("Signaling protocol v1"); the demo page's `web/signaling.js` is a
//! client of it.
//!
//! A second service beside TURN, with the TURN core's shape: a sans-IO
//! state machine and thin drivers. HTTP touches it in two places only:
//! `crate::http::ws` checks the Origin and the token and upgrades, then
//! hands the socket to [`session::run`]; `crate::http` builds the [`Hub`]
//! and reads its counts for `/metrics`.
//!
//! * [`protocol`]: the JSON messages, parsed and encoded;
//! * [`ice`]: the `iceServers` list handed to clients, with minted
//!   credentials;
//! * [`switchboard`]: sessions, outboxes and rooms, the sans-IO state
//!   machine (with resume, and the rooms that span a fleet);
//! * [`hub`]: the switchboard behind its lock, the wake-ups and timers
//!   that all sessions share;
//! * [`session`]: the tokio driver of one WebSocket.
//!
//! Rooms that span a fleet of instances are carried to Redis and back by
//! `crate::fleet`, which drives the switchboard through the [`Hub`] like a
//! session does; nothing here speaks Redis.

pub mod hub;
pub mod ice;
pub mod protocol;
pub mod session;
pub mod switchboard;

pub use hub::{Hub, SessionLimits};
pub use ice::IceConfig;
