//! The relays of a shard's allocations, outside the protocol core:
//!
//! * `sockets`: the relay sockets a shard opens for its allocations (the
//!   driver's side of the core's `RelayBinder`);
//! * `port_pool`: which ports of the relay range are free, for every shard
//!   of the process;
//! * `cross_shard`: relay-to-relay packets for a relay another shard owns,
//!   queued to that shard without the kernel.
//!
//! Nothing here knows the shard's event loop: it hands `sockets` what to
//! start, and drains `cross_shard`'s inbox itself.

pub(super) mod cross_shard;
pub(super) mod port_pool;
pub(super) mod sockets;
