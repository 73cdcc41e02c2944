//! Relay-to-relay packets crossing shards, without the kernel: a
//! [`CrossShardPacket`] is a payload one of our relays sent to a relay
//! that another shard owns.
//!
//! When a client sends to a peer that is a live relay of this server (the
//! common case when both sides of a call are relayed by it), the core marks
//! the route with the relay's owning shard (`ToPeer::local`, from
//! `proto::live_relays`). The same shard delivers it at once; another shard
//! gets it through that shard's [`PacketInbox`]: a bounded lock-free queue
//! (`std::sync::mpsc::sync_channel`) and a [`Notify`].
//!
//! Invariants:
//! * a queue holds at most [`INBOX_SLOTS`] payloads, shared by every flow
//!   to that shard; a payload that finds it full is refused
//!   ([`NotQueued::Full`]) and the sending shard sends it through the
//!   kernel instead, from the sender's relay socket to the receiver's, as
//!   it would go without this shortcut: one flow's flood then fills its
//!   own relay socket's queue, not everyone's inbox. Those are counted
//!   (`turnpike_relay_handoff_fallbacks`); only a payload with no way at all (no
//!   such shard) is dropped and counted (`turnpike_relay_handoff_drops`).
//!   Nothing blocks;
//! * a sender wakes a receiving shard at most once per batch of its own
//!   input ([`PacketOutboxes::wake`]), not once per payload, and a wake-up
//!   is never lost: `Notify` keeps a permit for a receiver not yet waiting;
//! * payloads up to [`INLINE_PAYLOAD`] bytes travel in the queue's slot
//!   with no allocation; larger ones (rare: beyond any MTU) are boxed.

use std::cell::Cell;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::proto::addr::{RelayAddr, ShardId};

/// Payloads a shard's inbox holds.
pub(in crate::net) const INBOX_SLOTS: usize = 1024;
/// Largest payload carried inline in a queue slot.
pub(in crate::net) const INLINE_PAYLOAD: usize = 1500;

// The inline variant is the point: the queue's slots are the storage.
#[allow(clippy::large_enum_variant)]
enum Bytes {
    Inline { len: u16, data: [u8; INLINE_PAYLOAD] },
    Boxed(Box<[u8]>),
}

/// One payload for relay `to` of the receiving shard, sent by our relay
/// `from`.
pub(in crate::net) struct CrossShardPacket {
    pub to: RelayAddr,
    pub from: RelayAddr,
    bytes: Bytes,
}

impl CrossShardPacket {
    pub(in crate::net) fn new(to: RelayAddr, from: RelayAddr, payload: &[u8]) -> CrossShardPacket {
        let bytes = match u16::try_from(payload.len()) {
            Ok(len) if payload.len() <= INLINE_PAYLOAD => {
                let mut data = [0u8; INLINE_PAYLOAD];
                data[..payload.len()].copy_from_slice(payload);
                Bytes::Inline { len, data }
            }
            _ => Bytes::Boxed(payload.into()),
        };
        CrossShardPacket { to, from, bytes }
    }

    pub(in crate::net) fn payload(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Inline { len, data } => &data[..usize::from(*len)],
            Bytes::Boxed(b) => b,
        }
    }
}

/// A shard's receiving end.
pub(in crate::net) struct PacketInbox {
    rx: Receiver<CrossShardPacket>,
    notify: Arc<Notify>,
}

impl PacketInbox {
    /// Waits until a sender has woken this inbox (at once if one did since
    /// the last wait).
    pub(in crate::net) async fn woken(&self) {
        self.notify.notified().await;
    }

    /// The next queued payload, if any.
    pub(in crate::net) fn next(&self) -> Option<CrossShardPacket> {
        self.rx.try_recv().ok()
    }
}

/// A shard's sending ends, one per shard (its own included, unused).
pub(in crate::net) struct PacketOutboxes {
    links: Vec<(SyncSender<CrossShardPacket>, Arc<Notify>)>,
    /// Shards sent to since the last [`Self::wake`].
    pending: Vec<Cell<bool>>,
}

/// Why a payload was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::net) enum NotQueued {
    Full,
    NoSuchShard,
}

impl PacketOutboxes {
    pub(in crate::net) fn new(links: Vec<(SyncSender<CrossShardPacket>, Arc<Notify>)>) -> PacketOutboxes {
        let pending = links.iter().map(|_| Cell::new(false)).collect();
        PacketOutboxes { links, pending }
    }

