//! `turnpike run`: start every part of the server, reload them on SIGHUP,
//! stop them after the drain, each in one fixed order.
//!
//! The parts, in **start order**:
//!
//! 1. the **TURN core** (`net::start`): binds every UDP, TCP and TLS
//!    listener and starts the shards. First because every other part is
//!    built on a handle it makes: the `ServerStatus` (liveness, drain,
//!    counters), the admin handle to the shards, the TLS certificates and
//!    the inbox of HTTP connections arriving on shared TLS ports; and the
//!    bound ports the signaling endpoint hands out.
//!    Right after it, the **ACME client** (`process::acme`), with
//!    `[tls.acme]`: it obtains and renews the certificate the core's TLS
//!    listeners already serve (the cached one, or a placeholder), and
//!    answers its TLS-ALPN-01 challenges through them.
//! 2. the **signaling hub** (rooms, sessions), if there will be an HTTP
//!    endpoint (`listen.http` set or a TLS port shared): plain state, no
//!    thread of its own.
//! 3. the **fleet** (Redis), if `fleet.redis_url` is set: its one link,
//!    the revocations channel (which takes the core's admin handle to
//!    apply what other instances revoke) and, with a hub, the rooms
//!    channel. Before HTTP, because `/readyz` and `/metrics` read its
//!    status.
//! 4. the **HTTP endpoint** (`/ws`, `/ice-servers`, the demo page,
//!    metrics, health) around the hub.
//! 5. the **admin API**, if `admin.listen` or `admin.socket` is set:
//!    last, because it shares what it revokes through the fleet's sharer;
//!    its console samples the core's status, the hub and the fleet's
//!    status.
//!
//! Then the start is announced (the demo credential on a terminal, the
//! demo page's URL) and systemd is told READY=1: every listener is bound.
//! Signal handlers are installed before step 1 (see `signals.rs`); logging
//! before anything else.
//!
//! **Reload order** (SIGHUP, [`Parts::reload`]): the file is read and
//! validated first, and an invalid one changes nothing. Then the core
//! (its limits, peers and TLS certificates, which the HTTP endpoint shares;
//! if the certificates fail to load nothing at all is applied), the HTTP
//! endpoint (its secrets, origins and the iceServers it hands out, which
//! name the core's ports), the admin API (its key). The fleet is not
//! reloaded: `[fleet]` is read at start only.
//!
//! **Stop order** ([`Parts::stop`], after the drain in `signals.rs`): the
//! HTTP endpoint first (the front door: no new session or credential),
//! then the admin API (it calls into the shards and the fleet's sharer),
//! then the fleet (nobody shares through it any more, and no session is
//! left in its rooms), the ACME client (an attempt under way is
//! abandoned), the core last: every other part holds one of its
//! handles, and its shards are what the drain waited for.
//!
//! The calls into the library's service modules (`net`, `signaling`,
//! `fleet`, `http`, `admin`) are all in this file.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use sd_notify::NotifyState;
use tracing::{error, info, warn};
use turnpike::admin;
use turnpike::config::{Config, Secret};
use turnpike::fleet::{self, Fleet, FleetSettings};
use turnpike::http;
use turnpike::net;
use turnpike::process;
use turnpike::proto::auth;
use turnpike::signaling::{Hub, IceConfig};

use super::logging;
use super::signals::{self, supervise, Signals};

