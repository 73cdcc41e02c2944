//! The tokio drivers: they bind sockets, read the clock (through
//! [`crate::process::clock`]) and run the protocol core of
//! [`crate::proto`] in N shards (see `shard`).
//!
//! [`start`] turns a validated [`Config`] into running shards. Listening
//! sockets are all bound here, before any shard starts, so a port that is
//! taken fails the start with a clear error, and `port 0` in the config
//! resolves to one concrete port that every shard's `SO_REUSEPORT` sibling
//! shares.
//!
//! Every listener, UDP, TCP and TLS, gets one sibling per shard, so the
//! kernel spreads clients over the shards and each shard accepts, reads
//! and serves its own (TLS handshakes included). The one stream that must
//! not stay where it landed is an RFC 6062 data connection: it has to
//! meet its peer connection, which the core of another shard may hold. A
//! CONNECTION-ID names the shard that issued it, so the accepting shard
//! transfers such a connection before its ConnectionBind is handled
//! (`stream::transfer`); nothing else crosses shards per connection.
//!
//! Shards share only what is set up here: the plan (replaced whole on
//! reload), the allocation quota (with the count of RFC 6062 peer
//! connections), the set of live relays (which the peer filter consults),
//! the reserved EVEN-PORT partner sockets, the count of stream
//! connections and the per-source stream table (so that stream limits
//! hold for the process, not per shard), the PROXY protocol step and its
//! counts (in the [`ServerStatus`]), the inboxes of transferred connections and
//! of admin commands, the revoked usernames, the nonce key, and the
//! [`ServerStatus`] they publish to.
//! Everything else a shard owns.
//!
//! * `socket`: how every socket is opened, and `listeners`: every
//!   listener bound once per shard;
//! * `plan`: what the shards share, derived from the config, and what a
//!   reload may change;
//! * `shard_thread`: the body of every shard's thread, and `shard`: one
//!   shard's event loop;
//! * `udp`: batched UDP receive and send (`udp::batch`: `recvmmsg`, GSO,
//!   `sendmmsg`) and the epoll set through which a shard reads its UDP
//!   relay sockets (`udp::relay_poll`);
//! * `relay`: the relay sockets a shard opens for its allocations
//!   (`relay::sockets`), the free ports of the relay range
//!   (`relay::port_pool`), and relay-to-relay packets for another shard
//!   (`relay::cross_shard`);
//! * `stream`: TCP and TLS connections: accepting and serving them, their
//!   limits, frames and splices, a data connection's transfer to the shard
//!   of its peer connection, and a TLS port shared with HTTP
//!   (`stream::shared_port`);
//! * `admin`: the operator's commands to every shard, and the revoked
//!   usernames they share;
//! * `xdp`: the kernel fast path (issue 21, `docs/xdp.md`): an XDP
//!   program that relays the steady state of UDP allocations, its loader
//!   and its maps; [`start`] attaches it with `fast_path = "xdp"` and
//!   [`RunningServer::stop`] detaches it, but no shard installs routes
//!   yet, so it passes everything;
//!
//! This file holds [`start`] and the [`RunningServer`] it returns.
//!
//! Imports point down this list and never back up: `start` → `listeners`,
//! `shard_thread` → `stream::listener` → `shard` → `udp`, `relay`,
//! `stream::conn`; `admin` → `shard`; `xdp` will sit under `shard`
//! beside `udp`.

mod admin;
mod listeners;
mod plan;
mod relay;
mod shard;
mod shard_thread;
mod socket;
mod stream;
mod udp;
pub mod xdp;

pub use admin::{AdminError, AdminHandle, REPLY_TIMEOUT};
pub use socket::BindError;

use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{Config, FastPath};
use crate::process::http_handover::{self, HttpInbox};
use crate::process::proxy_protocol::ProxyProtocol;
use crate::process::random::random_bytes;
use crate::process::status::{ConnectionCount, FastPathCounts, FastPathReader, ServerStatus};
use crate::process::tls;
use crate::proto::quota::AllocationQuota;
use crate::proto::revocations::Revocations;
use listeners::{bind_stream_listeners, bind_udp_listeners, StdSockets};
use plan::{reloadable, Plan};
use relay::cross_shard;
use relay::port_pool::PortPool;
use relay::sockets::ReservedSockets;
use shard_thread::{run_shard, ShardContext};
use stream::admission::{StreamLimits, StreamSources};
use stream::transfer::ConnectionTransfer;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot start worker thread: {0}")]
    Thread(std::io::Error),
    #[error("worker {0} failed to start: {1}")]
    Worker(usize, String),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
}

