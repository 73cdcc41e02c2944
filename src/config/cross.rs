//! The rules that span sections, in one place: the TLS certificate a TLS
//! listener or HTTPS needs, the ceiling on every count, rate and duration,
//! and the start-up [`Config::warnings`] (most of which weigh one section
//! against another).
//!
//! Contract: the checks report like a section's own (the first broken
//! rule, naming its key, nothing changed); `Config::validate` calls each
//! at the point where its key's section is checked, so that a file with
//! several faults reports the same one first whatever file a rule is
//! written in. Warnings never refuse a config; their order is the order
//! `check-config` prints them in.

use std::time::Duration;

use super::server::REFLECTION_SAFE_REALM;
use super::tls::AcmeChallenge;
use super::{Config, ConfigError};
use crate::proto::addr::Transport;

/// True if `[tls]` gives a certificate: both files, or ACME.
fn has_certificate(config: &Config) -> bool {
    let tls = &config.tls;
    tls.acme.is_some() || (tls.cert.is_some() && tls.key.is_some())
}

/// `listen.tls` needs `tls.cert` and `tls.key`, or `[tls.acme]`. Checked
/// before `[listen]`'s own rules.
pub(super) fn check_listen_tls(config: &Config) -> Result<(), ConfigError> {
    if !config.listen.tls.is_empty() && !has_certificate(config) {
        return Err(ConfigError::invalid(
            "listen.tls",
            "needs a certificate and key: set tls.cert and tls.key, or [tls.acme]",
        ));
    }
    Ok(())
}

/// `signaling.tls` needs `tls.cert` and `tls.key` (or `[tls.acme]`), and
/// `signaling.share_tls_port` a TLS listener. Checked before
/// `[signaling]`'s own rules.
pub(super) fn check_signaling_tls(config: &Config) -> Result<(), ConfigError> {
    if config.signaling.tls && !has_certificate(config) {
        return Err(ConfigError::invalid(
            "signaling.tls",
            "needs a certificate and key: set tls.cert and tls.key, or [tls.acme]",
        ));
    }
    if config.signaling.share_tls_port && config.listen.tls.is_empty() {
        return Err(ConfigError::invalid(
            "signaling.share_tls_port",
            "needs a TLS listener to share: set listen.tls (and tls.cert, tls.key)",
        ));
    }
    Ok(())
}

/// `[tls.acme]` needs something that serves its certificate, and the
/// listener its challenge is answered on: TLS-ALPN-01 a TLS port
/// (`listen.tls`, or `listen.http` with `signaling.tls`), HTTP-01 a plain
/// `listen.http`. Checked after `[signaling]`'s rules.
pub(super) fn check_acme(config: &Config) -> Result<(), ConfigError> {
    let Some(acme) = &config.tls.acme else {
        return Ok(());
    };
    let https = config.signaling.tls && config.listen.http.is_some();
    if config.listen.tls.is_empty() && !https {
        return Err(ConfigError::invalid(
            "tls.acme",
            "nothing serves TLS: set listen.tls, or listen.http with signaling.tls",
        ));
    }
    match acme.challenge {
        AcmeChallenge::TlsAlpn01 => Ok(()),
        AcmeChallenge::Http01 if config.listen.http.is_none() => Err(ConfigError::invalid(
            "tls.acme.challenge",
            "http-01 is answered on listen.http, which is off: set listen.http (reached on port 80) or use \
             tls-alpn-01",
        )),
        AcmeChallenge::Http01 if config.signaling.tls => Err(ConfigError::invalid(
            "tls.acme.challenge",
            "http-01 is answered over plain HTTP, and listen.http is HTTPS (signaling.tls): use tls-alpn-01",
        )),
        AcmeChallenge::Http01 => Ok(()),
    }
}

/// A ceiling on every count, rate and duration, whatever its own rule:
/// a time added to `Instant::now()` must not overflow, a count must fit
/// what tokio's semaphores and the atomics take, and no limit is so
/// large it is no limit. Each bound is far beyond any real deployment.
pub(super) fn check_magnitudes(config: &Config) -> Result<(), ConfigError> {
    const MAX_COUNT: u64 = 100_000_000;
    const MAX_RATE: u64 = 1 << 40;
    const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
    let (limits, signaling) = (&config.limits, &config.signaling);
    let counts = [
        ("limits.max_allocations", limits.max_allocations as u64),
        (
            "limits.max_allocations_per_user",
            limits.max_allocations_per_user as u64,
        ),
        (
            "limits.max_permissions_per_allocation",
            limits.max_permissions_per_allocation as u64,
        ),
        ("limits.max_connections", limits.max_connections as u64),
        ("signaling.max_rooms", signaling.max_rooms as u64),
        ("signaling.max_connections", signaling.max_connections as u64),
    ];
    for (key, value) in counts {
        if value > MAX_COUNT {
            return Err(ConfigError::invalid(key, format!("{value} is more than {MAX_COUNT}")));
        }
    }
    let rates = [
        ("limits.allocation_bytes_per_second", limits.allocation_bytes_per_second),
        ("limits.user_bytes_per_second", limits.user_bytes_per_second),
        ("limits.challenge_bytes_per_second", limits.challenge_bytes_per_second),
        ("limits.tls_handshakes_per_source", limits.tls_handshakes_per_source),
        (
            "signaling.messages_per_second",
            u64::from(signaling.messages_per_second),
        ),
    ];
    for (key, value) in rates {
        if value > MAX_RATE {
            return Err(ConfigError::invalid(key, format!("{value} is more than {MAX_RATE}")));
        }
    }
    let durations = [
        ("limits.connection_idle_timeout", limits.connection_idle_timeout),
        ("signaling.ping_interval", signaling.ping_interval),
        ("signaling.heartbeat_timeout", signaling.heartbeat_timeout),
    ];
    for (key, value) in durations {
        if value > MAX_DURATION {
            return Err(ConfigError::invalid(
                key,
                format!("{} is longer than 10 years", humantime::format_duration(value)),
            ));
        }
    }
    Ok(())
}