    /// Queues `packet` for `shard`; it is woken by the next [`Self::wake`].
    pub(in crate::net) fn send(&self, shard: ShardId, packet: CrossShardPacket) -> Result<(), NotQueued> {
        let index = usize::from(shard.0);
        let (tx, _) = self.links.get(index).ok_or(NotQueued::NoSuchShard)?;
        match tx.try_send(packet) {
            Ok(()) => {
                self.pending[index].set(true);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(NotQueued::Full),
            Err(TrySendError::Disconnected(_)) => Err(NotQueued::NoSuchShard),
        }
    }

    /// Wakes every shard sent to since the last call.
    pub(in crate::net) fn wake(&self) {
        for ((_, notify), pending) in self.links.iter().zip(&self.pending) {
            if pending.replace(false) {
                notify.notify_one();
            }
        }
    }
}

/// A shard's inbox and its senders to every shard (for [`PacketOutboxes::new`]).
pub(in crate::net) type PacketLinks = (PacketInbox, Vec<(SyncSender<CrossShardPacket>, Arc<Notify>)>);

/// The links of `shards` shards: entry `i` is shard `i`'s.
pub(in crate::net) fn packet_links(shards: usize) -> Vec<PacketLinks> {
    let ends: Vec<_> = (0..shards)
        .map(|_| {
            let (tx, rx) = sync_channel(INBOX_SLOTS);
            (tx, rx, Arc::new(Notify::new()))
        })
        .collect();
    let senders: Vec<_> = ends.iter().map(|(tx, _, n)| (tx.clone(), n.clone())).collect();
    ends.into_iter()
        .map(|(_, rx, notify)| (PacketInbox { rx, notify }, senders.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn relay(port: u16) -> RelayAddr {
        RelayAddr(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn pair() -> (PacketInbox, PacketOutboxes) {
        let mut all = packet_links(2);
        let (_, to_all) = all.remove(0);
        let (inbox1, _) = all.remove(0);
        (inbox1, PacketOutboxes::new(to_all))
    }

    #[test]
    fn payloads_arrive_in_order_inline_or_boxed() {
        let (inbox, out) = pair();
        let big = vec![7u8; INLINE_PAYLOAD + 1];
        out.send(ShardId(1), CrossShardPacket::new(relay(2), relay(1), b"first"))
            .unwrap();
        out.send(ShardId(1), CrossShardPacket::new(relay(2), relay(1), &big))
            .unwrap();
        out.send(ShardId(1), CrossShardPacket::new(relay(2), relay(1), &[]))
            .unwrap();
        let got: Vec<_> = std::iter::from_fn(|| inbox.next()).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].payload(), b"first");
        assert_eq!((got[0].to, got[0].from), (relay(2), relay(1)));
        assert_eq!(got[1].payload(), &big[..]);
        assert!(got[2].payload().is_empty());
    }

    #[test]
    fn a_full_inbox_refuses_and_an_unknown_shard_is_no_target() {
        let (inbox, out) = pair();
        for _ in 0..INBOX_SLOTS {
            out.send(ShardId(1), CrossShardPacket::new(relay(2), relay(1), b"x"))
                .unwrap();
        }
        assert_eq!(
            out.send(ShardId(1), CrossShardPacket::new(relay(2), relay(1), b"x")),
            Err(NotQueued::Full)
        );
        assert_eq!(
            out.send(ShardId(9), CrossShardPacket::new(relay(2), relay(1), b"x")),
            Err(NotQueued::NoSuchShard)
        );
        assert!(inbox.next().is_some(), "the queued ones are still there");
    }

    #[tokio::test]
    async fn a_wake_after_sending_is_kept_for_a_receiver_not_yet_waiting() {
        let (inbox, out) = pair();
        out.send(ShardId(1), CrossShardPacket::new(relay(2), relay(1), b"x"))
            .unwrap();
        out.wake();
        // Sent and woken before the receiver waits: the permit is kept.
        tokio::time::timeout(std::time::Duration::from_secs(5), inbox.woken())
            .await
            .expect("woken");
        assert!(inbox.next().is_some());
        // Nothing sent since: no wake-up is pending.
        out.wake();
        let idle = tokio::time::timeout(std::time::Duration::from_millis(20), inbox.woken()).await;
        assert!(idle.is_err(), "woken without a payload sent");
    }

    #[test]
    fn a_second_shard_thread_receives_what_the_first_sent() {
        let (inbox, out) = pair();
        let receiver = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut got = 0;
                while got < 100 {
                    tokio::time::timeout(std::time::Duration::from_secs(5), inbox.woken())
                        .await
                        .expect("woken");
                    while inbox.next().is_some() {
                        got += 1;
                    }
                }
                got
            })
        });
        for batch in 0..10 {
            for _ in 0..10 {
                out.send(ShardId(1), CrossShardPacket::new(relay(2), relay(1), &[batch]))
                    .unwrap();
            }
            out.wake();
        }
        assert_eq!(receiver.join().unwrap(), 100);
    }
}
