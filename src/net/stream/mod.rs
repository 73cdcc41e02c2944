//! STUN/TURN over TCP and TLS (RFC 8489 §6.2.2, RFC 8656 §3.1), and the
//! RFC 6062 data connections of TCP relays: one task per connection, on
//! the shard that accepted it.
//!
//! Every shard has an `SO_REUSEPORT` sibling of each TCP and TLS listener
//! (see [`crate::net`]) and its own accept loop: the kernel spreads
//! connections, and a connection, its allocation and its TCP relay live on
//! the shard that accepted it, where its frames are read. A connection is
//! one client 5-tuple; its allocation ends when it closes. The one
//! exception is an RFC 6062 data connection whose ConnectionBind names a
//! peer connection of another shard: it is transferred there once, before
//! that frame is handled.
//!
//! One concept per file, each below the ones that use it:
//! * `listener`: the accept loop, the PROXY and TLS steps, and serving a
//!   connection from its first frame to its end;
//! * `admission`: the process-wide connection limits a connection takes
//!   its places in at accept;
//! * `frames`: reading and writing a connection's frames;
//! * `splice`: the bytes of a data connection after its ConnectionBind;
//! * `conn`: the connection as its shard sees it (its bounded outbox and
//!   its splice), shared with the shard's event loop;
//! * `transfer`: a data connection moving to the shard that holds its
//!   peer connection;
//! * `movable`: the byte streams that can move between shards' reactors;
//! * `shared_port` (with `prefixed`): a TLS port shared with HTTP, whose
//!   HTTP connections are handed over to the HTTP thread after the
//!   handshake.
//!
//! Import order, with no circle: `listener` → `frames`, `splice`,
//! `shared_port`, `transfer`, `admission`, `movable`, `conn`, and the
//! shard; `frames` and `splice` → the shard and `conn`; `frames` →
//! `transfer` → `admission`, `movable`; `shared_port` → `movable`,
//! `prefixed`. The shard's event loop imports only `conn` from here.

pub(super) mod admission;
pub(super) mod conn;
mod frames;
pub(super) mod listener;
mod movable;
mod prefixed;
mod shared_port;
mod splice;
pub(super) mod transfer;
