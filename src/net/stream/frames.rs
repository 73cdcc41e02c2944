//! Reading and writing a connection's STUN and ChannelData frames
//! (RFC 8489 §6.2.2, RFC 8656 §3.1): [`read_frames`] hands each complete
//! frame to the shard's core, [`write_frames`] writes what the shard
//! queued for the connection in its [`StreamConn`].
//!
//! Invariants:
//! * the read buffer never holds more than one frame plus one read; a
//!   frame larger than `max_frame` closes the connection;
//! * the TLS handshake and the first well-formed message must both be done
//!   within `setup_timeout` of the accept; afterwards, without an
//!   allocation, `idle_timeout` of silence closes the connection;
//! * a frame is never cut: what the writer took and has not written yet is
//!   kept outside its future ([`Pending`]) and written first, in order,
//!   when a splice or a transfer ends the writer mid-write;
//! * before a frame is handled, [`transfer_target`] is asked whether it is
//!   a ConnectionBind that takes the connection to another shard; if so
//!   reading ends with that frame and the rest unhandled.

use std::rc::Rc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::admission::StreamLimits;
use super::conn::StreamConn;
use super::transfer::{transfer_target, ConnectionTransfer};
use crate::net::shard::Shard;
use crate::process::clock;
use crate::proto::addr::{ClientAddr, ShardId};
use crate::proto::stream_framing::{self, FrameError};

/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 16 * 1024;

/// How reading a connection's frames ended.
pub(super) enum ReadEnd {
    Closed(&'static str),
    /// ConnectionBind succeeded; these bytes followed it and belong to the
    /// peer.
    Spliced(Vec<u8>),
    /// The next frame binds a peer connection of shard `to`: the
    /// connection goes there with these bytes, that frame first.
    Transfer {
        to: ShardId,
        buffered: Vec<u8>,
    },
}

/// What [`read_frames`] reads for.
pub(super) struct ReadState<'a> {
    pub(super) shard: &'a Rc<Shard>,
    pub(super) client: ClientAddr,
    pub(super) limits: &'a StreamLimits,
    pub(super) setup_deadline: tokio::time::Instant,
    pub(super) conn: &'a StreamConn,
    /// Where the connection may be transferred to; `None` once it was.
    pub(super) transfer: Option<&'a ConnectionTransfer>,
}

pub(super) async fn read_frames<R: AsyncRead + Unpin>(
    state: ReadState<'_>,
    reader: &mut R,
    mut buf: Vec<u8>,
) -> ReadEnd {
    let ReadState {
        shard,
        client,
        limits,
        setup_deadline,
        conn,
        transfer,
    } = state;
    let mut established = false;
    let here = shard.id();
    loop {
        // Handle every complete frame already buffered; what they relay
        // leaves in one flush (a GSO train when it goes to one peer).
        let mut start = 0;
        let now = clock::now();
        let ended = loop {
            match stream_framing::frame_len(&buf[start..], limits.max_frame) {
                Ok(Some(len)) => {
                    let frame = &buf[start..start + len];
                    if let Some(to) =
                        transfer.and_then(|h| transfer_target(frame, here, h, || shard.has_allocation(client)))
                    {
                        break Some(ReadEnd::Transfer {
                            to,
                            buffered: buf[start..].to_vec(),
                        });
                    }
                    // Only a well-formed message ends the setup phase, so
                    // junk of the right shape cannot buy the longer timeout.
                    established = established || stream_framing::is_well_formed(frame);
                    shard.queue_client_packet(client, frame, now);
                    start += len;
                    if conn.splice.borrow().is_some() {
                        break Some(ReadEnd::Spliced(buf[start..].to_vec()));
                    }
                }
                Ok(None) => break None,
                Err(FrameError::NotTurn) => break Some(ReadEnd::Closed("not STUN or ChannelData")),
                Err(FrameError::TooLarge(_)) => break Some(ReadEnd::Closed("frame too large")),
            }
        };
        shard.flush();
        if let Some(end) = ended {
            return end;
        }
        buf.drain(..start);

        let deadline = if established {
            tokio::time::Instant::now() + limits.idle_timeout
        } else {
            setup_deadline
        };
        buf.reserve(READ_CHUNK);
        match tokio::time::timeout_at(deadline, reader.read_buf(&mut buf)).await {
            Ok(Ok(0)) => return ReadEnd::Closed("closed by client"),
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return ReadEnd::Closed("read error"),
            Err(_) if !established => return ReadEnd::Closed("no complete message in time"),
            // A connection with an allocation stays, however quiet: the
            // allocation's own lifetime bounds it.
            Err(_) if shard.has_allocation(client) => {}
            Err(_) => return ReadEnd::Closed("idle"),
        }
    }
}

/// What the writer took from `conn.out` and has not all written yet. It
/// lives outside [`write_frames`]'s future, so that when a splice or a
/// transfer drops that future mid-write, the rest is still written, in
/// order, before anything else: a frame is never cut.
#[derive(Default)]
pub(super) struct Pending {
    bytes: Vec<u8>,
    /// Bytes of `bytes` written; each `write` either wrote some or, when
    /// dropped, none, so this is exact.
    written: usize,
    /// Where the frame being written ends (TLS writes frame by frame).
    frame_end: usize,
}

impl Pending {
    fn rest(&self) -> &[u8] {
        self.bytes.get(self.written..).unwrap_or_default()
    }
}

/// Writes what the shard queued. Over TLS every frame is written on its
/// own, so it gets its own TLS record: clients that read one message per
/// record (coturn's `turnutils_uclient` is one) would otherwise lose the
/// frames after the first in a record. Plain TCP writes a batch at once.
pub(super) async fn write_frames<W: AsyncWrite + Unpin>(
    conn: &StreamConn,
    writer: &mut W,
    record_per_frame: bool,
    pending: &mut Pending,
) -> &'static str {
    // Two buffers swap roles so writing never allocates once they have
    // grown: the shard fills `out` while this task writes `pending`.
    loop {
        conn.wake.notified().await;
        loop {
            if pending.rest().is_empty() {
                pending.bytes.clear();
                (pending.written, pending.frame_end) = (0, 0);
                std::mem::swap(&mut pending.bytes, &mut *conn.out.borrow_mut());
                if pending.bytes.is_empty() {
                    break;
                }
            }
            while !pending.rest().is_empty() {
                if pending.written >= pending.frame_end {
                    // `out` only ever holds whole frames (StreamConn::send).
                    let rest = pending.rest();
                    let len = match stream_framing::frame_len(rest, stream_framing::MAX_FRAME) {
                        Ok(Some(len)) if record_per_frame => len,
                        _ => rest.len(),
                    };
                    pending.frame_end = pending.written + len;
                }
                let chunk = pending
                    .bytes
                    .get(pending.written..pending.frame_end)
                    .unwrap_or_default();
                match writer.write(chunk).await {
                    Ok(0) | Err(_) => return "write error",
                    Ok(n) => pending.written += n,
                }
            }
            // TLS buffers what it encrypts: flush so frames leave now.
            if writer.flush().await.is_err() {
                return "write error";
            }
        }
    }
}

/// Writes out what the connection still owes its client once the writer
/// task is gone: the rest of what it was writing, then what was queued
/// since, and flushes.
pub(super) async fn write_rest<W: AsyncWrite + Unpin>(conn: &StreamConn, writer: &mut W, pending: &Pending) -> bool {
    let queued = std::mem::take(&mut *conn.out.borrow_mut());
    writer.write_all(pending.rest()).await.is_ok()
        && writer.write_all(&queued).await.is_ok()
        && writer.flush().await.is_ok()
}
