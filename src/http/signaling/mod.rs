//! WebSocket signaling at `/ws` (DESIGN.md, "Signaling protocol v1"):
//! rooms whose peers relay offers, answers and ICE candidates to each
//! other, each peer handed fresh TURN credentials when it joins.
//!
//! * [`protocol`]: the JSON messages, parsed and encoded;
//! * `rooms`: who is in which room (plain data, no I/O);
//! * `session`: one WebSocket session, and the hub that connects sessions.

pub mod protocol;
mod rooms;
pub(super) mod session;
