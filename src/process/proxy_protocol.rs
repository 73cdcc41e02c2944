//! The PROXY protocol step of every TCP, TLS and HTTP accept: which
//! sources must send a header (`listen.proxy_protocol_from`), reading it
//! off a new connection, and refusing one from any other source (haproxy's
//! `doc/proxy-protocol.txt`; the header itself is parsed by
//! [`crate::proto::proxy_header`]).
//!
//! [`ProxyProtocol::accept`] is the one step, run on a freshly accepted
//! socket before anything else reads it (before the TLS handshake, before
//! hyper), and answers the address the connection is from from then on:
//! * from a trusted source: the header must come, whole, before
//!   `deadline`; the connection is then the client's the header names
//!   (or its own for a `LOCAL`/`UNKNOWN` header, the proxy's health
//!   checks). No header, a malformed one or none in time: refused.
//! * from any other source: its own address, unless its first bytes are a
//!   PROXY signature, which is refused rather than taken for the client's
//!   protocol: only a trusted proxy may name another client.
//!
//! The header is read with `peek` and then exactly its length is read
//! off, so nothing after it is ever taken from the socket: TLS, hyper and
//! the STUN framing see the client's first byte first, and no "bytes read
//! too far" have to be carried along. While a header is incomplete the
//! socket is peeked again after [`INCOMPLETE_POLL`] (a peek of bytes
//! already there returns at once, so waiting for readiness would spin); a
//! proxy writes its header in one segment, so this costs nothing in
//! practice, and a trusted source that trickles costs at most
//! `deadline / INCOMPLETE_POLL` peeks. The buffer is [`MAX_LEN`] bytes.
//!
//! The per-source limits of the listeners must count the real client, not
//! the proxy: callers take a trusted connection's per-source places only
//! once this step has named its client (see `net::stream` and `http`).
//!
//! UDP is not covered: haproxy does not proxy UDP, and PROXY over UDP is
//! not deployed; a UDP listener sees the packet's own source.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::proto::peer_filter::Cidr;
use crate::proto::proxy_header::{self, Parse, ProxyHeaderError, MAX_LEN};

/// How long to wait before peeking again at an incomplete header.
pub const INCOMPLETE_POLL: Duration = Duration::from_millis(10);

/// Why a connection was refused by [`ProxyProtocol::accept`].
#[derive(Debug, thiserror::Error)]
pub enum ProxyRefusal {
    #[error("a PROXY header from a source not in listen.proxy_protocol_from")]
    Untrusted,
    #[error("trusted source: {0}")]
    Invalid(ProxyHeaderError),
    #[error("no complete PROXY header in time")]
    Timeout,
    #[error("closed before the PROXY header")]
    Closed,
    #[error("read error: {0}")]
    Io(std::io::Error),
}

/// What became of the connections [`ProxyProtocol::accept`] saw, as
/// counted for `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// A trusted source's header named the client.
    Accepted,
    /// A trusted source's header kept the connection's own address.
    Local,
    /// A header from an untrusted source: refused.
    Untrusted,
    /// A trusted source's header was missing or malformed: refused.
    Invalid,
    /// A trusted source sent no complete header in time, or closed.
    Timeout,
}

impl Outcome {
    /// Metric label values, in discriminant order.
    pub const LABELS: [&'static str; 5] = ["accepted", "local", "untrusted", "invalid", "timeout"];
}

/// The trusted sources and the counts (one for the process: the stream
/// listeners of every shard and the HTTP listener share it).
#[derive(Debug, Default)]
pub struct ProxyProtocol {
    /// Replaced whole on reload; read once per accepted connection (the
    /// lock guards a plain list, so a poisoned one is still used).
    trusted: RwLock<Arc<[Cidr]>>,
    counts: [AtomicU64; Outcome::LABELS.len()],
}

impl ProxyProtocol {
    pub fn new(trusted: Vec<Cidr>) -> ProxyProtocol {
        ProxyProtocol {
            trusted: RwLock::new(trusted.into()),
            counts: Default::default(),
        }
    }

    /// Replaces the trusted sources (reload). A connection accepted
    /// before keeps the verdict it had.
    pub fn set_trusted(&self, trusted: Vec<Cidr>) {
        *self.trusted.write().unwrap_or_else(|e| e.into_inner()) = trusted.into();
    }

    /// Must a connection from `ip` start with a PROXY header? An
    /// IPv4-mapped address (a dual-stack listener) counts as its IPv4.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let trusted = self.trusted.read().unwrap_or_else(|e| e.into_inner()).clone();
        trusted.iter().any(|cidr| cidr.contains(ip))
    }

