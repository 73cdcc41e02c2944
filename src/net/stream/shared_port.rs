//! One TLS port for TURN and HTTPS (`signaling.share_tls_port`): after the
//! TLS handshake, a connection of a shared `listen.tls` listener is either
//! served as TURN on the shard that accepted it, or handed to the HTTP
//! thread, which serves it as a connection of `listen.http` (signaling,
//! the demo page, `/ice-servers`, `/metrics`, health). For networks that
//! let only HTTPS out: `turns:host:443`, `https://host/` and
//! `wss://host/ws` on one port.
//!
//! The service is told by the negotiated ALPN protocol (RFC 7301; the port
//! advertises `stun.turn` of RFC 7443 and `http/1.1`) or, with none, by the
//! first application bytes ([`crate::proto::first_bytes`]). Reading them
//! is bounded: by `first_bytes::DECIDE_WITHIN` (8) bytes the answer is
//! known, and they must arrive within the connection's setup deadline
//! (`limits.connection_setup_timeout` from the accept, the one that also
//! bounds the handshake), or the connection is closed. The bytes read go
//! with the connection, to whichever side serves it, and are read there
//! first.
//!
//! Why the shards accept and the HTTP thread receives, and not the other
//! way round: on a TURN server's 443 the TURN connections are the many and
//! the busy ones. Accepting on the shards keeps their path exactly that of
//! a `turns:` listener that is not shared (the `SO_REUSEPORT` siblings,
//! the stream limits, the handshake budget, handshakes spread over every
//! core, no transfer for TURN), and only the few HTTP connections (a page
//! load, one WebSocket per peer) are handed over to another thread, once,
//! the way `transfer` moves a TLS connection: its socket is detached from
//! the shard's reactor and the whole `tokio_rustls` stream,
//! session included, is sent over a bounded queue
//! ([`crate::process::http_handover`]) to be attached on the HTTP thread's
//! reactor. Accepting on the HTTP thread would put every TURN handshake on
//! one thread and send every TURN connection across.
//!
//! Invariants:
//! * a connection is classified once, right after its handshake, and is
//!   never re-classified: TURN stays TURN, HTTP stays HTTP;
//! * an HTTP connection gives its places in the stream limits back when it
//!   leaves the shard (it is counted by the HTTP side's table from then
//!   on); a TURN one keeps them;
//! * nothing is classified twice or read beyond what is needed: with ALPN
//!   nothing is read here at all.
//!
//! Counted in [`SharedPortCounts`](crate::process::http_handover::SharedPortCounts)
//! (`/metrics`: `turnpike_shared_tls_port_connections_total{to=…}`).

use std::io;
use std::sync::atomic::Ordering;

use tokio::io::AsyncReadExt;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use super::movable::HomedTcp;
use super::prefixed::Prefixed;
use crate::process::http_handover::{HandedConnection, HandedHttp, HttpHandover};
use crate::proto::addr::ClientAddr;
use crate::proto::first_bytes::{self, Peek, Service};

/// Bytes asked of the kernel per read of the first bytes. Whatever more
/// arrives goes with the connection.
const PEEK_CHUNK: usize = 4096;

/// A TLS connection of a shared port, as the shard serves it.
type Tls = TlsStream<HomedTcp>;

/// Classifies a shared port's connection after its handshake: a TURN
/// connection comes back with the bytes read from it; an HTTP one is
/// handed to the HTTP thread, and anything else closed (`None` for both).
/// `accepted` is when the shard accepted it (the HTTP thread's deadline
/// counts from then), `deadline` its setup deadline.
pub(super) async fn dispatch(
    mut stream: Tls,
    client: ClientAddr,
    (accepted, deadline): (tokio::time::Instant, tokio::time::Instant),
    http: &HttpHandover,
) -> Option<(Tls, Vec<u8>)> {
    let negotiated = stream.get_ref().1.alpn_protocol().map(first_bytes::by_alpn);
    let mut read = Vec::new();
    let service = match negotiated {
        Some(service) => service,
        None => first_service(&mut stream, &mut read, deadline)
            .await
            .unwrap_or(Service::Unknown),
    };
    let by = if negotiated.is_some() { "alpn" } else { "first bytes" };
    debug!(%client, ?service, by, "shared TLS port");
    match service {
        Service::Turn => {
            http.counts.turn.fetch_add(1, Ordering::Relaxed);
            Some((stream, read))
        }
        Service::Http => {
            hand_to_http(stream, read, client, accepted, http);
            None
        }
        Service::Unknown => {
            http.counts.closed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Reads until [`first_bytes::by_first_bytes`] decides, into `read`;
/// `None` if the connection ends, fails or says nothing decisive before
/// `deadline`.
async fn first_service(stream: &mut Tls, read: &mut Vec<u8>, deadline: tokio::time::Instant) -> Option<Service> {
    loop {
        if let Peek::Decided(service) = first_bytes::by_first_bytes(read) {
            return Some(service);
        }
        read.reserve(PEEK_CHUNK);
        match tokio::time::timeout_at(deadline, stream.read_buf(read)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    }
}

fn hand_to_http(
    mut stream: Tls,
    read: Vec<u8>,
    client: ClientAddr,
    accepted: tokio::time::Instant,
    http: &HttpHandover,
) {
    if let Err(e) = stream.get_mut().0.detach() {
        http.counts.closed.fetch_add(1, Ordering::Relaxed);
        return debug!(%client, error = %e, "connection lost in its hand-off to HTTP");
    }
    let handed = HandedHttp {
        stream: Box::new(Prefixed::new(read, stream)),
        remote: client.remote,
        local: client.local,
        accepted: accepted.into_std(),
    };
    if let Err(e) = http.send(handed) {
        debug!(%client, error = %e, "HTTP connection of the shared TLS port closed");
    }
}

impl HandedConnection for Prefixed<Tls> {
    fn attach(&mut self) -> io::Result<()> {
        self.inner.get_mut().0.attach()
    }
}
