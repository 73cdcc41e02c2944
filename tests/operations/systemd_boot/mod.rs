//! The Debian package under a real systemd: `cargo deb` makes the package
//! from the binary under test, `systemd-nspawn -b` boots a minimal Debian
//! (cached, see [`root`]) in a network namespace of the test's own, and
//! `dpkg -i` installs it there. Then, with `systemctl` and `journalctl`
//! inside and clients on the container's loopback:
//! * the fresh install runs (`Type=notify` reached active, enabled, the
//!   binary from /usr/bin) as the `turnpike` user, with the config and the
//!   secret the postinst generated owned as documented, and is never
//!   open: no allocation without a credential minted from that secret,
//!   none relaying into loopback as packaged;
//! * the README's edits (external_ip, TLS on 443; its certificate from
//!   files, as the container has no ACME CA: `operations/acme.rs` proves
//!   ACME against pebble) pass `check-config` and a restart with no
//!   warning, and an upgrade (reinstall) keeps config and secret;
//! * `systemctl reload` rotates the secret (the new one first, the old one
//!   kept) and swaps the certificate under a UDP and a TLS allocation that
//!   keep relaying, while new handshakes see the new certificate and the
//!   service mints with the new secret; a second reload drops the old
//!   secret, which then gets 401;
//! * `systemctl stop` drains: the journal shows the drain waiting for the
//!   live allocation, which still relays, new ones get 508, and the
//!   service ends cleanly once it is gone;
//! * the watchdog: a stopped (SIGSTOP) main process is killed with
//!   SIGABRT and restarted (`NRestarts`, the journal);
//! * `[relay] fast_path = "xdp"`: the unit as packaged runs and warns,
//!   the drop-in of docs/operations.md attaches the program natively, a
//!   stop detaches it (`fast_path`);
//! * `dpkg --purge` removes the unit, the config, the secret, the state
//!   directory and the statoverrides, and keeps the operator's own files.
//!
//! It runs in the `operations` binary beside the other tests: the
//! container has its own network namespace (no port of the host is used)
//! and its root is locked against other test processes.

#![allow(clippy::disallowed_methods)] // waits in black-box tests use the real clock

mod clients;
mod container;
mod fast_path;
mod package;
mod root;
mod unit;

use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use base64::Engine;

use crate::common::{
    assert_relay_round_trips, rest_credential, stun_binding, ScratchDir, TestPki, Transport, TurnClient,
};
use clients::{
    allocate_udp, channel_round_trip, credential, echo_peer, served_certificate, wait_allocations, TLS, UDP,
};
use container::{Container, PUBLIC_IP};
use unit::{active, journal, owners, reload, unit, wait_journal, wait_unit, warnings_of_this_run};

/// What the package installs as /etc/turnpike/turnpike.toml.
const SERVICE_CONFIG: &str = include_str!("../../../systemd/turnpike.toml");

#[test]
fn the_debian_package_under_a_real_systemd() {
    let share = ScratchDir::new("deb");
    let deb = package::build_deb(share.path());
    let root = root::cached_root();
    let container = Container::boot(root.path(), share.path());
    container.in_network(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(story(&container, share.path(), &deb));
    });
}

async fn story(c: &Container, share: &Path, deb: &str) {
    let deb = format!("/test/{deb}");
    let pki = TestPki::new();
    c.ok(&["dpkg", "-i", &deb]);
    let secret = a_fresh_install_runs_and_is_never_open(c, &pki).await;
    let edited = the_readme_edits_apply(c, share, &pki);
    an_upgrade_keeps_config_and_secret(c, &deb, &edited, &secret);
    let new_secret = a_reload_swaps_secret_and_certificate_under_live_allocations(c, share, &pki, &secret).await;
    stop_drains(c, &pki, &new_secret).await;
    the_watchdog_restarts_a_hung_process(c);
    fast_path::the_fast_path_needs_the_drop_in(c, share);
    purge_removes_what_install_created(c);
}

/// The first line of the secrets file, read out of the container.
fn read_secret(c: &Container) -> String {
    let text = std::fs::read_to_string(c.path("/etc/turnpike/secrets")).expect("read the generated secret");
    text.lines().next().expect("a secret line").trim().to_owned()
}

