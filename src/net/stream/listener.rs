//! Accepting and serving TCP and TLS connections: one task per
//! connection, on the shard that accepted it (or the shard it was
//! transferred to).
//!
//! Every shard has an `SO_REUSEPORT` sibling of each TCP and TLS listener
//! (see [`crate::net`]) and its own [`accept_loop`]: the kernel spreads
//! connections. A connection takes its places in the limits
//! (`admission`), reads a PROXY header if its source is a trusted proxy
//! ([`ProxyProtocol::accept`], before TLS and framing: the client it names
//! is the connection's remote address from then on; two connections
//! naming one 5-tuple are one too many), does its TLS handshake, and is
//! [`serve`]d: its frames read and written (`frames`) until it closes,
//! binds a peer connection (then its bytes are spliced, `splice`), or
//! turns out to be the data connection of another shard's peer connection
//! (then it is transferred there, `transfer`, and that shard's
//! [`serve_transferred`] serves it from the frame that names it on).
//!
//! On a TLS listener shared with HTTP, one step between the handshake and
//! [`serve`] keeps the connection here as TURN or hands it to the HTTP
//! thread (`shared_port`).
//!
//! Invariants:
//! * a connection is registered with the shard under its client 5-tuple
//!   for as long as it is served there, and its allocation ends when it
//!   closes;
//! * a transferred connection is served with no [`ConnectionTransfer`]: a
//!   connection moves once at most;
//! * the connection code is generic over the byte stream, so TLS wraps
//!   the same code as plain TCP.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tracing::debug;

use super::admission::{admit_source, Slot, StreamLimits, StreamSlot, StreamSources};
use super::conn::StreamConn;
use super::frames::{read_frames, write_frames, write_rest, Pending, ReadEnd, ReadState};
use super::movable::{AnyStream, HomedTcp, Movable};
use super::shared_port;
use super::splice::splice_streams;
use super::transfer::{ConnectionTransfer, TransferredConnection};
use crate::net::shard::Shard;
use crate::process::http_handover::HttpHandover;
use crate::process::proxy_protocol::ProxyProtocol;
use crate::process::status::ConnectionCount;
use crate::process::tls::TlsCertificates;
use crate::proto::addr::{ClientAddr, Transport};

/// What a listener speaks.
#[derive(Clone)]
pub(in crate::net) enum Security {
    Plain,
    /// TLS; with an [`HttpHandover`] the port is shared with HTTP
    /// (`shared_port`).
    Tls(Arc<TlsCertificates>, Option<HttpHandover>),
}

/// What the accept loops of every shard share.
#[derive(Clone)]
pub(in crate::net) struct StreamsShared {
    pub(in crate::net) sources: Arc<StreamSources>,
    /// Open connections, against `max_connections`.
    pub(in crate::net) count: ConnectionCount,
    pub(in crate::net) transfer: Arc<ConnectionTransfer>,
    /// The PROXY protocol step, with its trusted sources.
    pub(in crate::net) proxy: Arc<ProxyProtocol>,
}

/// A connection as its shard serves it.
struct Accepted<S> {
    stream: S,
    client: ClientAddr,
    /// Read already and not handled yet (by the shard it was transferred
    /// from).
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
/// `transfer::transfer_target`).
pub(in crate::net) async fn accept_loop(
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
        transfer,
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
        // When it was accepted: its setup deadline counts from here, and
        // so does the HTTP thread's, if it is handed there.
        let accepted_at = tokio::time::Instant::now();
        let setup_deadline = accepted_at + limits.setup_timeout;
        let (shard, limits, transfer) = (shard.clone(), limits.clone(), Some(transfer.clone()));
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
            let slot = StreamSlot::new(slot, source);
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
                    serve(shard, limits, transfer, accepted).await;
                }
                Security::Tls(certificates, http) => {
                    let handshake = certificates.accept(stream, http.is_some());
                    match tokio::time::timeout_at(setup_deadline, handshake).await {
                        Ok(Ok(Some(stream))) => {
                            // A port shared with HTTP: TURN stays, with what
                            // was read to tell; HTTP leaves for its thread.
                            let (stream, buffered) = match http {
                                None => (stream, Vec::new()),
                                Some(http) => {
                                    match shared_port::dispatch(stream, client, (accepted_at, setup_deadline), http)
                                        .await
                                    {
                                        Some(turn) => turn,
                                        None => return,
                                    }
                                }
                            };
                            let accepted = Accepted {
                                stream,
                                client,
                                buffered,
                                setup_deadline,
                                slot,
                            };
                            serve(shard, limits, transfer, accepted).await;
                        }
                        // The CA's TLS-ALPN-01 validation, answered.
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) => debug!(%client, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%client, "TLS handshake not done in time"),
                    }
                }
            }
        });
    }
}

/// Serves the connections other shards hand to this one (see
/// `transfer`), each as if this shard had accepted it.
pub(in crate::net) async fn serve_transferred(
    shard: Rc<Shard>,
    mut inbox: mpsc::Receiver<TransferredConnection>,
    limits: Rc<StreamLimits>,
) {
    while let Some(handed) = inbox.recv().await {
        let TransferredConnection {
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
        // Served with no transfer: a connection moves once at most.
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

async fn serve<S: AsyncRead + AsyncWrite + Movable + Unpin + 'static>(
    shard: Rc<Shard>,
    limits: Rc<StreamLimits>,
    transfer: Option<Arc<ConnectionTransfer>>,
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
    // below before the splice or the transfer.
    let mut pending = Pending::default();
    let reading = ReadState {
        shard: &shard,
        client,
        limits: &limits,
        setup_deadline,
        conn: &conn,
        transfer: transfer.as_deref(),
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
        ReadEnd::Transfer { to, buffered } => {
            // This shard's core holds nothing of the connection (no
            // allocation, no splice: see `transfer_target`), so forgetting
            // it here closes nothing but this shard's entry.
            conn.closed.set(true);
            shard.remove_stream(client);
            if !write_rest(&conn, &mut writer, &pending).await {
                debug!(%client, "connection closed: write error before its hand-off");
                return;
            }
            let handed = match reader.unsplit(writer).detach() {
                Ok(stream) => TransferredConnection {
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
            match transfer.as_deref().map(|h| h.send(to, handed)) {
                Some(Ok(())) => {
                    debug!(%client, from = here.0, to = to.0, "connection handed to the shard of its peer connection")
                }
                Some(Err(e)) => {
                    let dropped = transfer.as_deref().map_or(0, |h| h.dropped.load(Ordering::Relaxed));
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
