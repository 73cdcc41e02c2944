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
/// with `lone`; returns what every call that read something saw.
fn read_all(shard: &Rc<Recorder>, socket: &UdpSocket, want: usize, lone: bool) -> Vec<Seen> {
    let mut seen = Vec::new();
    for _ in 0..1000 {
        if shard.got.borrow().len() >= want {
            break;
        }
        let s = read_socket(shard, socket, source(socket), lone);
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
    let one = Seen {
        drained: true,
        datagrams: 1,
        first: Some(from),
    };
    assert_eq!(seen, vec![one]);
    assert_eq!(shard.flushes.get(), 1);
    assert_eq!(seen[0].alone(), Some(from));

    // Three waiting: the lone read takes the first and flushes it on its
    // own, the batch after it the other two, in order.
    for p in [b"two", b"tri", b"for"] {
        tx.send_to(p, rx.local_addr().unwrap()).unwrap();
    }
    let seen = read_all(&shard, &rx, 4, true);
    assert_eq!(seen.iter().map(|s| s.datagrams).sum::<usize>(), 3);
    assert!(seen.iter().all(|s| s.drained && s.first == Some(from)));
    let got: Vec<_> = shard.got.borrow().iter().map(|(p, f)| (p.clone(), *f)).collect();
    let want: Vec<_> = [b"one", b"two", b"tri", b"for"]
        .iter()
        .map(|p| (p.to_vec(), from))
        .collect();
    assert_eq!(got, want);
    if seen.len() == 1 {
        // All three were there at once: the lone one was sent by itself.
        assert_eq!(shard.flushes.get(), 1 + 2);
        assert_eq!(seen[0].alone(), None);
    }

    // Nothing waiting: drained, nothing read, either way.
    for lone in [true, false] {
        let empty = read_socket(&shard, &rx, source(&rx), lone);
        let nothing = Seen {
            drained: true,
            datagrams: 0,
            first: None,
        };
        assert_eq!(empty, nothing);
    }
}

#[test]
fn a_wake_up_reads_at_most_its_budget_and_says_so() {
    let shard = Recorder::new();
    let (rx, tx) = pair();
    let total = ROUNDS * RECV_BATCH + 5;
    for i in 0..total {
        tx.send_to(&(i as u32).to_be_bytes(), rx.local_addr().unwrap()).unwrap();
    }
    for lone in [false, true] {
        shard.got.borrow_mut().clear();
        if lone {
            for i in 0..total {
                tx.send_to(&(i as u32).to_be_bytes(), rx.local_addr().unwrap()).unwrap();
            }
        }
        let seen = read_all(&shard, &rx, total, lone);
        for s in &seen {
            assert!(s.datagrams <= usize::from(lone) + ROUNDS * RECV_BATCH, "{s:?}");
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
        assert_eq!(got, (0..total as u32).collect::<Vec<_>>(), "lone {lone}");
    }
}

#[test]
fn a_flow_is_read_ahead_only_after_wake_ups_that_brought_it_alone() {
    let a = Token::new(1, 0);
    let b = Token::new(2, 0);
    let mut hot = Streak::new();
    assert_eq!(hot.ahead(), None);
    hot.saw(Some(a));
    assert_eq!(hot.ahead(), None, "one wake-up is not a streak");
    hot.saw(Some(a));
    assert_eq!(hot.ahead(), Some(a));
    hot.saw(Some(a));
    assert_eq!(hot.ahead(), Some(a));
    // Another flow alone starts a new streak.
    hot.saw(Some(b));
    assert_eq!(hot.ahead(), None);
    hot.saw(Some(b));
    assert_eq!(hot.ahead(), Some(b));
    // A wake-up with several datagrams or flows ends it.
    hot.saw(None);
    assert_eq!(hot.ahead(), None);

    // Keyed by sender at a listener: clients taking turns never make one.
    let clients: Vec<SocketAddr> = (0..4).map(|i| SocketAddr::from(([127, 0, 0, 2 + i], 5000))).collect();
    let mut flow = Streak::new();
    for i in 0..32 {
        flow.saw(Some(clients[i % clients.len()]));
        assert_eq!(flow.ahead(), None);
    }
    flow.saw(Some(clients[0]));
    flow.saw(Some(clients[0]));
    assert_eq!(flow.ahead(), Some(clients[0]));
}
