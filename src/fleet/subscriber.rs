//! The link's subscription connection: its own TCP or Unix socket to
//! Redis, read through [`PushReader`] so that a message's size is known
//! before it is read, and one over the bound is skipped without being
//! held ([`Payload::TooLong`]).
//!
//! The command connection stays a `redis` crate connection: everything it
//! reads answers the fleet's own Lua scripts, which bound what they
//! return. What arrives here is whatever anyone allowed to `PUBLISH`
//! chose to send.
//!
//! The address, user and password come from the same `fleet.redis_url`,
//! parsed by the `redis` crate. No `SELECT`: Redis channels belong to no
//! database. The caller bounds every step in time (`link::within`).

use std::pin::Pin;

use redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::link::FleetError;
use super::push_reader::{Push, PushReader};

/// Bytes read from the socket at a time.
const READ_BUFFER: usize = 16 * 1024;

trait Socket: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> Socket for T {}

/// A connection in subscribed mode, or on its way there.
pub struct Subscriber {
    socket: Pin<Box<dyn Socket>>,
    reader: PushReader,
    buffer: Box<[u8]>,
    /// `buffer[start..end]` is read from the socket and not yet parsed.
    start: usize,
    end: usize,
}

impl Subscriber {
    /// Connects to the Redis of `info` and authenticates, keeping
    /// payloads of up to `max_payload` bytes.
    pub async fn connect(info: &ConnectionInfo, max_payload: usize) -> Result<Subscriber, FleetError> {
        let socket: Pin<Box<dyn Socket>> = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let stream = TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Box::pin(stream)
            }
            ConnectionAddr::Unix(path) => Box::pin(UnixStream::connect(path).await?),
            // `redis` is built without TLS, so it refuses a `rediss://`
            // URL before this is reached.
            _ => return Err(FleetError::Unsupported),
        };
        let mut subscriber = Subscriber {
            socket,
            reader: PushReader::new(max_payload),
            buffer: vec![0; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = vec!["AUTH"];
            auth.extend(settings.username());
            auth.push(password);
            subscriber.send(&auth).await?;
            if let Push::Refused(reason) = subscriber.next().await? {
                return Err(FleetError::refused(&reason));
            }
        }
        Ok(subscriber)
    }

    /// Sends `SUBSCRIBE` for `channels`; each is confirmed by a
    /// [`Push::Subscribed`] from [`Self::next`].
    pub async fn subscribe(&mut self, channels: &[&str]) -> Result<(), FleetError> {
        let mut command = vec!["SUBSCRIBE"];
        command.extend_from_slice(channels);
        self.send(&command).await
    }

    /// The next thing Redis says; [`FleetError::SubscriptionEnded`] when it
    /// closes the connection.
    pub async fn next(&mut self) -> Result<Push, FleetError> {
        loop {
            if self.start < self.end {
                let (read, value) = self.reader.read(&self.buffer[self.start..self.end])?;
                self.start += read;
                if let Some(value) = value {
                    return Ok(Push::of(value));
                }
            }
            // Everything read is parsed: empty the buffer before the
            // await, so that a `next` dropped there (the link's select)
            // leaves nothing to parse twice.
            (self.start, self.end) = (0, 0);
            self.end = self.socket.read(&mut self.buffer).await?;
            if self.end == 0 {
                return Err(FleetError::SubscriptionEnded);
            }
        }
    }

    /// Writes `words` as a RESP array of bulk strings.
    async fn send(&mut self, words: &[&str]) -> Result<(), FleetError> {
        let mut command = format!("*{}\r\n", words.len()).into_bytes();
        for word in words {
            command.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
            command.extend_from_slice(word.as_bytes());
            command.extend_from_slice(b"\r\n");
        }
        self.socket.write_all(&command).await?;
        Ok(())
    }
}
