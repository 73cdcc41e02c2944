//! What Redis sends on a subscribed connection, read without trusting its
//! sizes: RESP2 (the Redis serialization protocol, as Redis 2+ speaks it
//! to a client that never sent `HELLO 3`), one value at a time.
//!
//! Anyone who can `PUBLISH` on a fleet channel chooses the length of a
//! message, and a general Redis client reads a bulk string whole before
//! anyone can look at its length: two 20 MiB messages would cost 40 MiB
//! before the fleet's own bound refused them. This reader learns a bulk
//! string's length from its header and skips one longer than `max_bulk`
//! as it streams past, so the message is refused (as
//! [`Value::TooLong`]) and the subscription goes on.
//!
//! Sans-IO: bytes in, values out; no socket, no clock.
//!
//! Invariants:
//! * what it holds is at most one line of [`MAX_LINE`] bytes and an array
//!   of [`MAX_ELEMENTS`] values of at most `max_bulk` bytes each,
//!   whatever arrives;
//! * a bulk string longer than `max_bulk` is never buffered;
//! * anything outside the grammar a subscribed connection carries (a
//!   line over [`MAX_LINE`], a nested or longer array, an unknown type
//!   byte, a malformed number, a bulk string not ended by CRLF) is a
//!   [`RespError`], after which the reader is of no further use: the
//!   caller drops the connection and reconnects, as for any broken link.

/// Longest header, simple string or error line, CRLF included. Redis's
/// own error lines are well under it; payloads travel as bulk strings.
pub const MAX_LINE: usize = 1024;
/// Most elements of an array: a message has 3 (`message`, channel,
/// payload), a pattern message 4.
pub const MAX_ELEMENTS: usize = 8;

/// One RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Integer(i64),
    Bulk(Vec<u8>),
    /// A bulk string of this many bytes, longer than the reader keeps.
    TooLong(u64),
    /// A null bulk string or array.
    Nil,
    /// Only at the top level.
    Array(Vec<Value>),
}

/// Input no Redis server sends on a subscribed connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    #[error("a line longer than {MAX_LINE} bytes")]
    LongLine,
    #[error("a line not ended by CRLF")]
    BadLineEnd,
    #[error("unknown type byte {0:#04x}")]
    UnknownType(u8),
    #[error("malformed length or integer")]
    BadNumber,
    #[error("an array of {0} elements")]
    LongArray(i64),
    #[error("an array inside an array")]
    Nested,
    #[error("a bulk string not ended by CRLF")]
    BadBulkEnd,
}

enum State {
    /// A type byte and the rest of its line, up to LF.
    Line,
    /// Inside a bulk string of `len` bytes, `remaining` of them still to
    /// come; kept or skipped.
    Bulk { len: u64, remaining: u64, keep: bool },
    /// The CRLF after a bulk string's data, `seen` of its bytes read.
    BulkEnd { seen: usize, value: Value },
}

/// Reads RESP2 values from a stream of bytes, in whatever pieces they
/// arrive.
pub struct PushReader {
    max_bulk: usize,
    state: State,
    line: Vec<u8>,
    bulk: Vec<u8>,
    /// The open top-level array: its elements so far and how many it has.
    array: Option<(Vec<Value>, usize)>,
}

impl PushReader {
    /// A reader that keeps bulk strings of up to `max_bulk` bytes.
    pub fn new(max_bulk: usize) -> PushReader {
        PushReader {
            max_bulk,
            state: State::Line,
            line: Vec::new(),
            bulk: Vec::new(),
            array: None,
        }
    }

