//! Several instances together: shared nonce keys, revocations and rooms
//! through a real Redis, every instance in each one's console, ALTERNATE-SERVER
//! to a sibling.

#[path = "../common/mod.rs"]
mod common;

mod alternate_server;
mod instances;
mod nonces;
mod revocations;
mod rooms;
mod signed;
