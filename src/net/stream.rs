//! STUN/TURN over TCP and TLS (RFC 8489 §6.2.2, RFC 8656 §3.1): one task
//! per connection, on the shard that accepted it.
//!
//! Every shard has an `SO_REUSEPORT` sibling of each TCP and TLS listener
//! (see [`super`]) and its own accept loop: the kernel spreads
//! connections, and a connection, its allocation and its TCP relay live on
//! the shard that accepted it, where its frames are read. A connection is
//! one client 5-tuple; its allocation ends when it closes.
//!
//! The exception is an RFC 6062 data connection: its ConnectionBind names
//! a peer connection by an id that carries the shard of the core holding
//! it. Before a frame is handled, [`handoff_target`] looks whether it is
//! a ConnectionBind for another running shard on a connection with no
//! allocation here; if so the connection (after writing the answers to its
//! earlier frames) is sent to that shard with the bytes not yet handled,
//! and served there from that frame on (see [`super::stream_handoff`]). A
//! connection is handed on once at most, so a made-up id costs a client
//! one move of its own connection, nothing more.
//!
//! Limits, so that slow or hostile connections cannot hold memory:
//! * at most `max_connections` at once over all shards (a shared counter),
//!   and at most `max_per_source` per source address over all shards (one
//!   shared table, [`StreamSources`]); a handed connection keeps its places
//!   ([`StreamSlot`]), so it is counted once wherever it is served;
//! * TLS handshakes per source are budgeted over all shards (the same
//!   table);
//! * a connection from a source of `listen.proxy_protocol_from` must start
//!   with a PROXY header within `setup_timeout`; the client it names is
//!   the connection's remote address, and its per-source places and
//!   handshake budget are taken under that client once the header is read
//!   (the proxy is no source of its own). A PROXY header from any other
//!   source closes the connection ([`ProxyProtocol::accept`], before TLS
//!   and framing); two connections naming one 5-tuple are one too many;
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
//! On a TLS listener shared with HTTP, one step between the handshake and
//! [`serve`] keeps the connection here as TURN or hands it to the HTTP
//! thread ([`super::shared_port`]).
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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tracing::debug;

use super::shard::Shard;
use super::shared_port;
use super::stream_conn::{Splice, StreamConn};
use super::stream_handoff::{AnyStream, HandedStream, Handoffs, HomedTcp, Movable};
use crate::process::clock;
use crate::process::http_handoff::HttpHandoff;
use crate::process::proxy_protocol::ProxyProtocol;
use crate::process::status::ConnectionCount;
use crate::process::tls::TlsCertificates;
use crate::proto::addr::{ClientAddr, ConnectionId, ShardId, Transport};
use crate::proto::rate_table::RateTable;
use crate::proto::server::{connection_bind_shard, SpliceDirection, SpliceVerdict, MAX_SPLICE_CHUNK};
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

/// What each source address holds of the stream listeners of every
/// shard: its open connections (an entry only while it has one, so the
/// map is bounded by `max_connections`) and its TLS handshake budget (a
/// fixed table). One address cannot take every slot, nor keep the shards
/// busy with handshakes, without credentials.
///
/// One table for the process, shared by the shards' accept loops: the
/// limits are per source, not per source and shard. It is locked at
/// accept and when a connection ends, never per frame, and no other lock
/// is taken while it is held.
pub(super) struct StreamSources {
    open: Mutex<HashMap<SourceKey, usize>>,
    handshakes: Mutex<RateTable>,
}

/// Slots of the handshake budget table.
const HANDSHAKE_SLOTS: usize = 1024;

impl StreamSources {
    pub(super) fn new(limits: &StreamLimits, seed: [u8; 32]) -> StreamSources {
        let rate = limits.handshakes_per_source;
        StreamSources {
            open: Mutex::new(HashMap::new()),
            handshakes: Mutex::new(RateTable::new(&seed, HANDSHAKE_SLOTS, rate, rate.saturating_mul(2))),
        }
    }

