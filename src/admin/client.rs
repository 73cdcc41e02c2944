//! The client side of the admin API, for `turnpike admin …`: one blocking
//! HTTP/1.1 request per call over a `std` TCP stream or Unix socket
//! (`Connection: close`), so the command line needs no runtime and no HTTP
//! client crate.
//!
//! Only `http://host:port` URLs (the API listens on loopback and has no
//! TLS) and `unix:/absolute/path` for `admin.socket`. Every wait is
//! bounded (connect 5 s, each read or write 10 s) and an answer larger
//! than [`MAX_ANSWER`] is refused.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// Largest answer read (a list of 100 000 allocations is about 50 MB).
pub const MAX_ANSWER: u64 = 256 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0:?} is neither an http://host:port nor a unix:/absolute/path URL")]
    BadUrl(String),
    #[error("cannot reach the admin API at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("admin API request failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the admin API sent an answer that is not HTTP/1.1 with a JSON body")]
    BadAnswer,
    #[error("the admin API answered {status}: {message}")]
    Status { status: u16, message: String },
}

/// Where the API is and the key to present.
pub struct AdminClient {
    target: Target,
    key: String,
}

enum Target {
    /// `host:port`.
    Tcp(String),
    Unix(PathBuf),
}

/// A connection to the API, TCP or Unix.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl AdminClient {
    /// `url` is `http://host:port` or `unix:/absolute/path`.
    pub fn new(url: &str, key: String) -> Result<AdminClient, ClientError> {
        if let Some(path) = url.strip_prefix("unix:") {
            return match path.starts_with('/') {
                true => Ok(AdminClient::unix(PathBuf::from(path), key)),
                false => Err(ClientError::BadUrl(url.to_owned())),
            };
        }
        let authority = url
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| ClientError::BadUrl(url.to_owned()))?;
        Ok(AdminClient {
            target: Target::Tcp(authority.to_owned()),
            key,
        })
    }

    /// The API on the Unix socket at `path` (`admin.socket`).
    pub fn unix(path: PathBuf, key: String) -> AdminClient {
        AdminClient {
            target: Target::Unix(path),
            key,
        }
    }

    /// Sends `method path` with `body` and returns the JSON answer of a
    /// 2xx; any other status is [`ClientError::Status`] with the API's
    /// `error` message.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let mut stream = self.connect()?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\
             Accept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            match &self.target {
                Target::Tcp(authority) => authority.as_str(),
                Target::Unix(_) => "localhost",
            },
            self.key,
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        let mut answer = Vec::new();
        stream.take(MAX_ANSWER).read_to_end(&mut answer)?;
        let (status, body) = parse_answer(&answer).ok_or(ClientError::BadAnswer)?;
        let json = serde_json::from_slice::<Value>(&body);
        if !(200..300).contains(&status) {
            // The API's own errors are JSON; a body it could not read is
            // refused by axum in plain text.
            let message = match &json {
                Ok(json) => json["error"].as_str().unwrap_or("no reason given").to_owned(),
                Err(_) => String::from_utf8_lossy(&body).trim().chars().take(200).collect(),
            };
            return Err(ClientError::Status { status, message });
        }
        json.map_err(|_| ClientError::BadAnswer)
    }

    fn connect(&self) -> Result<Box<dyn Stream>, ClientError> {
        let authority = match &self.target {
            Target::Tcp(authority) => authority,
            Target::Unix(path) => {
                let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
                    addr: format!("unix:{}", path.display()),
                    source,
                })?;
                stream.set_read_timeout(Some(IO_TIMEOUT))?;
                stream.set_write_timeout(Some(IO_TIMEOUT))?;
                return Ok(Box::new(stream));
            }
        };
        let error = |source| ClientError::Connect {
            addr: authority.clone(),
            source,
        };
        let addrs = authority.to_socket_addrs().map_err(error)?;
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(IO_TIMEOUT))?;
                    stream.set_write_timeout(Some(IO_TIMEOUT))?;
                    return Ok(Box::new(stream));
                }
                Err(e) => last = e,
            }
        }
        Err(error(last))
    }
}

/// `text` percent-encoded for a path segment or a query value.
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(char::from(b)),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The status and body of an HTTP/1.1 answer read to its end.
fn parse_answer(answer: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(answer.get(..split)?).ok()?;
    let body = answer.get(split + 4..)?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding") && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    match chunked {
        true => Some((status, dechunk(body)?)),
        false => Some((status, body.to_vec())),
    }
}

/// The payload of a chunked body (RFC 9112 §7.1), extensions ignored.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(body.get(..line_end)?).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = body.get(line_end + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_plain_or_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_answer(plain), Some((200, b"{}".to_vec())));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_answer(chunked), Some((404, b"{\"a\":1}".to_vec())));
        assert_eq!(parse_answer(b"garbage"), None);
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            None
        );
    }

    #[test]
    fn only_http_urls_without_a_path_and_absolute_unix_paths_are_taken() {
        assert!(AdminClient::new("http://127.0.0.1:8081", String::new()).is_ok());
        assert!(AdminClient::new("http://127.0.0.1:8081/", String::new()).is_ok());
        let unix = AdminClient::new("unix:/run/turnpike/admin.sock", String::new()).unwrap();
        assert!(matches!(&unix.target, Target::Unix(p) if p == std::path::Path::new("/run/turnpike/admin.sock")));
        for bad in [
            "https://127.0.0.1:8081",
            "127.0.0.1:8081",
            "http://",
            "http://h/v1",
            "unix:admin.sock",
            "unix:",
        ] {
            assert!(AdminClient::new(bad, String::new()).is_err(), "{bad}");
        }
    }

    #[test]
    fn components_are_percent_encoded() {
        assert_eq!(encode_component("1700000000:alice b/c"), "1700000000%3Aalice%20b%2Fc");
    }
}
