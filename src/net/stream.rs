//! STUN/TURN over TCP and TLS (RFC 8489 §6.2.2, RFC 8656 §3.1): one task
//! per connection, on the shard that accepted it.
//!
//! Every TCP and TLS listener lives on shard 0 alone, with no
//! `SO_REUSEPORT` siblings (see [`super`]): an RFC 6062 data connection is
//! a new connection that must reach the shard holding its peer
//! connection, which the kernel's spreading would not guarantee. So every
//! stream connection, its allocation and its TCP relay live on shard 0,
//! where its frames are read. A connection is one client 5-tuple; its
//! allocation ends when it closes.
//!
//! Limits, so that slow or hostile connections cannot hold memory:
//! * at most `max_connections` at once over all shards (a shared counter);
//! * the TLS handshake and the first complete frame must both be done
//!   within `setup_timeout` of the accept;
//! * without an allocation, `idle_timeout` of silence closes it;
//! * a frame larger than `max_frame` closes it; the read buffer never holds
//!   more than one frame plus one read;
//! * what the server writes goes through a bounded buffer per connection
//!   (a [`StreamConn`]): relayed data beyond its cap is dropped (it is
//!   datagram traffic, and a client that does not read must not make the
//!   server queue for it).
//!
//! The connection code is generic over the byte stream so TLS can wrap it.
//!
//! A connection that binds a TCP allocation's peer connection
//! (ConnectionBind, RFC 6062 §5.4) stops carrying frames after the answer:
//! from then on its bytes are spliced with the peer's, unframed, each read
//! counted by the core as the allocation's traffic and held back while its
//! byte rates are spent (a stream is slowed, never cut).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{debug, trace};

use super::shard::Shard;
use super::stream_conn::{Splice, StreamConn};
use crate::process::clock;
use crate::process::status::ConnectionCount;
use crate::process::tls::TlsCertificates;
use crate::proto::addr::{ClientAddr, ConnectionId, Transport};
use crate::proto::rate_table::RateTable;
use crate::proto::server::{SpliceDirection, SpliceVerdict, MAX_SPLICE_CHUNK};
use crate::proto::source::SourceKey;
use crate::proto::stream_framing::{self, FrameError};

/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 16 * 1024;

/// Connection limits, from `[limits]`.
#[derive(Clone, Debug)]
pub(super) struct StreamLimits {
    pub max_connections: usize,
    /// Connections one source address may hold open at once.
    pub max_per_source: usize,
    /// TLS handshakes one source address may start a second (twice that
    /// at once).
    pub handshakes_per_source: u64,
    pub setup_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_frame: usize,
}

/// What each source address holds of the stream listeners, which one
/// shard serves: its open connections (an entry only while it has one, so
/// the map is bounded by `max_connections`) and its TLS handshake budget
/// (a fixed table). One address cannot take every slot, nor keep the
/// shard busy with handshakes, without credentials.
pub(super) struct StreamSources {
    open: RefCell<HashMap<SourceKey, usize>>,
    handshakes: RefCell<RateTable>,
}

/// Slots of the handshake budget table.
const HANDSHAKE_SLOTS: usize = 1024;

impl StreamSources {
    pub(super) fn new(limits: &StreamLimits, seed: [u8; 32]) -> StreamSources {
        let rate = limits.handshakes_per_source;
        StreamSources {
            open: RefCell::new(HashMap::new()),
            handshakes: RefCell::new(RateTable::new(&seed, HANDSHAKE_SLOTS, rate, rate.saturating_mul(2))),
        }
    }

    fn may_handshake(&self, source: SourceKey) -> bool {
        self.handshakes
            .borrow_mut()
            .try_take(&source.octets(), 1, clock::mono())
    }
}

/// A source's place among the open connections, given back on drop.
struct SourceSlot {
    sources: Rc<StreamSources>,
    source: SourceKey,
}

