//! The UDP read and write path of a shard, below the event loop:
//!
//! * `batch`: batched receive and send (`recvmmsg`, GSO, `sendmmsg`) into
//!   and out of the shard's buffers;
//! * `relay_poll`: the epoll set through which a shard reads all of its
//!   UDP relay sockets as one descriptor.
//!
//! Nothing here knows the shard or the protocol core: these files are
//! handed sockets and buffers and give back datagrams.

pub(super) mod batch;
pub(super) mod relay_poll;
