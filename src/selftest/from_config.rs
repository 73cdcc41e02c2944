//! What a config file tells a selftest run on (or for) that server: the
//! URLs of its listeners and a credential it accepts.
//!
//! * URLs: `turn:…?transport=udp` per `listen.udp` address,
//!   `?transport=tcp` per `listen.tcp`, `turns:` per `listen.tls`; the
//!   host is `host` when given (the name clients use, which a `turns:`
//!   certificate is checked against), else the listener's IP, with a
//!   wildcard address replaced by loopback of its family.
//! * Credential: a short-lived one minted with the first shared secret and
//!   algorithm (as `turnpike credentials` does), else the first
//!   `[[auth.users]]` user, by password or key.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::url::{Scheme, Transport, TurnUrl};
use super::{Credential, CredentialSecret};
use crate::config::Config;
use crate::proto::auth;

/// How long a credential minted for a run lives: enough for the slowest
/// run (every step timing out), short enough to be worthless soon after.
pub const MINTED_TTL: Duration = Duration::from_secs(600);

/// The URLs of `config`'s listeners, named by `host` if given.
pub fn urls(config: &Config, host: Option<&str>) -> Vec<TurnUrl> {
    let listeners = [
        (Scheme::Turn, Transport::Udp, &config.listen.udp),
        (Scheme::Turn, Transport::Tcp, &config.listen.tcp),
        (Scheme::Turns, Transport::Tcp, &config.listen.tls),
    ];
    listeners
        .into_iter()
        .flat_map(|(scheme, transport, addrs)| {
            addrs.iter().map(move |addr| TurnUrl {
                scheme,
                host: host.map_or_else(|| reachable_ip(*addr).to_string(), str::to_owned),
                port: addr.port(),
                transport,
            })
        })
        .collect()
}

/// A listener's IP, or loopback for a wildcard one.
fn reachable_ip(addr: SocketAddr) -> IpAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

/// A credential `config`'s server accepts, minted at `now_unix` if it is
/// a short-lived one; `None` if it has neither secrets nor users.
pub fn credential(config: &Config, now_unix: u64) -> Option<Credential> {
    if let Some(secret) = config.auth.minting_secret() {
        let minted = auth::mint(
            config.auth.minting_algorithm(),
            secret.expose().as_bytes(),
            Some("selftest"),
            now_unix,
            MINTED_TTL,
        );
        return Some(Credential::password(&minted.username, &minted.password));
    }
    config.auth.users.iter().find_map(|user| {
        let key = config.try_user_key(user)?;
        Some(Credential {
            username: user.name.clone(),
            secret: CredentialSecret::Key(key),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listener_becomes_a_url_and_wildcards_become_loopback() {
        let config = Config::from_toml(
            "[listen]\nudp = [\"0.0.0.0:3478\", \"[::]:3479\"]\ntcp = [\"192.0.2.7:3478\"]\ntls = [\"0.0.0.0:443\"]\n\
             [tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
            "test",
        )
        .unwrap();
        let text: Vec<String> = urls(&config, None).iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "turn:127.0.0.1:3478?transport=udp",
                "turn:[::1]:3479?transport=udp",
                "turn:192.0.2.7:3478?transport=tcp",
                "turns:127.0.0.1:443?transport=tcp",
            ]
        );
        let named: Vec<String> = urls(&config, Some("turn.example.org"))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(named[3], "turns:turn.example.org:443?transport=tcp");
    }

    #[test]
    fn a_secret_mints_and_else_the_first_user_signs() {
        let config = Config::from_toml("[auth]\nsecrets = [\"s3cret\"]\n", "test").unwrap();
        let minted = credential(&config, 1_000).unwrap();
        assert_eq!(minted.username, "1600:selftest");
        let password = auth::ephemeral_password(auth::SecretAlgorithm::Sha1, b"s3cret", "1600:selftest");
        assert_eq!(minted, Credential::password("1600:selftest", &password));

        let config = Config::from_toml(
            "[server]\nrealm = \"r\"\n[[auth.users]]\nname = \"u\"\npassword = \"p\"\n",
            "test",
        )
        .unwrap();
        let user = credential(&config, 0).unwrap();
        assert_eq!(user.username, "u");
        assert_eq!(user.cred("r").key, auth::long_term_key("u", "r", "p"));

        let none = Config::from_toml("", "test").unwrap();
        assert_eq!(credential(&none, 0), None);
    }
}