impl Config {
    /// Settings that are valid but probably not what a public server wants;
    /// logged at start and printed by `check-config`.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let shared = self.listen.tls.iter().filter(|_| self.signaling.share_tls_port);
        for (key, addr) in self
            .listen
            .http
            .iter()
            .map(|a| ("listen.http", a))
            .chain(shared.map(|a| ("listen.tls", a)))
        {
            if !addr.ip().is_loopback() && self.signaling.token_secret.is_none() {
                warnings.push(format!(
                    "{key} {addr} serves signaling, is not loopback and signaling.token_secret is unset: \
                     anyone who reaches it can join rooms and get TURN credentials"
                ));
            }
        }
        // Before validation only the inline secrets are known.
        let secrets = match self.auth.resolved_secrets.is_empty() {
            true => &self.auth.secrets,
            false => &self.auth.resolved_secrets,
        };
        let short = secrets.iter().filter(|s| s.expose().len() < 16).count();
        if short > 0 {
            warnings.push(format!(
                "{short} of auth.secrets shorter than 16 characters: a guessable shared secret mints \
                 credentials for anyone; generate one, e.g. `openssl rand -base64 32`"
            ));
        }
        let secret_files = [
            ("auth.secrets_file", &self.auth.secrets_file),
            ("tls.key", &self.tls.key),
            ("admin.key_file", &self.admin.key_file),
        ];
        for (key, path) in secret_files {
            let Some(path) = path else { continue };
            if let Some(mode) = readable_by_others(path) {
                warnings.push(format!(
                    "{key} {} is readable by its group or by everyone (mode {mode:o}): chmod 600 it",
                    path.display()
                ));
            }
        }
        if let Some(acme) = &self.tls.acme {
            warnings.extend(acme_warnings(self, acme));
        }
        let listen = &self.listen;
        if let Some(everyone) = listen.proxy_protocol_from.iter().find(|c| c.prefix() < 8) {
            warnings.push(format!(
                "listen.proxy_protocol_from has {everyone}: every address in it may claim to be any \
                 client; list only your load balancers"
            ));
        }
        let listeners = listen
            .udp
            .iter()
            .chain(&listen.udp_alternate)
            .chain(&listen.tcp)
            .chain(&listen.tls)
            .chain(&listen.http);
        for addr in listeners.filter(|a| self.relay.ports.as_range().contains(&a.port())) {
            warnings.push(format!(
                "listener {addr} is inside relay.ports {}: that port is never handed to a relay",
                self.relay.ports
            ));
        }
        let siblings = &self.alternate.servers;
        let transports = [
            (Transport::Udp, "udp", &listen.udp),
            (Transport::Tcp, "tcp", &listen.tcp),
            (Transport::Tls, "tls", &listen.tls),
        ];
        for (transport, name, listeners) in transports {
            let unserved = !listeners.is_empty() && !siblings.is_empty();
            if unserved && siblings.iter().all(|s| s.address(transport).is_none()) {
                warnings.push(format!(
                    "alternate.servers has no {name} address for any sibling: {} clients are not shed and \
                     get 508 (a plain address is a sibling's UDP and TCP port; write {{ udp = \"…\", \
                     tcp = \"…\", tls = \"…\" }})",
                    name.to_uppercase()
                ));
            }
        }
        if self.alternate.domain.is_some() && !siblings.is_empty() && siblings.iter().all(|s| s.tls.is_none()) {
            warnings.push(
                "alternate.domain is sent to TLS clients only, and no sibling in alternate.servers has a tls \
                 address (a plain address is a sibling's UDP and TCP port): TLS clients are not shed; write \
                 each sibling as { udp = \"…\", tcp = \"…\", tls = \"…\" } with its listen.tls address"
                    .to_owned(),
            );
        }
        warnings.extend(super::external_ip::warnings(self));
        warnings.extend(super::relay::fast_path_warnings(self));
        if self.server.realm.len() > REFLECTION_SAFE_REALM {
            warnings.push(format!(
                "server.realm is {} bytes: above {REFLECTION_SAFE_REALM}, the 401 to the smallest Allocate \
                 is more than twice its size (see SECURITY.md, amplification)",
                self.server.realm.len()
            ));
        }
        warnings
    }
}

