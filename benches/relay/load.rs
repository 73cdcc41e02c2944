//! UDP load: full-speed and paced phases (one sender thread with
//! `sendmmsg`, one receiver thread with `recvmmsg`) and the ping-pong.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::host::{HostDelta, HostMeter, HostSnapshot};
use crate::procfs::{cpu_seconds, Drops, Sockets};
use crate::turn::{channel_data, raw_payload, UdpFlow, CD_HEADER};

/// Datagrams per recvmmsg call and the size of each receive buffer.
const RECV_BATCH: usize = 64;
const RECV_BUF: usize = 2048;
/// Time left after a phase, once the server's queues are empty, for
/// packets still in flight.
const DRAIN: Duration = Duration::from_millis(200);
/// Longest wait for the server to work off its queues after a phase.
const SETTLE_MAX: Duration = Duration::from_secs(5);
/// Hard cap on datagrams sent in one phase, whatever the clock says.
pub const MAX_PACKETS_PER_PHASE: u64 = 200_000_000;
/// Closed loop: after this long without an arrival, the datagrams in
/// flight are taken as lost and the window opens again.
const STALL: Duration = Duration::from_millis(10);

/// How the sources send.
#[derive(Clone, Copy, Debug)]
pub enum Offer {
    /// As fast as they can, `batch` datagrams per sendmmsg.
    Full,
    /// This many datagrams/s in total.
    Paced(f64),
    /// Closed loop: as fast as they can while at most this many datagrams
    /// are sent and not yet received, so the offered load follows what
    /// the relay delivers and nothing queues up to be dropped.
    Window(u64),
}

/// A socket the generator sends from, with the one datagram it repeats.
pub struct Source {
    pub fd: RawFd,
    pub packet: Vec<u8>,
}

/// A socket the generator receives on, with what every datagram must be.
pub struct Sink {
    pub fd: RawFd,
    pub len: usize,
    pub prefix: Vec<u8>,
}

/// client → peer: the client sends ChannelData, the peer gets the payload.
pub fn forward(f: &UdpFlow, index: usize, payload: usize) -> (Source, Sink) {
    (
        Source {
            fd: f.client.as_raw_fd(),
            packet: channel_data(f.channel, payload, index as u32),
        },
        Sink {
            fd: f.peer.as_raw_fd(),
            len: payload,
            prefix: (index as u32).to_be_bytes().to_vec(),
        },
    )
}

/// peer → client: the peer sends the payload, the client gets ChannelData.
pub fn reverse(f: &UdpFlow, index: usize, payload: usize) -> (Source, Sink) {
    let cd = channel_data(f.channel, payload, index as u32);
    (
        Source {
            fd: f.peer.as_raw_fd(),
            packet: raw_payload(payload, index as u32),
        },
        Sink {
            fd: f.client.as_raw_fd(),
            len: CD_HEADER + payload,
            prefix: cd[..8].to_vec(),
        },
    )
}

/// Sources and sinks come in pairs: even indexes carry one direction
/// (client → peer, or A → B), odd ones the other.
#[derive(Clone, Copy, Default, Debug)]
pub struct Phase {
    pub sent: u64,
    /// Sent and received one way (→: client → peer, A → B) and the other (←).
    pub sent_dir: [u64; 2],
    pub received_dir: [u64; 2],
    pub send_errors: u64,
    pub received: u64,
    /// Datagrams of the wrong size or for the wrong flow.
    pub bad: u64,
    /// From the first send to the last datagram received.
    pub active_secs: f64,
    pub server_cpu: f64,
    pub generator_cpu: f64,
    pub drops: Drops,
    /// Host CPU (namespace mode).
    pub host: Option<HostDelta>,
    /// Closed loop: times the window was reopened after `STALL`.
    pub stalls: u64,
}

