//! The operator's admin API: HTTP/1.1 and JSON on `admin.listen` (loopback
//! TCP) and/or `admin.socket` (a Unix socket, mode 0600:
//! [`unix_socket`]), listeners of its own (off by default), for a person
//! or a script on the server's host. `turnpike admin …` ([`client`]) is
//! its command line.
//!
//! * `GET /v1/allocations[?user=U]`: every allocation of every shard (id,
//!   user, realm, transport, client address, relay addresses, age,
//!   expires_in, traffic, permission, channel and peer connection counts);
//! * `DELETE /v1/allocations/{id}`: ends one, as an expiry would (relay
//!   sockets closed, ports and quota places returned); the client's next
//!   Refresh gets 437;
//! * `DELETE /v1/users/{user}/allocations`: ends all of a user's;
//! * `POST /v1/revocations {"username": U, "ttl": "1h"?}`: refuses U on
//!   every transport and shard from now on (401, as a bad credential) and
//!   ends its allocations; `GET /v1/revocations` lists what is revoked
//!   (see [`crate::proto::revocations`] for how long an entry holds).
//!   With `[fleet] redis_url`, the revocation is also shared with every
//!   instance of the fleet ([`crate::fleet`]);
//! * `GET /v1/history[?since=MS]`: the last hour of the console's charts
//!   ([`history`], sampled by `sampler`);
//! * `GET /v1/fleet`: with `[fleet]`, every instance as this one last
//!   heard it (its reports: [`crate::fleet::instance_table`]);
//! * `GET /console` and `/console/…`: the operator console's page and
//!   modules (`console`), which hold no data and need no key.
//!
//! Access: every API route wants `Authorization: Bearer <admin.key>`, compared
//! in constant time, on the socket too (its mode is one defence, the key
//! another); without it, or with another key, the answer is 401 with
//! nothing else in it. Unknown paths are 404 and wrong methods 405
//! whatever the key (they say nothing an attacker could not guess). The
//! listener must be loopback (config validation refuses anything else:
//! there is no TLS here), the key is at least 24 characters, and a reload
//! replaces it.
//!
//! Bounds, per listener: [`MAX_CONNECTIONS`] connections at once, of
//! which at most [`MAX_UNPROVEN`] that have not yet presented the
//! key: beyond that the longest-held of those is closed to make room, so
//! callers without the key (any local user, on TCP) cannot keep a key
//! holder out ([`slots`]); only when every slot holds a key holder does
//! the next wait in the kernel's backlog. 10 s to send a request's
//! headers, bodies of at most [`MAX_BODY`] bytes, and each question to the
//! shards answered within [`crate::net::REPLY_TIMEOUT`] each or 503.
//!
//! It runs on a thread of its own with a current-thread runtime, apart
//! from the shards and from the public HTTP endpoint, so that neither a
//! busy signaling endpoint nor a slow admin script slows the other.
//! `api` holds the routes, `slots` who may hold a connection,
//! `unix_socket` how the socket is made, `console` the console's files,
//! `history` (sans-IO) and `sampler` (its driver, a task on this thread)
//! the console's last hour, this file the listeners.

mod api;
pub mod client;
mod console;
pub mod history;
mod sampler;
mod slots;
mod unix_socket;

use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, watch, Notify};
use tracing::{debug, info, warn};

use crate::config::{Config, Secret};
use crate::fleet::RevocationSharer;
use crate::net::AdminHandle;
use crate::process::accept::{accept_until_stopped, Accept};
use crate::process::runtime_thread;
use crate::process::status::ServerStatus;
pub use sampler::Sampler;
use slots::{Admission, SlotId, SlotTable};
pub use slots::{MAX_CONNECTIONS, MAX_UNPROVEN, RESERVED_FOR_KEY};
pub use unix_socket::SocketError;