impl SourceSlot {
    /// A place for one more connection from `source`, if it has fewer
    /// than `max` open.
    fn take(sources: &Rc<StreamSources>, source: SourceKey, max: usize) -> Option<SourceSlot> {
        let mut open = sources.open.borrow_mut();
        let n = open.entry(source).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: sources.clone(),
            source,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.open.borrow_mut();
        if let Some(n) = open.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// How reading a connection's frames ended.
enum ReadEnd {
    Closed(&'static str),
    /// ConnectionBind succeeded; these bytes followed it and belong to the
    /// peer.
    Spliced(Vec<u8>),
}

/// Decrements the shared connection count when a connection ends, however
/// it ends.
struct Slot(ConnectionCount);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a listener speaks.
#[derive(Clone)]
pub(super) enum Security {
    Plain,
    Tls(Arc<TlsCertificates>),
}

pub(super) async fn accept_loop(
    shard: Rc<Shard>,
    listener: TcpListener,
    local: SocketAddr,
    security: Security,
    limits: Rc<StreamLimits>,
    sources: Rc<StreamSources>,
    count: ConnectionCount,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                debug!(%local, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = Slot(count.clone());
        if count.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            debug!(%local, %remote, "connection limit reached; closing");
            drop((stream, slot));
            continue;
        }
        let source_key = SourceKey::from(remote.ip());
        let Some(source) = SourceSlot::take(&sources, source_key, limits.max_per_source) else {
            debug!(%local, %remote, "connection limit of the source reached; closing");
            drop((stream, slot));
            continue;
        };
        if matches!(security, Security::Tls(_)) && !sources.may_handshake(source_key) {
            debug!(%local, %remote, "TLS handshake rate of the source reached; closing");
            drop((stream, slot, source));
            continue;
        }
        let slot = (slot, source);
        let _ = stream.set_nodelay(true);
        let setup_deadline = tokio::time::Instant::now() + limits.setup_timeout;
        let (shard, limits) = (shard.clone(), limits.clone());
        match &security {
            Security::Plain => {
                let client = ClientAddr {
                    transport: Transport::Tcp,
                    local,
                    remote,
                };
                tokio::task::spawn_local(serve(shard, stream, client, limits, setup_deadline, slot));
            }
            Security::Tls(certificates) => {
                let client = ClientAddr {
                    transport: Transport::Tls,
                    local,
                    remote,
                };
                let acceptor = certificates.acceptor();
                tokio::task::spawn_local(async move {
                    match tokio::time::timeout_at(setup_deadline, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve(shard, tls, client, limits, setup_deadline, slot).await,
                        Ok(Err(e)) => debug!(%client, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%client, "TLS handshake not done in time"),
                    }
                });
            }
        }
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin + 'static>(
    shard: Rc<Shard>,
    stream: S,
    client: ClientAddr,
    limits: Rc<StreamLimits>,
    setup_deadline: tokio::time::Instant,
    _slot: (Slot, SourceSlot),
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let conn = Rc::new(StreamConn {
        out: RefCell::new(Vec::new()),
        wake: Notify::new(),
        closed: Cell::new(false),
        splice: RefCell::new(None),
    });
    shard.add_stream(client, conn.clone());
    trace!(%client, "connection open");
    // Dropping the writer future when reading ends is safe: a data
    // connection only switches to splicing right after handling its
    // ConnectionBind, whose answer is still queued in `conn.out` (the
    // writer has not been polled since); it is flushed below.
    let end = tokio::select! {
        end = read_frames(&shard, &mut reader, client, &limits, setup_deadline, &conn) => end,
        why = write_frames(&conn, &mut writer, client.transport == Transport::Tls) => ReadEnd::Closed(why),
    };
    let why = match end {
        ReadEnd::Closed(why) => why,
        ReadEnd::Spliced(leftover) => {
            let queued = std::mem::take(&mut *conn.out.borrow_mut());
            let splice = conn.splice.borrow_mut().take();
            match splice {
                Some(splice) if writer.write_all(&queued).await.is_ok() && writer.flush().await.is_ok() => {
                    splice_streams(&shard, reader.unsplit(writer), splice, leftover).await
                }
                _ => "write error",
            }
        }
    };
    debug!(%client, why, "connection closed");
    conn.closed.set(true);
    shard.remove_stream(client);
}

/// Copies bytes both ways between a data connection and its peer
/// connection until both ends are done, either fails, or the core closes
/// the pair. Every read is reported to the core before it is written on
/// (see [`pump`]).
async fn splice_streams<S: AsyncRead + AsyncWrite + Unpin>(
    shard: &Shard,
    data: S,
    splice: Splice,
    leftover: Vec<u8>,
) -> &'static str {
    let Splice { id, mut peer, close } = splice;
    let (mut data_in, mut data_out) = tokio::io::split(data);
    let (mut peer_in, mut peer_out) = peer.split();
    // What followed the ConnectionBind in the same read goes first.
    let to_peer = pump(
        shard,
        id,
        SpliceDirection::ToPeer,
        &leftover,
        &mut data_in,
        &mut peer_out,
    );
    let to_client = pump(shard, id, SpliceDirection::ToClient, &[], &mut peer_in, &mut data_out);
    tokio::select! {
        result = async { tokio::try_join!(to_peer, to_client) } => match result {
            Ok(_) => "splice ended",
            Err(why) => why,
        },
        _ = close.notified() => "peer connection closed",
    }
}

/// One direction of a splice: `first`, then whatever `from` yields, in
/// reads of at most [`MAX_SPLICE_CHUNK`]. The core counts each read and
/// may hold it back for the byte rates; meanwhile nothing more is read
/// from that side, so TCP's flow control slows its sender instead of the
/// relay dropping bytes. At the end of `from`, `to` is shut down (the
/// half-close crosses the splice) and the other direction goes on.
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    shard: &Shard,
    id: ConnectionId,
    direction: SpliceDirection,
    first: &[u8],
    from: &mut R,
    to: &mut W,
) -> Result<(), &'static str> {
    for chunk in first.chunks(MAX_SPLICE_CHUNK) {
        forward(shard, id, direction, chunk, to).await?;
    }
    let mut buf = vec![0u8; MAX_SPLICE_CHUNK];
    loop {
        let n = from.read(&mut buf).await.map_err(|_| "splice read error")?;
        if n == 0 {
            // The other side may have gone already; its end is reported
            // by its own direction.
            let _ = to.shutdown().await;
            return Ok(());
        }
        forward(shard, id, direction, &buf[..n], to).await?;
    }
}

