//! The `redis_push` target: what Redis sends on the fleet's subscribed
//! connection (`fleet::push_reader`), untrusted (anyone allowed to
//! `PUBLISH` chooses a message's bytes and length).

use turnpike::fleet::push_reader::{Push, PushReader, RespError, Value, MAX_ELEMENTS, MAX_LINE};

/// The longest bulk string the fuzzed reader keeps.
const BOUND: usize = 64;

/// `data[0]` picks a piece size, the rest is the stream. Never a panic;
/// the values read (and the error that ends them) are the same in pieces
/// as in one go; no kept bulk string is longer than [`BOUND`], no array
/// longer than [`MAX_ELEMENTS`]; every value classifies.
pub fn fuzz_read(data: &[u8]) {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let whole = read(stream, stream.len().max(1));
    let pieces = read(stream, usize::from(piece).max(1));
    assert_eq!(whole, pieces, "the values depend on how the bytes arrive");
    let (values, _) = whole;
    for value in values {
        check_bounds(&value, true);
        let _ = Push::of(value);
    }
}

/// Every value in `stream` read `piece` bytes at a time, and the error
/// that stopped the reader, if any.
fn read(stream: &[u8], piece: usize) -> (Vec<Value>, Option<RespError>) {
    let mut reader = PushReader::new(BOUND);
    let mut values = Vec::new();
    for chunk in stream.chunks(piece) {
        let mut at = 0;
        while at < chunk.len() {
            match reader.read(&chunk[at..]) {
                Ok((read, value)) => {
                    assert!(read > 0, "read nothing from {} bytes", chunk.len() - at);
                    at += read;
                    values.extend(value);
                }
                Err(error) => return (values, Some(error)),
            }
        }
    }
    (values, None)
}

fn check_bounds(value: &Value, top: bool) {
    match value {
        Value::Bulk(bytes) => assert!(bytes.len() <= BOUND, "kept a bulk string of {}", bytes.len()),
        Value::TooLong(len) => assert!(*len > BOUND as u64, "skipped a bulk string of {len}"),
        Value::Simple(line) | Value::Error(line) => assert!(line.len() <= MAX_LINE),
        Value::Array(elements) => {
            assert!(top, "a nested array");
            assert!(elements.len() <= MAX_ELEMENTS);
            elements.iter().for_each(|e| check_bounds(e, false));
        }
        Value::Integer(_) | Value::Nil => {}
    }
}

/// Seeds: a message, a skipped one, confirmations, errors, near misses.
pub fn seeds() -> Vec<Vec<u8>> {
    let long = format!("*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$100\r\n{}\r\n", "x".repeat(100));
    [
        "\x03*3\r\n$7\r\nmessage\r\n$8\r\nP:inst:a\r\n$5\r\nhello\r\n",
        "\x05*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n+OK\r\n-NOPERM no\r\n",
        "\x01$-1\r\n*-1\r\n*0\r\n$0\r\n\r\n:-42\r\n",
        "\x02*2\r\n*1\r\n",
        "\x07$3\r\nabcd\r\n",
        "\x01:123456789012345678901\r\n",
        "\x04*9\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain(std::iter::once([b"\x10".as_slice(), long.as_bytes()].concat()))
    .collect()
}