impl Phase {
    pub fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        100.0 * (self.sent.saturating_sub(self.received)) as f64 / self.sent as f64
    }
    /// Server CPU µs per relayed packet; in namespace mode host CPU.
    pub fn us_per_packet(&self) -> f64 {
        let cpu = self.host.map_or(self.server_cpu, |h| h.relaying());
        1e6 * cpu / self.received.max(1) as f64
    }
    /// The server process's share of a core; in namespace mode, with the
    /// CPUs pinned, the server CPU's (process and NAPI thread together).
    pub fn server_cpu_pct(&self) -> f64 {
        match self.host {
            Some(
                h @ HostDelta {
                    cpu_busy: Some((server, _)),
                    ..
                },
            ) => 100.0 * server / h.wall.max(1e-9),
            _ => 100.0 * self.server_cpu / self.active_secs.max(1e-9),
        }
    }
    /// Relayed datagrams per second of the phase.
    pub fn packets_per_sec(&self) -> f64 {
        self.received as f64 / self.active_secs.max(1e-9)
    }
}

/// What a phase measures the CPU of: the server process, and in
/// namespace mode the host.
pub struct Meter {
    pub pid: u32,
    pub host: Option<HostMeter>,
}

/// Runs one phase: `sources` send for `secs` seconds as `offer` says
/// (`batch` datagrams per sendmmsg unless paced); a receiver thread
/// counts what reaches `sinks`.
pub fn run_phase(
    meter: &Meter,
    sockets: &Sockets,
    sources: &[Source],
    sinks: Vec<Sink>,
    secs: f64,
    offer: Offer,
    batch: usize,
) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let arrived = Arc::new(AtomicU64::new(0));
    let receiver = {
        let (stop, arrived) = (stop.clone(), arrived.clone());
        std::thread::spawn(move || receive(&sinks, &stop, &arrived))
    };
    // Let the receiver reach its loop before the clock starts.
    std::thread::sleep(Duration::from_millis(50));

    let pid = meter.pid;
    let drops0 = sockets.udp_table().0;
    let host0 = meter.host.as_ref().map(|_| HostSnapshot::take());
    let cpu0 = cpu_seconds(pid);
    let gen0 = cpu_seconds(std::process::id());
    let start = Instant::now();
    let duration = Duration::from_secs_f64(secs);
    let ((sent_dir, send_errors), stalls) = match offer {
        Offer::Full => (blast(sources, batch, start + duration, None), 0),
        Offer::Window(w) => {
            let mut stalls = 0;
            let sent = blast(sources, batch, start + duration, Some((&arrived, w, &mut stalls)));
            (sent, stalls)
        }
        Offer::Paced(rate) => (paced(sources, rate, start, duration), 0),
    };
    let send_secs = start.elapsed().as_secs_f64();
    settle(sockets);
    stop.store(true, Ordering::Relaxed);
    let (received_dir, bad, last) = receiver.join().unwrap_or(([0, 0], 0, None));
    let active_secs = last.map_or(send_secs, |t| t.duration_since(start).as_secs_f64().max(send_secs));
    let server_cpu = cpu_seconds(pid) - cpu0;
    let generator_cpu = cpu_seconds(std::process::id()) - gen0;
    let host = match (&meter.host, host0) {
        (Some(m), Some(h0)) => Some(h0.delta(&HostSnapshot::take(), m, pid)),
        _ => None,
    };
    Phase {
        sent: sent_dir[0] + sent_dir[1],
        sent_dir,
        received_dir,
        send_errors,
        received: received_dir[0] + received_dir[1],
        bad,
        active_secs,
        server_cpu,
        generator_cpu,
        drops: sockets.udp_table().0.since(drops0),
        host,
        stalls,
    }
}

/// After the generator stops: waits until the server has emptied its
/// receive queues (at most `SETTLE_MAX`), then a little longer for the
/// last relayed datagrams to land.
pub fn settle(sockets: &Sockets) {
    let start = Instant::now();
    while start.elapsed() < SETTLE_MAX && sockets.udp_table().1 > 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(DRAIN);
}

