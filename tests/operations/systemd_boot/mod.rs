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
//! * the README's edits (realm, external_ip, TLS) pass `check-config`, a
//!   restart and an upgrade (reinstall), which keeps config and secret;
//! * `systemctl reload` swaps the secret and the certificate under a UDP
//!   and a TLS allocation that keep relaying, while new allocations need
//!   the new secret and new handshakes see the new certificate;
//! * `systemctl stop` drains: the journal shows the drain waiting for the
//!   live allocation, which still relays, new ones get 508, and the
//!   service ends cleanly once it is gone;
//! * the watchdog: a stopped (SIGSTOP) main process is killed with
//!   SIGABRT and restarted (`NRestarts`, the journal);
//! * `dpkg --purge` removes the unit, the config, the secret, the state
//!   directory and the statoverrides, and keeps the operator's own files.
//!
//! It runs in the `operations` binary beside the other tests: the
//! container has its own network namespace (no port of the host is used)
//! and its root is locked against other test processes.

#![allow(clippy::disallowed_methods)] // waits in black-box tests use the real clock

mod container;
mod package;
mod root;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use rustls::version::TLS13;

use crate::common::{
    assert_relay_round_trips, http_exchange, rest_credential, samples_sum, stun_binding, turn_client, unix_now,
    EchoPeer, ScratchDir, Source, TestPki, Transport, TurnClient,
};
use container::Container;

/// What the package installs as /etc/turnpike/turnpike.toml.
const SERVICE_CONFIG: &str = include_str!("../../../systemd/turnpike.toml");

/// The service's listeners as packaged (and, for TLS, as the test's edit
/// opens it), on the container's loopback.
const UDP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3478);
const TLS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5349);
const HTTP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// How long systemd may take to get the unit where a step puts it (the
/// watchdog alone takes up to WatchdogSec=15s, plus RestartSec=2s).
const UNIT_WAIT: Duration = Duration::from_secs(60);

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
    purge_removes_what_install_created(c);
}

