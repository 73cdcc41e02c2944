//! The body of every shard's thread: a current-thread tokio runtime whose
//! `LocalSet` runs one [`Shard`] and the tasks around it (its stream
//! listeners, the connections other shards transfer to it, the operator's
//! commands, reloads and the heartbeat).
//!
//! Invariants:
//! * a shard reports on its `ready` channel exactly once: `Ok` once it
//!   serves, or why it cannot; [`crate::net::start`] waits for every one;
//! * everything a shard shares with the others comes in its
//!   [`ShardContext`]; everything else it builds on its own thread and owns.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};

use tokio::sync::watch;

use super::admin;
use super::listeners::StdSockets;
use super::plan::Plan;
use super::relay::cross_shard;
use super::relay::port_pool::PortPool;
use super::relay::sockets::{RelaySocketsConfig, ReservedSockets};
use super::shard::Shard;
use super::stream::admission::{StreamLimits, StreamSources};
use super::stream::listener::{accept_loop, serve_transferred, StreamsShared};
use super::stream::transfer::{ConnectionTransfer, TransferredConnection};
use super::xdp::{RelayMaps, XdpRoutes};
use crate::process::clock;
use crate::process::random::random_bytes;
use crate::process::status::{ConnectionCount, ServerStatus, HEARTBEAT_INTERVAL};
use crate::proto::addr::ShardId;
use crate::proto::bandwidth_watch::BandwidthWatch;
use crate::proto::live_relays::LiveRelays;
use crate::proto::peer_filter::PeerFilter;
use crate::proto::quota::AllocationQuota;
use crate::proto::revocations::Revocations;
use crate::proto::server::Server;

/// What every shard thread gets from [`crate::net::start`] besides its own sockets.
#[derive(Clone)]
pub(super) struct ShardContext {
    pub(super) plan: Arc<Plan>,
    /// The plans of later reloads.
    pub(super) reloads: watch::Receiver<Arc<Plan>>,
    pub(super) stopped: watch::Receiver<bool>,
    /// Where a shard reports that it serves, or why it cannot.
    pub(super) ready: mpsc::Sender<Result<(), String>>,
    pub(super) quota: Arc<AllocationQuota>,
    pub(super) live: Arc<LiveRelays>,
    /// One for the process: a nonce stays valid on every shard and across
    /// reloads.
    pub(super) nonce_key: [u8; 32],
    /// The free relay ports.
    pub(super) ports: Arc<Mutex<PortPool>>,
    pub(super) reserved: ReservedSockets,
    pub(super) stream_limits: StreamLimits,
    /// The per-source stream limits, one table for every shard.
    pub(super) stream_sources: Arc<StreamSources>,
    /// Where a shard sends a connection that belongs to another.
    pub(super) transfer: Arc<ConnectionTransfer>,
    pub(super) connections: ConnectionCount,
    pub(super) status: ServerStatus,
    pub(super) revocations: Arc<Revocations>,
    /// The XDP fast path's maps, while it is attached.
    pub(super) fast_path: Option<Arc<Mutex<RelayMaps>>>,
}

/// The body of shard `index`'s thread: a current-thread runtime whose
/// `LocalSet` runs the shard, its stream listeners, the `inbox` of
/// connections other shards transfer to it, the inbox of admin commands,
/// a task that applies reloaded plans and one that publishes the
/// heartbeat. `links` are its ends of the queues of cross-shard
/// relay-to-relay packets. Reports on `ready` once serving (or why it
/// cannot), then runs until stopped.
pub(super) fn run_shard(
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
        fast_path,
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
        let routes = fast_path.map(|maps| {
            let mut relay_ips = vec![(IpAddr::V4(plan.relay_bind), IpAddr::V4(plan.relay_advertised))];
            relay_ips.extend(
                plan.relay_v6
                    .map(|(bind, advertised)| (IpAddr::V6(bind), IpAddr::V6(advertised))),
            );
            XdpRoutes::new(maps, relay_ips)
        });
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
        let shard = Shard::start(
            |sockets| {
                let core = Server::new(server_config, credentials, filter, quota, live, sockets, random_bytes())
                    .on_shard(shard_id)
                    .with_revocations(revocations);
                match routes {
                    Some(routes) => core.with_fast_path(Box::new(routes)),
                    None => core,
                }
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
            tokio::task::spawn_local(accept_loop(
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
        tokio::task::spawn_local(serve_transferred(shard.clone(), inbox, stream_limits.clone()));
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
