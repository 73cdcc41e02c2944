//! One shard's UDP relay sockets, watched through an epoll instance of
//! their own that the shard's runtime watches as a single descriptor.
//!
//! A relay socket then costs a slot here and an entry in the kernel's
//! epoll set, instead of a task, a future and a runtime registration each:
//! an idle allocation is a few hundred bytes lighter, and a wake-up with
//! many busy relays is one `epoll_wait` that names them all instead of one
//! task poll per socket.
//!
//! Invariants:
//! * the set is level-triggered: a socket left with data (its reader's
//!   budget ran out) is named again by the next [`RelayPoll::ready`];
//! * a token names one slot and its generation, so an event for a socket
//!   removed and a slot reused since is ignored, never delivered to the
//!   wrong relay;
//! * the runtime's readiness of the epoll descriptor is cleared only by a
//!   caller that saw every ready socket drained (see `receive::relay_loop`):
//!   an event that came in since is kept by tokio, so none is lost.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;

use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;

use crate::proto::addr::RelayAddr;

/// A UDP relay socket (non-blocking).
pub(in crate::net) type RelaySocket = Rc<std::net::UdpSocket>;

/// Names a watched socket: slot index and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::net) struct Token(u64);

impl Token {
    pub(in crate::net) fn new(index: u32, generation: u32) -> Token {
        Token((u64::from(generation) << 32) | u64::from(index))
    }

