//! Running the server: the admin API and its console, metrics, logs,
//! reload, shutdown, systemd (and the Debian package under a real one), the
//! CLI, PROXY protocol, one TLS port shared with HTTPS, certificates from an
//! ACME CA, `turnpike selftest`.

#[path = "../common/mod.rs"]
mod common;

mod acme;
mod admin_api;
mod cli;
mod console;
mod logs;
mod metrics;
mod proxy_protocol;
mod reload;
mod selftest;
mod shared_tls_port;
mod shutdown;
mod systemd;
mod systemd_boot;
