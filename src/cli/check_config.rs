//! `turnpike check-config FILE`: load a config the way `run` would and
//! say what it would serve, without binding anything.
//!
//! Contract: exit 0 with one `FILE: ok (…)` line on stdout (the listeners,
//! users and secrets it holds), with `[tls.acme]` a `tls.acme: …` line
//! after it (domains, directory, challenge, cache and what it holds), and
//! each of [`Config::warnings`] as
//! `warning: …` on stderr; or an error with the reason, the same one
//! `run` would stop with. Beyond the schema it loads the TLS certificate
//! and key, so a bad PEM file is caught here too. With
//! `relay.fast_path = "xdp"`, a `fast_path: …` line on stdout, and what
//! stands between this host and the fast path (capabilities, the
//! interfaces, forwarding) as warnings: the server starts without it.

use std::net::SocketAddr;
use std::path::Path;

use turnpike::config::{Config, FastPath};
use turnpike::net::xdp;
use turnpike::process;

/// Checks `file` and prints the summary and warnings.
pub fn check_config(file: &Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    let certificates = process::tls::TlsCertificates::from_config(&config)?;
    let http = config
        .listen
        .http
        .map_or("HTTP off".to_owned(), |addr| format!("HTTP on {addr}"));
    let admin_on: Vec<String> = config
        .admin
        .listen
        .map(|addr| addr.to_string())
        .into_iter()
        .chain(config.admin.socket.as_ref().map(|path| path.display().to_string()))
        .collect();
    let admin = match admin_on.is_empty() {
        true => "admin API off".to_owned(),
        false => format!("admin API on {}", admin_on.join(" and ")),
    };
    let http = match config.signaling.share_tls_port {
        true => format!("{http}, HTTPS on the TLS port(s) too"),
        false => http,
    };
    println!(
        "{}: ok ({} UDP, {} TCP and {} TLS listener(s), {http}, {admin}, {} user(s), {} shared secret(s))",
        file.display(),
        config.listen.udp.len(),
        config.listen.tcp.len(),
        config.listen.tls.len(),
        config.auth.users.len(),
        config.auth.resolved_secrets.len()
    );
    for (primary, alternate) in config.listen.nat_discovery_pairs() {
        let (a1, p1, a2, p2) = (primary.ip(), primary.port(), alternate.ip(), alternate.port());
        println!(
            "listen.udp_alternate: RFC 5780 NAT behaviour discovery on {primary} and {alternate}, \
             also listening on {} and {} (open all four to UDP)",
            SocketAddr::new(a1, p2),
            SocketAddr::new(a2, p1)
        );
    }
    if let Some(acme) = &config.tls.acme {
        let cached = match certificates.as_ref().and_then(|c| c.leaf()) {
            Some(leaf) => format!(
                "cached certificate valid until {}",
                humantime::format_rfc3339_seconds(leaf.not_after)
            ),
            None => "no usable cached certificate: one is requested at start".to_owned(),
        };
        println!(
            "tls.acme: certificate for {} from {} by {}, cache {} ({cached})",
            acme.domains.join(", "),
            acme.directory,
            acme.challenge.name(),
            acme.cache_dir.display()
        );
    }
    let mut warnings = config.warnings();
    if config.relay.fast_path == FastPath::Xdp {
        let interfaces = config.relay.fast_path_interfaces.join(", ");
        let host = xdp::host_warnings(&config.relay.fast_path_interfaces);
        match host.is_empty() {
            true => println!("fast_path: xdp on {interfaces}: this host can attach it (capabilities held, the program loads, interfaces present, forwarding on)"),
            false => println!("fast_path: xdp on {interfaces}: see the warnings; the server relays in user space where it cannot attach"),
        }
        warnings.extend(host);
    }
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    Ok(())
}
