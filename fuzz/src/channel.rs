//! The `channel_data` and `stream_framing` targets.

use turnpike::proto::channel_data::{self, ChannelNumber};

/// Parses `data` as ChannelData; the payload must lie inside `data`, right
/// after the header, and be as long as the length field says.
pub fn fuzz_parse(data: &[u8]) {
    let Ok((number, payload)) = channel_data::parse(data) else {
        return;
    };
    let whole = data.as_ptr_range();
    let p = payload.as_ptr_range();
    assert!(
        whole.start <= p.start && p.end <= whole.end,
        "payload outside the packet"
    );
    assert_eq!(payload, &data[channel_data::HEADER_LEN..][..payload.len()]);
    assert_eq!(payload.len(), usize::from(u16::from_be_bytes([data[2], data[3]])));
    assert_eq!(number.get(), u16::from_be_bytes([data[0], data[1]]));
    assert!((ChannelNumber::MIN..=ChannelNumber::MAX).contains(&number.get()));
    assert_eq!(ChannelNumber::new(number.get()), Some(number));

    // The header writer round-trips.
    let mut header = [0u8; channel_data::HEADER_LEN];
    channel_data::write_header(&mut header, number, payload.len() as u16);
    assert_eq!(header, data[..channel_data::HEADER_LEN]);
}

/// The `stream_framing` target: cuts `data` into frames the way a TCP
/// connection's reader does (with a small and the largest frame limit);
/// every frame must lie inside the buffer, respect the limit, and be what
/// the parsers then see as one STUN message or one padded ChannelData.
pub fn fuzz_stream_framing(data: &[u8]) {
    use turnpike::proto::stream_framing::{frame_len, MAX_FRAME};
    for max in [576, MAX_FRAME] {
        let mut rest = data;
        while let Ok(Some(len)) = frame_len(rest, max) {
            assert!(len >= 4 && len <= rest.len() && len <= max, "frame of {len} bytes");
            let frame = &rest[..len];
            if frame[0] >> 6 == 0b01 {
                assert_eq!(len % 4, 0, "ChannelData on a stream is padded");
                if let Ok((_, payload)) = channel_data::parse(frame) {
                    assert!(payload.len() + channel_data::HEADER_LEN + 3 >= len);
                }
            } else {
                assert_eq!(len, 20 + usize::from(u16::from_be_bytes([frame[2], frame[3]])));
            }
            rest = &rest[len..];
        }
    }
}