    /// Reads from `input` until one top-level value is complete or the
    /// input runs out: the bytes read, and the value if one completed.
    /// Call again with the rest of `input`.
    pub fn read(&mut self, input: &[u8]) -> Result<(usize, Option<Value>), RespError> {
        let mut at = 0;
        while at < input.len() {
            let finished = match &mut self.state {
                State::Line => {
                    let rest = &input[at..];
                    let end = rest.iter().position(|&b| b == b'\n');
                    let piece = &rest[..end.map_or(rest.len(), |i| i + 1)];
                    if self.line.len() + piece.len() > MAX_LINE {
                        return Err(RespError::LongLine);
                    }
                    self.line.extend_from_slice(piece);
                    at += piece.len();
                    match end {
                        Some(_) => self.on_line()?,
                        None => None,
                    }
                }
                State::Bulk { len, remaining, keep } => {
                    let take = usize::try_from(*remaining).map_or(input.len() - at, |r| r.min(input.len() - at));
                    if *keep {
                        self.bulk.extend_from_slice(&input[at..at + take]);
                    }
                    at += take;
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        let value = match keep {
                            true => Value::Bulk(std::mem::take(&mut self.bulk)),
                            false => Value::TooLong(*len),
                        };
                        self.state = State::BulkEnd { seen: 0, value };
                    }
                    None
                }
                State::BulkEnd { seen, value } => {
                    if input[at] != b"\r\n"[*seen] {
                        return Err(RespError::BadBulkEnd);
                    }
                    at += 1;
                    *seen += 1;
                    match *seen {
                        2 => {
                            let value = std::mem::replace(value, Value::Nil);
                            self.state = State::Line;
                            Some(value)
                        }
                        _ => None,
                    }
                }
            };
            if let Some(value) = finished.and_then(|value| self.complete(value)) {
                return Ok((at, Some(value)));
            }
        }
        Ok((at, None))
    }

    /// A whole line is in `self.line`: the value it is, or `None` when
    /// data or elements follow.
    fn on_line(&mut self) -> Result<Option<Value>, RespError> {
        let line = std::mem::take(&mut self.line);
        let Some(body) = line.strip_suffix(b"\r\n") else {
            return Err(RespError::BadLineEnd);
        };
        let (&kind, body) = body.split_first().ok_or(RespError::BadLineEnd)?;
        Ok(match kind {
            b'+' => Some(Value::Simple(body.to_vec())),
            b'-' => Some(Value::Error(body.to_vec())),
            b':' => Some(Value::Integer(number(body)?)),
            b'$' => match number(body)? {
                -1 => Some(Value::Nil),
                len @ 0.. => {
                    let len = len as u64;
                    let keep = len <= self.max_bulk as u64;
                    self.state = match len {
                        0 => State::BulkEnd {
                            seen: 0,
                            value: Value::Bulk(Vec::new()),
                        },
                        _ => State::Bulk {
                            len,
                            remaining: len,
                            keep,
                        },
                    };
                    None
                }
                _ => return Err(RespError::BadNumber),
            },
            b'*' => {
                if self.array.is_some() {
                    return Err(RespError::Nested);
                }
                match number(body)? {
                    -1 => Some(Value::Nil),
                    0 => Some(Value::Array(Vec::new())),
                    len if len > MAX_ELEMENTS as i64 => return Err(RespError::LongArray(len)),
                    len @ 1.. => {
                        let len = len as usize;
                        self.array = Some((Vec::with_capacity(len), len));
                        None
                    }
                    _ => return Err(RespError::BadNumber),
                }
            }
            other => return Err(RespError::UnknownType(other)),
        })
    }

    /// `value` is read: the top-level value it completes, if any.
    fn complete(&mut self, value: Value) -> Option<Value> {
        let Some((elements, len)) = &mut self.array else {
            return Some(value);
        };
        elements.push(value);
        if elements.len() < *len {
            return None;
        }
        self.array.take().map(|(elements, _)| Value::Array(elements))
    }
}

/// A RESP integer: an optional sign and at most 19 digits.
fn number(body: &[u8]) -> Result<i64, RespError> {
    let digits = body.strip_prefix(b"-").unwrap_or(body);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(RespError::BadNumber);
    }
    std::str::from_utf8(body)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(RespError::BadNumber)
}

/// What a value on a subscribed connection means to the fleet.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    /// A message published on `channel`.
    Message { channel: Vec<u8>, payload: Payload },
    /// Redis confirmed one channel of a SUBSCRIBE.
    Subscribed,
    /// An error reply: Redis refused a command.
    Refused(Vec<u8>),
    /// Anything else (a reply to a command the fleet does not send here).
    Other,
}

/// A message's payload.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload {
    Bytes(Vec<u8>),
    /// Longer than the reader keeps: this many bytes, skipped.
    TooLong(u64),
}

