//! The bare UDP forwarder: a reference for the socket work alone. It has
//! no protocol: a datagram from client `i` on the listening socket goes
//! out of forward socket `i` to peer `i`, and a datagram from peer `i` on
//! forward socket `i` goes out of the listening socket to client `i`. The
//! bench re-executes itself as `relay --forwarder plain|mmsg CLIENT=PEER
//! ...` so that the forwarder is its own process, pinned and measured like
//! a server. `plain` makes one recvfrom and one sendto per datagram,
//! `mmsg` reads and writes batches of 32 with recvmmsg/sendmmsg (no GSO).
//!
//! It prints `listen PORT`, one `forward I PORT` per flow and `ready`, and
//! exits after 15 minutes at the latest (and with the bench: the bench
//! sets PR_SET_PDEATHSIG).

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::procfs::set_buffers;
use crate::turn::SOCK_BUF;

const BATCH: usize = 32;
const BUF: usize = 2048;
const LIFETIME: Duration = Duration::from_secs(15 * 60);
const LISTENER: u64 = u64::MAX;

/// The forwarder process; returns its exit code.
pub fn main(args: &[String]) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("forwarder: {e}");
            1
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let batched = match args.first().map(String::as_str) {
        Some("plain") => false,
        Some("mmsg") => true,
        _ => return Err("usage: --forwarder plain|mmsg CLIENT=PEER...".into()),
    };
    let mut pairs = Vec::new();
    for a in &args[1..] {
        let (c, p) = a.split_once('=').ok_or("CLIENT=PEER expected")?;
        let c: SocketAddr = c.parse().map_err(|e| format!("{c}: {e}"))?;
        let p: SocketAddr = p.parse().map_err(|e| format!("{p}: {e}"))?;
        pairs.push((c, p));
    }
    let bind = || -> Result<UdpSocket, String> {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        set_buffers(s.as_raw_fd(), SOCK_BUF);
        Ok(s)
    };
    let listener = bind()?;
    let mut forward = Vec::new();
    let mut by_client = HashMap::new();
    let mut out = std::io::stdout().lock();
    let port = |s: &UdpSocket| s.local_addr().map(|a| a.port()).unwrap_or(0);
    let _ = writeln!(out, "listen {}", port(&listener));
    for (i, (c, p)) in pairs.iter().enumerate() {
        let s = bind()?;
        s.connect(p).map_err(|e| e.to_string())?;
        let _ = writeln!(out, "forward {i} {}", port(&s));
        forward.push(s);
        by_client.insert(*c, i);
    }
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);

    // SAFETY: plain system calls on descriptors this function owns.
    let ep = unsafe { libc::epoll_create1(0) };
    if ep < 0 {
        return Err("epoll_create1 failed".into());
    }
    let add = |fd: RawFd, data: u64| {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: data,
        };
        // SAFETY: ev is a valid epoll_event.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    };
    add(listener.as_raw_fd(), LISTENER);
    for (i, s) in forward.iter().enumerate() {
        add(s.as_raw_fd(), i as u64);
    }
    let clients: Vec<libc::sockaddr_in> = pairs.iter().map(|(c, _)| sockaddr(*c)).collect();
    let mut fw = Forwarder {
        listener: listener.as_raw_fd(),
        forward: forward.iter().map(|s| s.as_raw_fd()).collect(),
        clients,
        by_client,
        bufs: vec![[0u8; BUF]; BATCH],
        // SAFETY: sockaddr_in is plain data.
        names: vec![unsafe { std::mem::zeroed() }; BATCH],
        lens: vec![0; BATCH],
    };
    // SAFETY: epoll_event is plain data.
    let mut events: Vec<libc::epoll_event> = vec![unsafe { std::mem::zeroed() }; 64];
    let start = Instant::now();
    while start.elapsed() < LIFETIME {
        // SAFETY: events is a valid array of its length.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 1000) };
        for ev in &events[..n.max(0) as usize] {
            let data = ev.u64;
            if batched {
                fw.batch(data);
            } else {
                fw.plain(data);
            }
        }
    }
    Ok(())
}

fn sockaddr(a: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(a) = a else {
        // SAFETY: sockaddr_in is plain data.
        return unsafe { std::mem::zeroed() };
    };
    // SAFETY: sockaddr_in is plain data.
    let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    s
}

fn from_sockaddr(s: &libc::sockaddr_in) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)),
        u16::from_be(s.sin_port),
    ))
}

const SALEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