async fn a_fresh_install_runs_and_is_never_open(c: &Container, pki: &TestPki) -> String {
    let props = unit(c);
    assert_eq!(
        (&*props["Type"], &*props["UnitFileState"]),
        ("notify", "enabled"),
        "{props:?}"
    );
    assert!(active(&props), "not running after dpkg -i: {props:?}");
    // The unit names the bare `turnpike`; systemd found the package's.
    let exe = c.ok(&["readlink", &format!("/proc/{}/exe", props["MainPID"])]);
    assert_eq!(exe.trim(), "/usr/bin/turnpike", "{props:?}");
    assert_eq!(
        owners(
            c,
            &[
                "/etc/turnpike",
                "/etc/turnpike/turnpike.toml",
                "/etc/turnpike/secrets",
                "/var/lib/turnpike"
            ]
        ),
        [
            "/etc/turnpike 750 root:turnpike",
            "/etc/turnpike/turnpike.toml 640 root:turnpike",
            "/etc/turnpike/secrets 600 turnpike:turnpike",
            "/var/lib/turnpike 700 turnpike:turnpike",
        ]
    );
    let user = c.ok(&["getent", "passwd", "turnpike"]);
    assert!(user.trim().ends_with(":/usr/sbin/nologin"), "{user}");
    let ps = c.ok(&["ps", "--no-headers", "-o", "user=", "-p", &unit(c)["MainPID"]]);
    assert_eq!(ps.trim(), "turnpike", "the service's user");
    let config = std::fs::read_to_string(c.path("/etc/turnpike/turnpike.toml")).expect("read the config");
    assert_eq!(
        config, SERVICE_CONFIG,
        "the installed config is not systemd/turnpike.toml"
    );

    let secret = read_secret(c);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&secret)
        .unwrap_or_else(|e| panic!("the generated secret {secret:?} is not base64: {e}"));
    assert_eq!(bytes.len(), 32, "the generated secret");

    let journal = journal(c);
    assert!(
        journal.contains("listening for STUN/TURN over UDP addr=0.0.0.0:3478"),
        "{journal}"
    );
    // As packaged, no warning: the relays advertise the namespace's
    // public address.
    let warnings = warnings_of_this_run(c);
    assert!(warnings.is_empty(), "{warnings:?}");

    // Never open: STUN answers, TURN only with the generated secret, and
    // no relaying into loopback with the packaged peer filter.
    let probe = UdpSocket::bind("127.0.0.1:0").expect("bind");
    assert!(
        stun_binding(&probe, UDP, Duration::from_secs(5)).is_some(),
        "no STUN answer on {UDP}"
    );
    let refused = allocate_udp("a secret of nobody's", "mallory").await.err();
    assert!(refused.as_deref().is_some_and(|e| e.contains("401")), "{refused:?}");
    let (user, pass) = credential(&secret, "alice");
    let mut client = TurnClient::open_at(UDP, Transport::Udp, pki).signed_as(&user, &pass);
    client.allocate_udp();
    let peer = echo_peer();
    assert_eq!(
        client.create_permission(peer.addr()),
        Err(403),
        "a loopback peer as packaged"
    );
    client.delete_allocation().expect("delete the allocation");
    secret
}

/// Replaces each whole line `from` (exactly once in `text`) with `to`.
fn edit(text: &str, edits: &[(&str, &str)]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for (from, to) in edits {
        let at: Vec<usize> = (0..lines.len()).filter(|&i| lines[i] == *from).collect();
        assert_eq!(at.len(), 1, "{from:?} is not one line of systemd/turnpike.toml");
        lines[at[0]] = (*to).to_owned();
    }
    lines.join("\n") + "\n"
}

/// The README's edits, as an operator makes them: returns the config.
fn the_readme_edits_apply(c: &Container, share: &Path, pki: &TestPki) -> String {
    let edited = edit(
        SERVICE_CONFIG,
        &[
            (
                "# external_ip = \"203.0.113.7\"",
                &format!("external_ip = \"{PUBLIC_IP}\""),
            ),
            ("# tls = [\"0.0.0.0:443\"]", "tls = [\"0.0.0.0:443\"]"),
            (
                "# cert = \"/etc/turnpike/cert.pem\"",
                "cert = \"/etc/turnpike/cert.pem\"",
            ),
            ("# key = \"/etc/turnpike/key.pem\"", "key = \"/etc/turnpike/key.pem\""),
        ],
    ) + "\n# The test's echo peer is on loopback.\n[peers]\nallow = [\"127.0.0.0/8\"]\n";
    std::fs::write(share.join("turnpike.toml"), &edited).expect("write the edited config");
    pki.write_leaf("before", &share.join("cert.pem"), &share.join("key.pem"));
    c.ok(&[
        "install",
        "-m",
        "640",
        "-g",
        "turnpike",
        "/test/turnpike.toml",
        "/etc/turnpike/turnpike.toml",
    ]);
    install_certificate(c, "/test/cert.pem", "/test/key.pem");

    let check = c.ok(&["turnpike", "check-config", "/etc/turnpike/turnpike.toml"]);
    assert!(check.contains("1 TLS listener(s)"), "{check}");
    let before = unit(c)["InvocationID"].clone();
    c.ok(&["systemctl", "restart", "turnpike"]);
    let props = unit(c);
    assert!(active(&props) && props["InvocationID"] != before, "{props:?}");
    let warnings = warnings_of_this_run(c);
    assert!(warnings.is_empty(), "warnings with the README's edits: {warnings:?}");
    edited
}