/// Largest request body (a revocation is a few hundred bytes).
pub const MAX_BODY: usize = 4096;
/// Time to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AdminStartError {
    #[error("admin.listen or admin.socket is set but no key is configured")]
    NoKey,
    #[error("cannot bind the admin API on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot make the admin socket {path}: {source}")]
    Socket { path: PathBuf, source: SocketError },
    #[error("cannot start the admin thread: {0}")]
    Thread(std::io::Error),
}

/// The running admin API.
pub struct AdminServer {
    /// The bound TCP address (port 0 resolved), with `admin.listen`.
    pub addr: Option<SocketAddr>,
    /// The Unix socket, with `admin.socket`.
    pub socket: Option<PathBuf>,
    /// `admin.listen` as started with.
    configured: Option<SocketAddr>,
    key: Arc<RwLock<Secret>>,
    stop: watch::Sender<bool>,
    thread: JoinHandle<()>,
}

impl AdminServer {
    /// Applies a reloaded config: the key (a config without one keeps the
    /// running key). Returns false if `admin.listen` or `admin.socket`
    /// changed, which takes a restart.
    pub fn reload(&self, config: &Config) -> bool {
        if let Some(key) = &config.admin.resolved_key {
            *self.key.write().unwrap_or_else(|e| e.into_inner()) = key.clone();
        }
        config.admin.listen == self.configured && config.admin.socket == self.socket
    }

    /// Stops accepting, drops every connection, waits for the thread and
    /// removes the socket file.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
        if let Some(path) = &self.socket {
            unix_socket::remove(path);
        }
    }
}

/// Binds `admin.listen` and `admin.socket` and serves them, if either is
/// set, with the console's history read by `sampler`.
pub fn start(
    config: &Config,
    shards: AdminHandle,
    status: ServerStatus,
    fleet: Option<RevocationSharer>,
    sampler: Sampler,
) -> Result<Option<AdminServer>, AdminStartError> {
    let (listen, socket) = (config.admin.listen, config.admin.socket.clone());
    if listen.is_none() && socket.is_none() {
        return Ok(None);
    }
    let key = config.admin.resolved_key.clone().ok_or(AdminStartError::NoKey)?;
    let tcp = listen
        .map(|addr| {
            let listener = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| AdminStartError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| AdminStartError::Bind { addr, source })?;
            Ok::<_, AdminStartError>((listener, bound))
        })
        .transpose()?;
    let unix = socket
        .as_deref()
        .map(|path| {
            unix_socket::bind(path).map_err(|source| AdminStartError::Socket {
                path: path.to_owned(),
                source,
            })
        })
        .transpose()?;
    let key = Arc::new(RwLock::new(key));
    let history = sampler.history();
    let app = Arc::new(api::AdminApp {
        key: key.clone(),
        shards,
        status,
        default_revocation: config.auth.max_credential_lifetime,
        fleet,
        history: history.clone(),
        fleet_status: sampler.fleet(),
    });
    let router = api::router(app);
    let (stop, stopped) = watch::channel(false);
    let addr = tcp.as_ref().map(|(_, bound)| *bound);
    let served_key = key.clone();
    let thread = runtime_thread::spawn("turnpike-admin", "admin", move |runtime| {
        runtime.block_on(async move {
            let tcp = tcp.and_then(|(listener, _)| {
                tokio::net::TcpListener::from_std(listener)
                    .inspect_err(|e| warn!("admin listener: {e}"))
                    .ok()
            });
            let unix = unix.and_then(|listener| {
                tokio::net::UnixListener::from_std(listener)
                    .inspect_err(|e| warn!("admin socket: {e}"))
                    .ok()
            });
            let tcp = async {
                if let Some(listener) = tcp {
                    serve(listener, "admin", router.clone(), served_key.clone(), stopped.clone()).await;
                }
            };
            let unix = async {
                if let Some(listener) = unix {
                    serve(
                        listener,
                        "admin socket",
                        router.clone(),
                        served_key.clone(),
                        stopped.clone(),
                    )
                    .await;
                }
            };
            tokio::join!(tcp, unix, sampler.run(history, stopped.clone()));
        });
    });
    let thread = match thread {
        Ok(thread) => thread,
        Err(e) => {
            if let Some(path) = &socket {
                unix_socket::remove(path);
            }
            return Err(AdminStartError::Thread(e));
        }
    };
    if let Some(addr) = addr {
        info!(%addr, "admin API listening");
    }
    if let Some(path) = &socket {
        info!(path = %path.display(), "admin API listening on a Unix socket (mode 0600)");
    }
    Ok(Some(AdminServer {
        addr,
        socket,
        configured: listen,
        key,
        stop,
        thread,
    }))
}

