//! A named thread that runs one current-thread tokio runtime, apart from
//! the shards: the HTTP side, the admin API and the fleet's revocation
//! sharing each run on one, so that none of them takes time from the
//! relay.

use std::thread::JoinHandle;

use tokio::runtime::Runtime;
use tracing::warn;

/// Starts thread `name` and runs `run` on a fresh runtime there; if the
/// runtime cannot be built, logs that `what` failed to start and ends.
pub fn spawn(
    name: &str,
    what: &'static str,
    run: impl FnOnce(&Runtime) + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(move || {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => run(&runtime),
            Err(e) => warn!("{what} runtime failed to start: {e}"),
        }
    })
}
