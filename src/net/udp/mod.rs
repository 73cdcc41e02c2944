//! The UDP read and write path of a shard, below the event loop:
//!
//! * `batch`: batched receive and send (`recvmmsg`, GSO, `sendmmsg`) into
//!   and out of the shard's buffers;
//! * `relay_poll`: the epoll set through which a shard reads all of its
//!   UDP relay sockets as one descriptor;
//! * `receive`: the loops that read a shard's listeners and relay sockets
//!   in batches and hand each datagram to the shard.
//!
//! Nothing here knows the shard's event loop or the protocol core: these
//! files are handed sockets and buffers and give back datagrams (to the
//! shard through the `receive::Datagrams` trait it implements).

pub(super) mod batch;
pub(super) mod receive;
pub(super) mod relay_poll;
