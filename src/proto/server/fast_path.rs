//! The kernel's fast path seen from the core (issue 21, `docs/xdp.md`):
//! which datagrams may be relayed without reaching user space, as
//! [`FastRoute`]s the core installs and removes through the driver's
//! [`FastPathRoutes`], and the fast path's counts folded back into the
//! allocations' traffic.
//!
//! The core stays the authority. Invariants:
//! * a route is installed only while this core would relay the same
//!   datagram itself, and carries the instant it stops doing so: the
//!   earliest expiry of the channel, the permission and the allocation
//!   (for relay ↔ relay, of both sides), so that the kernel stops at the
//!   next datagram even before the core removes the route;
//! * every change that can withdraw one re-derives the routes concerned
//!   from the allocations ([`Server::sync_routes`]): ChannelBind,
//!   CreatePermission and Refresh (which may lengthen expiries), Refresh 0
//!   of one family, allocation end whatever its reason (expiry, Refresh 0,
//!   revocation, the operator, a closed connection) and a reload (the peer
//!   filter judges every routed peer again: no route names a peer it
//!   denies);
//! * only UDP clients of UDP allocations without a byte rate (the program
//!   holds no token bucket), client and peer of one family (the program
//!   does not translate, RFC 6156), and a peer that is either outside
//!   this server or a live relay of this core (relay ↔ relay, one
//!   rewrite to the other allocation's client); a relay of another shard
//!   stays with the in-process hand-over;
//! * what the kernel relayed on a route is added to the allocation's
//!   `to_peer`/`to_client` (relay ↔ relay: the sender's `to_peer` and the
//!   receiver's `to_client`, as in user space) every [`FOLD_INTERVAL`] and
//!   when the route goes, before an ending allocation is logged and
//!   counted; so metrics, the operator's list, the bandwidth watch and
//!   the allocation log line see the same numbers with the fast path on
//!   or off, at most [`FOLD_INTERVAL`] late.
//!
//! Routes that expire are left to the kernel's expiry check until the
//! next fold, which removes them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{RelayBinder, Server, Timer};
use crate::proto::addr::{ClientAddr, Family, PeerAddr, RelayAddr, RelayProtocol, Transport};
use crate::proto::channel_data::ChannelNumber;
use crate::proto::stats::Traffic;

/// How often the fast path's counts are folded into the allocations.
pub const FOLD_INTERVAL: Duration = Duration::from_secs(1);

/// A route the fast path may take, in the core's terms (the driver maps
/// them to addresses on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FastRoute {
    /// `client`'s ChannelData on `channel`: its data alone to `peer`
    /// (as on the wire) from `relay`.
    ToPeer {
        client: ClientAddr,
        channel: ChannelNumber,
        relay: RelayAddr,
        peer: PeerAddr,
    },
    /// `peer`'s datagrams (from its address on the wire) to `relay`: as
    /// ChannelData on `channel` to `client`.
    ToClient {
        relay: RelayAddr,
        peer: PeerAddr,
        client: ClientAddr,
        channel: ChannelNumber,
    },
    /// Relay ↔ relay: `client`'s ChannelData on `channel`, whose peer is
    /// the relay of `to`'s allocation, re-framed on `to_channel` straight
    /// to `to`.
    Across {
        client: ClientAddr,
        channel: ChannelNumber,
        to: ClientAddr,
        to_channel: ChannelNumber,
    },
}

/// The driver's side of the fast path: the kernel's route tables.
/// Synchronous, like [`RelayBinder`], so that the final counts of a route
/// are known before its allocation is logged.
pub trait FastPathRoutes {
    /// Installs `route` until `expires`, or moves the expiry of the same
    /// route (keeping its counts); false if the fast path cannot take it
    /// (its table is full, an address it cannot name): user space relays
    /// those datagrams as ever.
    fn install(&mut self, route: &FastRoute, expires: Instant) -> bool;
    /// Removes `route`; returns all it relayed since installed.
    fn remove(&mut self, route: &FastRoute) -> Traffic;
    /// All `route` relayed since installed.
    fn counts(&mut self, route: &FastRoute) -> Traffic;
}

