//! Batched UDP I/O for the shards: fewer syscalls per relayed packet.
//!
//! * [`RecvBatch`] reads up to [`RECV_BATCH`] datagrams with one
//!   `recvmmsg`, each into its own buffer with headroom in front (so a
//!   peer's payload is framed in place, see `proto::server::PEER_HEADROOM`)
//!   and tailroom behind.
//! * [`TxQueue`] collects the datagrams a batch of input produces and sends
//!   them when the shard flushes it, at the end of the batch: consecutive
//!   datagrams through one socket to one destination of one size become one
//!   GSO send (`UDP_SEGMENT`: one pass through the kernel's stack for up to
//!   [`MAX_SEGMENTS`] datagrams), and consecutive sends through one socket
//!   one `sendmmsg`.
//!
//! Nothing queues beyond one batch: the queue is flushed before it could
//! overflow and at the end of every batch, so a datagram waits at most for
//! the rest of the input that arrived with it. What the kernel refuses is
//! dropped, as a router would, never retried later: a full send buffer
//! (would-block) drops the rest of that socket's batch; any other error
//! drops the one datagram it names and the rest still go. A GSO send the
//! kernel refuses (`EIO` when the device cannot checksum segments,
//! `EINVAL` when a segment exceeds the route's MTU) is resent as single
//! datagrams, and after [`GSO_FAILURES_BEFORE_OFF`] such refusals the
//! queue stops asking for GSO.
//!
//! The syscalls are behind [`Transmit`] so the batching and error rules
//! are unit-tested with scripted kernel answers; [`Kernel`] is the real
//! one. `quinn-udp` does the same batching, but its socket setup turns on
//! per-packet ancillary data (TOS, PKTINFO, timestamps, GRO) and the DF bit
//! for every socket, which a relay neither needs nor should impose on the
//! traffic it forwards; the hand-written calls here are about 150 lines of
//! `libc`.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};

use tracing::{debug, trace};

/// A UDP listener registered with the shard's runtime: read by readiness
/// guard (so a short batch can clear readiness without another syscall),
/// written with plain non-blocking syscalls through the shared socket.
pub(in crate::net) type UdpSock = tokio::io::unix::AsyncFd<std::rc::Rc<std::net::UdpSocket>>;

/// Registers `socket` (non-blocking) with the current runtime for
/// readability only: the shards never wait to write, and a writable
/// interest would wake the reactor as send buffers drain.
pub(in crate::net) fn register(socket: std::net::UdpSocket) -> io::Result<UdpSock> {
    // SAFETY: the AsyncFd owns the socket, so its descriptor stays open
    // and names the same socket for as long as the AsyncFd lives.
    unsafe { UdpSock::register_with_interest(std::rc::Rc::new(socket), tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)
}

/// Datagrams read per `recvmmsg`.
pub(in crate::net) const RECV_BATCH: usize = 32;
/// Most segments in one GSO send (the kernel's `UDP_MAX_SEGMENTS` on the
/// oldest kernels that have GSO).
pub(in crate::net) const MAX_SEGMENTS: usize = 64;
/// Most bytes in one GSO send: its IP packet must stay below 64 KiB.
const MAX_GSO_BYTES: usize = 60_000;
/// Largest segment sent with GSO: a datagram that fits a 1500-byte MTU in
/// IPv6. Larger ones go alone (they would fragment, which GSO refuses).
const MAX_GSO_SEGMENT: usize = 1452;
/// Datagrams in one `sendmmsg`, and queued entries before a forced flush.
const MAX_ENTRIES: usize = 64;
/// Bytes queued before a forced flush.
const QUEUE_BYTES: usize = 256 * 1024;
/// GSO refusals after which a queue sends single datagrams only.
pub(in crate::net) const GSO_FAILURES_BEFORE_OFF: u32 = 8;

/// One datagram (or, with `segment`, a GSO train of datagrams of that
/// size, the last possibly shorter) for [`Transmit::send_batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::net) struct Datagram<'a> {
    pub to: SocketAddr,
    pub bytes: &'a [u8],
    pub segment: Option<u16>,
}