    fn index(self) -> usize {
        (self.0 & u64::from(u32::MAX)) as usize
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

#[derive(Default)]
struct Slot {
    generation: u32,
    relay: Option<(RelayAddr, RelaySocket)>,
}

/// A socket [`RelayPoll::ready`] names: its relay, the socket and its
/// token.
pub(in crate::net) struct Ready {
    pub relay: RelayAddr,
    pub socket: RelaySocket,
    pub token: Token,
}

#[derive(Default)]
struct Slots {
    entries: Vec<Slot>,
    free: Vec<u32>,
}

pub(in crate::net) struct RelayPoll {
    epoll: AsyncFd<OwnedFd>,
    slots: RefCell<Slots>,
}

/// Sockets named per [`RelayPoll::ready`] call.
pub(in crate::net) const READY_MAX: usize = 64;

impl RelayPoll {
    /// A new, empty set, registered with the current runtime.
    pub(in crate::net) fn new() -> io::Result<RelayPoll> {
        // SAFETY: epoll_create1 has no preconditions; a non-negative result
        // is a new descriptor that nothing else owns.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the AsyncFd owns the descriptor, which stays open and the
        // same for as long as the AsyncFd lives.
        let epoll = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)?;
        Ok(RelayPoll {
            epoll,
            slots: RefCell::default(),
        })
    }

    /// Watches `socket`, the socket of `relay`, for datagrams.
    pub(in crate::net) fn add(&self, relay: RelayAddr, socket: &RelaySocket) -> io::Result<Token> {
        let mut slots = self.slots.borrow_mut();
        let index = match slots.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(slots.entries.len()).map_err(|_| io::ErrorKind::OutOfMemory)?;
                slots.entries.push(Slot::default());
                index
            }
        };
        let slot = &mut slots.entries[index as usize];
        let token = Token::new(index, slot.generation);
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token.0,
        };
        // SAFETY: both descriptors are open; `event` is a valid epoll_event.
        let added = unsafe {
            libc::epoll_ctl(
                self.epoll.get_ref().as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                socket.as_raw_fd(),
                &mut event,
            )
        };
        if added < 0 {
            slots.free.push(index);
            return Err(io::Error::last_os_error());
        }
        slot.relay = Some((relay, socket.clone()));
        Ok(token)
    }

    /// Stops watching the socket of `token`; its slot is reused later
    /// under a new generation.
    pub(in crate::net) fn remove(&self, token: Token) {
        let mut slots = self.slots.borrow_mut();
        let Some(slot) = slots.entries.get_mut(token.index()) else {
            return;
        };
        if slot.generation != token.generation() {
            return;
        }
        if let Some((_, socket)) = slot.relay.take() {
            // SAFETY: both descriptors are open (the slot held the socket
            // until now). A failure can only mean it was not in the set.
            unsafe {
                libc::epoll_ctl(
                    self.epoll.get_ref().as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    socket.as_raw_fd(),
                    std::ptr::null_mut(),
                );
            }
        }
        slot.generation = slot.generation.wrapping_add(1);
        slots.free.push(token.index() as u32);
    }

    /// Waits until some watched socket may be readable.
    pub(in crate::net) async fn readable(&self) -> io::Result<AsyncFdReadyGuard<'_, OwnedFd>> {
        self.epoll.readable().await
    }

    /// The live socket of `token`, if it still has one.
    pub(in crate::net) fn get(&self, token: Token) -> Option<(RelayAddr, RelaySocket)> {
        match self.slots.borrow().entries.get(token.index()) {
            Some(Slot {
                generation,
                relay: Some(relay),
                ..
            }) if *generation == token.generation() => Some(relay.clone()),
            _ => None,
        }
    }

    /// Puts the relays whose sockets are readable now into `ready` (at most
    /// [`READY_MAX`]), without blocking; returns how many events the kernel
    /// gave (stale ones included, so `READY_MAX` means there may be more).
    pub(in crate::net) fn ready(&self, ready: &mut Vec<Ready>) -> io::Result<usize> {
        ready.clear();
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; READY_MAX];
        // SAFETY: `events` has room for READY_MAX events; timeout 0 never
        // blocks.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.get_ref().as_raw_fd(),
                events.as_mut_ptr(),
                READY_MAX as i32,
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let slots = self.slots.borrow();
        for event in &events[..n as usize] {
            let token = Token(event.u64);
            if let Some(Slot {
                generation,
                relay: Some((relay, socket)),
            }) = slots.entries.get(token.index())
            {
                if *generation == token.generation() {
                    ready.push(Ready {
                        relay: *relay,
                        socket: socket.clone(),
                        token,
                    });
                }
            }
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn socket() -> (RelayAddr, RelaySocket) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        (RelayAddr(s.local_addr().unwrap()), Rc::new(s))
    }

    fn ports(ready: &[Ready]) -> Vec<u16> {
        let mut p: Vec<_> = ready.iter().map(|r| r.relay.0.port()).collect();
        p.sort();
        p
    }

    fn port_list(relays: &[RelayAddr]) -> Vec<u16> {
        let mut p: Vec<_> = relays.iter().map(|r| r.0.port()).collect();
        p.sort();
        p
    }

    #[tokio::test]
    async fn names_the_readable_sockets_until_drained_and_forgets_removed_ones() {
        let poll = RelayPoll::new().unwrap();
        let (a, sa) = socket();
        let (b, sb) = socket();
        let (c, sc) = socket();
        let ta = poll.add(a, &sa).unwrap();
        poll.add(b, &sb).unwrap();
        let tc = poll.add(c, &sc).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        for to in [a.0, c.0] {
            sender.send_to(b"x", to).unwrap();
        }
        let mut ready = Vec::new();
        for _ in 0..100 {
            if ready.len() == 2 {
                break;
            }
            let _guard = tokio::time::timeout(std::time::Duration::from_secs(5), poll.readable())
                .await
                .unwrap()
                .unwrap();
            poll.ready(&mut ready).unwrap();
        }
        assert_eq!(ports(&ready), port_list(&[a, c]));
        // Level-triggered: still named while unread.
        poll.ready(&mut ready).unwrap();
        assert_eq!(ready.len(), 2);
        // Drained or removed: no longer named.
        let mut buf = [0u8; 8];
        sa.recv_from(&mut buf).unwrap();
        poll.remove(tc);
        poll.ready(&mut ready).unwrap();
        assert!(ready.is_empty());
        // A stale token does not remove the slot's next tenant.
        let (d, sd) = socket();
        let td = poll.add(d, &sd).unwrap();
        assert_eq!(td.index(), tc.index());
        poll.remove(tc);
        sender.send_to(b"y", d.0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        poll.ready(&mut ready).unwrap();
        assert_eq!(ports(&ready), port_list(&[d]));
        // A token names its socket for as long as the slot holds it, and
        // never the slot's next tenant.
        assert_eq!(ready[0].token, td);
        assert_eq!(poll.get(td).map(|(relay, _)| relay), Some(d));
        assert!(poll.get(tc).is_none());
        poll.remove(td);
        assert!(poll.get(td).is_none());
        let (e, se) = socket();
        let te = poll.add(e, &se).unwrap();
        assert_eq!(te.index(), td.index());
        assert!(poll.get(td).is_none());
        assert_eq!(poll.get(te).map(|(relay, _)| relay), Some(e));
        poll.remove(te);
        poll.remove(ta);
    }
}