/// The certificate as the docs say: the key the service's own, mode 0600.
fn install_certificate(c: &Container, cert: &str, key: &str) {
    c.ok(&["install", "-m", "644", cert, "/etc/turnpike/cert.pem"]);
    c.ok(&[
        "install",
        "-m",
        "600",
        "-o",
        "turnpike",
        "-g",
        "turnpike",
        key,
        "/etc/turnpike/key.pem",
    ]);
}

fn an_upgrade_keeps_config_and_secret(c: &Container, deb: &str, edited: &str, secret: &str) {
    let paths = ["/etc/turnpike", "/etc/turnpike/turnpike.toml", "/etc/turnpike/secrets"];
    let owned = owners(c, &paths);
    let before = unit(c)["InvocationID"].clone();
    c.ok(&["dpkg", "-i", deb]);
    let config = std::fs::read_to_string(c.path("/etc/turnpike/turnpike.toml")).expect("read the config");
    assert_eq!(config, edited, "the upgrade replaced the operator's config");
    assert_eq!(read_secret(c), secret, "the upgrade replaced the secret");
    assert_eq!(owners(c, &paths), owned);
    // restart-after-upgrade: the new binary runs.
    let props = wait_unit(c, "restarted", |p| active(p) && p["InvocationID"] != before);
    assert_eq!(props["NRestarts"], "0", "{props:?}");
}

/// Installs `lines` as the secrets file (the service's own, 0600), as an
/// operator rotating secrets does.
fn install_secrets(c: &Container, share: &Path, lines: &[&str]) {
    std::fs::write(share.join("secrets.new"), lines.join("\n") + "\n").expect("write the secrets");
    c.ok(&[
        "install",
        "-m",
        "600",
        "-o",
        "turnpike",
        "-g",
        "turnpike",
        "/test/secrets.new",
        "/etc/turnpike/secrets",
    ]);
}

/// The rotation the config's comment describes: the new secret first and
/// the old one kept, with a new certificate, under a UDP and a TLS
/// allocation that keep relaying; then, once those ended, the old secret
/// dropped. Returns the new secret.
async fn a_reload_swaps_secret_and_certificate_under_live_allocations(
    c: &Container,
    share: &Path,
    pki: &TestPki,
    old_secret: &str,
) -> String {
    let peer = echo_peer();
    let (_udp_client, udp_relay) = allocate_udp(old_secret, "udp").await.expect("allocate over UDP");
    assert_relay_round_trips(&udp_relay, &peer, 3, "before the reload").await;
    let (user, pass) = credential(old_secret, "tls");
    let mut tls = TurnClient::open_at(TLS, Transport::Tls, pki).signed_as(&user, &pass);
    tls.allocate_udp();
    let (channel, bound) = tls.channel_bind(peer.addr());
    bound.expect("ChannelBind over TLS");
    channel_round_trip(&mut tls, channel, "before the reload");
    let first_leaf = served_certificate(pki);

    let mut random = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).expect("random bytes");
    let new_secret = base64::engine::general_purpose::STANDARD.encode(random);
    let (cert, key, second_leaf) = pki.leaf("after");
    std::fs::write(share.join("cert.new"), cert).expect("write cert");
    std::fs::write(share.join("key.new"), key).expect("write key");
    assert_ne!(first_leaf, second_leaf);
    install_secrets(c, share, &[&new_secret, old_secret]);
    install_certificate(c, "/test/cert.new", "/test/key.new");
    reload(c);

    assert_relay_round_trips(&udp_relay, &peer, 3, "after the reload").await;
    channel_round_trip(&mut tls, channel, "after the reload");
    assert_eq!(
        served_certificate(pki),
        second_leaf,
        "new handshakes get the new certificate"
    );
    let (_client, relay) = allocate_udp(&new_secret, "late").await.expect("the new secret");
    assert_relay_round_trips(&relay, &peer, 3, "with the new secret").await;
    // The service mints with the new secret now.
    let minted = c.ok(&[
        "turnpike",
        "credentials",
        "--config",
        "/etc/turnpike/turnpike.toml",
        "--user",
        "bob",
    ]);
    let minted: serde_json::Value = serde_json::from_str(&minted).unwrap_or_else(|e| panic!("{e}: {minted}"));
    let username = minted["username"].as_str().expect("username");
    let expiry = username
        .split_once(':')
        .and_then(|(e, _)| e.parse().ok())
        .expect("<expiry>:bob");
    assert_eq!(
        minted["credential"],
        rest_credential(&new_secret, "bob", expiry).1.as_str(),
        "{minted}"
    );

    // The old secret still verifies: its allocations end themselves.
    webrtc_util::Conn::close(&relay)
        .await
        .expect("delete the new allocation");
    webrtc_util::Conn::close(&udp_relay)
        .await
        .expect("delete the UDP allocation");
    tls.delete_allocation().expect("delete the TLS allocation");
    wait_allocations(0.0);
    install_secrets(c, share, &[&new_secret]);
    reload(c);
    let refused = allocate_udp(old_secret, "later").await.err();
    assert!(
        refused.as_deref().is_some_and(|e| e.contains("401")),
        "the dropped secret: {refused:?}"
    );
    new_secret
}