/// The send syscall: sends a prefix of `batch` through socket `fd` and
/// says how many it sent, or fails for the first one (`sendmmsg`).
pub(in crate::net) trait Transmit {
    fn send_batch(&mut self, fd: RawFd, batch: &[Datagram<'_>]) -> io::Result<usize>;
}

/// The real kernel.
pub(in crate::net) struct Kernel;

#[repr(C, align(8))]
struct SegmentCmsg([u8; 32]);

impl Transmit for Kernel {
    fn send_batch(&mut self, fd: RawFd, batch: &[Datagram<'_>]) -> io::Result<usize> {
        let n = batch.len().min(MAX_ENTRIES);
        let mut names: [MaybeUninit<socket2::SockAddr>; MAX_ENTRIES] = [const { MaybeUninit::uninit() }; MAX_ENTRIES];
        let mut iovs: [MaybeUninit<libc::iovec>; MAX_ENTRIES] = [const { MaybeUninit::uninit() }; MAX_ENTRIES];
        let mut cmsgs: [MaybeUninit<SegmentCmsg>; MAX_ENTRIES] = [const { MaybeUninit::uninit() }; MAX_ENTRIES];
        let mut hdrs: [MaybeUninit<libc::mmsghdr>; MAX_ENTRIES] = [const { MaybeUninit::uninit() }; MAX_ENTRIES];
        for (i, d) in batch[..n].iter().enumerate() {
            let name = names[i].write(socket2::SockAddr::from(d.to));
            let iov = iovs[i].write(libc::iovec {
                iov_base: d.bytes.as_ptr() as *mut libc::c_void,
                iov_len: d.bytes.len(),
            });
            // SAFETY: an all-zero mmsghdr is a valid empty header.
            let hdr = hdrs[i].write(unsafe { std::mem::zeroed() });
            hdr.msg_hdr.msg_name = name.as_ptr() as *mut libc::c_void;
            hdr.msg_hdr.msg_namelen = name.len();
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            if let Some(segment) = d.segment {
                let cmsg = cmsgs[i].write(SegmentCmsg([0; 32]));
                hdr.msg_hdr.msg_control = cmsg.0.as_mut_ptr() as *mut libc::c_void;
                // SAFETY: CMSG_SPACE of a u16 (24 bytes on 64-bit Linux)
                // fits the 32-byte, 8-aligned buffer the header points at;
                // CMSG_FIRSTHDR is then non-null and its data has room.
                unsafe {
                    hdr.msg_hdr.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as _;
                    let c = libc::CMSG_FIRSTHDR(&hdr.msg_hdr);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = libc::UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, segment);
                }
            }
        }
        // SAFETY: the first `n` headers are initialised and point at names,
        // iovecs, control buffers and payloads that outlive the call.
        let sent = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr() as *mut libc::mmsghdr, n as u32, 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }
}

/// Buffers for one `recvmmsg`.
pub(in crate::net) struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    headroom: usize,
    max: usize,
    got: [(usize, Option<SocketAddr>); RECV_BATCH],
}

impl RecvBatch {
    /// Room for [`RECV_BATCH`] datagrams of up to `max` bytes, each with
    /// `headroom` bytes before it and `tailroom` after.
    pub(in crate::net) fn new(headroom: usize, max: usize, tailroom: usize) -> RecvBatch {
        RecvBatch {
            bufs: (0..RECV_BATCH)
                .map(|_| vec![0u8; headroom + max + tailroom].into_boxed_slice())
                .collect(),
            headroom,
            max,
            got: [(0, None); RECV_BATCH],
        }
    }

