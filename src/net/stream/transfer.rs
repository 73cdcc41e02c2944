//! A stream connection's transfer to the shard that owns it: an RFC 6062
//! data connection whose ConnectionBind names a peer connection held by
//! another shard's core (the shard is written in the id, see
//! [`ConnectionId`](crate::proto::addr::ConnectionId)) is sent there
//! before that request is handled, and served there as if accepted there
//! (`listener::serve_transferred`).
//!
//! What moves is a [`TransferredConnection`]: the connection (plain, or
//! TLS with its rustls session, see `movable`), the bytes already read
//! from it (the ConnectionBind and whatever followed), its setup deadline,
//! and its places in the process-wide connection limits
//! ([`StreamSlot`]), so it stays counted once.
//!
//! The socket is taken off the accepting shard's reactor and registered
//! with the owner's when it arrives, so the owner's thread alone is woken
//! for it afterwards. Moving the tokio socket unchanged would also work (a
//! tokio socket stays driven by the reactor that registered it, and shards
//! live as long as the process) but would wake the accepting shard's
//! thread for every read of a connection it no longer serves.
//!
//! Invariants:
//! * a connection is transferred at most once (a transferred connection
//!   is served with no [`ConnectionTransfer`]), and only before it has an
//!   allocation or a splice on the accepting shard, whose core then holds
//!   nothing of it ([`transfer_target`]);
//! * a stream is only ever in flight detached from every reactor, and is
//!   attached again before it is read or written;
//! * each shard's inbox is bounded ([`INBOX`]): a connection that finds
//!   it full is closed and counted in [`ConnectionTransfer::dropped`],
//!   never queued.
//!
//! Transfers are rare (one per RFC 6062 data connection that lands on the
//! wrong shard, `(workers - 1) / workers` of them) and cost one channel
//! send and two epoll registrations; they are counted in
//! [`ConnectionTransfer`] and logged at debug level with the shards they
//! crossed. (`/metrics` does not show the counts yet: its exporter is not
//! part of this module.)

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::admission::StreamSlot;
use super::movable::AnyStream;
use crate::proto::addr::{ClientAddr, ShardId};
use crate::proto::server::connection_bind_shard;

/// Connections waiting for one shard to take them.
pub(super) const INBOX: usize = 256;

/// A connection on its way to the shard that holds its peer connection.
pub(in crate::net) struct TransferredConnection {
    /// Detached from every reactor.
    pub(super) stream: AnyStream,
    pub(super) client: ClientAddr,
    /// Read but not yet handled: the ConnectionBind first.
    pub(super) buffered: Vec<u8>,
    pub(super) setup_deadline: tokio::time::Instant,
    /// Its places in the connection limits, given back when it closes on
    /// the owner.
    pub(super) slot: StreamSlot,
}

/// Where each shard takes the connections transferred to it, shared by
/// every shard.
pub(in crate::net) struct ConnectionTransfer {
    /// One bounded inbox per shard, indexed by shard number.
    inboxes: Vec<mpsc::Sender<TransferredConnection>>,
    /// Connections transferred so far.
    pub(super) transferred: AtomicU64,
    /// Connections closed because their shard's inbox was full (or the
    /// shard gone).
    pub(super) dropped: AtomicU64,
}

/// Why a connection could not be transferred.
#[derive(Debug, thiserror::Error)]
pub(super) enum TransferError {
    #[error("no shard {0}")]
    NoShard(u8),
    #[error("inbox of shard {0} full")]
    Full(u8),
    #[error("shard {0} gone")]
    Gone(u8),
}

impl ConnectionTransfer {
    /// The inboxes of `shards` shards: every shard's sender, shared, and
    /// each shard's receiver, to be given to that shard alone.
    pub(in crate::net) fn new(shards: usize) -> (ConnectionTransfer, Vec<mpsc::Receiver<TransferredConnection>>) {
        let (inboxes, receivers) = (0..shards).map(|_| mpsc::channel(INBOX)).unzip();
        let transfer = ConnectionTransfer {
            inboxes,
            transferred: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        };
        (transfer, receivers)
    }

    /// True if shard `to` runs, so a connection may be transferred to it.
    pub(super) fn runs(&self, to: ShardId) -> bool {
        usize::from(to.0) < self.inboxes.len()
    }

    /// Puts `handed` in the inbox of shard `to`, or gives it back with why
    /// not (the caller closes it; a full inbox is counted).
    pub(super) fn send(&self, to: ShardId, handed: TransferredConnection) -> Result<(), TransferError> {
        let Some(inbox) = self.inboxes.get(usize::from(to.0)) else {
            return Err(TransferError::NoShard(to.0));
        };
        match inbox.try_send(handed) {
            Ok(()) => {
                self.transferred.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                match e {
                    mpsc::error::TrySendError::Full(_) => Err(TransferError::Full(to.0)),
                    mpsc::error::TrySendError::Closed(_) => Err(TransferError::Gone(to.0)),
                }
            }
        }
    }
}

