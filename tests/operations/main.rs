//! Running the server: the admin API and its console, metrics, logs, reload, shutdown,
//! systemd, the CLI, PROXY protocol, one TLS port shared with HTTPS.

#[path = "../common/mod.rs"]
mod common;

mod admin_api;
mod cli;
mod console;
mod logs;
mod metrics;
mod proxy_protocol;
mod reload;
mod shared_tls_port;
mod shutdown;
mod systemd;
