//! The tokio drivers: they bind sockets, sample the clock, and run the
//! protocol core of [`crate::proto`] in N shards (see [`shard`]).
//!
//! [`start`] turns a validated [`Config`] into running shards. Listening
//! sockets are all bound here, before any shard starts, so a port that is
//! taken fails the start with a clear error, and `port 0` in the config
//! resolves to one concrete port that every shard's `SO_REUSEPORT` sibling
//! shares.
//!
//! UDP listeners get one sibling per shard. TCP and TLS listeners live on
//! shard 0 alone: an RFC 6062 data connection is a new connection that
//! must reach the shard holding its peer connection, which `SO_REUSEPORT`
//! would not guarantee. Streams are the minority transport; spreading them
//! needs a cross-shard connection table, which is future work.

mod shard;
mod stream;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tracing::{info, warn};

use crate::config::Config;
use crate::process::random::random_bytes;
use crate::process::status::{ConnectionCount, ServerStatus, HEARTBEAT_INTERVAL};
use crate::process::tls;
use crate::proto::auth::{Credentials, CredentialsConfig};
use crate::proto::peer_filter::{PeerFilter, PeerRules};
use crate::proto::server::{AllocationQuota, RelayHairpin, Server, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {proto} {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
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
}

impl RunningServer {
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
    /// nonce lifetime, SOFTWARE, the peer filter, the allocation,
    /// permission, channel and lifetime limits, and the TLS certificate.
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

    /// Stops every shard and waits for their threads to end.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        for w in self.workers {
            let _ = w.join();
        }
    }
}

/// `new` as the running server can apply it: the relay addresses stay
/// those of `running` (the relay sockets and the peer filter's own-port
/// rule depend on them). Also names the settings that differ from
/// `running` but take effect only after a restart.
fn reloadable(running: &Config, new: &Config) -> (Config, Vec<&'static str>) {
    let (old, fresh) = (&running.limits, &new.limits);
    let connection_limits = |l: &crate::config::LimitsSection| {
        (
            l.max_connections,
            l.connection_setup_timeout,
            l.connection_idle_timeout,
            l.max_frame_size,
        )
    };
    let restart_only = [
        ("listen", running.listen != new.listen),
        ("relay", running.relay != new.relay),
        ("server.workers", running.server.workers != new.server.workers),
        (
            "server.external_ip",
            running.server.external_ip != new.server.external_ip,
        ),
        ("tls.cert/tls.key", running.tls != new.tls),
        (
            "limits.max_connections, the connection timeouts and max_frame_size",
            connection_limits(old) != connection_limits(fresh),
        ),
    ];
    let mut effective = new.clone();
    effective.relay = running.relay.clone();
    effective.server.external_ip = running.server.external_ip;
    let differ = restart_only.iter().filter(|(_, d)| *d).map(|(name, _)| *name).collect();
    (effective, differ)
}

/// The two kinds of UDP socket the server opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UdpRole {
    /// A STUN/TURN listener: sees every client's traffic, so it gets roomy
    /// kernel buffers (capped by net.core.[rw]mem_max), and
    /// `SO_REUSEPORT` when several shards share its address.
    Listener { reuse_port: bool },
    /// One allocation's relay socket: the kernel defaults suffice.
    Relay,
}

