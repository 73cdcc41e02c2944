//! The `channel_data` target.

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