/// `systemctl stop` under one live allocation over TLS; `secret` mints.
async fn stop_drains(c: &Container, pki: &TestPki, secret: &str) {
    let peer = echo_peer();
    let (user, pass) = credential(secret, "draining");
    let mut tls = TurnClient::open_at(TLS, Transport::Tls, pki).signed_as(&user, &pass);
    tls.allocate_udp();
    let (channel, bound) = tls.channel_bind(peer.addr());
    bound.expect("ChannelBind over TLS");
    wait_allocations(1.0);
    c.ok(&["systemctl", "stop", "--no-block", "turnpike"]);
    let log = wait_journal(c, "draining: new allocations are refused", 1);
    let draining = log.lines().rfind(|l| l.contains("draining:")).expect("the drain line");
    assert!(draining.contains("allocations=1"), "{draining}");
    let props = unit(c);
    assert_eq!(props["ActiveState"], "deactivating", "{props:?}");
    channel_round_trip(&mut tls, channel, "while draining");
    let refused = allocate_udp(secret, "draining").await.err();
    assert!(refused.as_deref().is_some_and(|e| e.contains("508")), "{refused:?}");

    tls.delete_allocation().expect("delete the TLS allocation");
    let props = wait_unit(c, "stopped", |p| p["ActiveState"] == "inactive");
    assert_eq!(props["Result"], "success", "{props:?}");
    let journal = journal(c);
    assert!(journal.contains("drained: no allocation left"), "{journal}");
}

fn the_watchdog_restarts_a_hung_process(c: &Container) {
    c.ok(&["systemctl", "start", "turnpike"]);
    let props = unit(c);
    assert!(active(&props), "{props:?}");
    let (pid, restarts) = (props["MainPID"].clone(), props["NRestarts"].clone());
    c.ok(&["kill", "-STOP", &pid]);
    let props = wait_unit(c, "restarted by the watchdog", |p| {
        active(p) && p["MainPID"] != pid && p["NRestarts"] != restarts
    });
    assert_eq!(props["NRestarts"], "1", "{props:?}");
    let journal = journal(c);
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    let abort = format!("Killing process {pid} (turnpike) with signal SIGABRT");
    assert!(journal.contains(&abort), "no {abort:?} in:\n{journal}");
    let probe = UdpSocket::bind("127.0.0.1:0").expect("bind");
    assert!(
        stun_binding(&probe, UDP, Duration::from_secs(5)).is_some(),
        "no STUN answer after the restart"
    );
}

fn purge_removes_what_install_created(c: &Container) {
    c.ok(&["dpkg", "--purge", "turnpike"]);
    let props = unit(c);
    assert_eq!(
        (&*props["LoadState"], &*props["ActiveState"]),
        ("not-found", "inactive"),
        "{props:?}"
    );
    assert!(
        !c.run(&["pgrep", "-x", "turnpike"]).success(),
        "a turnpike process is left"
    );
    assert!(
        !c.run(&["dpkg", "--status", "turnpike"]).success(),
        "still known to dpkg"
    );
    for gone in [
        "/usr/bin/turnpike",
        "/var/lib/turnpike",
        "/etc/turnpike/secrets",
        "/etc/turnpike/turnpike.toml",
    ] {
        assert!(!c.path(gone).exists(), "{gone} is left after the purge");
    }
    let overrides = c.ok(&["dpkg-statoverride", "--list"]);
    assert!(!overrides.contains("/etc/turnpike"), "{overrides}");
    // What the operator added stays (Debian purges only what the package
    // made), and so does the system user.
    let mut left: Vec<String> = std::fs::read_dir(c.path("/etc/turnpike"))
        .expect("/etc/turnpike holds the operator's files")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["cert.pem", "key.pem"]);
    c.ok(&["getent", "passwd", "turnpike"]);
}