impl Push {
    pub fn of(value: Value) -> Push {
        let elements = match value {
            Value::Array(elements) => elements,
            Value::Error(text) => return Push::Refused(text),
            _ => return Push::Other,
        };
        let mut elements = elements.into_iter();
        let kind = elements.next();
        match (kind, elements.next(), elements.next(), elements.next()) {
            (Some(Value::Bulk(kind)), Some(Value::Bulk(channel)), Some(payload), None) if kind == b"message" => {
                let payload = match payload {
                    Value::Bulk(bytes) => Payload::Bytes(bytes),
                    Value::TooLong(len) => Payload::TooLong(len),
                    _ => return Push::Other,
                };
                Push::Message { channel, payload }
            }
            (Some(Value::Bulk(kind)), Some(_), Some(Value::Integer(_)), None) if kind == b"subscribe" => {
                Push::Subscribed
            }
            _ => Push::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value in `input` read in pieces of `piece` bytes.
    fn read_all(reader: &mut PushReader, input: &[u8], piece: usize) -> Result<Vec<Value>, RespError> {
        let mut values = Vec::new();
        for chunk in input.chunks(piece) {
            let mut at = 0;
            while at < chunk.len() {
                let (read, value) = reader.read(&chunk[at..])?;
                at += read;
                values.extend(value);
            }
        }
        Ok(values)
    }

    fn message(channel: &str, payload: &[u8]) -> Vec<u8> {
        let mut bytes = format!(
            "*3\r\n$7\r\nmessage\r\n${}\r\n{channel}\r\n${}\r\n",
            channel.len(),
            payload.len()
        )
        .into_bytes();
        bytes.extend_from_slice(payload);
        bytes.extend_from_slice(b"\r\n");
        bytes
    }

    #[test]
    fn a_message_reads_the_same_whatever_the_pieces() {
        let input = [message("p:inst:a", b"hello"), b"+OK\r\n:42\r\n$-1\r\n*0\r\n".to_vec()].concat();
        for piece in [1, 2, 3, 7, 64, input.len()] {
            let values = read_all(&mut PushReader::new(64), &input, piece).unwrap();
            assert_eq!(
                values,
                vec![
                    Value::Array(vec![
                        Value::Bulk(b"message".to_vec()),
                        Value::Bulk(b"p:inst:a".to_vec()),
                        Value::Bulk(b"hello".to_vec()),
                    ]),
                    Value::Simple(b"OK".to_vec()),
                    Value::Integer(42),
                    Value::Nil,
                    Value::Array(vec![]),
                ],
                "piece {piece}"
            );
        }
    }

    #[test]
    fn an_oversized_payload_is_skipped_unbuffered_and_the_next_message_is_read() {
        let big = vec![b'x'; 1 << 20];
        let input = [message("c", &big), message("c", b"after")].concat();
        let mut reader = PushReader::new(1024);
        let mut pushes = Vec::new();
        let mut most_held = 0;
        for chunk in input.chunks(4096) {
            let mut at = 0;
            while at < chunk.len() {
                let (read, value) = reader.read(&chunk[at..]).unwrap();
                at += read;
                most_held = most_held.max(reader.bulk.capacity() + reader.line.capacity());
                pushes.extend(value.map(Push::of));
            }
        }
        assert_eq!(
            pushes,
            vec![
                Push::Message {
                    channel: b"c".to_vec(),
                    payload: Payload::TooLong(1 << 20)
                },
                Push::Message {
                    channel: b"c".to_vec(),
                    payload: Payload::Bytes(b"after".to_vec())
                },
            ]
        );
        assert!(most_held <= 2 * 1024 + MAX_LINE, "held {most_held} bytes");
    }

    #[test]
    fn confirmations_and_errors_are_told_apart() {
        let input = b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n-WRONGPASS invalid\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n";
        let pushes: Vec<Push> = read_all(&mut PushReader::new(64), input, 5)
            .unwrap()
            .into_iter()
            .map(Push::of)
            .collect();
        assert_eq!(
            pushes,
            vec![
                Push::Subscribed,
                Push::Refused(b"WRONGPASS invalid".to_vec()),
                Push::Other
            ]
        );
    }

    #[test]
    fn input_outside_the_grammar_is_an_error() {
        let cases: [(&[u8], RespError); 8] = [
            (b"?x\r\n", RespError::UnknownType(b'?')),
            (b"$abc\r\n", RespError::BadNumber),
            (b"$-2\r\n", RespError::BadNumber),
            (b":99999999999999999999\r\n", RespError::BadNumber),
            (b"*9\r\n", RespError::LongArray(9)),
            (b"*2\r\n*1\r\n", RespError::Nested),
            (b"$1\r\nab\r\n", RespError::BadBulkEnd),
            (b"+OK\n", RespError::BadLineEnd),
        ];
        for (input, error) in cases {
            assert_eq!(read_all(&mut PushReader::new(64), input, 3), Err(error), "{input:?}");
        }
        let long = vec![b'+'; MAX_LINE + 1];
        assert_eq!(read_all(&mut PushReader::new(64), &long, 100), Err(RespError::LongLine));
    }
}
