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
//! * `socket`: how every socket is opened;
//! * `plan`: what the shards share, derived from the config, and what a
//!   reload may change;
//! * `shard`: one shard's event loop;
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
//!
//! This file holds [`start`], the body of every shard's thread
//! (`run_shard`), and the [`RunningServer`] it returns.

mod admin;
mod plan;
mod relay;
mod shard;
mod socket;
mod stream;
mod udp;

pub use admin::{AdminError, AdminHandle, REPLY_TIMEOUT};
pub use socket::BindError;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;
use crate::process::clock;
use crate::process::http_handover::{self, HttpHandover, HttpInbox};
use crate::process::proxy_protocol::ProxyProtocol;
use crate::process::random::random_bytes;
use crate::process::status::{ConnectionCount, ServerStatus, HEARTBEAT_INTERVAL};
use crate::process::tls;
use crate::proto::addr::ShardId;
use crate::proto::bandwidth_watch::BandwidthWatch;
use crate::proto::live_relays::LiveRelays;
use crate::proto::peer_filter::PeerFilter;
use crate::proto::quota::AllocationQuota;
use crate::proto::revocations::Revocations;
use crate::proto::server::Server;
use plan::{reloadable, Plan};
use relay::cross_shard;
use relay::port_pool::PortPool;
use relay::sockets::{RelaySocketsConfig, ReservedSockets};
use socket::{bind_per_shard, bind_tcp, bind_udp, UdpRole};
use stream::admission::{StreamLimits, StreamSources};
use stream::listener::{Security, StreamsShared};
use stream::transfer::{ConnectionTransfer, TransferredConnection};

/// Connections a TCP or TLS listener holds before they are accepted.
const STREAM_BACKLOG: i32 = 1024;

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

    /// Stops every shard and waits for their threads to end.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        for w in self.workers {
            let _ = w.join();
        }
    }
}

/// One shard's listening sockets, bound by [`start`] before the shard's
/// runtime exists.
#[derive(Default)]
struct StdSockets {
    udp: Vec<(SocketAddr, std::net::UdpSocket)>,
    streams: Vec<(SocketAddr, std::net::TcpListener, Security)>,
}

/// The same sockets, registered with the shard's runtime.
struct ShardSockets {
    udp: Vec<(SocketAddr, udp::batch::UdpSock)>,
    /// TCP and TLS listeners.
    streams: Vec<(SocketAddr, tokio::net::TcpListener, Security)>,
}

impl StdSockets {
    /// Registers the sockets with the current (the shard's) runtime.
    fn adopt(self) -> std::io::Result<ShardSockets> {
        Ok(ShardSockets {
            udp: self
                .udp
                .into_iter()
                .map(|(a, s)| Ok((a, udp::batch::register(s)?)))
                .collect::<std::io::Result<_>>()?,
            streams: self
                .streams
                .into_iter()
                .map(|(a, l, security)| Ok((a, tokio::net::TcpListener::from_std(l)?, security)))
                .collect::<std::io::Result<_>>()?,
        })
    }
}

/// What every shard thread gets from [`start`] besides its own sockets.
#[derive(Clone)]
struct ShardContext {
    plan: Arc<Plan>,
    /// The plans of later reloads.
    reloads: watch::Receiver<Arc<Plan>>,
    stopped: watch::Receiver<bool>,
    /// Where a shard reports that it serves, or why it cannot.
    ready: mpsc::Sender<Result<(), String>>,
    quota: Arc<AllocationQuota>,
    live: Arc<LiveRelays>,
    /// One for the process: a nonce stays valid on every shard and across
    /// reloads.
    nonce_key: [u8; 32],
    /// The free relay ports.
    ports: Arc<Mutex<PortPool>>,
    reserved: ReservedSockets,
    stream_limits: StreamLimits,
    /// The per-source stream limits, one table for every shard.
    stream_sources: Arc<StreamSources>,
    /// Where a shard sends a connection that belongs to another.
    transfer: Arc<ConnectionTransfer>,
    connections: ConnectionCount,
    status: ServerStatus,
    revocations: Arc<Revocations>,
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
    let connections = ConnectionCount::default();
    let revocations = Arc::new(Revocations::default());
    let proxy_protocol = ProxyProtocol::new(config.listen.proxy_protocol_from.clone());
    let status = ServerStatus::new(workers, quota.clone(), connections.clone(), Arc::new(proxy_protocol))
        .with_revocations(revocations.clone());
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
    })
}

/// Binds every UDP listener once per shard (`sockets` has one entry per
/// shard); returns the bound addresses.
fn bind_udp_listeners(config: &Config, sockets: &mut [StdSockets]) -> Result<Vec<SocketAddr>, BindError> {
    let mut udp = Vec::new();
    for &wanted in &config.listen.udp {
        let bind = |addr, reuse_port| bind_udp(addr, UdpRole::Listener { reuse_port });
        let (bound, per_shard) = bind_per_shard("UDP", wanted, sockets.len(), bind, std::net::UdpSocket::local_addr)?;
        for (shard, socket) in sockets.iter_mut().zip(per_shard) {
            shard.udp.push((bound, socket));
        }
        udp.push(bound);
    }
    Ok(udp)
}