    /// Reads what `socket` has, up to [`RECV_BATCH`] datagrams, without
    /// blocking; returns how many (a would-block error when none).
    pub(in crate::net) fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        // Zeroed, not uninitialised: the kernel writes only `msg_namelen`
        // bytes of each, and the whole storage is read back below.
        let mut names: [MaybeUninit<socket2::SockAddrStorage>; RECV_BATCH] =
            [const { MaybeUninit::zeroed() }; RECV_BATCH];
        let mut iovs: [MaybeUninit<libc::iovec>; RECV_BATCH] = [const { MaybeUninit::uninit() }; RECV_BATCH];
        let mut hdrs: [MaybeUninit<libc::mmsghdr>; RECV_BATCH] = [const { MaybeUninit::uninit() }; RECV_BATCH];
        for (i, buf) in self.bufs.iter_mut().enumerate() {
            let iov = iovs[i].write(libc::iovec {
                iov_base: buf[self.headroom..].as_mut_ptr() as *mut libc::c_void,
                iov_len: self.max,
            });
            // SAFETY: an all-zero mmsghdr is a valid empty header.
            let hdr = hdrs[i].write(unsafe { std::mem::zeroed() });
            hdr.msg_hdr.msg_name = names[i].as_mut_ptr() as *mut libc::c_void;
            hdr.msg_hdr.msg_namelen = size_of::<socket2::SockAddrStorage>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header is initialised and points at a name buffer
        // and an iovec into `self.bufs`, all of which outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr() as *mut libc::mmsghdr,
                RECV_BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            // SAFETY: the kernel filled the first `n` headers.
            let hdr = unsafe { hdrs[i].assume_init_ref() };
            let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            // SAFETY: every byte of the storage is initialised (zeroed,
            // then `msg_namelen` of them written by the kernel), and it is
            // `sockaddr_storage` underneath.
            let from = unsafe {
                let storage = names[i].assume_init_read();
                socket2::SockAddr::new(storage, hdr.msg_hdr.msg_namelen).as_socket()
            };
            self.got[i] = (hdr.msg_len as usize, if truncated { None } else { from });
        }
        Ok(n)
    }

