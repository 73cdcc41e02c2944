//! Who may load the machine at once within one test binary. Calls made by
//! real browsers and by aiortc are timed by the peers' own clocks
//! (credential refreshes, ICE restarts, statistics read within a bound),
//! and on a 2-core machine a parallel load of coturn's tools starves them:
//! they run [`alone`], as when each had a test binary of its own. Load that
//! only counts packets (coturn's tools) runs [`beside_others`], in parallel
//! with its own kind.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static MACHINE: RwLock<()> = RwLock::new(());

/// Held for the whole of a timing-sensitive call.
pub fn alone() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|e| e.into_inner())
}

/// Held while a tool loads the machine.
pub fn beside_others() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}