/// Binds every TCP and TLS listener once per shard (`sockets` has one
/// entry per shard), as UDP listeners are; returns the bound TCP and TLS
/// addresses. TLS listeners need `certificates`, and are shared with HTTP
/// when given `http`.
fn bind_stream_listeners(
    config: &Config,
    certificates: Option<&Arc<tls::TlsCertificates>>,
    http: Option<HttpHandover>,
    sockets: &mut [StdSockets],
) -> Result<(Vec<SocketAddr>, Vec<SocketAddr>), BindError> {
    let mut tcp = Vec::new();
    let mut tls = Vec::new();
    let plain = config.listen.tcp.iter().map(|a| (*a, Security::Plain));
    let secure = certificates.into_iter().flat_map(|c| {
        config
            .listen
            .tls
            .iter()
            .map(|a| (*a, Security::Tls(c.clone(), http.clone())))
    });
    for (wanted, security) in plain.chain(secure) {
        let (proto, bound_list) = match security {
            Security::Plain => ("TCP", &mut tcp),
            Security::Tls(..) => ("TLS", &mut tls),
        };
        // The kernel spreads connections over the siblings; a data
        // connection that lands on the wrong shard is handed on (see
        // `stream::transfer`).
        let bind = |addr, reuse_port| bind_tcp(addr, reuse_port, STREAM_BACKLOG);
        let (bound, per_shard) = bind_per_shard(proto, wanted, sockets.len(), bind, std::net::TcpListener::local_addr)?;
        for (shard, listener) in sockets.iter_mut().zip(per_shard) {
            shard.streams.push((bound, listener, security.clone()));
        }
        bound_list.push(bound);
    }
    Ok((tcp, tls))
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

/// The body of shard `index`'s thread: a current-thread runtime whose
/// `LocalSet` runs the shard, its stream listeners, the `inbox` of
/// connections other shards hand it, the inbox of admin commands, a task that applies reloaded plans
/// and one that publishes the heartbeat. `links` are its ends of the
/// relay-to-relay hand-off. Reports on `ready` once serving (or why it
/// cannot), then runs until stopped.
fn run_shard(
    index: usize,
    sockets: StdSockets,
    (inbox, admin_inbox): (
        tokio::sync::mpsc::Receiver<TransferredConnection>,
        tokio::sync::mpsc::Receiver<admin::AdminCommand>,
    ),
    (relay_inbox, outboxes): cross_shard::PacketLinks,
    context: ShardContext,
) {
    let ShardContext {
        plan,
        mut reloads,
        mut stopped,
        ready,
        quota,
        live,
        nonce_key,
        ports,
        reserved,
        stream_limits,
        stream_sources,
        transfer,
        connections,
        status,
        revocations,
    } = context;
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listeners = match sockets.adopt() {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        let credentials = plan.credentials(nonce_key);
        let binder = RelaySocketsConfig {
            v4: (plan.relay_bind, plan.relay_advertised),
            v6: plan.relay_v6,
            pool: ports,
            reserved,
        };
        let filter = PeerFilter::new(plan.rules.clone());
        let server_config = plan.server.clone();
        let gate = quota.clone();
        // Fewer than MAX_WORKERS (256) shards are started, see `start`.
        let shard_id = ShardId(u8::try_from(index).unwrap_or(u8::MAX));
        let shard = shard::Shard::start(
            |sockets| {
                Server::new(server_config, credentials, filter, quota, live, sockets, random_bytes())
                    .on_shard(shard_id)
                    .with_revocations(revocations)
            },
            binder,
            listeners.udp,
            (relay_inbox, cross_shard::PacketOutboxes::new(outboxes)),
        );
        let shard = match shard {
            Ok(shard) => shard,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        let stream_limits = Rc::new(stream_limits);
        for (addr, listener, security) in listeners.streams {
            tokio::task::spawn_local(stream::listener::accept_loop(
                shard.clone(),
                listener,
                addr,
                security,
                stream_limits.clone(),
                StreamsShared {
                    sources: stream_sources.clone(),
                    count: connections.clone(),
                    transfer: transfer.clone(),
                    proxy: status.proxy_protocol(),
                },
            ));
        }
        tokio::task::spawn_local(stream::listener::serve_transferred(
            shard.clone(),
            inbox,
            stream_limits.clone(),
        ));
        tokio::task::spawn_local(admin::inbox_loop(shard.clone(), admin_inbox));
        let reconfigured = shard.clone();
        let plans = reloads.clone();
        tokio::task::spawn_local(async move {
            reloads.mark_unchanged();
            while reloads.changed().await.is_ok() {
                let plan = reloads.borrow_and_update().clone();
                reconfigured.reconfigure(
                    plan.server.clone(),
                    plan.credentials(nonce_key),
                    PeerFilter::new(plan.rules.clone()),
                );
            }
        });
        tokio::task::spawn_local(async move {
            // One shard watches the whole server's relayed rate for
            // `alternate.bytes_per_second`.
            let mut bandwidth = (index == 0).then(|| BandwidthWatch::new(0));
            loop {
                status.publish(index, shard.snapshot());
                if let Some(watch) = &mut bandwidth {
                    watch.set_threshold(plans.borrow().shed_above_bytes_per_second);
                    let relayed = status.snapshot();
                    let total = relayed.to_peer.bytes.saturating_add(relayed.to_client.bytes);
                    gate.set_saturated(watch.sample(clock::mono(), total));
                }
                tokio::time::sleep(HEARTBEAT_INTERVAL).await;
            }
        });
        let _ = ready.send(Ok(()));
        while !*stopped.borrow() {
            if stopped.changed().await.is_err() {
                break;
            }
        }
    });
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
    if plan.relay_advertised.is_loopback() && config.server.external_ip.is_none() {
        warn!("relay address is loopback: only clients on this machine can use the relays; set relay.ipv4 or server.external_ip");
    }
}