/// A route as installed, and how much of its count is folded already.
#[derive(Debug)]
struct Installed {
    route: FastRoute,
    expires: Instant,
    folded: Traffic,
}

/// The fast path's state in a core.
pub(super) struct FastPath {
    table: Box<dyn FastPathRoutes>,
    /// Routes by the allocation whose client sends on them (`ToPeer`,
    /// `Across`) or receives from them (`ToClient`).
    routes: HashMap<ClientAddr, Vec<Installed>>,
    /// For an allocation, the allocations with an `Across` route to it.
    across_into: HashMap<ClientAddr, Vec<ClientAddr>>,
    /// When the fold timer is due, if it is queued.
    fold_at: Option<Instant>,
}

impl FastPath {
    pub(super) fn new(table: Box<dyn FastPathRoutes>) -> FastPath {
        FastPath {
            table,
            routes: HashMap::new(),
            across_into: HashMap::new(),
            fold_at: None,
        }
    }

    /// Routes installed now.
    pub(super) fn len(&self) -> usize {
        self.routes.values().map(Vec::len).sum()
    }
}

/// Traffic relayed on a route since it was last folded, and whose.
struct Fold {
    route: FastRoute,
    delta: Traffic,
}

impl FastRoute {
    fn owner(&self) -> ClientAddr {
        match *self {
            FastRoute::ToPeer { client, .. }
            | FastRoute::ToClient { client, .. }
            | FastRoute::Across { client, .. } => client,
        }
    }
}

fn since(now: Traffic, before: Traffic) -> Traffic {
    Traffic {
        packets: now.packets.saturating_sub(before.packets),
        bytes: now.bytes.saturating_sub(before.bytes),
    }
}

impl<B: RelayBinder> Server<B> {
    /// Relays on the kernel's fast path where it can (see the module
    /// docs); without it, every datagram reaches the core.
    pub fn with_fast_path(mut self, table: Box<dyn FastPathRoutes>) -> Self {
        self.fast = Some(FastPath::new(table));
        self
    }

    /// Routes on the fast path now (for metrics).
    pub fn fast_route_count(&self) -> usize {
        self.fast.as_ref().map_or(0, FastPath::len)
    }

    /// The routes `client`'s allocation should have now, with the instant
    /// each stops: none unless every rule of the module docs holds.
    fn wanted_routes(&self, client: ClientAddr, now: Instant) -> Vec<(FastRoute, Instant)> {
        let mut wanted = Vec::new();
        let Some(a) = self.allocations.get(&client) else {
            return wanted;
        };
        if !self.fast_pathable(client, a) {
            return wanted;
        }
        for channel in a.channels.iter().filter(|c| c.expires > now) {
            let peer = channel.peer;
            let Some(permission) = a.permissions.iter().find(|p| p.ip == peer.0.ip() && p.expires > now) else {
                continue;
            };
            let Some(relay) = a.relays.get(Family::of(peer.0)) else {
                continue;
            };
            if Family::of(client.remote) != Family::of(peer.0)
                || self.filter.check(peer.0, RelayProtocol::Udp, &self.live).is_err()
            {
                continue;
            }
            let expires = channel.expires.min(permission.expires).min(a.expires);
            match self.local_relay(relay, peer) {
                None => {
                    let wire = self.config.hairpin.outbound(peer);
                    let number = channel.number;
                    let to_peer = FastRoute::ToPeer {
                        client,
                        channel: number,
                        relay,
                        peer: wire,
                    };
                    let to_client = FastRoute::ToClient {
                        relay,
                        peer: wire,
                        client,
                        channel: number,
                    };
                    wanted.extend([(to_peer, expires), (to_client, expires)]);
                }
                Some(shard) if shard == self.shard => {
                    if let Some((to, to_channel, until)) = self.across_target(relay, peer, now) {
                        let route = FastRoute::Across {
                            client,
                            channel: channel.number,
                            to,
                            to_channel,
                        };
                        wanted.push((route, expires.min(until)));
                    }
                }
                // Another shard's relay: the in-process hand-over.
                Some(_) => {}
            }
        }
        wanted
    }

