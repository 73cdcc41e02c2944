//! Plain HTTP/1.1 requests with `Connection: close`, read to the end.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// Sends `request` (a whole HTTP/1.1 request that asks for `Connection:
/// close`) to `addr` and returns the status and body of the answer, read
/// to its end within 5 s.
pub fn http_exchange(addr: SocketAddr, request: &str) -> (u16, String) {
    let (status, _, body) = http_exchange_with_head(addr, request);
    (status, body)
}

/// [`http_exchange`], with the answer's head (status line and headers) too.
pub fn http_exchange_with_head(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to HTTP");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    read_http_response(&mut stream)
}

/// Status, head and body of what arrives on `stream` until the server
/// closes it (an error at the end, such as TLS without close_notify, keeps
/// what came before).
fn read_http_response(stream: &mut impl Read) -> (u16, String, String) {
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {response:?}"));
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_owned(), body.to_owned())
}

/// Status and body of `GET path` sent on `stream` with `Connection:
/// close`.
pub fn http_get_on(stream: &mut (impl Read + Write), path: &str) -> (u16, String) {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    stream.flush().expect("flush");
    let (status, _, body) = read_http_response(stream);
    (status, body)
}
