//! The read loops' rules over real loopback sockets, with a shard that
//! records what it is handed.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::rc::Rc;

use super::*;
use crate::proto::Now;

/// A shard that keeps every datagram it is handed (payload and sender)
/// and counts the flushes.
struct Recorder {
    recv: RefCell<RecvBatch>,
    got: RefCell<Vec<(Vec<u8>, SocketAddr)>>,
    in_batch: Cell<bool>,
    flushes: Cell<usize>,
}

impl Recorder {
    fn new() -> Rc<Recorder> {
        Rc::new(Recorder {
            recv: RefCell::new(RecvBatch::new(36, 2048, 4)),
            got: RefCell::default(),
            in_batch: Cell::new(false),
            flushes: Cell::new(0),
        })
    }
}

impl Datagrams for Recorder {
    fn recv_batch(&self) -> &RefCell<RecvBatch> {
        &self.recv
    }

    fn on_datagram(self: &Rc<Self>, _: Source, buf: &mut [u8], payload: Range<usize>, from: SocketAddr, _: Now) {
        assert!(self.in_batch.get(), "a datagram handed outside a batch");
        self.got.borrow_mut().push((buf[payload].to_vec(), from));
    }

    fn set_in_batch(&self, in_batch: bool) {
        self.in_batch.set(in_batch);
    }

    fn flush_batch(&self) {
        assert!(!self.in_batch.get(), "flushed inside a batch");
        self.flushes.set(self.flushes.get() + 1);
    }
}

fn pair() -> (UdpSocket, UdpSocket) {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_nonblocking(true).unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    (rx, tx)
}

fn source(socket: &UdpSocket) -> Source {
    Source::Listener(socket.local_addr().unwrap())
}

/// Reads `socket` until `want` datagrams came (at most 5 s), each call
/// with `lone` as the last one left it; returns what every call saw.
fn read_all(shard: &Rc<Recorder>, socket: &UdpSocket, want: usize, mut lone: bool) -> Vec<Seen> {
    let mut seen = Vec::new();
    for _ in 0..1000 {
        if shard.got.borrow().len() >= want {
            break;
        }
        let s = read_socket(shard, socket, source(socket), lone);
        lone = s.lone_next(lone);
        if s.datagrams == 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        } else {
            seen.push(s);
        }
    }
    seen
}

#[test]
fn a_lone_read_relays_its_datagram_before_reading_on_and_loses_none() {
    let shard = Recorder::new();
    let (rx, tx) = pair();
    let from = tx.local_addr().unwrap();
    tx.send_to(b"one", rx.local_addr().unwrap()).unwrap();
    let seen = read_all(&shard, &rx, 1, true);
    assert_eq!(
        seen,
        vec![Seen {
            drained: true,
            datagrams: 1
        }]
    );
    assert_eq!(shard.flushes.get(), 1);
    assert!(seen[0].lone_next(false), "one datagram: the next read starts lone");

    // Three waiting: the lone read takes the first and flushes it on its
    // own, the batch after it the other two, in order.
    for p in [b"two", b"tri", b"for"] {
        tx.send_to(p, rx.local_addr().unwrap()).unwrap();
    }
    let seen = read_all(&shard, &rx, 4, true);
    assert_eq!(seen.iter().map(|s| s.datagrams).sum::<usize>(), 3);
    assert!(seen.iter().all(|s| s.drained));
    let got: Vec<_> = shard.got.borrow().iter().map(|(p, f)| (p.clone(), *f)).collect();
    let want: Vec<_> = [b"one", b"two", b"tri", b"for"]
        .iter()
        .map(|p| (p.to_vec(), from))
        .collect();
    assert_eq!(got, want);
    if seen.len() == 1 {
        // All three were there at once: the lone one was sent by itself.
        assert_eq!(shard.flushes.get(), 1 + 2);
        assert!(!seen[0].lone_next(true));
    }

    // Nothing waiting: drained, nothing read, and `lone` kept as it was.
    let empty = read_socket(&shard, &rx, source(&rx), true);
    assert_eq!(
        empty,
        Seen {
            drained: true,
            datagrams: 0
        }
    );
    assert!(empty.lone_next(true));
    assert!(!empty.lone_next(false));
}

#[test]
fn a_wake_up_reads_at_most_its_budget_and_says_so() {
    let shard = Recorder::new();
    let (rx, tx) = pair();
    let total = ROUNDS * RECV_BATCH + 5;
    for i in 0..total {
        tx.send_to(&(i as u32).to_be_bytes(), rx.local_addr().unwrap()).unwrap();
    }
    let seen = read_all(&shard, &rx, total, true);
    for s in &seen {
        assert!(s.datagrams <= 1 + ROUNDS * RECV_BATCH, "{s:?}");
        if !s.drained {
            assert!(s.datagrams >= ROUNDS * RECV_BATCH, "{s:?}");
        }
    }
    let got: Vec<u32> = shard
        .got
        .borrow()
        .iter()
        .map(|(p, _)| u32::from_be_bytes(p[..4].try_into().unwrap()))
        .collect();
    assert_eq!(got, (0..total as u32).collect::<Vec<_>>());
}

#[test]
fn a_socket_is_read_ahead_only_after_wake_ups_that_named_it_alone_with_one_datagram() {
    let a = Token::new(1, 0);
    let b = Token::new(2, 0);
    let mut hot = Hot::default();
    assert_eq!(hot.ahead(), None);
    hot.saw(Some((a, 1)));
    assert_eq!(hot.ahead(), None, "one wake-up is not a streak");
    hot.saw(Some((a, 1)));
    assert_eq!(hot.ahead(), Some(a));
    hot.saw(Some((a, 1)));
    assert_eq!(hot.ahead(), Some(a));
    // Another socket alone starts a new streak.
    hot.saw(Some((b, 1)));
    assert_eq!(hot.ahead(), None);
    hot.saw(Some((b, 1)));
    assert_eq!(hot.ahead(), Some(b));
    // A burst, several sockets, or nothing read: no read ahead.
    for end in [Some((b, 2)), None] {
        hot.saw(Some((b, 1)));
        hot.saw(Some((b, 1)));
        assert_eq!(hot.ahead(), Some(b));
        hot.saw(end);
        assert_eq!(hot.ahead(), None, "{end:?}");
    }
}