/// One listener's slots, and the wake-up of its accept loop when one is
/// freed.
struct Slots {
    table: Mutex<SlotTable<oneshot::Sender<()>>>,
    freed: Notify,
}

impl Slots {
    fn table(&self) -> MutexGuard<'_, SlotTable<oneshot::Sender<()>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection's slot, given back when the connection ends however it
/// ends.
struct Held {
    id: SlotId,
    slots: Arc<Slots>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.slots.table().release(self.id);
        self.slots.freed.notify_one();
    }
}

/// Accepts on `listener` and serves each connection with `router`, under
/// the slot rules of [`slots`], until `stopped`.
async fn serve<L>(
    listener: L,
    what: &'static str,
    router: axum::Router,
    key: Arc<RwLock<Secret>>,
    mut stopped: watch::Receiver<bool>,
) where
    L: Accept,
    L::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    L::Peer: Debug + Send + 'static,
{
    let slots = Arc::new(Slots {
        table: Mutex::new(SlotTable::default()),
        freed: Notify::new(),
    });
    loop {
        // Room first: while every slot holds a key holder, callers wait in
        // the kernel's backlog instead of costing memory here.
        while !slots.table().has_room() {
            tokio::select! {
                () = slots.freed.notified() => {}
                _ = stopped.changed() => return,
            }
        }
        let Some((stream, peer)) = accept_until_stopped(&listener, &mut stopped, what).await else {
            return;
        };
        let (closer, evicted) = oneshot::channel();
        let admission = slots.table().admit(closer);
        let id = match admission {
            Admission::Admitted { id, evicted } => {
                if let Some(evicted) = evicted {
                    debug!("{what}: closing the longest-held connection without the key, to make room");
                    let _ = evicted.send(());
                }
                id
            }
            // Proven in the meantime by the connections already held.
            Admission::Full => {
                debug!(?peer, "{what}: every slot holds a key holder; connection closed");
                continue;
            }
        };
        let held = Held {
            id,
            slots: slots.clone(),
        };
        tokio::spawn(connection(stream, peer, held, router.clone(), key.clone(), evicted));
        // Let the new connection read its request before the next accept,
        // so that a burst of callers cannot evict it before it could
        // present the key.
        tokio::task::yield_now().await;
    }
}

/// Serves one connection until it ends or, while it has not presented the
/// key, `evicted` fires.
async fn connection<S, P>(
    stream: S,
    peer: P,
    held: Held,
    router: axum::Router,
    key: Arc<RwLock<Secret>>,
    mut evicted: oneshot::Receiver<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    P: Debug,
{
    let (id, slots) = (held.id, held.slots.clone());
    let service = hyper::service::service_fn(move |request: axum::http::Request<hyper::body::Incoming>| {
        // A request head with the key proves the connection, before the
        // request is served: from now on it is never evicted.
        if api::presents_key(&key, request.headers()) {
            slots.table().prove(id);
        }
        let mut router = router.clone();
        async move { tower::Service::call(&mut router, request).await }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::select! {
        ended = connection => if let Err(e) = ended {
            debug!(?peer, "admin connection ended: {e}");
        },
        // A proven connection's closer is dropped, not sent: Err, ignored.
        Ok(()) = &mut evicted => debug!(?peer, "admin connection closed to make room: it had not presented the key"),
    }
    drop(held);
}
