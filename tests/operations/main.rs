//! Running the server: the admin API, metrics, logs, reload, shutdown,
//! systemd, the CLI, PROXY protocol, one TLS port shared with HTTPS,
//! `turnpike selftest`.

#[path = "../common/mod.rs"]
mod common;

mod admin_api;
mod cli;
mod logs;
mod metrics;
mod proxy_protocol;
mod reload;
mod selftest;
mod shared_tls_port;
mod shutdown;
mod systemd;