/// A running server: its bound addresses, and the handle to stop it.
pub struct RunningServer {
    /// The UDP, TCP and TLS listening addresses, with port 0 resolved.
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    certificates: Option<Arc<tls::TlsCertificates>>,
    stop: tokio::sync::watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    status: ServerStatus,
    quota: Arc<AllocationQuota>,
    /// Where a reloaded plan is sent to the shards.
    reload: tokio::sync::watch::Sender<Arc<Plan>>,
    /// The config the server started with (what a reload cannot change).
    started_with: Config,
    listeners: Vec<SocketAddr>,
    admin: AdminHandle,
    /// The HTTP connections of shared TLS ports, until the HTTP endpoint
    /// takes them.
    http_inbox: Option<HttpInbox>,
    /// The XDP program, while attached (`relay.fast_path = "xdp"`).
    fast_path: Option<xdp::FastPath>,
}

impl RunningServer {
    /// Where the HTTP connections of the TLS listeners arrive, when they
    /// are shared with HTTP (`signaling.share_tls_port`); `Some` once.
    pub fn take_http_inbox(&mut self) -> Option<HttpInbox> {
        self.http_inbox.take()
    }

    /// Re-reads the TLS certificate and key (SIGHUP). New handshakes use
    /// them; live connections and allocations are untouched. On error the
    /// previous certificate stays.
    pub fn reload_tls(&self) -> Result<(), tls::TlsError> {
        match &self.certificates {
            Some(certificates) => certificates.reload(),
            None => Ok(()),
        }
    }

    /// Applies a reloaded config (SIGHUP): users, shared secrets, realm,
    /// nonce lifetime, SOFTWARE, the peer filter, the PROXY protocol's
    /// trusted sources (for the HTTP listener too), the allocation,
    /// permission, channel, peer connection and lifetime limits, and the
    /// TLS certificate.
    /// Live allocations stay. Returns what changed but needs a restart
    /// (listeners, relay addresses and ports, workers, connection limits).
    /// On a TLS error nothing is applied.
    pub fn reload(&self, config: &Config) -> Result<Vec<&'static str>, tls::TlsError> {
        let (effective, needs_restart) = reloadable(&self.started_with, config);
        self.reload_tls()?;
        let quota = &self.quota;
        quota.set_limits(
            effective.limits.max_allocations,
            effective.limits.max_allocations_per_user,
        );
        quota.set_user_rate(effective.limits.user_bytes_per_second);
        quota.set_source_limit(effective.limits.max_allocations_per_source);
        self.status
            .proxy_protocol()
            .set_trusted(effective.listen.proxy_protocol_from.clone());
        // The core takes credentials, filter and limits from the plan; the
        // relay part is the running one, since `effective` kept it.
        let _ = self.reload.send(Arc::new(Plan::new(&effective, &self.listeners)));
        Ok(needs_restart)
    }

    /// Liveness, allocation count and drain, shareable with other threads.
    pub fn status(&self) -> ServerStatus {
        self.status.clone()
    }

    /// The TLS certificate in use, if one is loaded (the HTTP endpoint
    /// serves HTTPS with it, and a reload applies to both).
    pub fn certificates(&self) -> Option<Arc<tls::TlsCertificates>> {
        self.certificates.clone()
    }

    /// What the operator's admin API asks the shards through.
    pub fn admin(&self) -> AdminHandle {
        self.admin.clone()
    }

    /// Detaches the fast path, then stops every shard and waits for
    /// their threads to end: the kernel must not relay for allocations
    /// that user space no longer holds.
    pub fn stop(self) {
        drop(self.fast_path);
        let _ = self.stop.send(true);
        for w in self.workers {
            let _ = w.join();
        }
    }
}

