//! The loop `turnpike run` waits in once everything serves: signals,
//! systemd notifications and the systemd watchdog.
//!
//! - SIGHUP: RELOADING=1 (with its timestamp), the reload `serve.rs`
//!   passes in, READY=1; the loop goes on.
//! - SIGTERM or SIGINT: STOPPING=1 and a drain: new allocations are
//!   refused and the live ones get `server.shutdown_grace` to end; the loop
//!   returns when none is left, when the grace is over, or at a second
//!   signal. Stopping the parts is the caller's job.
//! - Under `WatchdogSec=`, WATCHDOG=1 at a third of the period, but only
//!   while every shard's event loop turns, so a wedged loop gets the
//!   service restarted rather than kept alive by this thread.
//!
//! Invariants: the handlers are installed ([`Signals::catch`]) before
//! anything serves, so a signal during the start is acted on once the loop
//! runs instead of killing the process with the default action; every
//! notification is a no-op when systemd did not start the process.

use std::time::Duration;

use anyhow::Context;
use sd_notify::NotifyState;
use tokio::signal::unix::Signal;
use tracing::{info, warn};
use turnpike::process::status::ServerStatus;

/// SIGTERM, SIGINT and SIGHUP, caught on the runtime that [`supervise`]
/// runs on.
pub struct Signals {
    runtime: tokio::runtime::Runtime,
    term: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    /// Installs the handlers; from here on these signals are queued for
    /// [`supervise`] instead of taking their default action.
    pub fn catch() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("signal runtime")?;
        let entered = runtime.enter();
        let term = signal(SignalKind::terminate())?;
        let interrupt = signal(SignalKind::interrupt())?;
        let hangup = signal(SignalKind::hangup())?;
        drop(entered);
        Ok(Signals {
            runtime,
            term,
            interrupt,
            hangup,
        })
    }
}

/// Runs until SIGINT or SIGTERM, then drains: new allocations are refused
/// and live ones get up to `grace` to end; a second signal ends the wait.
/// On SIGHUP calls `reload`. Under a systemd watchdog
/// (`WatchdogSec=`), sends WATCHDOG=1 at a third of its period, but only
/// while every shard's event loop is turning, so that a wedged loop gets
/// the service restarted.
pub fn supervise(signals: Signals, status: &ServerStatus, grace: Duration, reload: impl Fn()) -> anyhow::Result<()> {
    let Signals {
        runtime,
        mut term,
        mut interrupt,
        mut hangup,
    } = signals;
    let watchdog = sd_notify::watchdog_enabled();
    runtime.block_on(async {
        let period = watchdog.map_or(Duration::from_secs(3600), |p| (p / 3).max(Duration::from_millis(100)));
        let mut watchdog_tick = tokio::time::interval(period);
        let mut drain_until: Option<tokio::time::Instant> = None;
        let mut drain_poll = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
                _ = hangup.recv() => {
                    notify(&reloading());
                    reload();
                    notify(&[NotifyState::Ready]);
                    continue;
                }
                _ = watchdog_tick.tick(), if watchdog.is_some() => {
                    if status.responsive(period) {
                        notify(&[NotifyState::Watchdog]);
                    } else {
                        warn!("an event loop has not turned for {period:?}; withholding the systemd watchdog ping");
                    }
                    continue;
                }
                _ = drain_poll.tick(), if drain_until.is_some() => {
                    let left = status.allocations();
                    if left == 0 {
                        info!("drained: no allocation left");
                        return Ok::<(), std::io::Error>(());
                    }
                    if drain_until.is_some_and(|until| tokio::time::Instant::now() >= until) {
                        info!(allocations = left, "shutdown grace period over; closing the remaining allocations");
                        return Ok(());
                    }
                    continue;
                }
            }
            // SIGTERM or SIGINT.
            if drain_until.is_some() {
                info!("second signal: not waiting for the drain");
                return Ok(());
            }
            notify(&[NotifyState::Stopping]);
            status.begin_drain();
            info!(
                allocations = status.allocations(),
                grace = %humantime::format_duration(grace),
                "draining: new allocations are refused; waiting for the live ones to end"
            );
            drain_until = Some(tokio::time::Instant::now() + grace);
        }
    })?;
    Ok(())
}

/// Sends `state` to systemd when started by it (NOTIFY_SOCKET set);
/// otherwise does nothing.
pub fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!("cannot notify systemd: {e}");
    }
}

/// RELOADING=1 with the timestamp systemd 253+ wants alongside it.
fn reloading() -> Vec<NotifyState<'static>> {
    let mut state = vec![NotifyState::Reloading];
    state.extend(NotifyState::monotonic_usec_now().ok());
    state
}
