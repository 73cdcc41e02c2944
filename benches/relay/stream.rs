//! TURN/TCP and TURN/TLS load: clients send ChannelData on their stream
//! and their UDP peers send datagrams back, both at full speed, from one
//! non-blocking loop (a rustls connection is not shared between threads).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::load::{Phase, MAX_PACKETS_PER_PHASE};
use crate::procfs::{cpu_seconds, Sockets};
use crate::turn::{channel_data, raw_payload, StreamConn, StreamFlow, CD_HEADER};

/// Quiet time after the senders stop that ends a phase (at most 5 s).
const DRAIN: Duration = Duration::from_millis(200);
const DRAIN_MAX: Duration = Duration::from_secs(5);

struct State {
    /// `batch` ChannelData frames, written as one unit.
    frames: Vec<u8>,
    /// TCP: bytes of `frames` still to write (from the end).
    pending: usize,
    rx: Vec<u8>,
    /// What each datagram at the peer and each frame at the client must be.
    peer_prefix: [u8; 4],
    client_prefix: [u8; 8],
    peer_packet: Vec<u8>,
}

/// Runs one phase over `flows` for `secs` seconds.
pub fn run_stream_phase(
    pid: u32,
    sockets: &Sockets,
    flows: &mut [StreamFlow],
    payload: usize,
    secs: f64,
    batch: usize,
) -> Result<Phase, String> {
    let mut states: Vec<State> = flows
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let one = channel_data(f.channel, payload, i as u32);
            let mut client_prefix = [0u8; 8];
            client_prefix.copy_from_slice(&one[..8]);
            State {
                frames: one.repeat(batch),
                pending: 0,
                rx: Vec::with_capacity(1 << 16),
                peer_prefix: (i as u32).to_be_bytes(),
                client_prefix,
                peer_packet: raw_payload(payload, i as u32),
            }
        })
        .collect();
    let mut tmp = vec![0u8; 1 << 16];
    let drops0 = sockets.udp_table().0;
    let cpu0 = cpu_seconds(pid);
    let gen0 = cpu_seconds(std::process::id());
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let (mut sent, mut received, mut bad, mut send_errors) = ([0u64; 2], [0u64; 2], 0u64, 0u64);
    let mut last_progress = start;
    let mut last_rx = start;
    loop {
        let now = Instant::now();
        let sending = now < deadline && sent[0] + sent[1] < MAX_PACKETS_PER_PHASE;
        if !sending && (now.duration_since(last_progress) > DRAIN || now.duration_since(deadline) > DRAIN_MAX) {
            break;
        }
        let mut progress = false;
        for (f, st) in flows.iter_mut().zip(states.iter_mut()) {
            // client → server, on the stream
            match &mut f.conn {
                StreamConn::Tcp(tcp) => {
                    if st.pending == 0 && sending {
                        st.pending = st.frames.len();
                        sent[0] += batch as u64;
                    }
                    while st.pending > 0 {
                        let off = st.frames.len() - st.pending;
                        match tcp.write(&st.frames[off..]) {
                            Ok(n) => {
                                st.pending -= n;
                                progress = true;
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(format!("TCP write: {e}")),
                        }
                    }
                }
                StreamConn::Tls(tls) => {
                    if !tls.conn.wants_write() && sending {
                        tls.conn
                            .writer()
                            .write_all(&st.frames)
                            .map_err(|e| format!("TLS write: {e}"))?;
                        sent[0] += batch as u64;
                    }
                    while tls.conn.wants_write() {
                        match tls.conn.write_tls(&mut tls.sock) {
                            Ok(0) => break,
                            Ok(_) => progress = true,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(format!("TLS write: {e}")),
                        }
                    }
                }
            }
            // server → client, on the stream
            let got = read_stream(&mut f.conn, &mut tmp, &mut st.rx)?;
            if got > 0 {
                progress = true;
                last_rx = Instant::now();
                let (good, wrong) = count_frames(&mut st.rx, &st.client_prefix, payload);
                received[1] += good;
                bad += wrong;
            }
            // peer → server, over UDP
            let fd = f.peer.as_raw_fd();
            if sending {
                for _ in 0..batch {
                    // SAFETY: the peer socket is connected and the buffer valid.
                    let n = unsafe { libc::send(fd, st.peer_packet.as_ptr().cast(), st.peer_packet.len(), 0) };
                    if n < 0 {
                        send_errors += 1;
                    } else {
                        sent[1] += 1;
                    }
                }
            }
            // server → peer
            for _ in 0..256 {
                // SAFETY: tmp is valid for its length.
                let n = unsafe { libc::recv(fd, tmp.as_mut_ptr().cast(), tmp.len(), libc::MSG_DONTWAIT) };
                if n <= 0 {
                    break;
                }
                progress = true;
                last_rx = Instant::now();
                if n as usize == payload && tmp[..4] == st.peer_prefix {
                    received[0] += 1;
                } else {
                    bad += 1;
                }
            }
        }
        if progress {
            last_progress = Instant::now();
        } else if !sending {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(Phase {
        sent: sent[0] + sent[1],
        sent_dir: sent,
        received_dir: received,
        send_errors,
        received: received[0] + received[1],
        bad,
        active_secs: last_rx.duration_since(start).as_secs_f64().max(secs),
        server_cpu: cpu_seconds(pid) - cpu0,
        generator_cpu: cpu_seconds(std::process::id()) - gen0,
        drops: sockets.udp_table().0.since(drops0),
        host: None,
        stalls: 0,
    })
}

/// Reads what the stream has (non-blocking) and appends the plaintext to
/// `rx`; returns the bytes added.
fn read_stream(conn: &mut StreamConn, tmp: &mut [u8], rx: &mut Vec<u8>) -> Result<usize, String> {
    let before = rx.len();
    match conn {
        StreamConn::Tcp(tcp) => loop {
            match tcp.read(tmp) {
                Ok(0) => return Err("server closed the TCP connection".into()),
                Ok(n) => rx.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("TCP read: {e}")),
            }
        },
        StreamConn::Tls(tls) => loop {
            match tls.conn.read_tls(&mut tls.sock) {
                Ok(0) => return Err("server closed the TLS connection".into()),
                Ok(_) => {
                    tls.conn.process_new_packets().map_err(|e| format!("TLS: {e}"))?;
                    loop {
                        match tls.conn.reader().read(tmp) {
                            Ok(0) => break,
                            Ok(n) => rx.extend_from_slice(&tmp[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(format!("TLS read: {e}")),
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("TLS read: {e}")),
            }
        },
    }
    Ok(rx.len() - before)
}

/// Takes the complete frames off the front of `rx`: (ChannelData frames
/// as expected, anything else).
fn count_frames(rx: &mut Vec<u8>, prefix: &[u8; 8], payload: usize) -> (u64, u64) {
    let (mut good, mut bad, mut off) = (0u64, 0u64, 0usize);
    while rx.len() - off >= CD_HEADER {
        let head = &rx[off..];
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let total = if head[0] & 0xC0 == 0 {
            20 + len
        } else {
            CD_HEADER + len.div_ceil(4) * 4
        };
        if head.len() < total {
            break;
        }
        if head[0] & 0xC0 != 0 && len == payload && head.len() >= 8 && head[..8] == prefix[..] {
            good += 1;
        } else {
            bad += 1;
        }
        off += total;
    }
    rx.drain(..off);
    (good, bad)
}