    /// Reads one datagram, if `socket` has one, into the first buffer with
    /// a plain `recvfrom`, without blocking; returns 1 (the datagram is
    /// [`Self::datagram`]`(0)`) or a would-block error. For a socket that
    /// gets one datagram at a time this is the cheapest read there is:
    /// `recvmmsg` copies in a header per message and, having one
    /// datagram, tries for a second before it returns (about 1 µs more on
    /// the benchmark's machine, all of it before the datagram is relayed).
    pub(in crate::net) fn recv_one(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        let mut name = MaybeUninit::<socket2::SockAddrStorage>::zeroed();
        let mut name_len = size_of::<socket2::SockAddrStorage>() as libc::socklen_t;
        let buf = &mut self.bufs[0][self.headroom..self.headroom + self.max];
        // SAFETY: `buf` has room for `self.max` bytes and `name` for
        // `name_len`; both outlive the call. With MSG_TRUNC the result is
        // the datagram's full length even if it did not fit.
        let n = unsafe {
            libc::recvfrom(
                socket.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                self.max,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                name.as_mut_ptr() as *mut libc::sockaddr,
                &mut name_len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let len = n as usize;
        let from = if len > self.max {
            None
        } else {
            // SAFETY: every byte of the storage is initialised (zeroed,
            // then `name_len` of them written by the kernel), and it is
            // `sockaddr_storage` underneath.
            unsafe { socket2::SockAddr::new(name.assume_init(), name_len) }.as_socket()
        };
        self.got[0] = (len.min(self.max), from);
        Ok(1)
    }

    /// Datagram `i` of the last [`Self::recv`]: its buffer, where in it
    /// the datagram is, and its sender (`None` if it was cut short or had
    /// no IP sender: to be dropped).
    pub(in crate::net) fn datagram(&mut self, i: usize) -> (&mut [u8], Range<usize>, Option<SocketAddr>) {
        let (len, from) = self.got[i];
        (&mut self.bufs[i], self.headroom..self.headroom + len, from)
    }
}

/// Queued datagrams of one socket, destination and size (see the module
/// doc).
struct Entry<S> {
    /// Held, not read: keeps the descriptor `fd` open until the send.
    _socket: S,
    fd: RawFd,
    to: SocketAddr,
    bytes: Range<usize>,
    /// Size of each segment but perhaps the last.
    segment: usize,
    count: usize,
    /// A shorter segment ended the train.
    closed: bool,
}

/// What the kernel would not take, for the caller's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(in crate::net) struct Dropped(pub u64);

/// Datagrams waiting for the end of the batch (see the module doc). `S`
/// keeps each socket open until its datagrams are sent (an allocation
/// deleted mid-batch closes its socket only when the last clone goes).
pub(in crate::net) struct TxQueue<S> {
    bytes: Vec<u8>,
    entries: Vec<Entry<S>>,
    gso: bool,
    gso_failures: u32,
}

impl<S: AsRawFd> TxQueue<S> {
    pub(in crate::net) fn new() -> TxQueue<S> {
        TxQueue {
            bytes: Vec::with_capacity(QUEUE_BYTES),
            entries: Vec::with_capacity(MAX_ENTRIES),
            gso: true,
            gso_failures: 0,
        }
    }

    pub(in crate::net) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queues `bytes` for `to` through `socket` (a clone of the caller's
    /// handle), flushing first if the queue is full.
    pub(in crate::net) fn push(&mut self, tx: &mut impl Transmit, socket: &S, to: SocketAddr, bytes: &[u8]) -> Dropped
    where
        S: Clone,
    {
        let fd = socket.as_raw_fd();
        let len = bytes.len();
        if let Some(last) = self.entries.last_mut() {
            let joins = self.gso
                && last.fd == fd
                && last.to == to
                && !last.closed
                && len <= last.segment
                && last.count < MAX_SEGMENTS
                && last.bytes.len() + len <= MAX_GSO_BYTES
                && last.segment <= MAX_GSO_SEGMENT
                && self.bytes.len() + len <= QUEUE_BYTES;
            if joins {
                self.bytes.extend_from_slice(bytes);
                last.bytes.end += len;
                last.count += 1;
                last.closed = len < last.segment;
                return Dropped(0);
            }
        }
        let mut dropped = Dropped(0);
        if self.entries.len() == MAX_ENTRIES || self.bytes.len() + len > QUEUE_BYTES {
            dropped = self.flush(tx);
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        self.entries.push(Entry {
            _socket: socket.clone(),
            fd,
            to,
            bytes: start..start + len,
            segment: len,
            count: 1,
            closed: false,
        });
        dropped
    }

    /// Sends everything queued; returns how many datagrams were dropped.
    pub(in crate::net) fn flush(&mut self, tx: &mut impl Transmit) -> Dropped {
        let mut dropped = 0;
        let mut first = 0;
        while first < self.entries.len() {
            let fd = self.entries[first].fd;
            let end = self.entries[first..]
                .iter()
                .position(|e| e.fd != fd)
                .map_or(self.entries.len(), |p| first + p)
                .min(first + MAX_ENTRIES);
            let mut batch: [MaybeUninit<Datagram<'_>>; MAX_ENTRIES] = [const { MaybeUninit::uninit() }; MAX_ENTRIES];
            for (slot, e) in batch.iter_mut().zip(&self.entries[first..end]) {
                slot.write(Datagram {
                    to: e.to,
                    bytes: &self.bytes[e.bytes.clone()],
                    segment: (e.count > 1).then_some(e.segment as u16),
                });
            }
            // SAFETY: the first `end - first` slots were just written
            // (`end` is at most MAX_ENTRIES past `first`, the batch's size).
            let batch = unsafe { std::slice::from_raw_parts(batch.as_ptr() as *const Datagram<'_>, end - first) };
            dropped += send_all(tx, fd, batch, &mut self.gso, &mut self.gso_failures);
            first = end;
        }
        self.entries.clear();
        self.bytes.clear();
        Dropped(dropped)
    }
}

/// Sends `batch` through `fd` by the module's error rules; returns the
/// number of datagrams (segments) dropped.
fn send_all(tx: &mut impl Transmit, fd: RawFd, batch: &[Datagram<'_>], gso: &mut bool, failures: &mut u32) -> u64 {
    let segments = |d: &Datagram<'_>| d.segment.map_or(1, |s| d.bytes.len().div_ceil(usize::from(s.max(1)))) as u64;
    let mut dropped = 0;
    let mut next = 0;
    while next < batch.len() {
        match tx.send_batch(fd, &batch[next..]) {
            Ok(0) => {
                dropped += batch[next..].iter().map(segments).sum::<u64>();
                break;
            }
            Ok(sent) => next += sent,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                trace!(remaining = batch.len() - next, "send buffer full: datagrams dropped");
                dropped += batch[next..].iter().map(segments).sum::<u64>();
                break;
            }
            Err(e) if batch[next].segment.is_some() && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) => {
                *failures += 1;
                if *failures == GSO_FAILURES_BEFORE_OFF {
                    debug!(error = %e, "the kernel refuses UDP segmentation offload; sending datagrams one by one");
                    *gso = false;
                }
                dropped += send_segments(tx, fd, &batch[next], gso, failures);
                next += 1;
            }
            Err(e) => {
                trace!(to = %batch[next].to, error = %e, "datagram dropped");
                dropped += segments(&batch[next]);
                next += 1;
            }
        }
    }
    dropped
}

/// Sends a GSO train the kernel refused as single datagrams.
fn send_segments(tx: &mut impl Transmit, fd: RawFd, train: &Datagram<'_>, gso: &mut bool, failures: &mut u32) -> u64 {
    let size = usize::from(train.segment.unwrap_or(1).max(1));
    let mut singles: [MaybeUninit<Datagram<'_>>; MAX_SEGMENTS] = [const { MaybeUninit::uninit() }; MAX_SEGMENTS];
    let mut n = 0;
    for (slot, bytes) in singles.iter_mut().zip(train.bytes.chunks(size)) {
        slot.write(Datagram {
            to: train.to,
            bytes,
            segment: None,
        });
        n += 1;
    }
    // SAFETY: the first `n` slots were just written.
    let singles = unsafe { std::slice::from_raw_parts(singles.as_ptr() as *const Datagram<'_>, n) };
    send_all(tx, fd, singles, gso, failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A socket stand-in: only its descriptor number matters here.
    #[derive(Clone)]
    struct Fd(RawFd);
    impl AsRawFd for Fd {
        fn as_raw_fd(&self) -> RawFd {
            self.0
        }
    }

    /// One `send_batch` call: the descriptor and each datagram's
    /// destination, bytes and segment size.
    type Call = (RawFd, Vec<(SocketAddr, Vec<u8>, Option<u16>)>);

    /// A kernel that answers from a script (then accepts everything) and
    /// records what it was asked and what it took.
    #[derive(Default)]
    struct Scripted {
        answers: VecDeque<io::Result<usize>>,
        calls: Vec<Call>,
        sent: Vec<(RawFd, SocketAddr, Vec<u8>, Option<u16>)>,
    }

    impl Transmit for Scripted {
        fn send_batch(&mut self, fd: RawFd, batch: &[Datagram<'_>]) -> io::Result<usize> {
            self.calls
                .push((fd, batch.iter().map(|d| (d.to, d.bytes.to_vec(), d.segment)).collect()));
            let n = self.answers.pop_front().unwrap_or(Ok(batch.len()))?;
            for d in &batch[..n] {
                self.sent.push((fd, d.to, d.bytes.to_vec(), d.segment));
            }
            Ok(n)
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn errno(code: i32) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(code))
    }

    #[test]
    fn datagrams_to_one_destination_of_one_size_leave_as_one_gso_send() {
        let (mut q, mut k) = (TxQueue::new(), Scripted::default());
        for i in 0..5u8 {
            q.push(&mut k, &Fd(3), addr(1), &[i; 100]);
        }
        // A shorter datagram may end the train; the next starts another.
        q.push(&mut k, &Fd(3), addr(1), &[9; 40]);
        q.push(&mut k, &Fd(3), addr(1), &[7; 100]);
        assert_eq!(q.flush(&mut k), Dropped(0));
        assert_eq!(k.calls.len(), 1, "one sendmmsg for one socket");
        let sent = &k.sent;
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].3, Some(100));
        assert_eq!(sent[0].2.len(), 540);
        assert_eq!(&sent[0].2[500..], &[9; 40]);
        assert_eq!(sent[1], (3, addr(1), vec![7; 100], None));
        assert!(q.is_empty());
    }

    #[test]
    fn different_destinations_share_one_sendmmsg_and_sockets_get_one_each() {
        let (mut q, mut k) = (TxQueue::new(), Scripted::default());
        q.push(&mut k, &Fd(3), addr(1), b"a");
        q.push(&mut k, &Fd(3), addr(2), b"b");
        q.push(&mut k, &Fd(4), addr(2), b"c");
        q.push(&mut k, &Fd(3), addr(1), b"d");
        q.flush(&mut k);
        let shape: Vec<_> = k.calls.iter().map(|(fd, b)| (*fd, b.len())).collect();
        assert_eq!(shape, [(3, 2), (4, 1), (3, 1)]);
    }

    #[test]
    fn a_partial_send_goes_on_with_the_rest() {
        let (mut q, mut k) = (TxQueue::new(), Scripted::default());
        k.answers.push_back(Ok(1));
        for port in 1..=3 {
            q.push(&mut k, &Fd(3), addr(port), b"x");
        }
        assert_eq!(q.flush(&mut k), Dropped(0));
        let to: Vec<_> = k.sent.iter().map(|s| s.1.port()).collect();
        assert_eq!(to, [1, 2, 3]);
        assert_eq!(k.calls.len(), 2);
    }

    #[test]
    fn would_block_drops_the_rest_of_that_socket_only() {
        let (mut q, mut k) = (TxQueue::new(), Scripted::default());
        k.answers.push_back(Ok(1));
        k.answers.push_back(errno(libc::EAGAIN));
        for port in 1..=3 {
            q.push(&mut k, &Fd(3), addr(port), b"x");
        }
        q.push(&mut k, &Fd(4), addr(9), b"y");
        assert_eq!(q.flush(&mut k), Dropped(2));
        let sent: Vec<_> = k.sent.iter().map(|s| (s.0, s.1.port())).collect();
        assert_eq!(sent, [(3, 1), (4, 9)]);
    }

    #[test]
    fn an_error_for_one_datagram_drops_that_one() {
        let (mut q, mut k) = (TxQueue::new(), Scripted::default());
        k.answers.push_back(errno(libc::EPERM));
        q.push(&mut k, &Fd(3), addr(1), b"x");
        q.push(&mut k, &Fd(3), addr(2), b"y");
        assert_eq!(q.flush(&mut k), Dropped(1));
        assert_eq!(k.sent.len(), 1);
        assert_eq!(k.sent[0].1, addr(2));
    }

    #[test]
    fn a_refused_gso_send_is_resent_as_singles_and_enough_refusals_turn_gso_off() {
        let (mut q, mut k) = (TxQueue::new(), Scripted::default());
        for round in 0..GSO_FAILURES_BEFORE_OFF {
            k.answers
                .push_back(errno(if round % 2 == 0 { libc::EIO } else { libc::EINVAL }));
            for i in 0..3u8 {
                q.push(&mut k, &Fd(3), addr(1), &[i; 10]);
            }
            assert_eq!(q.flush(&mut k), Dropped(0));
            let last: Vec<_> = k.sent[k.sent.len() - 3..].iter().map(|s| (s.2.clone(), s.3)).collect();
            assert_eq!(last, [(vec![0; 10], None), (vec![1; 10], None), (vec![2; 10], None)]);
        }
        k.calls.clear();
        for i in 0..3u8 {
            q.push(&mut k, &Fd(3), addr(1), &[i; 10]);
        }
        q.flush(&mut k);
        assert_eq!(k.calls.len(), 1);
        assert!(k.calls[0].1.iter().all(|d| d.2.is_none()), "no GSO once it is off");
        assert_eq!(k.calls[0].1.len(), 3);
    }

    #[test]
    fn trains_stop_at_the_segment_cap_and_large_datagrams_go_alone() {
        let (mut q, mut k) = (TxQueue::new(), Scripted::default());
        for _ in 0..MAX_SEGMENTS + 1 {
            q.push(&mut k, &Fd(3), addr(1), &[0; 10]);
        }
        q.push(&mut k, &Fd(3), addr(1), &[0; MAX_GSO_SEGMENT + 1]);
        q.push(&mut k, &Fd(3), addr(1), &[0; MAX_GSO_SEGMENT + 1]);
        q.flush(&mut k);
        let segments: Vec<_> = k.sent.iter().map(|s| (s.2.len(), s.3)).collect();
        assert_eq!(
            segments,
            [
                (10 * MAX_SEGMENTS, Some(10)),
                (10, None),
                (MAX_GSO_SEGMENT + 1, None),
                (MAX_GSO_SEGMENT + 1, None)
            ]
        );
    }

    #[test]
    fn a_full_queue_flushes_before_it_takes_more() {
        let (mut q, mut k) = (TxQueue::new(), Scripted::default());
        for port in 0..MAX_ENTRIES as u16 + 1 {
            q.push(&mut k, &Fd(3), addr(port), b"x");
        }
        assert_eq!(k.sent.len(), MAX_ENTRIES);
        q.flush(&mut k);
        assert_eq!(k.sent.len(), MAX_ENTRIES + 1);
    }

    /// The real kernel over loopback: GSO trains arrive as separate
    /// datagrams, and `recvmmsg` reads several at once.
    #[test]
    fn the_kernel_delivers_a_gso_train_as_datagrams_and_recvmmsg_reads_them() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let fd = Fd(tx_socket.as_raw_fd());
        let mut q = TxQueue::new();
        for i in 0..10u8 {
            q.push(&mut Kernel, &fd, to, &[i; 100]);
        }
        q.push(&mut Kernel, &fd, to, b"tail");
        assert_eq!(q.flush(&mut Kernel), Dropped(0));
        let mut batch = RecvBatch::new(48, 2048, 3);
        let mut got = Vec::new();
        for _ in 0..100 {
            match batch.recv(&rx) {
                Ok(n) => {
                    for i in 0..n {
                        let (buf, range, from) = batch.datagram(i);
                        assert_eq!(from, Some(tx_socket.local_addr().unwrap()));
                        assert_eq!(range.start, 48);
                        got.push(buf[range].to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
            if got.len() == 11 {
                break;
            }
        }
        let mut want: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 100]).collect();
        want.push(b"tail".to_vec());
        assert_eq!(got, want);
    }

    /// `recv_one` over real loopback sockets: one datagram per call with
    /// its sender (IPv4 and IPv6), a datagram longer than the buffer
    /// marked cut short (no sender: dropped by the caller), and
    /// would-block once the socket is empty.
    #[test]
    fn recv_one_reads_one_datagram_at_a_time_and_marks_a_cut_one() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let rx = std::net::UdpSocket::bind(local).unwrap();
            rx.set_nonblocking(true).unwrap();
            let tx_socket = std::net::UdpSocket::bind(local).unwrap();
            let to = rx.local_addr().unwrap();
            let mut batch = RecvBatch::new(48, 64, 3);
            tx_socket.send_to(&[7; 40], to).unwrap();
            tx_socket.send_to(&[8; 64], to).unwrap();
            tx_socket.send_to(&[9; 65], to).unwrap();
            let mut got = Vec::new();
            // At most 5 s: 1000 tries 5 ms apart.
            for _ in 0..1000 {
                if got.len() == 3 {
                    break;
                }
                match batch.recv_one(&rx) {
                    Ok(n) => {
                        assert_eq!(n, 1);
                        let (buf, range, from) = batch.datagram(0);
                        got.push((buf[range].to_vec(), from));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            let sender = Some(tx_socket.local_addr().unwrap());
            assert_eq!(
                got,
                vec![(vec![7; 40], sender), (vec![8; 64], sender), (vec![9; 64], None)],
                "{local}"
            );
            let err = batch.recv_one(&rx).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        }
    }
}