/// The unit's properties systemd reports.
fn unit(c: &Container) -> HashMap<String, String> {
    let props = "Type,ActiveState,SubState,UnitFileState,LoadState,NRestarts,MainPID,InvocationID,Result";
    c.ok(&["systemctl", "show", "--property", props, "turnpike"])
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Polls the unit until `done` holds, for at most [`UNIT_WAIT`].
fn wait_unit(c: &Container, what: &str, done: impl Fn(&HashMap<String, String>) -> bool) -> HashMap<String, String> {
    let deadline = Instant::now() + UNIT_WAIT;
    loop {
        let props = unit(c);
        if done(&props) {
            return props;
        }
        assert!(
            Instant::now() < deadline,
            "the unit is not {what} after {UNIT_WAIT:?}: {props:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn active(props: &HashMap<String, String>) -> bool {
    props["ActiveState"] == "active" && props["SubState"] == "running"
}

/// The unit's journal (systemd's lines about it and the service's own).
fn journal(c: &Container) -> String {
    c.ok(&["journalctl", "--unit", "turnpike", "--output", "cat", "--no-pager"])
}

/// Polls the journal until `line` is there `count` times (systemd's
/// `reload` and `stop --no-block` return before the service acts).
fn wait_journal(c: &Container, line: &str, count: usize) -> String {
    let deadline = Instant::now() + UNIT_WAIT;
    loop {
        let journal = journal(c);
        if journal.matches(line).count() >= count {
            return journal;
        }
        assert!(
            Instant::now() < deadline,
            "no {line:?} (x{count}) in the journal:\n{journal}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lines the service logged at warning or worse in its current run.
fn warnings_of_this_run(c: &Container) -> Vec<String> {
    let invocation = format!("_SYSTEMD_INVOCATION_ID={}", unit(c)["InvocationID"]);
    c.ok(&[
        "journalctl",
        &invocation,
        "--priority",
        "warning",
        "--output",
        "cat",
        "--no-pager",
    ])
    .lines()
    .filter(|l| !l.trim().is_empty() && !l.starts_with("-- "))
    .map(str::to_owned)
    .collect()
}

/// `mode owner:group` of each path, inside.
fn owners(c: &Container, paths: &[&str]) -> Vec<String> {
    let mut args = vec!["stat", "--format", "%n %a %U:%G"];
    args.extend_from_slice(paths);
    c.ok(&args).lines().map(str::to_owned).collect()
}

/// The first line of the secrets file, read out of the container.
fn read_secret(c: &Container) -> String {
    let text = std::fs::read_to_string(c.path("/etc/turnpike/secrets")).expect("read the generated secret");
    text.lines().next().expect("a secret line").trim().to_owned()
}

fn credential(secret: &str, name: &str) -> (String, String) {
    rest_credential(secret, name, unix_now() + 600)
}

/// An echo peer on the container's loopback, on a port outside the relay
/// range (49152-65535 as packaged), where the peer filter takes any own
/// address for a relay of this server (and refuses it unless it is a live
/// one). The namespace is the test's own: the port is free.
fn echo_peer() -> EchoPeer {
    EchoPeer::start_on("127.0.0.1:4000")
}

/// An allocation by the `turn` crate's client over UDP: its error, if
/// refused (the message holds the code).
async fn allocate_udp(secret: &str, name: &str) -> Result<(turn::client::Client, impl webrtc_util::Conn), String> {
    let (user, pass) = credential(secret, name);
    let (client, _) = turn_client(UDP, &user, &pass).await;
    match client.allocate().await {
        Ok(relay) => Ok((client, relay)),
        Err(e) => Err(e.to_string()),
    }
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
            "/var/lib/turnpike 750 turnpike:turnpike",
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
    // As packaged, the one warning is the loopback relay address: this
    // namespace has no other (the README's external_ip edit follows).
    let warnings = warnings_of_this_run(c);
    assert!(
        warnings.iter().all(|w| w.contains("relay address is loopback")),
        "{warnings:?}"
    );

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
            ("realm = \"turnpike\"", "realm = \"example.org\""),
            ("# external_ip = \"203.0.113.7\"", "external_ip = \"127.0.0.1\""),
            ("# tls = [\"0.0.0.0:5349\"]", "tls = [\"0.0.0.0:5349\"]"),
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

/// A ChannelData round trip through `client`'s allocation and the echo
/// peer bound to `channel`.
fn channel_round_trip(client: &mut TurnClient, channel: u16, tag: &str) {
    let payload = format!("{tag}: through the TLS allocation").into_bytes();
    client.channel_data(channel, &payload);
    let arrivals = client.wait_arrivals(1, Duration::from_secs(5));
    assert!(
        arrivals
            .iter()
            .any(|a| a.source == Source::Channel(channel) && a.payload == payload),
        "{tag}: {arrivals:?}"
    );
}

/// The leaf certificate a new TLS handshake with the service sees.
fn served_certificate(pki: &TestPki) -> Vec<u8> {
    let stream = pki.connect(TLS, &[&TLS13]).expect("TLS handshake");
    stream.conn.peer_certificates().expect("a certificate")[0].to_vec()
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

/// `systemctl reload`, then waits for the service to say it reloaded
/// (systemd 252 returns before): a reload, not a restart.
fn reload(c: &Container) {
    let reloaded = "SIGHUP: configuration reloaded";
    let seen = journal(c).matches(reloaded).count();
    let pid = unit(c)["MainPID"].clone();
    c.ok(&["systemctl", "reload", "turnpike"]);
    wait_journal(c, reloaded, seen + 1);
    let props = unit(c);
    assert!(
        active(&props) && props["MainPID"] == pid,
        "a reload is no restart: {props:?}"
    );
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

/// The number of live allocations `/metrics` reports.
fn allocations() -> f64 {
    let (status, text) = http_exchange(
        HTTP,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "GET /metrics: {text}");
    samples_sum(&text, "turnpike_allocations", &[])
}

/// Waits (bounded) until `/metrics` reports `want` live allocations (the
/// shards publish every 250 ms).
fn wait_allocations(want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while allocations() != want {
        assert!(Instant::now() < deadline, "allocations: {}, not {want}", allocations());
        std::thread::sleep(Duration::from_millis(50));
    }
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
