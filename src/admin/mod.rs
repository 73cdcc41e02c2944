//! The operator's admin API: HTTP/1.1 and JSON on `admin.listen`, a
//! listener of its own (off by default), for a person or a script on the
//! server's host. `turnpike admin …` ([`client`]) is its command line.
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
//!   instance of the fleet ([`crate::fleet`]).
//!
//! Access: every route wants `Authorization: Bearer <admin.key>`, compared
//! in constant time; without it, or with another key, the answer is 401
//! with nothing else in it. Unknown paths are 404 and wrong methods 405
//! whatever the key (they say nothing an attacker could not guess). The
//! listener must be loopback (config validation refuses anything else:
//! there is no TLS here), the key is at least 24 characters, and a reload
//! replaces it.
//!
//! Bounds: [`MAX_CONNECTIONS`] connections at once (the next waits in the
//! kernel's backlog), 10 s to send a request's headers, bodies of at most
//! [`MAX_BODY`] bytes, and each question to the shards answered within
//! [`crate::net::REPLY_TIMEOUT`] each or 503.
//!
//! It runs on a thread of its own with a current-thread runtime, apart
//! from the shards and from the public HTTP endpoint, so that neither a
//! busy signaling endpoint nor a slow admin script slows the other.
//! `api` holds the routes, this file the listener.

mod api;
pub mod client;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::config::{Config, Secret};
use crate::fleet::RevocationSharer;
use crate::net::AdminHandle;
use crate::process::accept::accept_until_stopped;
use crate::process::runtime_thread;
use crate::process::status::ServerStatus;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Largest request body (a revocation is a few hundred bytes).
pub const MAX_BODY: usize = 4096;
/// Time to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AdminStartError {
    #[error("admin.listen is set but no key is configured")]
    NoKey,
    #[error("cannot bind the admin API on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the admin thread: {0}")]
    Thread(std::io::Error),
}

/// The running admin API.
pub struct AdminServer {
    /// The bound address (port 0 resolved).
    pub addr: SocketAddr,
    /// `admin.listen` as started with.
    configured: SocketAddr,
    key: Arc<RwLock<Secret>>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: JoinHandle<()>,
}

impl AdminServer {
    /// Applies a reloaded config: the key (a config without one keeps the
    /// running key). Returns false if `admin.listen` changed, which takes
    /// a restart.
    pub fn reload(&self, config: &Config) -> bool {
        if let Some(key) = &config.admin.resolved_key {
            *self.key.write().unwrap_or_else(|e| e.into_inner()) = key.clone();
        }
        config.admin.listen == Some(self.configured)
    }

    /// Stops accepting, drops every connection and waits for the thread.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

/// Binds `admin.listen` and serves it, if it is set.
pub fn start(
    config: &Config,
    shards: AdminHandle,
    status: ServerStatus,
    fleet: Option<RevocationSharer>,
) -> Result<Option<AdminServer>, AdminStartError> {
    let Some(addr) = config.admin.listen else {
        return Ok(None);
    };
    let key = config.admin.resolved_key.clone().ok_or(AdminStartError::NoKey)?;
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| AdminStartError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| AdminStartError::Bind { addr, source })?;
    let key = Arc::new(RwLock::new(key));
    let app = Arc::new(api::AdminApp {
        key: key.clone(),
        shards,
        status,
        default_revocation: config.auth.max_credential_lifetime,
        fleet,
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let thread = runtime_thread::spawn("turnpike-admin", "admin", move |runtime| {
        runtime.block_on(accept_loop(listener, api::router(app), stopped));
    })
    .map_err(AdminStartError::Thread)?;
    info!(addr = %bound, "admin API listening");
    Ok(Some(AdminServer {
        addr: bound,
        configured: addr,
        key,
        stop,
        thread,
    }))
}

async fn accept_loop(
    listener: std::net::TcpListener,
    router: axum::Router,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => return warn!("admin listener: {e}"),
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A free slot first: beyond MAX_CONNECTIONS, callers wait in the
        // kernel's backlog instead of costing memory here.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            _ = stopped.changed() => return,
        };
        let Some((stream, remote)) = accept_until_stopped(&listener, &mut stopped, "admin").await else {
            return;
        };
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: axum::http::Request<hyper::body::Incoming>| {
                let mut router = router.clone();
                async move { tower::Service::call(&mut router, request).await }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                debug!(%remote, "admin connection ended: {e}");
            }
            drop(slot);
        });
    }
}