/// Full speed: one sendmmsg of `batch` copies per source, round after
/// round; with `window` (datagrams received so far, the window, stalls)
/// each sendmmsg waits until the window has room for its batch.
fn blast(
    sources: &[Source],
    batch: usize,
    deadline: Instant,
    mut window: Option<(&AtomicU64, u64, &mut u64)>,
) -> ([u64; 2], u64) {
    let mut iovs: Vec<libc::iovec> = sources
        .iter()
        .map(|s| libc::iovec {
            iov_base: s.packet.as_ptr() as *mut libc::c_void,
            iov_len: s.packet.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
    let mut msgs: Vec<Vec<libc::mmsghdr>> = sources
        .iter()
        .map(|_| vec![unsafe { std::mem::zeroed() }; batch])
        .collect();
    for (i, per_source) in msgs.iter_mut().enumerate() {
        for m in per_source.iter_mut() {
            m.msg_hdr.msg_iov = &mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
        }
    }
    let (mut sent, mut errors) = ([0u64; 2], 0u64);
    // Datagrams taken as lost after a stall.
    let mut written_off = 0u64;
    'rounds: while sent[0] + sent[1] < MAX_PACKETS_PER_PHASE && Instant::now() < deadline {
        for (i, (s, per_source)) in sources.iter().zip(msgs.iter_mut()).enumerate() {
            if let Some((arrived, w, stalls)) = window.as_mut() {
                let mut waiting_since = None;
                loop {
                    let in_flight = (sent[0] + sent[1]).saturating_sub(arrived.load(Ordering::Relaxed) + written_off);
                    if in_flight + batch as u64 <= *w {
                        break;
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        break 'rounds;
                    }
                    if now.duration_since(*waiting_since.get_or_insert(now)) > STALL {
                        written_off += in_flight;
                        **stalls += 1;
                        break;
                    }
                    // The receiver shares this CPU.
                    std::thread::yield_now();
                }
            }
            // SAFETY: the headers point at iovecs and packets that outlive
            // the call; the sockets are connected, so no address is needed.
            let n = unsafe { libc::sendmmsg(s.fd, per_source.as_mut_ptr(), batch as libc::c_uint, 0) };
            if n > 0 {
                sent[i % 2] += n as u64;
            } else {
                errors += 1;
            }
        }
    }
    (sent, errors)
}

/// Paced: `rate` datagrams/s in total, one per source in turn, sent in
/// the small bursts that a ~0.2 ms sleep granularity allows.
fn paced(sources: &[Source], rate: f64, start: Instant, duration: Duration) -> ([u64; 2], u64) {
    let (mut sent, mut errors, mut next, mut dir) = (0u64, 0u64, 0usize, [0u64; 2]);
    let total = (rate * duration.as_secs_f64()) as u64;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration || sent >= total {
            break;
        }
        let due = ((rate * elapsed.as_secs_f64()) as u64).min(total);
        while sent < due {
            let s = &sources[next];
            dir[next % 2] += 1;
            next = (next + 1) % sources.len();
            // SAFETY: fd is a connected socket and the buffer is valid.
            let n = unsafe { libc::send(s.fd, s.packet.as_ptr().cast(), s.packet.len(), 0) };
            if n < 0 {
                errors += 1;
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    (dir, errors)
}

/// Counts datagrams on `sinks` with recvmmsg until `stop` and then until
/// the sockets are empty, adding each batch to `arrived` as it comes.
/// Returns (good at even and at odd sinks, bad, time of the last good one).
fn receive(sinks: &[Sink], stop: &AtomicBool, arrived: &AtomicU64) -> ([u64; 2], u64, Option<Instant>) {
    let mut bufs = vec![[0u8; RECV_BUF]; RECV_BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: RECV_BUF,
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; RECV_BATCH];
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut pollfds: Vec<libc::pollfd> = sinks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let hard_deadline = Instant::now() + Duration::from_secs(120);
    let (mut good, mut bad, mut last) = ([0u64; 2], 0u64, None);
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let mut got = 0usize;
        for (k, sink) in sinks.iter().enumerate() {
            for _ in 0..16 {
                // SAFETY: msgs point at RECV_BATCH valid buffers owned above.
                let n = unsafe {
                    libc::recvmmsg(
                        sink.fd,
                        msgs.as_mut_ptr(),
                        RECV_BATCH as libc::c_uint,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                };
                if n <= 0 {
                    break;
                }
                let n = n as usize;
                got += n;
                arrived.fetch_add(n as u64, Ordering::Relaxed);
                last = Some(Instant::now());
                for (m, buf) in msgs[..n].iter().zip(bufs.iter()) {
                    let len = m.msg_len as usize;
                    if len == sink.len && buf[..sink.prefix.len()] == sink.prefix[..] {
                        good[k % 2] += 1;
                    } else {
                        bad += 1;
                    }
                }
                if n < RECV_BATCH {
                    break;
                }
            }
        }
        if got == 0 {
            if stopping || Instant::now() > hard_deadline {
                return (good, bad, last);
            }
            // SAFETY: pollfds is a valid array of pollfd.
            unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, 5) };
        }
    }
}

/// Waits up to `ms` for `fd` to be readable.
pub fn wait_readable(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: p is one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// Empties a non-blocking socket.
pub fn drain_socket(fd: RawFd) {
    let mut buf = [0u8; RECV_BUF];
    // SAFETY: buf is valid for its length.
    while unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) } > 0 {}
}

