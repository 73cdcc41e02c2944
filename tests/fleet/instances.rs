//! The fleet's instances in each other's consoles: two instances on one
//! real `redis-server` report their numbers every 5 s on
//! `<prefix>:reports`; instance A's `GET /v1/fleet` lists A and B with B's
//! allocations, `turnpike_fleet_instances` counts both, and A's history
//! charts them. A report sealed with the fleet's secret by a writer of our
//! own (an independent encoder of the wire format) is listed too; an
//! unsigned one, or one signed with another fleet's secret, is counted as
//! invalid and listed nowhere. Then headless Chromium opens A's console
//! (`tests/browser/console.mjs --fleet`) and its fleet table shows the
//! instances; the screenshot goes to `target/test-artifacts/console-fleet/`.

#![allow(clippy::disallowed_methods)] // waits use the real clock

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::redis_server::{fleet_secret_line, RedisServer, FLEET_SECRET};
use crate::common::*;
use turnpike::fleet::report_wire::Report;
use turnpike::signaling::switchboard::fleet_seal::{FleetKeys, Stamp};

const KEY: &str = "an-admin-key-for-fleet-consoles-0123456789";
/// Bound of every wait: a report every 5 s, and a sample every 5 s.
const WAIT: Duration = Duration::from_secs(20);

/// An instance named `name` of the fleet of `prefix` on `redis`, with
/// its admin API.
fn instance(redis: &RedisServer, prefix: &str, name: &str) -> (TestServer, SocketAddr) {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let server = TestServer::start(&format!(
        "{LONG_TERM_USER_TOML}\n[admin]\nlisten = \"{admin}\"\nkey = \"{KEY}\"\n\n\
         [fleet]\nredis_url = \"{}\"\ninstance_id = \"{name}\"\nkey_prefix = \"{prefix}\"\n{}",
        redis.url(),
        fleet_secret_line()
    ));
    (server, admin)
}

