//! The request methods the server answers (RFC 8489 §18.2, RFC 8656 §17,
//! RFC 6062 §6.1), as one enum: dispatch matches on it exhaustively and
//! the metrics index by it, so a method cannot be handled but not counted
//! or counted under the wrong label. The wire values stay in
//! [`super::stun::method`], which the codec and the clients use.

use super::stun::method;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Binding,
    Allocate,
    Refresh,
    CreatePermission,
    ChannelBind,
    Connect,
    ConnectionBind,
}

impl Method {
    /// Every method, in the order of their `as usize` index.
    pub const ALL: [Method; 7] = [
        Method::Binding,
        Method::Allocate,
        Method::Refresh,
        Method::CreatePermission,
        Method::ChannelBind,
        Method::Connect,
        Method::ConnectionBind,
    ];

    /// The method of a request's wire value; `None` for one this server
    /// does not answer (400), indications included.
    pub const fn from_wire(value: u16) -> Option<Method> {
        Some(match value {
            method::BINDING => Method::Binding,
            method::ALLOCATE => Method::Allocate,
            method::REFRESH => Method::Refresh,
            method::CREATE_PERMISSION => Method::CreatePermission,
            method::CHANNEL_BIND => Method::ChannelBind,
            method::CONNECT => Method::Connect,
            method::CONNECTION_BIND => Method::ConnectionBind,
            _ => return None,
        })
    }

    pub const fn wire(self) -> u16 {
        match self {
            Method::Binding => method::BINDING,
            Method::Allocate => method::ALLOCATE,
            Method::Refresh => method::REFRESH,
            Method::CreatePermission => method::CREATE_PERMISSION,
            Method::ChannelBind => method::CHANNEL_BIND,
            Method::Connect => method::CONNECT,
            Method::ConnectionBind => method::CONNECTION_BIND,
        }
    }

    /// Metric label value.
    pub const fn label(self) -> &'static str {
        match self {
            Method::Binding => "binding",
            Method::Allocate => "allocate",
            Method::Refresh => "refresh",
            Method::CreatePermission => "create_permission",
            Method::ChannelBind => "channel_bind",
            Method::Connect => "connect",
            Method::ConnectionBind => "connection_bind",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Method;

    #[test]
    fn wire_values_round_trip_and_all_is_in_index_order() {
        for (i, m) in Method::ALL.into_iter().enumerate() {
            assert_eq!(m as usize, i);
            assert_eq!(Method::from_wire(m.wire()), Some(m));
        }
        assert_eq!(Method::from_wire(super::method::SEND), None);
        assert_eq!(Method::from_wire(0x0FFF), None);
    }
}
