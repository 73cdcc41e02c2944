//! The core's [`FastPathRoutes`] on the program's maps: each shard's core
//! installs its routes through an [`XdpRoutes`] of its own, all of them
//! sharing one [`RelayMaps`] (slots and map writes are control-plane
//! work, a lock per ChannelBind, never per packet).
//!
//! A core names addresses as clients know them; the maps need them as on
//! the wire. A relayed address becomes its socket's bind address (behind
//! a 1:1 NAT the advertised one never reaches the host). A route whose
//! wire addresses are not all concrete — a listener or relays bound to a
//! wildcard address, whose real address only the kernel's routing picks —
//! is refused, and those datagrams stay in user space: with the fast path
//! on, bind listeners and relays to the interface's address
//! (`docs/xdp.md`).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tracing::{debug, warn};

use super::maps::{ChannelRoute, Counts, Outgoing, PeerRoute, RelayMaps};
use super::XdpError;
use crate::process::clock;
use crate::proto::addr::{ClientAddr, RelayAddr};
use crate::proto::server::{FastPathRoutes, FastRoute};
use crate::proto::stats::Traffic;

/// Warned once per process that the maps are full.
static FULL_WARNED: AtomicBool = AtomicBool::new(false);

/// One core's handle on the shared maps.
pub struct XdpRoutes {
    maps: Arc<Mutex<RelayMaps>>,
    /// (bind, advertised) IP of the relays of each family that is on.
    relay_ips: Vec<(IpAddr, IpAddr)>,
}

/// A route as the maps key it.
enum Keyed {
    Channel(ChannelRoute, Outgoing),
    Peer(PeerRoute, Outgoing),
}

impl XdpRoutes {
    pub fn new(maps: Arc<Mutex<RelayMaps>>, relay_ips: Vec<(IpAddr, IpAddr)>) -> XdpRoutes {
        XdpRoutes { maps, relay_ips }
    }

    fn maps(&self) -> MutexGuard<'_, RelayMaps> {
        // The maps hold no invariant a panicking writer could break
        // halfway that the kernel would act on: a route is one map write.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The relay's socket address, as on the wire.
    fn relay(&self, relay: RelayAddr) -> Option<SocketAddr> {
        let (bind, _) = self
            .relay_ips
            .iter()
            .find(|(_, advertised)| *advertised == relay.0.ip())?;
        concrete(SocketAddr::new(*bind, relay.0.port()))
    }

    fn keyed(&self, route: &FastRoute) -> Option<Keyed> {
        Some(match *route {
            FastRoute::ToPeer {
                client,
                channel,
                relay,
                peer,
            } => Keyed::Channel(
                channel_route(client, channel.get())?,
                Outgoing::ToPeer {
                    relay: self.relay(relay)?,
                    peer: concrete(peer.0)?,
                },
            ),
            FastRoute::ToClient {
                relay,
                peer,
                client,
                channel,
            } => Keyed::Peer(
                PeerRoute {
                    relay: self.relay(relay)?,
                    peer: concrete(peer.0)?,
                },
                to_client(client, channel.get())?,
            ),
            FastRoute::Across {
                client,
                channel,
                to,
                to_channel,
            } => Keyed::Channel(channel_route(client, channel.get())?, to_client(to, to_channel.get())?),
        })
    }

    fn counted(&mut self, route: &FastRoute, remove: bool) -> Traffic {
        let Some(keyed) = self.keyed(route) else {
            return Traffic::default();
        };
        let mut maps = self.maps();
        let counts = match (keyed, remove) {
            (Keyed::Channel(key, _), true) => maps.remove_channel(&key),
            (Keyed::Channel(key, _), false) => maps.channel_counts(&key),
            (Keyed::Peer(key, _), true) => maps.remove_peer(&key),
            (Keyed::Peer(key, _), false) => maps.peer_counts(&key),
        };
        match counts {
            Ok(Counts { packets, bytes }) => Traffic { packets, bytes },
            Err(e) => {
                debug!(?route, error = %e, "fast path: no counts for a route");
                Traffic::default()
            }
        }
    }
}

impl FastPathRoutes for XdpRoutes {
    fn install(&mut self, route: &FastRoute, expires: Instant) -> bool {
        let Some(keyed) = self.keyed(route) else {
            debug!(?route, "fast path: a route with a wildcard address stays in user space");
            return false;
        };
        let expires_ns = monotonic_ns(expires);
        let mut maps = self.maps();
        let installed: Result<(), XdpError> = match keyed {
            Keyed::Channel(key, out) => maps.install_channel(key, out, expires_ns),
            Keyed::Peer(key, out) => maps.install_peer(key, out, expires_ns),
        };
        match installed {
            Ok(()) => true,
            Err(XdpError::Full) => {
                if !FULL_WARNED.swap(true, Ordering::Relaxed) {
                    warn!("fast path: every route slot is taken (limits.max_allocations sizes them); further routes stay in user space");
                }
                false
            }
            Err(e) => {
                debug!(?route, error = %e, "fast path: route not installed; user space relays it");
                false
            }
        }
    }

    fn remove(&mut self, route: &FastRoute) -> Traffic {
        self.counted(route, true)
    }

    fn counts(&mut self, route: &FastRoute) -> Traffic {
        self.counted(route, false)
    }
}

fn channel_route(client: ClientAddr, channel: u16) -> Option<ChannelRoute> {
    Some(ChannelRoute {
        client: concrete(client.remote)?,
        server: concrete(client.local)?,
        channel,
    })
}

fn to_client(client: ClientAddr, channel: u16) -> Option<Outgoing> {
    Some(Outgoing::ToClient {
        server: concrete(client.local)?,
        client: concrete(client.remote)?,
        channel,
    })
}

/// `addr` if it names one address on the wire: not a wildcard, and not
/// an IPv4-mapped IPv6 spelling (the frame carries IPv4).
fn concrete(addr: SocketAddr) -> Option<SocketAddr> {
    let ip = addr.ip();
    let mapped = matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
    (!ip.is_unspecified() && !mapped).then_some(addr)
}

/// `at` on `CLOCK_MONOTONIC` in nanoseconds, the clock of a route's
/// expiry (and of `Instant` on Linux, though std does not promise it, so
/// the two are read together once per conversion).
fn monotonic_ns(at: Instant) -> u64 {
    let now = clock::mono();
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        // Cannot happen for CLOCK_MONOTONIC; an expiry of 0 forwards nothing.
        return 0;
    }
    let kernel_now = u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0);
    match at.checked_duration_since(now) {
        Some(ahead) => kernel_now.saturating_add(u64::try_from(ahead.as_nanos()).unwrap_or(u64::MAX)),
        None => kernel_now.saturating_sub(u64::try_from(now.duration_since(at).as_nanos()).unwrap_or(u64::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_concrete_addresses_reach_the_maps() {
        for wildcard in ["0.0.0.0:3478", "[::]:3478", "[::ffff:10.0.0.1]:3478"] {
            assert_eq!(concrete(wildcard.parse().unwrap()), None, "{wildcard}");
        }
        for real in ["10.0.0.1:3478", "[2001:db8::1]:3478"] {
            let addr: SocketAddr = real.parse().unwrap();
            assert_eq!(concrete(addr), Some(addr));
        }
    }

    #[test]
    fn an_expiry_converts_to_the_kernel_clock_in_both_directions() {
        let now = clock::mono();
        let soon = monotonic_ns(now + std::time::Duration::from_secs(5));
        let past = monotonic_ns(now - std::time::Duration::from_millis(1));
        assert!(soon > past + 4_000_000_000, "{soon} vs {past}");
    }
}