    /// Connections seen, by outcome, labelled as `/metrics` shows them.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Outcome::LABELS
            .into_iter()
            .zip(&self.counts)
            .map(|(label, n)| (label, n.load(Ordering::Relaxed)))
    }

    fn count(&self, outcome: Outcome) {
        self.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The step of the module doc: the address `stream`, accepted from
    /// `remote`, is from, or why it is refused. Waits until `deadline` at
    /// most (for the first bytes of an untrusted connection too, which is
    /// the setup deadline its protocol would have had anyway).
    pub async fn accept(
        &self,
        stream: &mut TcpStream,
        remote: SocketAddr,
        deadline: Instant,
    ) -> Result<SocketAddr, ProxyRefusal> {
        let trusted = self.trusts(remote.ip());
        let outcome = self.read_header(stream, remote, trusted, deadline).await;
        let counted = match &outcome {
            Ok(_) if !trusted => None,
            Ok(source) if *source == remote => Some(Outcome::Local),
            Ok(_) => Some(Outcome::Accepted),
            Err(ProxyRefusal::Untrusted) => Some(Outcome::Untrusted),
            Err(ProxyRefusal::Invalid(_)) => Some(Outcome::Invalid),
            Err(_) if trusted => Some(Outcome::Timeout),
            // An untrusted connection that sent nothing in time is no
            // PROXY matter.
            Err(_) => None,
        };
        if let Some(counted) = counted {
            self.count(counted);
        }
        outcome
    }

    async fn read_header(
        &self,
        stream: &mut TcpStream,
        remote: SocketAddr,
        trusted: bool,
        deadline: Instant,
    ) -> Result<SocketAddr, ProxyRefusal> {
        let mut buf = [0u8; MAX_LEN];
        loop {
            let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
                Ok(Ok(0)) => return Err(ProxyRefusal::Closed),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(ProxyRefusal::Io(e)),
                Err(_) => return Err(ProxyRefusal::Timeout),
            };
            let seen = buf.get(..n).unwrap_or_default();
            if !trusted {
                return match proxy_header::starts_with_signature(seen) {
                    true => Err(ProxyRefusal::Untrusted),
                    false => Ok(remote),
                };
            }
            match proxy_header::parse(seen) {
                Parse::Parsed(header) => {
                    // The bytes are there (peeked): this read returns at once.
                    let consume = buf.get_mut(..header.len).unwrap_or_default();
                    return match tokio::time::timeout_at(deadline, stream.read_exact(consume)).await {
                        Ok(Ok(_)) => Ok(header.addresses.map_or(remote, |a| a.source)),
                        Ok(Err(e)) => Err(ProxyRefusal::Io(e)),
                        Err(_) => Err(ProxyRefusal::Timeout),
                    };
                }
                Parse::Invalid(e) => return Err(ProxyRefusal::Invalid(e)),
                Parse::Incomplete if Instant::now() >= deadline => return Err(ProxyRefusal::Timeout),
                Parse::Incomplete => tokio::time::sleep_until(deadline.min(Instant::now() + INCOMPLETE_POLL)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A connected pair on loopback: (client, server side, server side's
    /// view of the client).
    async fn pair() -> (TcpStream, TcpStream, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, remote) = listener.accept().await.unwrap();
        (client, server, remote)
    }

    fn proxy(trusted: &[&str]) -> ProxyProtocol {
        ProxyProtocol::new(trusted.iter().map(|c| c.parse().unwrap()).collect())
    }

    fn count(proxy: &ProxyProtocol, label: &str) -> u64 {
        proxy.counts().find(|(l, _)| *l == label).map_or(0, |(_, n)| n)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(2)
    }

    #[tokio::test]
    async fn a_trusted_header_names_the_client_and_leaves_its_bytes_even_when_cut() {
        let proxy = proxy(&["127.0.0.0/8"]);
        let (mut client, mut server, remote) = pair().await;
        let writer = tokio::spawn(async move {
            client
                .write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 3478")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
            client.write_all(b"\r\nSTUN").await.unwrap();
            client
        });
        let source = proxy.accept(&mut server, remote, soon()).await.unwrap();
        assert_eq!(source, "192.0.2.1:5000".parse().unwrap());
        let mut rest = [0u8; 4];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"STUN");
        assert_eq!(count(&proxy, "accepted"), 1);
        drop(writer.await);
    }

    #[tokio::test]
    async fn a_trusted_source_without_a_header_or_in_time_is_refused() {
        let proxy = proxy(&["127.0.0.1/32"]);
        let (mut client, mut server, remote) = pair().await;
        client.write_all(&[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]).await.unwrap();
        let refused = proxy.accept(&mut server, remote, soon()).await;
        assert!(matches!(
            refused,
            Err(ProxyRefusal::Invalid(ProxyHeaderError::NoHeader))
        ));
        let (_client, mut server, remote) = pair().await;
        let deadline = Instant::now() + Duration::from_millis(50);
        let refused = proxy.accept(&mut server, remote, deadline).await;
        assert!(matches!(refused, Err(ProxyRefusal::Timeout)), "{refused:?}");
        assert_eq!((count(&proxy, "invalid"), count(&proxy, "timeout")), (1, 1));
    }

    #[tokio::test]
    async fn an_untrusted_source_keeps_its_address_and_is_refused_a_header() {
        let proxy = proxy(&["10.0.0.0/8"]);
        let (mut client, mut server, remote) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(proxy.accept(&mut server, remote, soon()).await.unwrap(), remote);
        let mut first = [0u8; 3];
        server.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"GET", "nothing consumed");
        let (mut client, mut server, remote) = pair().await;
        client
            .write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n")
            .await
            .unwrap();
        let refused = proxy.accept(&mut server, remote, soon()).await;
        assert!(matches!(refused, Err(ProxyRefusal::Untrusted)), "{refused:?}");
        assert_eq!(count(&proxy, "untrusted"), 1);
        assert_eq!(count(&proxy, "accepted"), 0);
    }

    #[test]
    fn mapped_addresses_are_trusted_as_their_ipv4() {
        let proxy = proxy(&["127.0.0.2/32", "2001:db8::/32"]);
        assert!(proxy.trusts("::ffff:127.0.0.2".parse().unwrap()));
        assert!(proxy.trusts("2001:db8::7".parse().unwrap()));
        assert!(!proxy.trusts("127.0.0.1".parse().unwrap()));
    }
}
