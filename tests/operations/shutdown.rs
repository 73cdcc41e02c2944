//! Graceful shutdown: on SIGTERM the server refuses new allocations (508)
//! and reports not ready, keeps relaying for the live ones, and exits 0 as
//! soon as they end, or when `server.shutdown_grace` runs out, or at a
//! second signal.

#![allow(clippy::disallowed_methods)] // waits in black-box tests use the real clock

use std::time::{Duration, Instant};

use webrtc_util::Conn;

use crate::common::{assert_relay_round_trips, rest_credential, turn_client, unix_now, EchoPeer, TestServer};

fn server(grace: &str) -> TestServer {
    TestServer::start_with(
        &format!("shutdown_grace = \"{grace}\""),
        "[auth]\nsecrets = [\"drain-secret\"]\n",
    )
}

fn credential(name: &str) -> (String, String) {
    rest_credential("drain-secret", name, unix_now() + 600)
}

#[tokio::test]
async fn sigterm_drains_live_allocations_and_exits_when_they_end() {
    let server = server("20s");
    let (user, pass) = credential("live");
    let (client, _) = turn_client(server.addr(), &user, &pass).await;
    let relay = client.allocate().await.expect("allocate before the drain");
    assert_eq!(server.http_get("/readyz"), (200, "ready\n".to_owned()));

    server.signal(libc::SIGTERM);
    let mut waited = 0;
    while server.http_get("/readyz").0 == 200 {
        waited += 1;
        assert!(waited < 100, "still ready 2 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.http_get("/readyz"), (503, "draining\n".to_owned()));
    assert_eq!(server.http_get("/healthz").0, 200, "draining is not unhealthy");

    // New allocations are refused, with the capacity error.
    let (user, pass) = credential("late");
    let (late, _) = turn_client(server.addr(), &user, &pass).await;
    let refused = late
        .allocate()
        .await
        .err()
        .expect("an Allocate during the drain must fail");
    assert!(refused.to_string().contains("508"), "{refused}");

    // The live allocation keeps relaying, and the server waits for it.
    assert_relay_round_trips(&relay, &EchoPeer::start(), 5, "during the drain").await;
    assert!(
        server.wait_exit(Duration::from_millis(500)).is_none(),
        "exited with an allocation live"
    );

    // Once it ends (Refresh with LIFETIME 0), the server exits at once.
    let ended = Instant::now();
    relay.close().await.expect("release the allocation");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("exit after the last allocation ended");
    assert!(status.success(), "{status:?}\n{}", server.stderr_log());
    assert!(ended.elapsed() < Duration::from_secs(5), "took {:?}", ended.elapsed());
    assert!(server.stderr_log().contains("drained"), "{}", server.stderr_log());
}

#[tokio::test]
async fn the_grace_period_bounds_the_drain() {
    let server = server("2s");
    let (user, pass) = credential("stays");
    let (client, _) = turn_client(server.addr(), &user, &pass).await;
    let _relay = client.allocate().await.expect("allocate");
    let started = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("exit after the grace period");
    assert!(status.success(), "{status:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "left after {took:?}, before the grace period"
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

#[tokio::test]
async fn a_second_signal_ends_the_drain_at_once() {
    let server = server("60s");
    let (user, pass) = credential("stays");
    let (client, _) = turn_client(server.addr(), &user, &pass).await;
    let _relay = client.allocate().await.expect("allocate");
    server.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.wait_exit(Duration::ZERO).is_none(),
        "did not wait for the allocation"
    );
    server.signal(libc::SIGINT);
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("exit at the second signal");
    assert!(status.success(), "{status:?}");
}

#[test]
fn with_no_allocation_sigterm_exits_at_once() {
    let server = server("60s");
    let started = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(5)).expect("exit");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}