struct Forwarder {
    listener: RawFd,
    forward: Vec<RawFd>,
    clients: Vec<libc::sockaddr_in>,
    by_client: HashMap<SocketAddr, usize>,
    bufs: Vec<[u8; BUF]>,
    names: Vec<libc::sockaddr_in>,
    lens: Vec<usize>,
}

impl Forwarder {
    /// recvfrom/sendto, one datagram per call, until the socket is empty
    /// (at most 64 per wake-up, as a server would bound its turn).
    fn plain(&mut self, from: u64) {
        let buf = &mut self.bufs[0];
        for _ in 0..64 {
            // SAFETY: sockaddr_in is plain data.
            let mut name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut len = SALEN;
            let fd = if from == LISTENER {
                self.listener
            } else {
                self.forward[from as usize]
            };
            // SAFETY: buf and name are valid for the lengths passed.
            let n = unsafe {
                libc::recvfrom(
                    fd,
                    buf.as_mut_ptr().cast(),
                    BUF,
                    libc::MSG_DONTWAIT,
                    (&mut name as *mut libc::sockaddr_in).cast(),
                    &mut len,
                )
            };
            if n <= 0 {
                return;
            }
            if from == LISTENER {
                let Some(&i) = self.by_client.get(&from_sockaddr(&name)) else {
                    continue;
                };
                // SAFETY: the forward socket is connected; buf holds n bytes.
                unsafe { libc::sendto(self.forward[i], buf.as_ptr().cast(), n as usize, 0, std::ptr::null(), 0) };
            } else {
                let to = &self.clients[from as usize];
                // SAFETY: buf holds n bytes; to is a sockaddr_in.
                unsafe {
                    libc::sendto(
                        self.listener,
                        buf.as_ptr().cast(),
                        n as usize,
                        0,
                        (to as *const libc::sockaddr_in).cast(),
                        SALEN,
                    )
                };
            }
        }
    }

    /// recvmmsg/sendmmsg in batches of 32 (at most two batches per wake-up).
    fn batch(&mut self, from: u64) {
        for _ in 0..2 {
            let fd = if from == LISTENER {
                self.listener
            } else {
                self.forward[from as usize]
            };
            let n = self.recv_batch(fd);
            if n == 0 {
                return;
            }
            if from == LISTENER {
                // Runs of datagrams for the same forward socket go out in
                // one sendmmsg each.
                let mut k = 0;
                while k < n {
                    let Some(&i) = self.by_client.get(&from_sockaddr(&self.names[k])) else {
                        k += 1;
                        continue;
                    };
                    let mut end = k + 1;
                    while end < n && self.by_client.get(&from_sockaddr(&self.names[end])) == Some(&i) {
                        end += 1;
                    }
                    self.send_batch(self.forward[i], k..end, None);
                    k = end;
                }
            } else {
                let to = self.clients[from as usize];
                self.send_batch(self.listener, 0..n, Some(to));
            }
            if n < BATCH {
                return;
            }
        }
    }

    fn recv_batch(&mut self, fd: RawFd) -> usize {
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: BUF,
            })
            .collect();
        // SAFETY: mmsghdr is plain data.
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        for ((m, iov), name) in msgs.iter_mut().zip(iovs.iter_mut()).zip(self.names.iter_mut()) {
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_name = (name as *mut libc::sockaddr_in).cast();
            m.msg_hdr.msg_namelen = SALEN;
        }
        // SAFETY: the headers point at buffers and names owned by self.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            return 0;
        }
        for (len, m) in self.lens.iter_mut().zip(&msgs[..n as usize]) {
            *len = m.msg_len as usize;
        }
        n as usize
    }

    fn send_batch(&mut self, fd: RawFd, range: std::ops::Range<usize>, to: Option<libc::sockaddr_in>) {
        let mut to = to;
        let mut iovs: Vec<libc::iovec> = range
            .clone()
            .map(|k| libc::iovec {
                iov_base: self.bufs[k].as_mut_ptr().cast(),
                iov_len: self.lens[k],
            })
            .collect();
        // SAFETY: mmsghdr is plain data.
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; iovs.len()];
        for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            if let Some(to) = to.as_mut() {
                m.msg_hdr.msg_name = (to as *mut libc::sockaddr_in).cast();
                m.msg_hdr.msg_namelen = SALEN;
            }
        }
        let mut off = 0;
        while off < msgs.len() {
            // SAFETY: the headers point at buffers that outlive the call.
            let n = unsafe { libc::sendmmsg(fd, msgs[off..].as_mut_ptr(), (msgs.len() - off) as libc::c_uint, 0) };
            if n <= 0 {
                return;
            }
            off += n as usize;
        }
    }
}