/// Opens a non-blocking UDP socket bound to `addr`.
pub(crate) fn bind_udp(addr: SocketAddr, role: UdpRole) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if let UdpRole::Listener { reuse_port } = role {
        socket.set_reuse_port(reuse_port)?;
        // Without this a single-shard listener keeps the ~208 KiB default
        // and drops bursts that coturn (4 MiB) absorbs: see BENCHMARKS.md.
        let _ = socket.set_recv_buffer_size(4 << 20);
        let _ = socket.set_send_buffer_size(4 << 20);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Opens a non-blocking TCP listener bound to `addr`.
fn bind_tcp(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // A restart must not fail on the previous run's TIME_WAIT connections.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Binds `wanted` once per shard: shard 0's socket first, so that port 0
/// becomes a real port its `SO_REUSEPORT` siblings then share. Returns the
/// bound address and one socket per shard.
fn bind_per_shard<S>(
    proto: &'static str,
    wanted: SocketAddr,
    workers: usize,
    bind: impl Fn(SocketAddr, bool) -> std::io::Result<S>,
    local_addr: impl Fn(&S) -> std::io::Result<SocketAddr>,
) -> Result<(SocketAddr, Vec<S>), StartError> {
    let error = |addr| move |source| StartError::Bind { proto, addr, source };
    let first = bind(wanted, workers > 1).map_err(error(wanted))?;
    let bound = local_addr(&first).map_err(error(wanted))?;
    let mut sockets = vec![first];
    for _ in 1..workers {
        sockets.push(bind(bound, true).map_err(error(bound))?);
    }
    Ok((bound, sockets))
}

/// Addresses of this host's interfaces (for the default advertised relay
/// addresses and for recognising the server's own addresses as peers).
fn interface_ips() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read and then
    // free with freeifaddrs; every pointer is checked for null first, and
    // each sockaddr is read as the type its family says it is.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

/// Everything shards share, derived once from the config.
struct Plan {
    server: ServerConfig,
    realm: String,
    nonce_ttl: Duration,
    users: Vec<(String, [u8; 16])>,
    secrets: Vec<Vec<u8>>,
    rules: PeerRules,
    relay_bind: Ipv4Addr,
    relay_advertised: Ipv4Addr,
    /// IPv6 relays: bind and advertised address, if IPv6 relaying is on.
    relay_v6: Option<(Ipv6Addr, Ipv6Addr)>,
}

impl Plan {
    /// The shard's credential checker; `nonce_key` is the process's, so
    /// nonces stay valid across reloads.
    fn credentials(&self, nonce_key: [u8; 32]) -> Credentials {
        Credentials::new(CredentialsConfig {
            realm: self.realm.clone(),
            users: self.users.clone(),
            secrets: self.secrets.clone(),
            nonce_ttl: self.nonce_ttl,
            nonce_key,
        })
    }

    /// `listeners`: every bound UDP and TCP listening address.
    fn new(config: &Config, listeners: &[SocketAddr]) -> Plan {
        let interfaces = interface_ips();
        let relay_bind = config.relay.ipv4;
        let relay_advertised = match config.server.external_ip {
            Some(IpAddr::V4(ip)) => ip,
            _ if !relay_bind.is_unspecified() => relay_bind,
            _ => interfaces
                .iter()
                .find_map(|ip| match ip {
                    IpAddr::V4(v4) if !v4.is_loopback() => Some(*v4),
                    _ => None,
                })
                .unwrap_or(Ipv4Addr::LOCALHOST),
        };
        let relay_v6 = config.relay.ipv6.and_then(|bind| {
            let advertised = match bind.is_unspecified() {
                false => Some(bind),
                // Loopback and link-local (fe80::/10) cannot be reached by
                // anyone else, so they are never advertised by default.
                true => interfaces.iter().find_map(|ip| match ip {
                    IpAddr::V6(v6) if !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80 => Some(*v6),
                    _ => None,
                }),
            };
            advertised.map(|advertised| (bind, advertised))
        });
        let mut own_ips: Vec<IpAddr> = interfaces.clone();
        own_ips.push(IpAddr::V4(relay_advertised));
        own_ips.extend(relay_v6.map(|(_, advertised)| IpAddr::V6(advertised)));
        own_ips.extend(config.server.external_ip);
        own_ips.extend(listeners.iter().map(|a| a.ip()));
        let software = Some(config.server.software.clone()).filter(|s| !s.is_empty());
        // external_ip may not be reachable from this host (no hairpin
        // NAT): our relays reach each other on the bind address instead.
        let local_v4 = match relay_bind.is_unspecified() {
            true => Ipv4Addr::LOCALHOST,
            false => relay_bind,
        };
        let hairpin = RelayHairpin::new(
            config
                .server
                .external_ip
                .map(|external| (external, IpAddr::V4(local_v4))),
            config.relay.ports.as_range(),
        );
        Plan {
            realm: config.server.realm.clone(),
            nonce_ttl: config.auth.nonce_ttl,
            server: ServerConfig {
                software,
                relay_ip_v4: Some(relay_advertised),
                relay_ip_v6: relay_v6.map(|(_, advertised)| advertised),
                max_allocation_lifetime: config.limits.max_allocation_lifetime,
                max_permissions: config.limits.max_permissions_per_allocation,
                max_channels: config.limits.max_channels_per_allocation,
                hairpin,
                allocation_rate: config.limits.allocation_bytes_per_second,
            },
            users: config
                .auth
                .users
                .iter()
                .map(|u| (u.name.clone(), config.user_key(u)))
                .collect(),
            secrets: config
                .auth
                .resolved_secrets
                .iter()
                .map(|s| s.expose().as_bytes().to_vec())
                .collect(),
            rules: PeerRules {
                allow: config.peers.allow.clone(),
                deny: config.peers.deny.clone(),
                own_ips,
                relay_ports: config.relay.ports.as_range(),
                service_ports: listeners.iter().map(|a| a.port()).collect(),
            },
            relay_bind,
            relay_advertised,
            relay_v6,
        }
    }
}

/// One shard's listening sockets before they join its runtime.
#[derive(Default)]
struct StdSockets {
    udp: Vec<(SocketAddr, std::net::UdpSocket)>,
    streams: Vec<(SocketAddr, std::net::TcpListener, stream::Security)>,
}

impl StdSockets {
    /// Registers the sockets with the current (the shard's) runtime.
    fn adopt(self) -> std::io::Result<shard::ShardSockets> {
        Ok(shard::ShardSockets {
            udp: self
                .udp
                .into_iter()
                .map(|(a, s)| Ok((a, tokio::net::UdpSocket::from_std(s)?)))
                .collect::<std::io::Result<_>>()?,
            streams: self
                .streams
                .into_iter()
                .map(|(a, l, security)| Ok((a, tokio::net::TcpListener::from_std(l)?, security)))
                .collect::<std::io::Result<_>>()?,
        })
    }
}

/// Binds every listener and starts the shards. Returns once all of them
/// are serving.
pub fn start(config: &Config) -> Result<RunningServer, StartError> {
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let certificates = tls::TlsCertificates::from_config(config)?.map(Arc::new);
    let mut sockets: Vec<StdSockets> = (0..workers).map(|_| StdSockets::default()).collect();
    let mut udp = Vec::new();
    for &wanted in &config.listen.udp {
        let bind = |addr, reuse_port| bind_udp(addr, UdpRole::Listener { reuse_port });
        let (bound, per_shard) = bind_per_shard("UDP", wanted, workers, bind, std::net::UdpSocket::local_addr)?;
        for (shard, socket) in sockets.iter_mut().zip(per_shard) {
            shard.udp.push((bound, socket));
        }
        udp.push(bound);
    }
    let mut tcp = Vec::new();
    let mut tls = Vec::new();
    let plain = config.listen.tcp.iter().map(|a| (*a, stream::Security::Plain));
    let secure = certificates
        .iter()
        .flat_map(|c| config.listen.tls.iter().map(|a| (*a, stream::Security::Tls(c.clone()))));
    for (wanted, security) in plain.chain(secure) {
        let (proto, bound_list) = match security {
            stream::Security::Plain => ("TCP", &mut tcp),
            stream::Security::Tls(_) => ("TLS", &mut tls),
        };
        // One shard serves every stream: an RFC 6062 data connection must
        // reach the shard that holds its peer connection, and a connection
        // spread by SO_REUSEPORT would not (see DESIGN notes in README).
        let (bound, mut listener) = bind_per_shard(proto, wanted, 1, bind_tcp, std::net::TcpListener::local_addr)?;
        if let Some(listener) = listener.pop() {
            sockets[0].streams.push((bound, listener, security));
        }
        bound_list.push(bound);
    }
    let stream_limits = stream::StreamLimits {
        max_connections: config.limits.max_connections,
        setup_timeout: config.limits.connection_setup_timeout,
        idle_timeout: config.limits.connection_idle_timeout,
        max_frame: config.limits.max_frame_size,
    };
    let connections = ConnectionCount::default();

    // The HTTP port counts as a service port too (port 0 would only be
    // known once bound, and is for tests alone).
    let http = config.listen.http.filter(|a| a.port() != 0);
    let listeners: Vec<SocketAddr> = udp.iter().chain(&tcp).chain(&tls).chain(&http).copied().collect();
    let plan = Arc::new(Plan::new(config, &listeners));
    let quota = Arc::new(AllocationQuota::new(
        config.limits.max_allocations,
        config.limits.max_allocations_per_user,
    ));
    quota.set_user_rate(config.limits.user_bytes_per_second);
    let nonce_key: [u8; 32] = random_bytes();
    let (reload, reloads) = tokio::sync::watch::channel(plan.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let reserved = shard::ReservedSockets::default();
    let status = ServerStatus::new(workers, quota.clone(), connections.clone());

    let mut handles = Vec::new();
    for (index, shard_sockets) in sockets.into_iter().enumerate() {
        let plan = plan.clone();
        let quota = quota.clone();
        let mut reloads = reloads.clone();
        let mut stopped = stopped.clone();
        let ready = ready_tx.clone();
        let reserved = reserved.clone();
        let stream_limits = stream_limits.clone();
        let connections = connections.clone();
        let status = status.clone();
        let handle = std::thread::Builder::new()
            .name(format!("turnpike-shard-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    let listeners = match shard_sockets.adopt() {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let credentials = plan.credentials(nonce_key);
                    let binder = shard::RelaySocketsConfig {
                        v4: (plan.relay_bind, plan.relay_advertised),
                        v6: plan.relay_v6,
                        ports: plan.rules.relay_ports.clone(),
                        reserved,
                    };
                    let filter = PeerFilter::new(plan.rules.clone());
                    let server_config = plan.server.clone();
                    let shard = shard::Shard::start(
                        |sockets| Server::new(server_config, credentials, filter, quota, sockets, random_bytes()),
                        binder,
                        listeners,
                        std::rc::Rc::new(stream_limits),
                        connections,
                    );
                    let reconfigured = shard.clone();
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
                        loop {
                            status.publish(index, shard.snapshot());
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
            })
            .map_err(StartError::Thread)?;
        handles.push(handle);
    }
    drop(ready_tx);
    for index in 0..workers {
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StartError::Worker(index, e)),
            Err(e) => return Err(StartError::Worker(index, e.to_string())),
        }
    }
    for addr in &udp {
        info!(%addr, workers, "listening for STUN/TURN over UDP");
    }
    for addr in &tcp {
        info!(%addr, workers, "listening for STUN/TURN over TCP");
    }
    for addr in &tls {
        info!(%addr, workers, "listening for STUN/TURN over TLS");
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
    })
}