/// Runs the server on `config` (read from `config_path`, if there is a
/// file) until SIGTERM or SIGINT and the drain that follows.
pub fn serve(mut config: Config, config_path: Option<&Path>) -> anyhow::Result<()> {
    logging::init(&config)?;
    for warning in config.warnings() {
        warn!("{warning}");
    }
    let demo_secret = config.auth.resolved_secrets.is_empty() && config.auth.users.is_empty();
    if demo_secret {
        // With nothing configured, a random secret makes the server usable
        // for a local try-out without ever accepting a guessable password.
        let bytes: [u8; 24] = process::random::random_bytes();
        let secret = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
        config.auth.resolved_secrets.push(Secret::new(secret));
        info!("no users or shared secrets configured: generated a random shared secret for this run");
    }
    // Caught before anything serves, so that a signal during the start is
    // handled once it serves instead of killing the process.
    let signals = Signals::catch().context("signal handlers")?;
    let parts = Parts::start(&config)?;
    announce(&config, &parts, demo_secret, config_path);
    let generated = demo_secret.then(|| config.auth.resolved_secrets.clone());
    // Every listener is bound and serving: tell systemd (Type=notify).
    signals::notify(&[NotifyState::Ready]);
    let reload = || parts.reload(config_path, generated.as_deref());
    supervise(signals, &parts.server.status(), config.server.shutdown_grace, reload)?;
    info!("shutting down");
    parts.stop();
    Ok(())
}

/// The running parts. Fields are declared in reverse start order, so that
/// if they are dropped rather than stopped (an error return) the last
/// started goes first.
struct Parts {
    /// 5. The admin API, when `admin.listen` or `admin.socket` is set.
    admin: Option<admin::AdminServer>,
    /// 4. The HTTP endpoint, when it has a listener or a shared TLS port.
    http: Option<http::HttpServer>,
    /// 3. The link to Redis and its channels, with `fleet.redis_url`.
    //  (2, the hub, is held by the HTTP endpoint and the fleet.)
    fleet: Option<Fleet>,
    /// 1b. The ACME client, with `[tls.acme]`.
    acme: Option<process::acme::AcmeClient>,
    /// 1. The TURN core: listeners and shards.
    server: net::RunningServer,
}

impl Parts {
    /// Starts the parts in the order of the module doc; an error names
    /// the part that failed, and drops those already started.
    fn start(config: &Config) -> anyhow::Result<Parts> {
        let mut server = net::start(config).context("starting the server")?;
        let acme = process::acme::start(server.certificates()).context("starting the ACME client")?;
        let sources = http::HttpSources {
            listen: config.listen.http,
            handed: server.take_http_inbox(),
        };
        let hub = (sources.listen.is_some() || sources.handed.is_some()).then(|| {
            Arc::new(Hub::from_config(
                config,
                ice_config(config, &server, config.listen.http),
            ))
        });
        let fleet = fleet::start(
            FleetSettings::from_config(config),
            hub.clone(),
            server.admin(),
            server.status(),
        )
        .context("starting the fleet's link to Redis")?;
        // The console's history reads what /metrics reads.
        let sampler = admin::Sampler::new(server.status(), hub.clone(), fleet.as_ref().map(Fleet::status));
        let http = hub
            .map(|hub| {
                let fleet_status = fleet.as_ref().map(Fleet::status);
                http::start(
                    config,
                    sources,
                    hub,
                    fleet_status,
                    server.certificates(),
                    server.status(),
                )
            })
            .transpose()
            .context("starting the HTTP endpoint")?;
        let admin = admin::start(
            config,
            server.admin(),
            server.status(),
            fleet.as_ref().map(Fleet::sharer),
            sampler,
        )
        .context("starting the admin API")?;
        Ok(Parts {
            admin,
            http,
            fleet,
            acme,
            server,
        })
    }