/// Writes `bytes` on once the core has counted them.
async fn forward<W: AsyncWrite + Unpin>(
    shard: &Shard,
    id: ConnectionId,
    direction: SpliceDirection,
    bytes: &[u8],
    to: &mut W,
) -> Result<(), &'static str> {
    loop {
        match shard.spliced_bytes(id, direction, bytes.len()) {
            SpliceVerdict::Forward => break,
            SpliceVerdict::WaitUntil(at) => tokio::time::sleep_until(at.into()).await,
            SpliceVerdict::Close => return Err("peer connection closed"),
        }
    }
    to.write_all(bytes).await.map_err(|_| "splice write error")?;
    // TLS holds what it encrypts until flushed.
    to.flush().await.map_err(|_| "splice write error")
}

async fn read_frames<R: AsyncRead + Unpin>(
    shard: &Rc<Shard>,
    reader: &mut R,
    client: ClientAddr,
    limits: &StreamLimits,
    setup_deadline: tokio::time::Instant,
    conn: &StreamConn,
) -> ReadEnd {
    let mut buf: Vec<u8> = Vec::new();
    let mut established = false;
    loop {
        // Handle every complete frame already buffered.
        let mut start = 0;
        loop {
            match stream_framing::frame_len(&buf[start..], limits.max_frame) {
                Ok(Some(len)) => {
                    let frame = &buf[start..start + len];
                    // Only a well-formed message ends the setup phase, so
                    // junk of the right shape cannot buy the longer timeout.
                    established = established || stream_framing::is_well_formed(frame);
                    shard.handle_client_packet(client, frame);
                    start += len;
                    if conn.splice.borrow().is_some() {
                        return ReadEnd::Spliced(buf[start..].to_vec());
                    }
                }
                Ok(None) => break,
                Err(FrameError::NotTurn) => return ReadEnd::Closed("not STUN or ChannelData"),
                Err(FrameError::TooLarge(_)) => return ReadEnd::Closed("frame too large"),
            }
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

/// Writes what the shard queued. Over TLS every frame is written on its
/// own, so it gets its own TLS record: clients that read one message per
/// record (coturn's `turnutils_uclient` is one) would otherwise lose the
/// frames after the first in a record. Plain TCP writes a batch at once.
async fn write_frames<W: AsyncWrite + Unpin>(
    conn: &StreamConn,
    writer: &mut W,
    record_per_frame: bool,
) -> &'static str {
    // Two buffers swap roles so writing never allocates once they have
    // grown: the shard fills `out` while this task writes `pending`.
    let mut pending = Vec::new();
    loop {
        conn.wake.notified().await;
        loop {
            std::mem::swap(&mut pending, &mut *conn.out.borrow_mut());
            if pending.is_empty() {
                break;
            }
            let mut rest = &pending[..];
            while !rest.is_empty() {
                // `out` only ever holds whole frames (StreamConn::send).
                let len = match stream_framing::frame_len(rest, stream_framing::MAX_FRAME) {
                    Ok(Some(len)) if record_per_frame => len,
                    _ => rest.len(),
                };
                if writer.write_all(&rest[..len]).await.is_err() {
                    return "write error";
                }
                rest = &rest[len..];
            }
            // TLS buffers what it encrypts: flush so frames leave now.
            if writer.flush().await.is_err() {
                return "write error";
            }
            pending.clear();
        }
    }
}
