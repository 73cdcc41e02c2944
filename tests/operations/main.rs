//! Running the server: the admin API, metrics, logs, reload, shutdown,
//! systemd (and the Debian package under a real one), the CLI, PROXY
//! protocol, one TLS port shared with HTTPS.

#[path = "../common/mod.rs"]
mod common;

mod admin_api;
mod cli;
mod logs;
mod metrics;
mod proxy_protocol;
mod reload;
mod shared_tls_port;
mod shutdown;
mod systemd;
mod systemd_boot;
