//! How the core gets relay sockets: through a [`RelayBinder`], which the
//! driver implements with real sockets and the tests with
//! [`crate::proto::testkit::FakeBinder`].

use crate::proto::addr::{Family, RelayProtocol};

/// Which relay port an allocation needs (RFC 8656 §7.2 EVEN-PORT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortWant {
    Any,
    Even,
    /// An even port `p`, and `p + 1` bound too and held under this
    /// RESERVATION-TOKEN for a later Allocate.
    EvenPair(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayBindError {
    #[error("no free relay port")]
    Exhausted,
    #[error("no such reservation")]
    UnknownReservation,
}

/// Opens and closes relay sockets for the core. The driver implements it
/// with real sockets; tests with a fake. Binding is synchronous because a
/// failure must turn into 508 in the very answer to the Allocate.
///
/// Reserved sockets (the odd partner of an EVEN-PORT pair) are held by the
/// binder, not the core, because the Allocate that claims one may come
/// from another 5-tuple and so land in another shard.
pub trait RelayBinder {
    /// Binds a relay socket (two for [`PortWant::EvenPair`]) and returns
    /// its port. A TCP relay listens for peer connections, which the driver
    /// reports with [`super::Server::handle_incoming_peer_connection`].
    fn bind(&mut self, family: Family, protocol: RelayProtocol, want: PortWant) -> Result<u16, RelayBindError>;
    /// Takes over the socket reserved under `token` for an allocation of
    /// this core; returns its family and port.
    fn claim(&mut self, token: u64) -> Result<(Family, u16), RelayBindError>;
    /// Closes the socket reserved under `token` unless it was claimed.
    fn forget(&mut self, token: u64);
    /// Closes the relay socket on `port`.
    fn release(&mut self, family: Family, port: u16);
}
