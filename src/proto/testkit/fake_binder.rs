//! An in-memory [`RelayBinder`]: hands out the lowest free port of its
//! range (so tests can name the ports they expect), records every bind and
//! release, and panics when the core misuses it (a port released that is
//! not bound, a reservation token handed out twice). A test can make the
//! next binds fail, as a full port range would, through
//! [`FakeBinder::set_exhausted`] while the core owns the binder.

use std::cell::{Ref, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::ops::RangeInclusive;

use crate::proto::addr::{Family, RelayProtocol};
use crate::proto::server::{PortWant, RelayBindError, RelayBinder};

#[derive(Debug, Default)]
pub struct FakeBinderState {
    /// Ports bound now, reserved partners included.
    pub bound: BTreeSet<(Family, u16)>,
    /// Every successful bind, in order, with the port it gave.
    pub binds: Vec<(Family, PortWant, u16)>,
    /// Every release, in order.
    pub releases: Vec<(Family, u16)>,
    /// Odd partners of EVEN-PORT pairs, by RESERVATION-TOKEN.
    pub reserved: HashMap<u64, (Family, u16)>,
    /// When set, every bind fails with [`RelayBindError::Exhausted`].
    pub exhausted: bool,
}

#[derive(Debug)]
pub struct FakeBinder {
    ports: RangeInclusive<u16>,
    state: RefCell<FakeBinderState>,
}

impl FakeBinder {
    pub fn new(ports: RangeInclusive<u16>) -> FakeBinder {
        FakeBinder {
            ports,
            state: RefCell::new(FakeBinderState::default()),
        }
    }

    pub fn state(&self) -> Ref<'_, FakeBinderState> {
        self.state.borrow()
    }

    pub fn set_exhausted(&self, exhausted: bool) {
        self.state.borrow_mut().exhausted = exhausted;
    }
}

impl RelayBinder for FakeBinder {
    fn bind(&mut self, family: Family, _protocol: RelayProtocol, want: PortWant) -> Result<u16, RelayBindError> {
        let s = self.state.get_mut();
        if s.exhausted {
            return Err(RelayBindError::Exhausted);
        }
        let free = |p: u16| self.ports.contains(&p) && !s.bound.contains(&(family, p));
        let port = self
            .ports
            .clone()
            .find(|&p| match want {
                PortWant::Any => free(p),
                PortWant::Even => p % 2 == 0 && free(p),
                PortWant::EvenPair(_) => p % 2 == 0 && free(p) && p < u16::MAX && free(p + 1),
            })
            .ok_or(RelayBindError::Exhausted)?;
        s.bound.insert((family, port));
        if let PortWant::EvenPair(token) = want {
            s.bound.insert((family, port + 1));
            let old = s.reserved.insert(token, (family, port + 1));
            assert!(old.is_none(), "reservation token {token:#x} handed out twice");
        }
        s.binds.push((family, want, port));
        Ok(port)
    }

    fn claim(&mut self, token: u64) -> Result<(Family, u16), RelayBindError> {
        let s = self.state.get_mut();
        s.reserved.remove(&token).ok_or(RelayBindError::UnknownReservation)
    }

    fn forget(&mut self, token: u64) {
        let reserved = self.state.get_mut().reserved.remove(&token);
        if let Some((family, port)) = reserved {
            self.release(family, port);
        }
    }

    fn release(&mut self, family: Family, port: u16) {
        let s = self.state.get_mut();
        assert!(
            s.bound.remove(&(family, port)),
            "the core released relay port {port} ({family:?}) that is not bound"
        );
        s.releases.push((family, port));
    }
}