fn get(admin: SocketAddr, path: &str) -> Value {
    let (status, body) = http_exchange(
        admin,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

/// Polls `GET /v1/fleet` of `admin` until `done` accepts its instances
/// (by name), within [`WAIT`]; returns the last answer.
fn wait_fleet(admin: SocketAddr, done: impl Fn(&[Value]) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let fleet = get(admin, "/v1/fleet");
        let listed = fleet["instances"].as_array().cloned().unwrap_or_default();
        if done(&listed) || Instant::now() >= deadline {
            return fleet;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn find<'a>(listed: &'a [Value], name: &str) -> Option<&'a Value> {
    listed.iter().find(|i| i["instance"] == name)
}

/// The last value of series `label` of chart `chart` in `/v1/history`.
fn charted(admin: SocketAddr, chart: &str, label: &str) -> Option<f64> {
    let view = get(admin, "/v1/history");
    view["charts"].as_array()?.iter().find(|c| c["id"] == chart)?["series"]
        .as_array()?
        .iter()
        .find(|s| s["label"] == label)?["values"]
        .as_array()?
        .last()?
        .as_f64()
}

#[test]
fn each_console_lists_every_instance_of_the_fleet_with_its_numbers() {
    let redis = RedisServer::start();
    let prefix = format!("console{}", std::process::id());
    let (a, admin_a) = instance(&redis, &prefix, "alpha");
    let (b, _admin_b) = instance(&redis, &prefix, "beta");
    // Two allocations on beta.
    let mut clients: Vec<TurnClient> = (0..2).map(|_| TurnClient::open(&b, Transport::Udp)).collect();
    for client in &mut clients {
        client.allocate_udp();
    }

    let fleet = wait_fleet(admin_a, |listed| {
        find(listed, "beta").is_some_and(|b| b["allocations"] == 2) && find(listed, "alpha").is_some()
    });
    let listed = fleet["instances"].as_array().expect("instances");
    assert_eq!(fleet["instance"], "alpha");
    assert_eq!(fleet["redis_up"], true);
    let beta = find(listed, "beta").unwrap_or_else(|| panic!("beta is not listed: {fleet}"));
    assert_eq!(beta["allocations"], 2, "{fleet}");
    assert_eq!(
        (beta["own"].as_bool(), beta["silent"].as_bool()),
        (Some(false), Some(false))
    );
    let alpha = find(listed, "alpha").unwrap_or_else(|| panic!("alpha is not listed: {fleet}"));
    assert_eq!(
        (alpha["own"].as_bool(), alpha["allocations"].as_u64()),
        (Some(true), Some(0))
    );
    assert_eq!(a.wait_metric("turnpike_fleet_instances", WAIT, |n| n == 2.0), Some(2.0));

    // A report sealed with the fleet's secret by our own encoder is
    // listed; unsigned or foreign ones are refused and counted.
    let mut conn = redis.connection();
    let channel = format!("{prefix}:reports");
    let publish = |conn: &mut redis::Connection, message: String| {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(message)
            .query(conn)
            .expect("PUBLISH");
    };
    let report = Report {
        allocations: 7,
        to_peer: 1000,
        to_client: 2000,
        sessions: 3,
        rooms: 1,
    };
    let stamp = |seq| Stamp {
        ts: unix_now() * 1000,
        boot: 42,
        seq,
    };
    let invalid_before = a
        .metric("turnpike_fleet_dropped_total{reason=\"invalid\"}")
        .unwrap_or(0.0);
    let ours = FleetKeys::new(&[FLEET_SECRET]).expect("a secret");
    let theirs = FleetKeys::new(&["the-secret-of-another-fleet-0123"]).expect("a secret");
    publish(&mut conn, report.encode("mallory", stamp(1)));
    publish(&mut conn, report.seal(&theirs, &prefix, &channel, "trudy", stamp(1)));
    publish(&mut conn, report.seal(&ours, &prefix, &channel, "ghost", stamp(1)));
    let fleet = wait_fleet(admin_a, |listed| find(listed, "ghost").is_some());
    let listed = fleet["instances"].as_array().expect("instances");
    let ghost = find(listed, "ghost").unwrap_or_else(|| panic!("the signed report is not listed: {fleet}"));
    assert_eq!(
        (ghost["allocations"].as_u64(), ghost["sessions"].as_u64()),
        (Some(7), Some(3))
    );
    assert!(
        find(listed, "mallory").is_none() && find(listed, "trudy").is_none(),
        "{fleet}"
    );
    let invalid = a.wait_metric("turnpike_fleet_dropped_total{reason=\"invalid\"}", WAIT, |n| {
        n >= invalid_before + 2.0
    });
    assert!(invalid >= Some(invalid_before + 2.0), "{invalid:?}");

    // The history charts the fleet: three instances with 9 allocations
    // in a sample taken after the ghost's report.
    let deadline = Instant::now() + WAIT;
    while charted(admin_a, "fleet", "instances") != Some(3.0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(charted(admin_a, "fleet", "instances"), Some(3.0));
    assert_eq!(charted(admin_a, "fleet", "allocations"), Some(9.0));
    assert_eq!(charted(admin_a, "fleet_link", "redis_up"), Some(1.0));

    // The console's fleet table, in Chromium.
    let setup = browser_setup("console-fleet");
    let args = [
        format!("--key={KEY}"),
        format!("--metrics=http://{}/metrics", a.http_addr()),
        "--allocations=0".to_owned(),
        "--fleet=alpha,beta".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let summary = run_browser_script(
        &setup,
        "console.mjs",
        &format!("http://{admin_a}/"),
        USER,
        Duration::from_secs(60),
        false,
        &args,
    );
    let rows = summary["fleet"].as_array().expect("fleet rows");
    let beta_row = rows
        .iter()
        .find(|r| r["instance"] == "beta")
        .unwrap_or_else(|| panic!("{summary}"));
    assert_eq!(beta_row["allocations"], "2");
    assert!(setup.artifacts.join("fleet.png").is_file());
    assert!(a.is_running() && b.is_running());
}
