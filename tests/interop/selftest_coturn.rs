//! `turnpike selftest` against another server, coturn's `turnserver`:
//! the client is built on turnpike's codec, and must not only work
//! against turnpike.

use crate::common::coturn::{CoturnServer, COTURN_REALM};
use crate::common::selftest_run::{assert_relaying_works, ca_file, check, selftest_json, verdict};
use crate::common::ScratchDir;

const SECRET: &str = "coturn-selftest-secret";

#[test]
fn selftest_passes_against_coturn_on_udp_tcp_and_tls_and_names_a_wrong_secret() {
    let coturn = CoturnServer::start(SECRET);
    let dir = ScratchDir::new("selftest-coturn");
    let ca = ca_file(&dir, coturn.ca());
    let urls = [
        format!("turn:{}?transport=udp", coturn.addr()),
        format!("turn:{}?transport=tcp", coturn.addr()),
        format!("turns:{}?transport=tcp", coturn.tls_addr()),
    ];
    let mut args: Vec<&str> = urls.iter().map(String::as_str).collect();
    args.extend(["--secret", SECRET, "--ca", ca.to_str().unwrap()]);
    let (code, report) = selftest_json(&args);

    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["counts"]["fail"], 0, "{report:#}");
    assert_eq!(report["counts"]["skip"], 0, "{report:#}");
    for url in &urls {
        // coturn started with --allow-loopback-peers: the local peer echoes.
        assert_relaying_works(&report, url, "peer");
        assert_eq!(check(&report, url, "allocate")["realm"], COTURN_REALM, "{report:#}");
    }
    assert_eq!(verdict(&report, &urls[2], "tls").0, "pass", "{report:#}");

    let (code, report) = selftest_json(&[&urls[0], "--secret", "not-the-secret"]);
    assert_eq!(code, 1, "{report:#}");
    let (refused, detail) = verdict(&report, &urls[0], "allocate");
    assert_eq!(refused, "fail", "{report:#}");
    assert!(detail.starts_with("credential refused (401"), "{detail}");
}
