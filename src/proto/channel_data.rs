//! ChannelData messages (RFC 8656 §12.4) and channel numbers.
//!
//! A ChannelData message is a 4-byte header (channel number, payload
//! length) followed by the payload. Over UDP the padding to a multiple of 4
//! is optional and anything after the stated length is ignored; over a
//! stream it is mandatory (§12.5), which the TCP framing handles.
//!
//! The relay path writes the header into 4 bytes of headroom reserved in
//! front of the payload when the datagram was read, so forwarding a peer's
//! packet to the client copies nothing.

use std::fmt;

pub const HEADER_LEN: usize = 4;

/// A channel number in the range clients may bind.
///
/// RFC 8656 §12 narrowed the range to 0x4000–0x4FFF, but RFC 5766 allowed
/// 0x4000–0x7FFF and deployed clients (coturn's own `turnutils_uclient`
/// among them) still pick numbers above 0x4FFF. Every number in
/// 0x4000–0x7FFF starts with the bits `01`, so accepting the old range
/// keeps demultiplexing from STUN (`00`) unambiguous; we accept it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelNumber(u16);

impl ChannelNumber {
    pub const MIN: u16 = 0x4000;
    pub const MAX: u16 = 0x7FFF;

    pub fn new(n: u16) -> Option<ChannelNumber> {
        (Self::MIN..=Self::MAX).contains(&n).then_some(ChannelNumber(n))
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for ChannelNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelDataError {
    #[error("shorter than a ChannelData header")]
    TooShort,
    #[error("channel number outside 0x4000-0x7FFF")]
    BadChannel,
    #[error("length field exceeds the packet")]
    Truncated,
}

/// Splits a ChannelData message into its channel and payload; bytes past
/// the stated length (UDP padding) are ignored.
pub fn parse(packet: &[u8]) -> Result<(ChannelNumber, &[u8]), ChannelDataError> {
    let (&[c0, c1, l0, l1], rest) = packet
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(ChannelDataError::TooShort)?;
    let channel = ChannelNumber::new(u16::from_be_bytes([c0, c1])).ok_or(ChannelDataError::BadChannel)?;
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    let payload = rest.get(..len).ok_or(ChannelDataError::Truncated)?;
    Ok((channel, payload))
}

/// Writes the 4-byte header for `payload_len` bytes of payload.
/// `payload_len` must fit a u16, which every caller guarantees because
/// relay buffers are smaller than 64 KiB.
pub fn write_header(out: &mut [u8; HEADER_LEN], channel: ChannelNumber, payload_len: u16) {
    out[..2].copy_from_slice(&channel.0.to_be_bytes());
    out[2..].copy_from_slice(&payload_len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_numbers_outside_the_bindable_range_are_refused() {
        assert!(ChannelNumber::new(0x3FFF).is_none());
        assert!(ChannelNumber::new(0x4000).is_some());
        assert!(ChannelNumber::new(0x4FFF).is_some());
        assert!(
            ChannelNumber::new(0x7FFF).is_some(),
            "RFC 5766 range, still used by clients"
        );
        assert!(ChannelNumber::new(0x8000).is_none());
        assert!(ChannelNumber::new(0xFFFF).is_none());
    }

    #[test]
    fn header_round_trips_and_padding_is_ignored() {
        let mut packet = [0u8; 12];
        let channel = ChannelNumber::new(0x4001).unwrap();
        write_header((&mut packet[..4]).try_into().unwrap(), channel, 5);
        packet[4..9].copy_from_slice(b"hello");
        let (c, payload) = parse(&packet).unwrap();
        assert_eq!(c, channel);
        assert_eq!(payload, b"hello");
    }

    #[test]
    fn truncated_and_bad_messages_are_errors() {
        assert_eq!(parse(&[0x40, 0x00, 0x00]), Err(ChannelDataError::TooShort));
        assert_eq!(parse(&[0x40, 0x00, 0x00, 0x05, 1, 2]), Err(ChannelDataError::Truncated));
        assert_eq!(parse(&[0x80, 0x00, 0x00, 0x00]), Err(ChannelDataError::BadChannel));
        assert_eq!(parse(&[0x40, 0x00, 0x00, 0x00]).unwrap().1, b"");
    }
}
