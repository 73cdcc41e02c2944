//! Echo peers on 127.0.0.1, each on its own thread until dropped: a UDP
//! one ([`EchoPeer`]) and a TCP one ([`TcpEcho`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A UDP socket on 127.0.0.1 that sends every datagram back to its sender,
/// on its own thread, until dropped (or for at most two minutes, unless
/// started with [`EchoPeer::start_for`]).
pub struct EchoPeer {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoPeer {
    pub fn start() -> EchoPeer {
        EchoPeer::start_on("127.0.0.1:0")
    }

    /// An echo peer bound to `addr` (e.g. `"[::1]:0"`).
    pub fn start_on(addr: &str) -> EchoPeer {
        EchoPeer::start_bounded(addr, Duration::from_secs(120))
    }

    /// An echo peer on 127.0.0.1 that answers for at most `limit`.
    pub fn start_for(limit: Duration) -> EchoPeer {
        EchoPeer::start_bounded("127.0.0.1:0", limit)
    }

    fn start_bounded(addr: &str, limit: Duration) -> EchoPeer {
        let socket = UdpSocket::bind(addr).expect("bind echo peer");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("set_read_timeout");
        let addr = socket.local_addr().expect("local_addr");
        let received = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + limit;
                let mut buf = [0u8; 65_536];
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        received.fetch_add(1, Ordering::Relaxed);
                        let _ = socket.send_to(&buf[..n], from);
                    }
                }
            })
        };
        EchoPeer {
            addr,
            received,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams received (and echoed) so far.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A TCP peer on 127.0.0.1 that echoes every connection it accepts, each
/// on its own thread, until dropped (or for at most two minutes).
pub struct TcpEcho {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpEcho {
    pub fn start() -> TcpEcho {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind TCP peer");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let running = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut echoes = Vec::new();
            while !running.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let running = running.clone();
                        echoes.push(std::thread::spawn(move || echo(stream, &running, deadline)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            for e in echoes {
                let _ = e.join();
            }
        });
        TcpEcho {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

/// Sends back what `stream` receives until it ends, `stop` is set or the
/// deadline passes.
fn echo(mut stream: TcpStream, stop: &AtomicBool, deadline: Instant) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