/// `[tls.acme]`'s warnings: a cache others can read, and a challenge
/// listener on another port than the one the CA connects to.
fn acme_warnings(config: &Config, acme: &crate::config::AcmeSection) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut warnings = Vec::new();
    let mode = std::fs::metadata(&acme.cache_dir).map_or(0, |m| m.permissions().mode() & 0o777);
    if mode & 0o077 != 0 {
        warnings.push(format!(
            "tls.acme.cache_dir {} is open to its group or to everyone (mode {mode:o}): it holds private keys; \
             chmod 700 it",
            acme.cache_dir.display()
        ));
    }
    let (port, listeners, needed) = match acme.challenge {
        AcmeChallenge::TlsAlpn01 => {
            let https = config.listen.http.filter(|_| config.signaling.tls);
            let ports: Vec<u16> = config.listen.tls.iter().chain(&https).map(|a| a.port()).collect();
            (443, ports, "listen.tls")
        }
        AcmeChallenge::Http01 => (80, config.listen.http.iter().map(|a| a.port()).collect(), "listen.http"),
    };
    if !listeners.is_empty() && !listeners.contains(&port) {
        warnings.push(format!(
            "tls.acme.challenge {} is validated by the CA on port {port}, and no {needed} listens on {port}: \
             forward {port} to it, or validation fails",
            acme.challenge.name()
        ));
    }
    warnings
}

/// The permission bits of `path` if its group or others may read it.
fn readable_by_others(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{invalid_key, parse};
    use crate::config::PortRange;

    #[test]
    fn counts_rates_and_durations_too_large_to_compute_with_are_refused() {
        assert_eq!(
            invalid_key("[signaling]\nmax_connections = 18446744073709551615\n"),
            "signaling.max_connections"
        );
        assert_eq!(
            invalid_key("[limits]\nconnection_idle_timeout = \"1000years\"\n"),
            "limits.connection_idle_timeout"
        );
        assert_eq!(
            invalid_key("[limits]\nuser_bytes_per_second = 18446744073709551615\n"),
            "limits.user_bytes_per_second"
        );
        assert_eq!(
            invalid_key("[auth]\ncredential_ttl = \"20years\"\nmax_credential_lifetime = \"20years\"\n"),
            "auth.max_credential_lifetime"
        );
    }

    #[test]
    fn check_config_warns_about_a_secrets_file_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("turnpike-perm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secrets");
        std::fs::write(&file, "a-long-enough-secret\n").unwrap();
        let mut config = Config::default();
        config.auth.secrets_file = Some(file.clone());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(config
            .warnings()
            .iter()
            .any(|w| w.starts_with("auth.secrets_file") && w.contains("644")));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!config.warnings().iter().any(|w| w.starts_with("auth.secrets_file")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn placeholder_secrets_are_refused_and_short_ones_warned_about() {
        assert_eq!(invalid_key("[auth]\nsecrets = [\"Change-Me\"]\n"), "auth.secrets[0]");
        assert_eq!(invalid_key("[signaling]\napi_key = \"secret\"\n"), "signaling.api_key");
        let config = parse("[auth]\nsecrets = [\"s1\"]\n").expect("a short secret is accepted");
        assert!(config.warnings().iter().any(|w| w.contains("shorter than 16")));
        let config = parse("[auth]\nsecrets = [\"a-shared-secret-of-32-characters\"]\n").expect("valid");
        assert!(!config.warnings().iter().any(|w| w.contains("shorter than 16")));
    }

    #[test]
    fn check_config_warns_about_a_listener_inside_the_relay_range() {
        let mut config = Config::default();
        config.relay.ports = PortRange { low: 8000, high: 9000 };
        assert!(
            config.validate().is_ok(),
            "a start must not depend on a probed free port"
        );
        assert!(config
            .warnings()
            .iter()
            .any(|w| w
                == "listener 127.0.0.1:8080 is inside relay.ports 8000-9000: that port is never handed to a relay"));
    }

    #[test]
    fn check_config_warns_when_the_clients_of_a_listener_have_no_sibling_to_be_sent_to() {
        use crate::proto::server::Sibling;
        let mut config = Config::default();
        config.listen.tls = vec!["0.0.0.0:443".parse().unwrap()];
        let tls_warning = |config: &Config| {
            config
                .warnings()
                .into_iter()
                .filter(|w| w.starts_with("alternate.servers"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            tls_warning(&config),
            Vec::<String>::new(),
            "no [alternate], nothing to say"
        );
        config.alternate.servers = vec![Sibling::plain("192.0.2.2:3478".parse().unwrap())];
        let warnings = tls_warning(&config);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("no tls address for any sibling: TLS clients are not shed"),
            "{warnings:?}"
        );
        config.alternate.servers[0].tls = Some("192.0.2.2:443".parse().unwrap());
        assert_eq!(tls_warning(&config), Vec::<String>::new());
    }
}