    fn may_handshake(&self, source: SourceKey) -> bool {
        self.handshakes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_take(&source.octets(), 1, clock::mono())
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<SourceKey, usize>> {
        // The map is written whole under the lock: a panic elsewhere
        // cannot leave it half changed.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A source's place among the open connections, given back on drop.
struct SourceSlot {
    sources: Arc<StreamSources>,
    source: SourceKey,
}

impl SourceSlot {
    /// A place for one more connection from `source`, if it has fewer
    /// than `max` open.
    fn take(sources: &Arc<StreamSources>, source: SourceKey, max: usize) -> Option<SourceSlot> {
        let mut open = sources.open();
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
        let mut open = self.sources.open();
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
    /// The next frame binds a peer connection of shard `to`: the
    /// connection goes there with these bytes, that frame first.
    HandOff {
        to: ShardId,
        buffered: Vec<u8>,
    },
}

/// Decrements the shared connection count when a connection ends, however
/// it ends.
struct Slot(ConnectionCount);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's places in the process-wide limits (the connection count
/// and its source's share), given back when it ends, on whichever shard.
pub(super) struct StreamSlot {
    _count: Slot,
    _source: SourceSlot,
}

/// What a listener speaks.
#[derive(Clone)]
pub(super) enum Security {
    Plain,
    /// TLS; with an [`HttpHandoff`] the port is shared with HTTP
    /// ([`super::shared_port`]).
    Tls(Arc<TlsCertificates>, Option<HttpHandoff>),
}

/// What the accept loops of every shard share.
#[derive(Clone)]
pub(super) struct StreamsShared {
    pub(super) sources: Arc<StreamSources>,
    /// Open connections, against `max_connections`.
    pub(super) count: ConnectionCount,
    pub(super) handoffs: Arc<Handoffs>,
    /// The PROXY protocol step, with its trusted sources.
    pub(super) proxy: Arc<ProxyProtocol>,
}

/// A connection as its shard serves it.
struct Accepted<S> {
    stream: S,
    client: ClientAddr,
    /// Read already and not handled yet (by the shard it was handed from).
    buffered: Vec<u8>,
    setup_deadline: tokio::time::Instant,
    slot: StreamSlot,
}

impl<S> Accepted<S> {
    /// A connection this shard accepted, nothing of it read yet.
    fn fresh(stream: S, client: ClientAddr, setup_deadline: tokio::time::Instant, slot: StreamSlot) -> Accepted<S> {
        Accepted {
            stream,
            client,
            buffered: Vec::new(),
            setup_deadline,
            slot,
        }
    }
}

/// Accepts connections on one shard's `SO_REUSEPORT` sibling of a TCP or
/// TLS listener and serves each on this shard, unless it turns out to be
/// the data connection of another shard's peer connection (see
/// [`handoff_target`]).
pub(super) async fn accept_loop(
    shard: Rc<Shard>,
    listener: TcpListener,
    local: SocketAddr,
    security: Security,
    limits: Rc<StreamLimits>,
    shared: StreamsShared,
) {
    let StreamsShared {
        sources,
        count,
        handoffs,
        proxy,
    } = shared;
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
        let tls = matches!(security, Security::Tls(..));
        // A trusted proxy is no source of its own: its connections take
        // their places under the client its header names, once read.
        let early = match proxy.trusts(remote.ip()) {
            true => None,
            false => match admit_source(&sources, &limits, tls, local, remote) {
                Some(source) => Some(source),
                None => {
                    drop((stream, slot));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let setup_deadline = tokio::time::Instant::now() + limits.setup_timeout;
        let (shard, limits, handoffs) = (shard.clone(), limits.clone(), Some(handoffs.clone()));
        let (sources, proxy, security) = (sources.clone(), proxy.clone(), security.clone());
        tokio::task::spawn_local(async move {
            let mut stream = stream;
            // Before TLS and framing: nothing past the header is read.
            let remote = match proxy.accept(&mut stream, remote, setup_deadline).await {
                Ok(client) => client,
                Err(e) => return debug!(%local, %remote, error = %e, "connection refused (PROXY protocol)"),
            };
            let Some(source) = early.or_else(|| admit_source(&sources, &limits, tls, local, remote)) else {
                return;
            };
            let slot = StreamSlot {
                _count: slot,
                _source: source,
            };
            let transport = match security {
                Security::Plain => Transport::Tcp,
                Security::Tls(..) => Transport::Tls,
            };
            let client = ClientAddr {
                transport,
                local,
                remote,
            };
            let stream = HomedTcp::Here(stream);
            match &security {
                Security::Plain => {
                    let accepted = Accepted::fresh(stream, client, setup_deadline, slot);
                    serve(shard, limits, handoffs, accepted).await;
                }
                Security::Tls(certificates, http) => {
                    let acceptor = match http {
                        Some(_) => certificates.shared_acceptor(),
                        None => certificates.acceptor(),
                    };
                    match tokio::time::timeout_at(setup_deadline, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            // A port shared with HTTP: TURN stays, with what
                            // was read to tell; HTTP leaves for its thread.
                            let (stream, buffered) = match http {
                                None => (stream, Vec::new()),
                                Some(http) => match shared_port::dispatch(stream, client, setup_deadline, http).await {
                                    Some(turn) => turn,
                                    None => return,
                                },
                            };
                            let accepted = Accepted {
                                stream,
                                client,
                                buffered,
                                setup_deadline,
                                slot,
                            };
                            serve(shard, limits, handoffs, accepted).await;
                        }
                        Ok(Err(e)) => debug!(%client, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%client, "TLS handshake not done in time"),
                    }
                }
            }
        });
    }
}

/// `remote`'s place among the open connections and, on a TLS listener,
/// a handshake of its budget; `None` (logged) if it has used them up.
fn admit_source(
    sources: &Arc<StreamSources>,
    limits: &StreamLimits,
    tls: bool,
    local: SocketAddr,
    remote: SocketAddr,
) -> Option<SourceSlot> {
    let source_key = SourceKey::from(remote.ip());
    let Some(source) = SourceSlot::take(sources, source_key, limits.max_per_source) else {
        debug!(%local, %remote, "connection limit of the source reached; closing");
        return None;
    };
    if tls && !sources.may_handshake(source_key) {
        debug!(%local, %remote, "TLS handshake rate of the source reached; closing");
        return None;
    }
    Some(source)
}

/// Serves the connections other shards hand to this one (see
/// [`super::stream_handoff`]), each as if this shard had accepted it.
pub(super) async fn inbox_loop(shard: Rc<Shard>, mut inbox: mpsc::Receiver<HandedStream>, limits: Rc<StreamLimits>) {
    while let Some(handed) = inbox.recv().await {
        let HandedStream {
            mut stream,
            client,
            buffered,
            setup_deadline,
            slot,
        } = handed;
        if let Err(e) = stream.attach() {
            debug!(%client, error = %e, "handed connection lost");
            continue;
        }
        let (shard, limits) = (shard.clone(), limits.clone());
        // Served with no hand-offs: a connection moves once at most.
        match stream {
            AnyStream::Plain(stream) => {
                let accepted = Accepted {
                    stream,
                    client,
                    buffered,
                    setup_deadline,
                    slot,
                };
                tokio::task::spawn_local(serve(shard, limits, None, accepted));
            }
            AnyStream::Tls(stream) => {
                let accepted = Accepted {
                    stream: *stream,
                    client,
                    buffered,
                    setup_deadline,
                    slot,
                };
                tokio::task::spawn_local(serve(shard, limits, None, accepted));
            }
        }
    }
}

/// The shard a frame's connection must be handed to, if any: `frame` is
/// a ConnectionBind for a peer connection of shard `to`
/// ([`connection_bind_shard`]), `to` is not `here` but one of the
/// `shards` that run, and the connection has no allocation here (a
/// control connection sending ConnectionBind is the core's to refuse,
/// with 400). Otherwise the frame is handled here, which answers an id
/// of no running shard as any unknown id.
/// Costs two compared bytes for any frame but a ConnectionBind (it is
/// asked of every frame, ChannelData included), and `has_allocation` is
/// only asked of those.
fn handoff_target(
    frame: &[u8],
    here: ShardId,
    shards: &Handoffs,
    has_allocation: impl FnOnce() -> bool,
) -> Option<ShardId> {
    let to = connection_bind_shard(frame)?;
    (to != here && shards.runs(to) && !has_allocation()).then_some(to)
}

async fn serve<S: AsyncRead + AsyncWrite + Movable + Unpin + 'static>(
    shard: Rc<Shard>,
    limits: Rc<StreamLimits>,
    handoffs: Option<Arc<Handoffs>>,
    accepted: Accepted<S>,
) {
    let Accepted {
        stream,
        client,
        buffered,
        setup_deadline,
        slot,
    } = accepted;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let conn = Rc::new(StreamConn {
        out: RefCell::new(Vec::new()),
        wake: Notify::new(),
        closed: Cell::new(false),
        splice: RefCell::new(None),
    });
    if !shard.add_stream(client, conn.clone()) {
        return debug!(%client, "connection refused: its 5-tuple is served already (a PROXY header named it twice)");
    }
    let here = shard.id();
    debug!(%client, shard = here.0, "connection open");
    // Dropping the writer future when reading ends loses nothing: what it
    // was writing is in `pending`, and answers queued since (the
    // ConnectionBind's, before a splice) in `conn.out`; both are written
    // below before the splice or the hand-off.
    let mut pending = Pending::default();
    let reading = ReadState {
        shard: &shard,
        client,
        limits: &limits,
        setup_deadline,
        conn: &conn,
        handoffs: handoffs.as_deref(),
    };
    let end = tokio::select! {
        end = read_frames(reading, &mut reader, buffered) => end,
        why = write_frames(&conn, &mut writer, client.transport == Transport::Tls, &mut pending) => ReadEnd::Closed(why),
    };
    let why = match end {
        ReadEnd::Closed(why) => why,
        ReadEnd::Spliced(leftover) => {
            let splice = conn.splice.borrow_mut().take();
            match splice {
                Some(splice) if write_rest(&conn, &mut writer, &pending).await => {
                    splice_streams(&shard, reader.unsplit(writer), splice, leftover).await
                }
                _ => "write error",
            }
        }
        ReadEnd::HandOff { to, buffered } => {
            // This shard's core holds nothing of the connection (no
            // allocation, no splice: see `handoff_target`), so forgetting
            // it here closes nothing but this shard's entry.
            conn.closed.set(true);
            shard.remove_stream(client);
            if !write_rest(&conn, &mut writer, &pending).await {
                debug!(%client, "connection closed: write error before its hand-off");
                return;
            }
            let handed = match reader.unsplit(writer).detach() {
                Ok(stream) => HandedStream {
                    stream,
                    client,
                    buffered,
                    setup_deadline,
                    slot,
                },
                Err(e) => {
                    debug!(%client, error = %e, "connection lost in its hand-off");
                    return;
                }
            };
            match handoffs.as_deref().map(|h| h.send(to, handed)) {
                Some(Ok(())) => {
                    debug!(%client, from = here.0, to = to.0, "connection handed to the shard of its peer connection")
                }
                Some(Err(e)) => {
                    let dropped = handoffs.as_deref().map_or(0, |h| h.dropped.load(Ordering::Relaxed));
                    debug!(%client, error = %e, dropped, "connection closed: not handed on");
                }
                None => debug!(%client, "connection closed: not handed on"),
            }
            return;
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

/// What [`read_frames`] reads for.
struct ReadState<'a> {
    shard: &'a Rc<Shard>,
    client: ClientAddr,
    limits: &'a StreamLimits,
    setup_deadline: tokio::time::Instant,
    conn: &'a StreamConn,
    /// Where the connection may be handed on to; `None` once it was.
    handoffs: Option<&'a Handoffs>,
}

async fn read_frames<R: AsyncRead + Unpin>(state: ReadState<'_>, reader: &mut R, mut buf: Vec<u8>) -> ReadEnd {
    let ReadState {
        shard,
        client,
        limits,
        setup_deadline,
        conn,
        handoffs,
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
                        handoffs.and_then(|h| handoff_target(frame, here, h, || shard.has_allocation(client)))
                    {
                        break Some(ReadEnd::HandOff {
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
/// hand-off drops that future mid-write, the rest is still written, in
/// order, before anything else: a frame is never cut.
#[derive(Default)]
struct Pending {
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
async fn write_frames<W: AsyncWrite + Unpin>(
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
async fn write_rest<W: AsyncWrite + Unpin>(conn: &StreamConn, writer: &mut W, pending: &Pending) -> bool {
    let queued = std::mem::take(&mut *conn.out.borrow_mut());
    writer.write_all(pending.rest()).await.is_ok()
        && writer.write_all(&queued).await.is_ok()
        && writer.flush().await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::super::stream_handoff::{HandoffError, INBOX};
    use super::*;
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
        let (shards, _inboxes) = Handoffs::new(4);
        let frame = connection_bind(ConnectionId::new(ShardId(2), 9));
        assert_eq!(handoff_target(&frame, ShardId(0), &shards, || false), Some(ShardId(2)));
        assert_eq!(handoff_target(&frame, ShardId(3), &shards, || false), Some(ShardId(2)));
    }

    #[test]
    fn a_connection_bind_stays_on_its_own_shard_on_no_shard_and_on_a_control_connection() {
        let (shards, _inboxes) = Handoffs::new(4);
        let own = connection_bind(ConnectionId::new(ShardId(1), 9));
        assert_eq!(handoff_target(&own, ShardId(1), &shards, || false), None);
        // Shard 4 does not run: the accepting core answers, as for any
        // unknown id.
        let nowhere = connection_bind(ConnectionId::new(ShardId(4), 9));
        assert_eq!(handoff_target(&nowhere, ShardId(1), &shards, || false), None);
        // A connection with an allocation here is a control connection:
        // its core refuses the bind (400), and its allocation stays here.
        let other = connection_bind(ConnectionId::new(ShardId(3), 9));
        assert_eq!(handoff_target(&other, ShardId(1), &shards, || true), None);
    }

    #[test]
    fn other_frames_never_ask_about_the_allocation() {
        let (shards, _inboxes) = Handoffs::new(4);
        let channel_data = [0x40, 0x00, 0x00, 0x02, 0xaa, 0xbb, 0x00, 0x00];
        let asked = Cell::new(false);
        let has_allocation = || {
            asked.set(true);
            true
        };
        assert_eq!(handoff_target(&channel_data, ShardId(0), &shards, has_allocation), None);
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
    fn handed(sources: &Arc<StreamSources>, count: &ConnectionCount) -> HandedStream {
        let remote: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        count.fetch_add(1, Ordering::AcqRel);
        HandedStream {
            stream: AnyStream::Plain(HomedTcp::InFlight(None)),
            client: ClientAddr {
                transport: Transport::Tcp,
                local: "192.0.2.2:3478".parse().unwrap(),
                remote,
            },
            buffered: Vec::new(),
            setup_deadline: tokio::time::Instant::now(),
            slot: StreamSlot {
                _count: Slot(count.clone()),
                _source: SourceSlot::take(sources, SourceKey::from(remote.ip()), 1000).unwrap(),
            },
        }
    }

    #[test]
    fn a_full_inbox_refuses_and_counts_the_connection_which_gives_its_places_back() {
        let sources = Arc::new(StreamSources::new(&limits(), [1; 32]));
        let count = ConnectionCount::default();
        let (shards, mut inboxes) = Handoffs::new(2);
        for _ in 0..INBOX {
            shards.send(ShardId(1), handed(&sources, &count)).unwrap();
        }
        let full = shards.send(ShardId(1), handed(&sources, &count));
        assert!(matches!(full, Err(HandoffError::Full(1))), "{full:?}");
        assert_eq!(shards.dropped.load(Ordering::Relaxed), 1);
        // The refused one is closed and counted no more; the queued ones
        // still are, once each.
        let queued = INBOX;
        assert_eq!(count.load(Ordering::Acquire), queued);
        assert_eq!(sources.open().values().sum::<usize>(), queued);
        assert!(matches!(
            shards.send(ShardId(2), handed(&sources, &count)),
            Err(HandoffError::NoShard(2))
        ));
        // A shard gone: refused and counted, and what it held is given back.
        drop(inboxes.pop());
        assert!(matches!(
            shards.send(ShardId(1), handed(&sources, &count)),
            Err(HandoffError::Gone(1))
        ));
        assert_eq!(shards.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(count.load(Ordering::Acquire), 0);
        assert!(sources.open().is_empty());
        assert_eq!(shards.handed.load(Ordering::Relaxed), queued as u64);
    }
}
