//! An in-memory [`FastPathRoutes`]: the routes a core has installed, with
//! their expiries, every removal, and counts a test makes up as if the
//! kernel had relayed them. A test can make installs fail, as a full map
//! would, with [`FakeRoutes::refuse`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use crate::proto::server::{FastPathRoutes, FastRoute};
use crate::proto::stats::Traffic;

#[derive(Debug, Default)]
pub struct FakeRoutesState {
    /// Installed now: expiry and what the "kernel" relayed on it.
    pub installed: HashMap<FastRoute, (Instant, Traffic)>,
    /// Every removal, in order.
    pub removed: Vec<FastRoute>,
    /// When set, every install fails.
    pub refusing: bool,
}

/// Cloned handles share one state: the core owns one, the test keeps one.
#[derive(Clone, Debug, Default)]
pub struct FakeRoutes(Rc<RefCell<FakeRoutesState>>);

impl FakeRoutes {
    /// The expiry of `route`, if installed.
    pub fn expiry(&self, route: &FastRoute) -> Option<Instant> {
        self.0.borrow().installed.get(route).map(|(at, _)| *at)
    }

    /// Every installed route.
    pub fn routes(&self) -> Vec<FastRoute> {
        self.0.borrow().installed.keys().copied().collect()
    }

    pub fn removed(&self) -> Vec<FastRoute> {
        self.0.borrow().removed.clone()
    }

    /// As if the kernel had relayed `packets` datagrams of `bytes` bytes
    /// in all on `route`; panics if it is not installed.
    pub fn relay(&self, route: &FastRoute, packets: u64, bytes: u64) {
        let mut state = self.0.borrow_mut();
        let (_, counts) = state
            .installed
            .get_mut(route)
            .expect("relaying on a route not installed");
        counts.add(Traffic { packets, bytes });
    }

    pub fn refuse(&self, refusing: bool) {
        self.0.borrow_mut().refusing = refusing;
    }
}

impl FastPathRoutes for FakeRoutes {
    fn install(&mut self, route: &FastRoute, expires: Instant) -> bool {
        let mut state = self.0.borrow_mut();
        if state.refusing {
            return false;
        }
        // A refresh keeps the counts, as the real maps keep the slot.
        let counts = state.installed.get(route).map_or_else(Traffic::default, |(_, c)| *c);
        state.installed.insert(*route, (expires, counts));
        true
    }

    fn remove(&mut self, route: &FastRoute) -> Traffic {
        let mut state = self.0.borrow_mut();
        state.removed.push(*route);
        state.installed.remove(route).expect("removing a route not installed").1
    }

    fn counts(&mut self, route: &FastRoute) -> Traffic {
        self.0
            .borrow()
            .installed
            .get(route)
            .expect("counting a route not installed")
            .1
    }
}