pub struct Rtt {
    pub sent: u64,
    pub received: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub server_cpu: f64,
    pub wall: f64,
}

/// One round trip on flow `f`: its client sends ping `i`, its peer waits
/// for it (at most 1 s) and answers at once, its client waits for the
/// answer; the time from the send to the answer, in µs, or `None` if a
/// packet was lost or wrong.
fn one_ping(f: &UdpFlow, i: u32, payload: usize, buf: &mut [u8]) -> Option<f64> {
    let (c, p) = (f.client.as_raw_fd(), f.peer.as_raw_fd());
    let ping = channel_data(f.channel, payload, i);
    let pong = raw_payload(payload, i);
    let t0 = Instant::now();
    // SAFETY: the sockets are connected and the buffers valid.
    unsafe { libc::send(c, ping.as_ptr().cast(), ping.len(), 0) };
    let ok = wait_readable(p, 1000)
        // SAFETY: as above.
        && unsafe { libc::recv(p, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) } == payload as isize
        && buf[..4] == ping[4..8];
    if !ok {
        return None;
    }
    // SAFETY: as above.
    unsafe { libc::send(p, pong.as_ptr().cast(), pong.len(), 0) };
    let ok = wait_readable(c, 1000)
        // SAFETY: as above.
        && unsafe { libc::recv(c, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) }
            == (CD_HEADER + payload) as isize
        && buf[4..8] == ping[4..8];
    ok.then(|| t0.elapsed().as_secs_f64() * 1e6)
}

/// Sorts `samples` and makes the figure of them.
fn rtt_of(mut samples: Vec<f64>, sent: u64, server_cpu: f64, wall: f64) -> Rtt {
    samples.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| {
        if samples.is_empty() {
            0.0
        } else {
            samples[((samples.len() - 1) as f64 * q).round() as usize]
        }
    };
    Rtt {
        sent,
        received: samples.len() as u64,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        server_cpu,
        wall,
    }
}

/// One packet in flight: client → relay → peer, the peer echoes it back
/// through the relay to the client; the round trip is timed at the client.
/// A ping lost for 1 s counts as lost; the whole loop stops after `max`.
pub fn ping_pong(pid: u32, f: &UdpFlow, count: usize, payload: usize, max: Duration) -> Rtt {
    let mut one = ping_pong_paired(&[pid], &[f], count, payload, max);
    one.remove(0)
}

/// The ping-pong through several servers at once, one ping each in turn
/// (`flows[k]` goes through the server of pid `pids[k]`), so that whatever
/// the machine does meanwhile (another process on a core, the hypervisor
/// waking an idle vCPU slower or faster) falls on all of them alike; one
/// figure per server.
pub fn ping_pong_paired(pids: &[u32], flows: &[&UdpFlow], count: usize, payload: usize, max: Duration) -> Vec<Rtt> {
    for f in flows {
        drain_socket(f.client.as_raw_fd());
        drain_socket(f.peer.as_raw_fd());
    }
    let mut samples: Vec<Vec<f64>> = flows.iter().map(|_| Vec::with_capacity(count)).collect();
    let mut buf = [0u8; RECV_BUF];
    let cpu0: Vec<f64> = pids.iter().map(|&p| cpu_seconds(p)).collect();
    let start = Instant::now();
    let mut sent = 0u64;
    for i in 0..count {
        if start.elapsed() > max {
            break;
        }
        sent += 1;
        for (k, f) in flows.iter().enumerate() {
            samples[k].extend(one_ping(f, i as u32, payload, &mut buf));
        }
    }
    let wall = start.elapsed().as_secs_f64();
    samples
        .into_iter()
        .zip(pids.iter().zip(cpu0))
        .map(|(s, (&pid, c0))| rtt_of(s, sent, cpu_seconds(pid) - c0, wall))
        .collect()
}