    fn fast_pathable(&self, client: ClientAddr, a: &super::Allocation) -> bool {
        client.transport == Transport::Udp
            && a.protocol == RelayProtocol::Udp
            && a.rate.is_none()
            && a.user_rate.is_none()
    }

    /// For `from` sending to `relay`, a relay of this core: the receiving
    /// allocation's client, its channel for `from` and when that stops, if
    /// it would frame `from`'s datagrams as ChannelData to a client the
    /// fast path can reach.
    fn across_target(
        &self,
        from: RelayAddr,
        relay: PeerAddr,
        now: Instant,
    ) -> Option<(ClientAddr, ChannelNumber, Instant)> {
        let to = *self.by_relay.get(&RelayAddr(relay.0))?;
        let b = self.allocations.get(&to)?;
        if !self.fast_pathable(to, b) || Family::of(to.remote) != Family::of(relay.0) {
            return None;
        }
        let channel = b.channels.iter().find(|c| c.peer.0 == from.0 && c.expires > now)?;
        let permission = b.permissions.iter().find(|p| p.ip == from.0.ip() && p.expires > now)?;
        Some((
            to,
            channel.number,
            channel.expires.min(permission.expires).min(b.expires),
        ))
    }

    /// Re-derives `client`'s routes and those of every allocation that
    /// relays to it or that it relays to on this core (relay ↔ relay
    /// routes depend on both sides).
    pub(super) fn sync_routes(&mut self, client: ClientAddr, now: Instant) {
        let Some(fast) = &self.fast else {
            return;
        };
        let mut related: Vec<ClientAddr> = fast.across_into.get(&client).cloned().unwrap_or_default();
        if let Some(a) = self.allocations.get(&client) {
            for channel in &a.channels {
                if let Some(to) = self.by_relay.get(&RelayAddr(channel.peer.0)) {
                    related.push(*to);
                }
            }
        }
        self.sync_one(client, now);
        related.sort();
        related.dedup();
        for other in related.into_iter().filter(|c| *c != client) {
            self.sync_one(other, now);
        }
    }

    /// Makes `client`'s installed routes the ones it should have: new
    /// ones installed, moved expiries installed again, the rest removed
    /// with their last counts folded.
    fn sync_one(&mut self, client: ClientAddr, now: Instant) {
        let wanted = self.wanted_routes(client, now);
        let Some(fast) = &mut self.fast else {
            return;
        };
        let mut folds = Vec::new();
        let mut kept: Vec<Installed> = Vec::with_capacity(wanted.len());
        for mut installed in fast.routes.remove(&client).unwrap_or_default() {
            match wanted.iter().find(|(route, _)| *route == installed.route) {
                Some(&(_, expires)) if expires == installed.expires => kept.push(installed),
                Some(&(_, expires)) if fast.table.install(&installed.route, expires) => {
                    installed.expires = expires;
                    kept.push(installed);
                }
                _ => {
                    let total = fast.table.remove(&installed.route);
                    folds.push(Fold {
                        route: installed.route,
                        delta: since(total, installed.folded),
                    });
                    forget_across(&mut fast.across_into, &installed.route);
                }
            }
        }
        for (route, expires) in wanted {
            if kept.iter().any(|k| k.route == route) || !fast.table.install(&route, expires) {
                continue;
            }
            if let FastRoute::Across { client, to, .. } = route {
                fast.across_into.entry(to).or_default().push(client);
            }
            kept.push(Installed {
                route,
                expires,
                folded: Traffic::default(),
            });
        }
        if !kept.is_empty() {
            fast.routes.insert(client, kept);
            if fast.fold_at.is_none() {
                let at = now + FOLD_INTERVAL;
                fast.fold_at = Some(at);
                self.timers.insert((at, Timer::FastPathFold));
            }
        }
        self.apply_folds(folds);
    }