/// The shard a frame's connection must be transferred to, if any:
/// `frame` is a ConnectionBind for a peer connection of shard `to`
/// ([`connection_bind_shard`]), `to` is not `here` but one of the
/// `shards` that run, and the connection has no allocation here (a
/// control connection sending ConnectionBind is the core's to refuse,
/// with 400). Otherwise the frame is handled here, which answers an id
/// of no running shard as any unknown id.
/// Costs two compared bytes for any frame but a ConnectionBind (it is
/// asked of every frame, ChannelData included), and `has_allocation` is
/// only asked of those.
pub(super) fn transfer_target(
    frame: &[u8],
    here: ShardId,
    shards: &ConnectionTransfer,
    has_allocation: impl FnOnce() -> bool,
) -> Option<ShardId> {
    let to = connection_bind_shard(frame)?;
    (to != here && shards.runs(to) && !has_allocation()).then_some(to)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::admission::{Slot, SourceSlot, StreamLimits, StreamSources};
    use super::super::movable::HomedTcp;
    use super::*;
    use crate::process::status::ConnectionCount;
    use crate::proto::addr::{ConnectionId, Transport};
    use crate::proto::source::SourceKey;
    use crate::proto::stun::{attr, method, Class, MessageWriter};
    fn connection_bind(id: ConnectionId) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut w = MessageWriter::new(&mut bytes, Class::Request, method::CONNECTION_BIND, [1; 12]);
        w.u32(attr::CONNECTION_ID, id.0);
        w.finish(None, true);
        bytes
    }

    #[test]
    fn a_connection_bind_for_another_running_shard_is_handed_there() {
        let (shards, _inboxes) = ConnectionTransfer::new(4);
        let frame = connection_bind(ConnectionId::new(ShardId(2), 9));
        assert_eq!(transfer_target(&frame, ShardId(0), &shards, || false), Some(ShardId(2)));
        assert_eq!(transfer_target(&frame, ShardId(3), &shards, || false), Some(ShardId(2)));
    }

    #[test]
    fn a_connection_bind_stays_on_its_own_shard_on_no_shard_and_on_a_control_connection() {
        let (shards, _inboxes) = ConnectionTransfer::new(4);
        let own = connection_bind(ConnectionId::new(ShardId(1), 9));
        assert_eq!(transfer_target(&own, ShardId(1), &shards, || false), None);
        // Shard 4 does not run: the accepting core answers, as for any
        // unknown id.
        let nowhere = connection_bind(ConnectionId::new(ShardId(4), 9));
        assert_eq!(transfer_target(&nowhere, ShardId(1), &shards, || false), None);
        // A connection with an allocation here is a control connection:
        // its core refuses the bind (400), and its allocation stays here.
        let other = connection_bind(ConnectionId::new(ShardId(3), 9));
        assert_eq!(transfer_target(&other, ShardId(1), &shards, || true), None);
    }

    #[test]
    fn other_frames_never_ask_about_the_allocation() {
        let (shards, _inboxes) = ConnectionTransfer::new(4);
        let channel_data = [0x40, 0x00, 0x00, 0x02, 0xaa, 0xbb, 0x00, 0x00];
        let asked = Cell::new(false);
        let has_allocation = || {
            asked.set(true);
            true
        };
        assert_eq!(
            transfer_target(&channel_data, ShardId(0), &shards, has_allocation),
            None
        );
        assert!(!asked.get());
    }

    fn limits() -> StreamLimits {
        StreamLimits {
            max_connections: 1000,
            max_per_source: 1000,
            handshakes_per_source: 10,
            setup_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_frame: 1000,
        }
    }

    /// A connection in flight (with no socket), holding its places.
    fn handed(sources: &Arc<StreamSources>, count: &ConnectionCount) -> TransferredConnection {
        let remote: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        count.fetch_add(1, Ordering::AcqRel);
        TransferredConnection {
            stream: AnyStream::Plain(HomedTcp::InFlight(None)),
            client: ClientAddr {
                transport: Transport::Tcp,
                local: "192.0.2.2:3478".parse().unwrap(),
                remote,
            },
            buffered: Vec::new(),
            setup_deadline: tokio::time::Instant::now(),
            slot: StreamSlot::new(
                Slot(count.clone()),
                SourceSlot::take(sources, SourceKey::from(remote.ip()), 1000).unwrap(),
            ),
        }
    }

    #[test]
    fn a_full_inbox_refuses_and_counts_the_connection_which_gives_its_places_back() {
        let sources = Arc::new(StreamSources::new(&limits(), [1; 32]));
        let count = ConnectionCount::default();
        let (shards, mut inboxes) = ConnectionTransfer::new(2);
        for _ in 0..INBOX {
            shards.send(ShardId(1), handed(&sources, &count)).unwrap();
        }
        let full = shards.send(ShardId(1), handed(&sources, &count));
        assert!(matches!(full, Err(TransferError::Full(1))), "{full:?}");
        assert_eq!(shards.dropped.load(Ordering::Relaxed), 1);
        // The refused one is closed and counted no more; the queued ones
        // still are, once each.
        let queued = INBOX;
        assert_eq!(count.load(Ordering::Acquire), queued);
        assert_eq!(sources.open().values().sum::<usize>(), queued);
        assert!(matches!(
            shards.send(ShardId(2), handed(&sources, &count)),
            Err(TransferError::NoShard(2))
        ));
        // A shard gone: refused and counted, and what it held is given back.
        drop(inboxes.pop());
        assert!(matches!(
            shards.send(ShardId(1), handed(&sources, &count)),
            Err(TransferError::Gone(1))
        ));
        assert_eq!(shards.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(count.load(Ordering::Acquire), 0);
        assert!(sources.open().is_empty());
        assert_eq!(shards.transferred.load(Ordering::Relaxed), queued as u64);
    }
}