/// Binds every listener and starts the shards. Returns once all of them
/// are serving.
pub fn start(config: &Config) -> Result<RunningServer, StartError> {
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(crate::config::MAX_WORKERS)),
        n => n,
    };
    let certificates = tls::TlsCertificates::from_config(config)?.map(Arc::new);
    let mut sockets: Vec<StdSockets> = (0..workers).map(|_| StdSockets::default()).collect();
    let udp = bind_udp_listeners(config, &mut sockets)?;
    let (http_handover, http_inbox) = match config.signaling.share_tls_port {
        true => {
            let (handover, inbox) = http_handover::channel();
            (Some(handover), Some(inbox))
        }
        false => (None, None),
    };
    let (tcp, tls) = bind_stream_listeners(config, certificates.as_ref(), http_handover, &mut sockets)?;
    // The HTTP port counts as a service port too (port 0 would only be
    // known once bound, and is for tests alone).
    let http = config.listen.http.filter(|a| a.port() != 0);
    // The admin API's port likewise: never a relay, never a peer.
    let admin = config.admin.listen.filter(|a| a.port() != 0);
    let listeners: Vec<SocketAddr> = udp
        .iter()
        .chain(&tcp)
        .chain(&tls)
        .chain(&http)
        .chain(&admin)
        .copied()
        .collect();
    let plan = Arc::new(Plan::new(config, &listeners));
    let quota = Arc::new(AllocationQuota::new(
        config.limits.max_allocations,
        config.limits.max_allocations_per_user,
    ));
    quota.set_user_rate(config.limits.user_bytes_per_second);
    quota.set_source_limit(config.limits.max_allocations_per_source);
    // After the listeners are bound (a start that fails there attaches
    // nothing); the program passes everything until routes are installed.
    let fast_path = match config.relay.fast_path {
        FastPath::Xdp => xdp::FastPath::start(
            &config.relay.fast_path_interfaces,
            xdp::routes_for(config.limits.max_allocations),
        ),
        FastPath::Off => None,
    };
    let attached = fast_path.as_ref().map_or_else(Vec::new, |f| {
        f.attachments().into_iter().map(|a| (a.interface, a.mode)).collect()
    });
    let fast_path_maps = fast_path.as_ref().map(xdp::FastPath::maps);
    let connections = ConnectionCount::default();
    let revocations = Arc::new(Revocations::default());
    let proxy_protocol = ProxyProtocol::new(config.listen.proxy_protocol_from.clone());
    let status = ServerStatus::new(workers, quota.clone(), connections.clone(), Arc::new(proxy_protocol))
        .with_revocations(revocations.clone())
        .with_fast_path(attached, fast_path_maps.clone().map(fast_path_reader));
    let (admin, admin_inboxes) = admin::inboxes(workers, revocations.clone());
    let (reload, reloads) = watch::channel(plan.clone());
    let (stop, stopped) = watch::channel(false);
    let (ready, ready_rx) = mpsc::channel();
    let (transfer, inboxes) = ConnectionTransfer::new(workers);
    let stream_limits = StreamLimits {
        max_connections: config.limits.max_connections,
        max_per_source: config
            .limits
            .max_connections_per_source
            .min(config.limits.max_connections),
        handshakes_per_source: config.limits.tls_handshakes_per_source,
        setup_timeout: config.limits.connection_setup_timeout,
        idle_timeout: config.limits.connection_idle_timeout,
        max_frame: config.limits.max_frame_size,
    };
    let context = ShardContext {
        plan: plan.clone(),
        reloads,
        stopped,
        ready,
        quota: quota.clone(),
        live: Arc::default(),
        nonce_key: random_bytes(),
        ports: Arc::new(Mutex::new(relay_port_pool(config, &listeners))),
        reserved: ReservedSockets::default(),
        stream_sources: Arc::new(StreamSources::new(&stream_limits, random_bytes())),
        stream_limits,
        transfer: Arc::new(transfer),
        connections,
        status: status.clone(),
        revocations,
        fast_path: fast_path_maps,
    };

    let mut handles = Vec::new();
    let links = cross_shard::packet_links(workers);
    let shard_inputs = sockets.into_iter().zip(inboxes).zip(links).zip(admin_inboxes);
    for (index, (((shard_sockets, inbox), links), admin_inbox)) in shard_inputs.enumerate() {
        let context = context.clone();
        let handle = std::thread::Builder::new()
            .name(format!("turnpike-shard-{index}"))
            .spawn(move || run_shard(index, shard_sockets, (inbox, admin_inbox), links, context))
            .map_err(StartError::Thread)?;
        handles.push(handle);
    }
    // Only the shards may hold senders now, so a shard that dies before
    // reporting ends the wait below instead of running out its time.
    drop(context);
    for index in 0..workers {
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StartError::Worker(index, e)),
            Err(e) => return Err(StartError::Worker(index, e.to_string())),
        }
    }
    log_started(config, &plan, workers, &udp, &tcp, &tls);
    Ok(RunningServer {
        udp,
        tcp,
        tls,
        certificates,
        stop,
        workers: handles,
        status,
        quota,
        reload,
        started_with: config.clone(),
        listeners,
        admin,
        http_inbox,
        fast_path,
    })
}