    /// SIGHUP: re-reads the config file and applies what can change while
    /// running, in the order of the module doc; an invalid file is refused
    /// with the reason and the running config stays. Without a config file
    /// only the TLS certificate (if any) is re-read. `generated` is the
    /// random demo secret, kept while the file still configures no
    /// credentials.
    fn reload(&self, path: Option<&Path>, generated: Option<&[Secret]>) {
        let Some(path) = path else {
            match self.server.reload_tls() {
                Ok(()) => info!("SIGHUP: TLS certificate reloaded"),
                Err(e) => error!("SIGHUP: keeping the previous TLS certificate: {e}"),
            }
            return;
        };
        let mut config = match Config::load(path) {
            Ok(config) => config,
            Err(e) => return error!("SIGHUP: keeping the running configuration: {e}"),
        };
        if config.auth.resolved_secrets.is_empty() && config.auth.users.is_empty() {
            config
                .auth
                .resolved_secrets
                .extend(generated.unwrap_or_default().iter().cloned());
        }
        match self.server.reload(&config) {
            Ok(needs_restart) => {
                if let Some(http) = &self.http {
                    http.reload(&config, ice_config(&config, &self.server, http.addr));
                }
                let admin_kept = self.admin.as_ref().map_or(
                    config.admin.listen.is_none() && config.admin.socket.is_none(),
                    |admin| admin.reload(&config),
                );
                if !admin_kept {
                    warn!("SIGHUP: the change to admin.listen or admin.socket takes effect only after a restart");
                }
                info!(path = %path.display(), "SIGHUP: configuration reloaded; live allocations kept");
                for what in needs_restart {
                    warn!("SIGHUP: the change to {what} takes effect only after a restart");
                }
            }
            Err(e) => error!("SIGHUP: keeping the running configuration: TLS: {e}"),
        }
    }

    /// Stops the parts in the order of the module doc, each waiting for
    /// its threads.
    fn stop(self) {
        if let Some(http) = self.http {
            http.stop();
        }
        if let Some(admin) = self.admin {
            admin.stop();
        }
        if let Some(fleet) = self.fleet {
            fleet.stop();
        }
        if let Some(acme) = self.acme {
            acme.stop();
        }
        self.server.stop();
    }
}

/// Tells the person or the log where to start: the demo credential (on a
/// terminal only, never into logs), the demo page, and that no config file
/// was given.
fn announce(config: &Config, parts: &Parts, demo_secret: bool, config_path: Option<&Path>) {
    let server = &parts.server;
    if demo_secret && std::io::stderr().is_terminal() {
        // Printed for the person at the terminal, never into logs.
        if let Some(secret) = config.auth.resolved_secrets.first() {
            let minted = auth::mint(
                config.auth.minting_algorithm(),
                secret.expose().as_bytes(),
                Some("demo"),
                process::clock::unix_secs(),
                Duration::from_secs(86_400),
            );
            let port = server.udp.first().map_or(3478, |a| a.port());
            eprintln!(
                "\nTry it (credential valid 24 h, for this run only):\n  turnutils_uclient -u '{}' -w '{}' -p {port} -y 127.0.0.1\n",
                minted.username, minted.password
            );
        }
    }
    let page = parts
        .http
        .as_ref()
        .and_then(|h| h.addr)
        .map(|addr| match config.signaling.tls {
            true => format!("https://{addr}/"),
            false => format!("http://{addr}/"),
        });
    let shared = server.tls.first().filter(|_| config.signaling.share_tls_port);
    if let Some(page) = page.or_else(|| shared.map(|addr| format!("https://{addr}/"))) {
        info!("demo call page: {page} (open it in two tabs and join one room)");
    }
    if config_path.is_none() {
        info!("running on built-in defaults; see config.example.toml for every option");
    }
}

/// What the signaling endpoint hands out, for `config` on `server`, whose
/// HTTP listener is `http` (or, without one, a shared TLS port).
fn ice_config(config: &Config, server: &net::RunningServer, http: Option<std::net::SocketAddr>) -> IceConfig {
    let reached = http.or_else(|| server.tls.first().copied());
    let advertised = config.signaling.turn_ports;
    IceConfig {
        turn_host: config.signaling.turn_host.clone(),
        fallback_host: reached.map_or_else(|| "127.0.0.1".to_owned(), IceConfig::fallback_host_for),
        udp_port: server.udp.first().map(|a| advertised.udp.unwrap_or(a.port())),
        tcp_port: server.tcp.first().map(|a| advertised.tcp.unwrap_or(a.port())),
        tls_port: server.tls.first().map(|a| advertised.tls.unwrap_or(a.port())),
        secret: config.auth.minting_secret().cloned(),
        algorithm: config.auth.minting_algorithm(),
        ttl: config.auth.credential_ttl,
    }
}
