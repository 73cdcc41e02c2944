//! One connection to the server: a connected UDP socket, or a TCP or TLS
//! stream cut into frames (RFC 8656 §12.5, `proto::stream_framing`).
//!
//! Invariants: [`Wire::recv`] is cancel-safe (dropping it between two
//! polls loses no byte: a read's bytes are appended to the pending buffer
//! in the same poll that read them), so callers bound it with a timeout
//! and select on it; it holds at most one frame of the largest size plus
//! one read; a stream that sends something that is neither STUN nor
//! ChannelData, or a frame above the bound, is an error, since no next
//! frame can be found after it. No function here waits without a bound
//! of the caller's, except `send` on a stream whose peer stops reading,
//! which the caller also bounds.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::proto::stream_framing::{self, FrameError};

/// Bytes read from a stream at a time, and the largest datagram.
const CHUNK: usize = 65_536;

/// A byte stream to the server: TCP, or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("nothing listens on the server's port (ICMP port unreachable)")]
    Unreachable,
    #[error("the server sent something that is not STUN: {0}")]
    Framing(#[from] FrameError),
}

enum Kind {
    Udp(UdpSocket),
    Stream(Box<dyn Stream>),
}

/// A connection to one server address.
pub struct Wire {
    kind: Kind,
    local: SocketAddr,
    /// Stream bytes not yet cut into frames.
    pending: Vec<u8>,
    chunk: Vec<u8>,
}

impl Wire {
    /// A UDP socket of `server`'s family, connected to it (so the kernel
    /// drops datagrams from anyone else).
    pub async fn udp(server: SocketAddr) -> io::Result<Wire> {
        let any = match server {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
        socket.connect(server).await?;
        let local = socket.local_addr()?;
        Ok(Wire::new(Kind::Udp(socket), local))
    }

    /// A stream already connected from `local`.
    pub fn stream(stream: impl Stream + 'static, local: SocketAddr) -> Wire {
        Wire::new(Kind::Stream(Box::new(stream)), local)
    }

    fn new(kind: Kind, local: SocketAddr) -> Wire {
        Wire {
            kind,
            local,
            pending: Vec::new(),
            chunk: vec![0; CHUNK],
        }
    }

    /// True over UDP, where requests are retransmitted (RFC 8489 §6.2.1).
    pub fn is_datagram(&self) -> bool {
        matches!(self.kind, Kind::Udp(_))
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends one datagram or frame (a frame must already be padded).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        match &mut self.kind {
            Kind::Udp(socket) => {
                socket.send(bytes).await.map_err(udp_error)?;
            }
            Kind::Stream(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await?;
            }
        }
        Ok(())
    }

    /// The next datagram or frame from the server. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Vec<u8>, WireError> {
        loop {
            let stream = match &mut self.kind {
                Kind::Udp(socket) => {
                    let n = socket.recv(&mut self.chunk).await.map_err(udp_error)?;
                    return Ok(self.chunk[..n].to_vec());
                }
                Kind::Stream(stream) => stream,
            };
            if let Some(len) = stream_framing::frame_len(&self.pending, stream_framing::MAX_FRAME)? {
                return Ok(self.pending.drain(..len).collect());
            }
            let n = stream.read(&mut self.chunk).await?;
            if n == 0 {
                return Err(WireError::Closed);
            }
            self.pending.extend_from_slice(&self.chunk[..n]);
        }
    }
}

/// A connected UDP socket reports the ICMP error of an earlier datagram
/// on its next call as "connection refused".
fn udp_error(e: io::Error) -> WireError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => WireError::Unreachable,
        _ => WireError::Io(e),
    }
}

/// A TCP connection to `addr` within `limit`, Nagle off (a request is one
/// small write that should leave at once).
pub async fn tcp_connect(addr: SocketAddr, limit: Duration) -> Result<TcpStream, WireError> {
    let stream = tokio::time::timeout(limit, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {}", secs(limit))))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The addresses `host` names, within `limit` (an IP address needs no
/// lookup).
pub async fn resolve(host: &str, port: u16, limit: Duration) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found = tokio::time::timeout(limit, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no DNS answer within {}", secs(limit))))??;
    let addrs: Vec<SocketAddr> = found.collect();
    match addrs.is_empty() {
        true => Err(io::Error::new(io::ErrorKind::NotFound, "the name has no address")),
        false => Ok(addrs),
    }
}

/// A duration as people write it in a report: "5 s", "1.5 s", "250 ms".
pub fn secs(d: Duration) -> String {
    match d.as_millis() {
        ms if ms < 1000 => format!("{ms} ms"),
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        _ => format!("{:.1} s", d.as_secs_f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_is_cut_into_frames_across_reads_and_garbage_is_an_error() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut wire = Wire::stream(client, "127.0.0.1:1".parse().unwrap());
        // A Binding request header with 4 bytes of attributes, in pieces,
        // then a padded ChannelData frame, then a byte that is neither.
        let stun = [
            0x00, 0x01, 0x00, 0x04, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 0, 0, 0,
        ];
        server.write_all(&stun[..7]).await.unwrap();
        let reader = tokio::spawn(async move {
            let first = wire.recv().await.unwrap();
            let second = wire.recv().await.unwrap();
            let third = wire.recv().await;
            (first, second, third)
        });
        tokio::task::yield_now().await;
        server.write_all(&stun[7..]).await.unwrap();
        server
            .write_all(&[0x40, 0x00, 0x00, 0x01, 0xAA, 0, 0, 0, 0xC0, 0, 0, 0])
            .await
            .unwrap();
        let (first, second, third) = reader.await.unwrap();
        assert_eq!(first, stun);
        assert_eq!(second, [0x40, 0x00, 0x00, 0x01, 0xAA, 0, 0, 0]);
        assert!(
            matches!(third, Err(WireError::Framing(FrameError::NotTurn))),
            "{third:?}"
        );
    }

    #[tokio::test]
    async fn a_closed_stream_is_an_error_not_a_hang() {
        let (client, server) = tokio::io::duplex(64);
        drop(server);
        let mut wire = Wire::stream(client, "127.0.0.1:1".parse().unwrap());
        assert!(matches!(wire.recv().await, Err(WireError::Closed)));
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(secs(Duration::from_secs(5)), "5 s");
        assert_eq!(secs(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(secs(Duration::from_millis(250)), "250 ms");
    }
}