/// Reads the fast path's verdicts and route counts for `/metrics`.
fn fast_path_reader(maps: Arc<Mutex<xdp::RelayMaps>>) -> FastPathReader {
    Arc::new(move || {
        let maps = maps.lock().unwrap_or_else(|e| e.into_inner());
        let verdicts = maps.verdicts().ok()?;
        let (channel_routes, peer_routes) = maps.route_counts();
        Some(FastPathCounts {
            verdicts: xdp::Verdict::ALL
                .iter()
                .zip(verdicts)
                .map(|(v, n)| (v.label(), n))
                .collect(),
            channel_routes: channel_routes as u64,
            peer_routes: peer_routes as u64,
        })
    })
}

/// The free relay ports: the range, less every port a listener holds (an
/// overlap is allowed, since a test or a probe may pick a free port that
/// falls in the range, but such a port is never a relay).
fn relay_port_pool(config: &Config, listeners: &[SocketAddr]) -> PortPool {
    let mut pool = PortPool::new(config.relay.ports.as_range());
    for addr in listeners {
        pool.exclude(addr.port());
    }
    pool
}

/// What the server listens on and relays from, once every shard serves.
fn log_started(
    config: &Config,
    plan: &Plan,
    workers: usize,
    udp: &[SocketAddr],
    tcp: &[SocketAddr],
    tls: &[SocketAddr],
) {
    for addr in udp {
        info!(%addr, workers, "listening for STUN/TURN over UDP");
    }
    for pair in plan.server.nat_discovery.pairs() {
        info!(primary = %pair.primary(), alternate = %pair.alternate(), "NAT behaviour discovery (RFC 5780): Binding answers over UDP carry OTHER-ADDRESS, CHANGE-REQUEST is honoured");
    }
    for addr in tcp {
        info!(%addr, workers, "listening for STUN/TURN over TCP");
    }
    for addr in tls {
        match config.signaling.share_tls_port {
            true => {
                info!(%addr, workers, "listening for STUN/TURN and HTTPS over TLS (one port, told apart by ALPN or the first bytes)")
            }
            false => info!(%addr, workers, "listening for STUN/TURN over TLS"),
        }
    }
    info!(
        relay_ip = %plan.relay_advertised,
        bind = %plan.relay_bind,
        ports = %config.relay.ports,
        "relaying IPv4"
    );
    match plan.relay_v6 {
        Some((bind, advertised)) => info!(relay_ip = %advertised, %bind, "relaying IPv6"),
        None => info!("not relaying IPv6 (relay.ipv6 is off or the host has no global IPv6 address)"),
    }
    if config.server.external_ip.is_empty() {
        if plan.relay_advertised.is_loopback() {
            warn!("relay address is loopback: only clients on this machine can use the relays; set relay.ipv4 or server.external_ip");
        } else if plan.relay_advertised.is_private() {
            info!(relay_ip = %plan.relay_advertised, "the relay address is private: if clients reach this server through NAT, set server.external_ip to its public address");
        }
    }
}
