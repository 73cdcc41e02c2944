//! Moving a TCP or TLS connection to another shard: an RFC 6062 data
//! connection whose ConnectionBind names a peer connection held by
//! another shard's core (the shard is written in the id, see
//! [`ConnectionId`](crate::proto::addr::ConnectionId)) is sent there
//! before that request is handled, and served there as if accepted there.
//!
//! What moves is a [`HandedStream`]: the connection (plain, or TLS with
//! its rustls session), the bytes already read from it (the
//! ConnectionBind and whatever followed), its setup deadline, and its
//! places in the process-wide connection limits, so it stays counted once.
//!
//! The socket itself is taken off the accepting shard's reactor
//! ([`tokio::net::TcpStream::into_std`]) and registered with the owner's
//! ([`tokio::net::TcpStream::from_std`]) when it arrives, so the owner's
//! thread alone is woken for it afterwards. For TLS the whole
//! `tokio_rustls` stream moves (it is `Send`), since tokio-rustls 0.26
//! can take a stream apart (`into_inner`) but not build one from a
//! session: the socket inside it is a [`HomedTcp`], which the stream lets
//! us swap through `get_mut` while it is idle. Moving the tokio socket
//! unchanged would also work (a tokio socket stays driven by the reactor
//! that registered it, and shards live as long as the process) but would
//! wake the accepting shard's thread for every read of a connection it
//! no longer serves.
//!
//! Invariants:
//! * a connection is handed on at most once (a handed connection is
//!   served with no [`Handoffs`]), and only before it has an allocation
//!   or a splice on the accepting shard, whose core then holds nothing
//!   of it;
//! * a stream is only ever in flight detached from every reactor, and is
//!   attached again before it is read or written;
//! * each shard's inbox is bounded ([`INBOX`]): a connection that finds
//!   it full is closed and counted in [`Handoffs::dropped`], never queued.
//!
//! Hand-offs are rare (one per RFC 6062 data connection that lands on the
//! wrong shard, `(workers - 1) / workers` of them) and cost one channel
//! send and two epoll registrations; they are counted in [`Handoffs`] and
//! logged at debug level with the shards they crossed. (`/metrics` does
//! not show the counts yet: its exporter is not part of this module.)

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use super::stream::StreamSlot;
use crate::proto::addr::{ClientAddr, ShardId};

/// Connections waiting for one shard to take them.
pub(super) const INBOX: usize = 256;

/// A TCP socket that can be taken off one runtime's reactor and put on
/// another's. It is registered ([`HomedTcp::Here`]) whenever it is read or
/// written; in flight between shards it is a plain `std` socket.
pub(super) enum HomedTcp {
    Here(tokio::net::TcpStream),
    /// Detached for a hand-off (`None` only for a detach that failed).
    InFlight(Option<std::net::TcpStream>),
}

impl HomedTcp {
    /// Takes the socket off the current runtime's reactor. On an error
    /// the socket is gone (closed), and the connection with it.
    pub(super) fn detach(&mut self) -> io::Result<()> {
        match std::mem::replace(self, HomedTcp::InFlight(None)) {
            HomedTcp::Here(stream) => *self = HomedTcp::InFlight(Some(stream.into_std()?)),
            in_flight => *self = in_flight,
        }
        Ok(())
    }

    /// Registers the socket with the current runtime's reactor.
    pub(super) fn attach(&mut self) -> io::Result<()> {
        match self {
            HomedTcp::Here(_) => Ok(()),
            HomedTcp::InFlight(stream) => {
                let stream = stream
                    .take()
                    .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
                *self = HomedTcp::Here(tokio::net::TcpStream::from_std(stream)?);
                Ok(())
            }
        }
    }

    fn here(&mut self) -> io::Result<Pin<&mut tokio::net::TcpStream>> {
        match self {
            HomedTcp::Here(stream) => Ok(Pin::new(stream)),
            HomedTcp::InFlight(_) => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl AsyncRead for HomedTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().here() {
            Ok(stream) => stream.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for HomedTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut().here() {
            Ok(stream) => stream.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().here() {
            Ok(stream) => stream.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().here() {
            Ok(stream) => stream.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// A connection's byte stream, of either kind a listener accepts.
pub(super) enum AnyStream {
    Plain(HomedTcp),
    /// Boxed: the TLS session is large, and this crosses a channel.
    Tls(Box<TlsStream<HomedTcp>>),
}

impl AnyStream {
    /// Registers the socket with the current (the new shard's) reactor.
    pub(super) fn attach(&mut self) -> io::Result<()> {
        match self {
            AnyStream::Plain(tcp) => tcp.attach(),
            AnyStream::Tls(tls) => tls.get_mut().0.attach(),
        }
    }
}

/// The byte streams a shard serves, which can leave it for another.
pub(super) trait Movable: Sized {
    /// Detaches the socket from this shard's reactor.
    fn detach(self) -> io::Result<AnyStream>;
}

impl Movable for HomedTcp {
    fn detach(mut self) -> io::Result<AnyStream> {
        HomedTcp::detach(&mut self)?;
        Ok(AnyStream::Plain(self))
    }
}

impl Movable for TlsStream<HomedTcp> {
    fn detach(mut self) -> io::Result<AnyStream> {
        // The session keeps whatever TLS data it has buffered; only the
        // socket under it changes reactor.
        self.get_mut().0.detach()?;
        Ok(AnyStream::Tls(Box::new(self)))
    }
}

/// A connection on its way to the shard that holds its peer connection.
pub(super) struct HandedStream {
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

/// Where each shard takes handed connections, shared by every shard.
pub(super) struct Handoffs {
    /// One bounded inbox per shard, indexed by shard number.
    inboxes: Vec<mpsc::Sender<HandedStream>>,
    /// Connections handed on so far.
    pub(super) handed: AtomicU64,
    /// Connections closed because their shard's inbox was full (or the
    /// shard gone).
    pub(super) dropped: AtomicU64,
}

/// Why a connection could not be handed on.
#[derive(Debug, thiserror::Error)]
pub(super) enum HandoffError {
    #[error("no shard {0}")]
    NoShard(u8),
    #[error("inbox of shard {0} full")]
    Full(u8),
    #[error("shard {0} gone")]
    Gone(u8),
}

impl Handoffs {
    /// The inboxes of `shards` shards: every shard's sender, shared, and
    /// each shard's receiver, to be given to that shard alone.
    pub(super) fn new(shards: usize) -> (Handoffs, Vec<mpsc::Receiver<HandedStream>>) {
        let (inboxes, receivers) = (0..shards).map(|_| mpsc::channel(INBOX)).unzip();
        let handoffs = Handoffs {
            inboxes,
            handed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        };
        (handoffs, receivers)
    }

    /// True if shard `to` runs, so a connection may be handed to it.
    pub(super) fn runs(&self, to: ShardId) -> bool {
        usize::from(to.0) < self.inboxes.len()
    }

    /// Puts `handed` in the inbox of shard `to`, or gives it back with why
    /// not (the caller closes it; a full inbox is counted).
    pub(super) fn send(&self, to: ShardId, handed: HandedStream) -> Result<(), HandoffError> {
        let Some(inbox) = self.inboxes.get(usize::from(to.0)) else {
            return Err(HandoffError::NoShard(to.0));
        };
        match inbox.try_send(handed) {
            Ok(()) => {
                self.handed.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                match e {
                    mpsc::error::TrySendError::Full(_) => Err(HandoffError::Full(to.0)),
                    mpsc::error::TrySendError::Closed(_) => Err(HandoffError::Gone(to.0)),
                }
            }
        }
    }
}
