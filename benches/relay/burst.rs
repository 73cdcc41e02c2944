//! Many Allocates in parallel, each with the full 401 dance and
//! MESSAGE-INTEGRITY: the Allocate-burst and idle-memory figures.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use turnpike::proto::stun::{Class, Message};
use turnpike::proto::testkit::Challenge;

use crate::turn::{allocate_request, client_ip, cred, error_code, new_tid};

/// Allocations in flight at once (and epoll events per wait).
const WINDOW: usize = 256;
/// Retransmission interval and attempts per request.
const RETRANSMIT: Duration = Duration::from_millis(500);
const ATTEMPTS: u32 = 5;

pub struct Burst {
    pub done: usize,
    pub failed: usize,
    pub retransmits: u64,
    /// First send to last success.
    pub wall: f64,
    /// The clients; their allocations live as long as the sockets are
    /// kept (and 10 minutes on the server in any case).
    pub _sockets: Vec<UdpSocket>,
    /// First few failure reasons.
    pub errors: Vec<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Stage {
    Idle,
    Unsigned,
    Signed,
    Done,
    Failed,
}

struct Client {
    stage: Stage,
    tid: [u8; 12],
    request: Vec<u8>,
    sent_at: Instant,
    attempts: u32,
}

/// Binds `n` client sockets (spread over 127.0.0.2-17, connected to the
/// server), before any clock starts.
pub fn sockets(server: SocketAddr, n: usize) -> Result<Vec<UdpSocket>, String> {
    (0..n)
        .map(|i| {
            let s = UdpSocket::bind((client_ip(i), 0)).map_err(|e| format!("client socket {i}: {e}"))?;
            s.connect(server).map_err(|e| e.to_string())?;
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(s)
        })
        .collect()
}

/// Allocates on every socket, `WINDOW` at a time; bounded by `max`. One
/// thread waits on the sockets in flight with epoll, so that its cost per
/// allocation does not grow with the window.
pub fn allocate_all(sockets: Vec<UdpSocket>, max: Duration) -> Burst {
    let n = sockets.len();
    let cred = cred();
    let now = Instant::now();
    let mut clients: Vec<Client> = (0..n)
        .map(|_| Client {
            stage: Stage::Idle,
            tid: [0; 12],
            request: Vec::new(),
            sent_at: now,
            attempts: 0,
        })
        .collect();
    let send = |s: &UdpSocket, c: &mut Client| {
        let _ = s.send(&c.request);
        c.sent_at = Instant::now();
        c.attempts += 1;
    };
    // SAFETY: plain system calls on descriptors owned by `sockets`, which
    // outlive `ep`; the epoll set is closed at the end.
    let ep = unsafe { libc::epoll_create1(0) };
    let ctl = |op: libc::c_int, i: usize| {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: ev is a valid epoll_event and the descriptor is open.
        unsafe { libc::epoll_ctl(ep, op, sockets[i].as_raw_fd(), &mut ev) };
    };
    let (mut next, mut done, mut failed, mut retransmits) = (0usize, 0usize, 0usize, 0u64);
    let mut in_flight: Vec<usize> = Vec::with_capacity(WINDOW);
    let mut active = 0usize;
    let mut errors = Vec::new();
    let mut buf = [0u8; 1500];
    // SAFETY: epoll_event is plain data.
    let mut events: Vec<libc::epoll_event> = vec![unsafe { std::mem::zeroed() }; WINDOW];
    let start = Instant::now();
    let mut last_done = start;
    let mut last_scan = start;
    while done + failed < n && start.elapsed() < max {
        while active < WINDOW && next < n {
            let c = &mut clients[next];
            c.tid = new_tid(next as u32);
            c.request = allocate_request(c.tid, None);
            c.stage = Stage::Unsigned;
            ctl(libc::EPOLL_CTL_ADD, next);
            send(&sockets[next], c);
            in_flight.push(next);
            active += 1;
            next += 1;
        }
        // SAFETY: events is a valid array of its length.
        let ready = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 10) };
        for ev in &events[..ready.max(0) as usize] {
            let i = ev.u64 as usize;
            let c = &mut clients[i];
            while let Ok(len) = sockets[i].recv(&mut buf) {
                let Ok(m) = Message::parse(&buf[..len]) else { continue };
                if m.transaction_id() != c.tid || !matches!(c.stage, Stage::Unsigned | Stage::Signed) {
                    continue;
                }
                match (c.stage, m.class(), error_code(&m)) {
                    (Stage::Signed, Class::Success, _) => {
                        c.stage = Stage::Done;
                        done += 1;
                        last_done = Instant::now();
                    }
                    (Stage::Unsigned | Stage::Signed, Class::Error, Some(401 | 438)) if c.attempts < 3 * ATTEMPTS => {
                        match Challenge::of(&buf[..len]) {
                            Some(challenge) => {
                                c.tid = new_tid(i as u32);
                                c.request = allocate_request(c.tid, Some((&cred, &challenge)));
                                c.stage = Stage::Signed;
                                send(&sockets[i], c);
                            }
                            None => {
                                c.stage = Stage::Failed;
                                failed += 1;
                            }
                        }
                    }
                    (_, _, code) => {
                        if errors.len() < 3 {
                            errors.push(format!("client {i}: answer {:?} with error {code:?}", m.class()));
                        }
                        c.stage = Stage::Failed;
                        failed += 1;
                    }
                }
                break;
            }
            if matches!(c.stage, Stage::Done | Stage::Failed) {
                ctl(libc::EPOLL_CTL_DEL, i);
                active -= 1;
            }
        }
        // Retransmissions and give-ups, looked at every 50 ms.
        if last_scan.elapsed() > Duration::from_millis(50) {
            last_scan = Instant::now();
            for &i in &in_flight {
                let c = &mut clients[i];
                if !matches!(c.stage, Stage::Unsigned | Stage::Signed) || c.sent_at.elapsed() <= RETRANSMIT {
                    continue;
                }
                if c.attempts >= 3 * ATTEMPTS {
                    if errors.len() < 3 {
                        errors.push(format!("client {i}: no answer"));
                    }
                    c.stage = Stage::Failed;
                    failed += 1;
                    ctl(libc::EPOLL_CTL_DEL, i);
                    active -= 1;
                } else {
                    retransmits += 1;
                    send(&sockets[i], c);
                }
            }
            in_flight.retain(|&i| matches!(clients[i].stage, Stage::Unsigned | Stage::Signed));
        }
    }
    // SAFETY: ep is the epoll descriptor created above.
    unsafe { libc::close(ep) };
    Burst {
        done,
        failed: n - done,
        retransmits,
        wall: last_done.duration_since(start).as_secs_f64(),
        _sockets: sockets,
        errors,
    }
}
