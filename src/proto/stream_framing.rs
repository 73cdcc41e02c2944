//! Framing of STUN messages and ChannelData on a byte stream (TCP, TLS).
//!
//! On a stream there are no datagram boundaries: a STUN message's length
//! comes from its header (20 + length field, RFC 8489 §6.2.2), and a
//! ChannelData message's from its own header plus padding to a multiple of
//! 4, which is mandatory on streams (RFC 8656 §12.5). The first two bits
//! tell them apart (00 STUN, 01 ChannelData); anything else means the peer
//! is not speaking STUN/TURN and the connection should be closed, since
//! there is no way to find the next frame.
//!
//! [`frame_len`] looks only at the first 4 bytes ("check, then parse"), so a
//! driver can read until a whole frame is buffered and never holds more than
//! one frame plus one read of bytes per connection.

use super::channel_data;
use super::stun;

/// The largest frame a stream can carry: a STUN message of 20 + 65 532
/// bytes (its length is a multiple of 4). A ChannelData message is at most
/// 4 + 65 535 + 1 bytes of padding.
pub const MAX_FRAME: usize = stun::HEADER_LEN + 65_532;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("stream does not carry STUN or ChannelData")]
    NotTurn,
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

/// True if `frame` (as cut by [`frame_len`]) parses as a STUN message or
/// as ChannelData.
pub fn is_well_formed(frame: &[u8]) -> bool {
    stun::Message::parse(frame).is_ok() || channel_data::parse(frame).is_ok()
}

/// The length of the frame at the start of `buf`, `Ok(None)` if more bytes
/// are needed to know or to have all of it. Frames longer than `max` are
/// refused as soon as their header is seen.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let Some(&[first, _, l0, l1]) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    let total = match first >> 6 {
        0b00 => stun::HEADER_LEN + len,
        0b01 => channel_data::HEADER_LEN + len + stun::padding(len),
        _ => return Err(FrameError::NotTurn),
    };
    if total > max {
        return Err(FrameError::TooLarge(total));
    }
    Ok((buf.len() >= total).then_some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_frame_length_comes_from_the_header() {
        let mut msg = vec![0x00, 0x01, 0x00, 0x08];
        msg.extend_from_slice(&[0; 24]);
        assert_eq!(frame_len(&msg[..3], MAX_FRAME), Ok(None));
        assert_eq!(frame_len(&msg[..27], MAX_FRAME), Ok(None));
        assert_eq!(frame_len(&msg, MAX_FRAME), Ok(Some(28)));
        msg.extend_from_slice(&[0x00, 0x01]);
        assert_eq!(
            frame_len(&msg, MAX_FRAME),
            Ok(Some(28)),
            "the next frame's bytes are not part of this one"
        );
    }

    #[test]
    fn channel_data_frames_include_their_padding() {
        let msg = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(frame_len(&msg[..9], MAX_FRAME), Ok(None));
        assert_eq!(frame_len(&msg, MAX_FRAME), Ok(Some(12)));
        assert_eq!(frame_len(&[0x40, 0x01, 0x00, 0x00], MAX_FRAME), Ok(Some(4)));
    }

    #[test]
    fn only_parsable_frames_are_well_formed() {
        let mut binding = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        binding.extend_from_slice(&[7; 12]);
        assert!(is_well_formed(&binding));
        assert!(is_well_formed(&[0x40, 0x00, 0x00, 0x01, 9, 0, 0, 0]));
        let mut junk = binding.clone();
        junk[1] = 0x03; // an Allocate without magic cookie is not STUN
        junk[4] = 0;
        assert!(!is_well_formed(&junk));
    }

    #[test]
    fn other_first_bits_and_oversized_frames_are_errors() {
        assert_eq!(frame_len(&[0x80, 0, 0, 0], MAX_FRAME), Err(FrameError::NotTurn));
        assert_eq!(frame_len(&[0xC0, 0, 0, 0], MAX_FRAME), Err(FrameError::NotTurn));
        assert_eq!(
            frame_len(&[0x40, 0, 0xFF, 0xFF], 1024),
            Err(FrameError::TooLarge(65_540))
        );
        assert_eq!(frame_len(&[0x40, 0, 0xFF, 0xFF], MAX_FRAME), Ok(None));
        assert_eq!(frame_len(&[0x00, 0x01, 0xFF, 0xFC], MAX_FRAME), Ok(None));
    }
}