    /// Before `client`'s allocation goes: its routes and every relay ↔
    /// relay route to it removed, their last counts folded while it is
    /// still there to count them.
    pub(super) fn forget_routes(&mut self, client: ClientAddr) {
        let Some(fast) = &mut self.fast else {
            return;
        };
        let mut folds = Vec::new();
        let mut remove = |fast: &mut FastPath, installed: Installed| {
            let total = fast.table.remove(&installed.route);
            forget_across(&mut fast.across_into, &installed.route);
            folds.push(Fold {
                route: installed.route,
                delta: since(total, installed.folded),
            });
        };
        for installed in fast.routes.remove(&client).unwrap_or_default() {
            remove(fast, installed);
        }
        for from in fast.across_into.remove(&client).unwrap_or_default() {
            let Some(routes) = fast.routes.remove(&from) else {
                continue;
            };
            let (gone, kept): (Vec<Installed>, Vec<Installed>) = routes
                .into_iter()
                .partition(|i| matches!(i.route, FastRoute::Across { to, .. } if to == client));
            for installed in gone {
                remove(fast, installed);
            }
            if !kept.is_empty() {
                fast.routes.insert(from, kept);
            }
        }
        self.apply_folds(folds);
    }

    /// Every route judged again (a reload changed the peer filter).
    pub(super) fn resync_routes(&mut self, now: Instant) {
        let routed: Vec<ClientAddr> = self
            .fast
            .as_ref()
            .map_or_else(Vec::new, |f| f.routes.keys().copied().collect());
        for client in routed {
            self.sync_one(client, now);
        }
    }

    /// The fold timer: every route's counts folded, expired routes
    /// removed; queued again while any route is left.
    pub(super) fn fold_routes(&mut self, now: Instant) {
        let Some(fast) = &mut self.fast else {
            return;
        };
        fast.fold_at = None;
        let mut folds = Vec::new();
        let mut expired = Vec::new();
        for (client, routes) in &mut fast.routes {
            for installed in routes.iter_mut() {
                let total = fast.table.counts(&installed.route);
                folds.push(Fold {
                    route: installed.route,
                    delta: since(total, installed.folded),
                });
                installed.folded = total;
                if installed.expires <= now {
                    expired.push(*client);
                }
            }
        }
        self.apply_folds(folds);
        expired.dedup();
        for client in expired {
            self.sync_one(client, now);
        }
        if let Some(fast) = &mut self.fast {
            if fast.fold_at.is_none() && !fast.routes.is_empty() {
                let at = now + FOLD_INTERVAL;
                fast.fold_at = Some(at);
                self.timers.insert((at, Timer::FastPathFold));
            }
        }
    }

    fn apply_folds(&mut self, folds: Vec<Fold>) {
        for Fold { route, delta } in folds {
            if delta.packets == 0 && delta.bytes == 0 {
                continue;
            }
            match route {
                FastRoute::ToPeer { client, .. } => self.add_traffic(client, delta, true),
                FastRoute::ToClient { client, .. } => self.add_traffic(client, delta, false),
                FastRoute::Across { client, to, .. } => {
                    self.counters.relayed_in_process += delta.packets;
                    self.add_traffic(client, delta, true);
                    self.add_traffic(to, delta, false);
                }
            }
        }
    }

    fn add_traffic(&mut self, client: ClientAddr, delta: Traffic, to_peer: bool) {
        if let Some(a) = self.allocations.get_mut(&client) {
            match to_peer {
                true => a.to_peer.add(delta),
                false => a.to_client.add(delta),
            }
        }
    }
}

/// `route` is gone: if it went across, its target no longer lists its
/// owner (unless the owner has another route there).
fn forget_across(across_into: &mut HashMap<ClientAddr, Vec<ClientAddr>>, route: &FastRoute) {
    let FastRoute::Across { to, .. } = *route else {
        return;
    };
    let owner = route.owner();
    if let Some(from) = across_into.get_mut(&to) {
        if let Some(i) = from.iter().position(|c| *c == owner) {
            from.swap_remove(i);
        }
        if from.is_empty() {
            across_into.remove(&to);
        }
    }
}
