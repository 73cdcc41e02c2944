//! STUN/TURN over TCP and TLS (RFC 8489 §6.2.2, RFC 8656 §3.1): one task
//! per connection, on the shard that accepted it.
//!
//! Each shard has its own `SO_REUSEPORT` sibling of every TCP listener, so
//! the kernel spreads connections over shards and a connection's allocation
//! lives where its frames are read. A connection is one client 5-tuple; its
//! allocation ends when it closes.
//!
//! Limits, so that slow or hostile connections cannot hold memory:
//! * at most `max_connections` at once over all shards (a shared counter);
//! * the TLS handshake and the first complete frame must both be done
//!   within `setup_timeout` of the accept;
//! * without an allocation, `idle_timeout` of silence closes it;
//! * a frame larger than `max_frame` closes it; the read buffer never holds
//!   more than one frame plus one read;
//! * what the server writes goes through a bounded buffer per connection:
//!   relayed data beyond [`OUT_CAP`] is dropped (it is datagram traffic, and
//!   a client that does not read must not make the server queue for it).
//!
//! The connection code is generic over the byte stream so TLS can wrap it.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{debug, trace};

use super::shard::Shard;
use super::tls::TlsCertificates;
use crate::proto::server::{ClientAddr, Transport};
use crate::proto::stream_framing::{self, FrameError};

/// Bytes a connection may have waiting to be written before more relayed
/// data for it is dropped.
pub(crate) const OUT_CAP: usize = 256 * 1024;
/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 16 * 1024;

/// Connection limits, from `[limits]`.
#[derive(Clone, Debug)]
pub(crate) struct StreamLimits {
    pub max_connections: usize,
    pub setup_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_frame: usize,
}

/// Open connections over all shards, checked against `max_connections`.
pub(crate) type ConnectionCount = Arc<AtomicUsize>;

/// The write side of a connection as the shard sees it.
pub(crate) struct StreamConn {
    out: RefCell<Vec<u8>>,
    wake: Notify,
    closed: Cell<bool>,
}

impl StreamConn {
    /// Queues `bytes` (one whole frame) for writing, or drops it if the
    /// connection's buffer is full or it is closing.
    pub(crate) fn send(&self, bytes: &[u8]) {
        let mut out = self.out.borrow_mut();
        if self.closed.get() || out.len() + bytes.len() > OUT_CAP {
            trace!(len = bytes.len(), "stream frame dropped: buffer full");
            return;
        }
        out.extend_from_slice(bytes);
        self.wake.notify_one();
    }
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
pub(crate) enum Security {
    Plain,
    Tls(Arc<TlsCertificates>),
}

pub(crate) async fn accept_loop(
    shard: Rc<Shard>,
    listener: TcpListener,
    local: SocketAddr,
    security: Security,
    limits: Rc<StreamLimits>,
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

async fn serve<S: AsyncRead + AsyncWrite + 'static>(
    shard: Rc<Shard>,
    stream: S,
    client: ClientAddr,
    limits: Rc<StreamLimits>,
    setup_deadline: tokio::time::Instant,
    _slot: Slot,
) {
    let (reader, writer) = tokio::io::split(stream);
    let conn = Rc::new(StreamConn {
        out: RefCell::new(Vec::new()),
        wake: Notify::new(),
        closed: Cell::new(false),
    });
    shard.add_stream(client, conn.clone());
    trace!(%client, "connection open");
    let why = tokio::select! {
        why = read_frames(&shard, reader, client, &limits, setup_deadline) => why,
        why = write_frames(&conn, writer, client.transport == Transport::Tls) => why,
    };
    debug!(%client, why, "connection closed");
    conn.closed.set(true);
    shard.remove_stream(client);
}

async fn read_frames<R: AsyncRead + Unpin>(
    shard: &Shard,
    mut reader: R,
    client: ClientAddr,
    limits: &StreamLimits,
    setup_deadline: tokio::time::Instant,
) -> &'static str {
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
                }
                Ok(None) => break,
                Err(FrameError::NotTurn) => return "not STUN or ChannelData",
                Err(FrameError::TooLarge(_)) => return "frame too large",
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
            Ok(Ok(0)) => return "closed by client",
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return "read error",
            Err(_) if !established => return "no complete message in time",
            // A connection with an allocation stays, however quiet: the
            // allocation's own lifetime bounds it.
            Err(_) if shard.has_allocation(client) => {}
            Err(_) => return "idle",
        }
    }
}

/// Writes what the shard queued. Over TLS every frame is written on its
/// own, so it gets its own TLS record: clients that read one message per
/// record (coturn's `turnutils_uclient` is one) would otherwise lose the
/// frames after the first in a record. Plain TCP writes a batch at once.
async fn write_frames<W: AsyncWrite + Unpin>(conn: &StreamConn, mut writer: W, record_per_frame: bool) -> &'static str {
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
