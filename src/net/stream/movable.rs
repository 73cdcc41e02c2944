//! The byte streams of TCP and TLS connections, as a shard serves them and
//! as they move between shards: a [`HomedTcp`] socket can be taken off one
//! runtime's reactor ([`tokio::net::TcpStream::into_std`]) and registered
//! with another's ([`tokio::net::TcpStream::from_std`]), under a
//! `tokio_rustls` stream too, whose session stays as it is.
//!
//! Why the socket and not the stream is swapped: tokio-rustls 0.26 can
//! take a stream apart (`into_inner`) but not build one from a session, so
//! the whole TLS stream moves (it is `Send`), and the socket inside it is
//! detached and attached through `get_mut` while the stream is idle.
//!
//! Invariants:
//! * a socket is read or written only while attached ([`HomedTcp::Here`]);
//!   detached, every read and write fails with `NotConnected`;
//! * a failed detach closes the socket, and the connection with it.
//!
//! Used by `transfer` (a data connection moving to the shard of its peer
//! connection) and `shared_port` (an HTTP connection leaving for the HTTP
//! thread).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;

/// A TCP socket that can be taken off one runtime's reactor and put on
/// another's. It is registered ([`HomedTcp::Here`]) whenever it is read or
/// written; in flight between shards it is a plain `std` socket.
pub(super) enum HomedTcp {
    Here(tokio::net::TcpStream),
    /// Detached to move (`None` only for a detach that failed).
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
