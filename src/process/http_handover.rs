//! The handover of HTTP connections from a packet shard to the HTTP
//! thread, for a TLS port shared with HTTP (`signaling.share_tls_port`).
//! (Not to be confused with the other two things that cross threads:
//! stream connections transferred to the shard that owns them,
//! `net/stream/transfer.rs`, and relay-to-relay packets for another shard,
//! `net/relay/cross_shard.rs`.)
//!
//! A shard accepts the connection and does its TLS handshake (as for any
//! `turns:` connection, so handshakes stay spread over the shards); when
//! ALPN or the first bytes say HTTP (`net/stream/shared_port.rs`), the
//! decrypted connection is taken off the shard's reactor and sent here,
//! with the bytes already read in front of it, to the HTTP thread, which
//! registers it with its own reactor and serves it as a connection of
//! `listen.http` (`http/handed.rs`).
//!
//! Neither side knows the other's types: what crosses is a
//! [`HandedConnection`], a byte stream that can [`attach`] itself to the
//! reactor of the runtime it is called on. `net` implements it, `http`
//! calls it; this module depends on neither.
//!
//! Invariants:
//! * the queue is bounded ([`INBOX`]): a connection that finds it full (or
//!   the HTTP thread gone) is closed at once and counted, never queued;
//! * a connection in the queue is attached to no reactor, and is attached
//!   before it is read or written;
//! * it holds no place in the shards' stream limits (they are given back
//!   when it leaves the shard); the HTTP side admits it in its own
//!   connection table or closes it.
//!
//! [`attach`]: HandedConnection::attach

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Connections waiting for the HTTP thread.
pub const INBOX: usize = 256;

/// A decrypted connection detached from the reactor that accepted it.
pub trait HandedConnection: AsyncRead + AsyncWrite + Send + Unpin {
    /// Registers the socket with the current runtime's reactor; on an
    /// error the connection is lost (closed).
    fn attach(&mut self) -> io::Result<()>;
}

/// One connection for the HTTP thread.
pub struct HandedHttp {
    /// Detached; reads start with the bytes the shard read to classify it.
    pub stream: Box<dyn HandedConnection>,
    pub remote: SocketAddr,
    /// The TLS listener address it reached.
    pub local: SocketAddr,
    /// When the shard accepted it: the HTTP thread's one deadline for
    /// everything before its first request (PROXY header, handshake, first
    /// bytes, queue wait and the request's headers) counts from here, as
    /// for a connection of `listen.http`.
    pub accepted: Instant,
}

/// How the connections of the shared TLS ports were dispatched, for
/// `/metrics`: counted by the shards, read by the HTTP thread.
#[derive(Debug, Default)]
pub struct SharedPortCounts {
    /// Served as TURN on the shard that accepted them.
    pub turn: AtomicU64,
    /// Sent to the HTTP thread.
    pub http: AtomicU64,
    /// Closed: neither TURN nor HTTP, no first bytes in time, or the
    /// queue full.
    pub closed: AtomicU64,
}

/// Why a connection could not be sent on (it is closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpHandoverError {
    #[error("the HTTP thread's queue is full")]
    Full,
    #[error("the HTTP thread is gone")]
    Gone,
}

/// The shards' end: cheap to clone, one per TLS listener sibling.
#[derive(Clone)]
pub struct HttpHandover {
    queue: mpsc::Sender<HandedHttp>,
    pub counts: Arc<SharedPortCounts>,
}

/// The HTTP thread's end.
pub struct HttpInbox {
    pub queue: mpsc::Receiver<HandedHttp>,
    pub counts: Arc<SharedPortCounts>,
}

/// A fresh queue and its counters.
pub fn channel() -> (HttpHandover, HttpInbox) {
    let (queue, receiver) = mpsc::channel(INBOX);
    let counts = Arc::new(SharedPortCounts::default());
    (
        HttpHandover {
            queue,
            counts: counts.clone(),
        },
        HttpInbox {
            queue: receiver,
            counts,
        },
    )
}

impl HttpHandover {
    /// Queues `handed` for the HTTP thread, counted as dispatched to HTTP;
    /// on an error it is dropped (closed) and counted as closed.
    pub fn send(&self, handed: HandedHttp) -> Result<(), HttpHandoverError> {
        // Counted before it is queued: once queued, the HTTP thread may
        // answer on it before this thread runs again, and whoever reads
        // the answer and then `/metrics` must see it counted.
        self.counts.http.fetch_add(1, Ordering::Relaxed);
        let sent = self.queue.try_send(handed).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => HttpHandoverError::Full,
            mpsc::error::TrySendError::Closed(_) => HttpHandoverError::Gone,
        });
        if sent.is_err() {
            self.counts.http.fetch_sub(1, Ordering::Relaxed);
            self.counts.closed.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection with no socket under it.
    impl HandedConnection for tokio::io::DuplexStream {
        fn attach(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn handed() -> HandedHttp {
        HandedHttp {
            stream: Box::new(tokio::io::duplex(1).0),
            remote: "192.0.2.1:4000".parse().unwrap(),
            local: "192.0.2.2:443".parse().unwrap(),
            accepted: crate::process::clock::mono(),
        }
    }

    #[test]
    fn a_full_queue_or_a_gone_http_thread_closes_and_counts_the_connection() {
        let (handover, inbox) = channel();
        for _ in 0..INBOX {
            handover.send(handed()).unwrap();
        }
        assert_eq!(handover.send(handed()).err(), Some(HttpHandoverError::Full));
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        assert_eq!(
            (load(&inbox.counts.http), load(&inbox.counts.closed)),
            (INBOX as u64, 1)
        );
        drop(inbox);
        assert_eq!(handover.send(handed()).err(), Some(HttpHandoverError::Gone));
        assert_eq!(load(&handover.counts.closed), 2);
    }
}
