//! Packets through the relay and back: the probes, the local peer that
//! echoes them, and the relay ↔ relay echo used when that peer cannot be
//! reached.
//!
//! A probe is `MAGIC`, a run id of 8 random bytes and a sequence number,
//! so that an answer is matched to its probe whatever else arrives, and
//! the peers echo nothing but probes (they are no open reflector). Every
//! wait here has the caller's bound; the echoing tasks end when their
//! owner is dropped or stopped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::session::{Session, StepError};
use crate::process::random::random_bytes;

const MAGIC: &[u8; 8] = b"tpselfts";
const PROBE_LEN: usize = 8 + 8 + 4;
/// Most probes a peer echoes: far above any run's count, a bound on what
/// it can be made to send.
const MAX_ECHOES: usize = 10_000;

fn is_probe(payload: &[u8]) -> bool {
    payload.len() == PROBE_LEN && payload.starts_with(MAGIC)
}

/// What came back of `sent` probes, and each one's round trip.
#[derive(Clone, Debug, PartialEq)]
pub struct Burst {
    pub sent: usize,
    pub rtts: Vec<Duration>,
}

impl Burst {
    pub fn received(&self) -> usize {
        self.rtts.len()
    }

    pub fn loss_percent(&self) -> f64 {
        match self.sent {
            0 => 0.0,
            sent => 100.0 * (sent - self.received()) as f64 / sent as f64,
        }
    }

    /// The median round trip (the mean of the middle two for an even
    /// count); `None` without answers.
    pub fn median(&self) -> Option<Duration> {
        let mut rtts = self.rtts.clone();
        rtts.sort();
        let n = rtts.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(rtts[n / 2]),
            _ => Some((rtts[n / 2 - 1] + rtts[n / 2]) / 2),
        }
    }

    pub fn min(&self) -> Option<Duration> {
        self.rtts.iter().min().copied()
    }

    pub fn max(&self) -> Option<Duration> {
        self.rtts.iter().max().copied()
    }
}

/// How a burst is sent and how long its answers are waited for.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub count: usize,
    pub interval: Duration,
    /// How long after the last probe answers are still counted.
    pub wait: Duration,
    /// Stop at the first answer (the echo check: later probes are
    /// retransmissions).
    pub first_only: bool,
}

/// Sends `pace.count` probes to `to` through `session`'s relay and
/// counts the echoes, within `count × interval + wait`.
pub async fn burst(session: &mut Session, to: SocketAddr, pace: Pace) -> Result<Burst, StepError> {
    let run: [u8; 8] = random_bytes();
    let mut sent_at: Vec<Instant> = Vec::with_capacity(pace.count);
    let mut rtts: Vec<Option<Duration>> = vec![None; pace.count];
    let mut next_send = Instant::now();
    loop {
        let now = Instant::now();
        if sent_at.len() < pace.count && now >= next_send {
            let mut probe = Vec::with_capacity(PROBE_LEN);
            probe.extend_from_slice(MAGIC);
            probe.extend_from_slice(&run);
            probe.extend_from_slice(&(sent_at.len() as u32).to_be_bytes());
            session.send_to(to, &probe).await?;
            sent_at.push(now);
            next_send = now + pace.interval;
        }
        let received = rtts.iter().flatten().count();
        let all_sent = sent_at.len() == pace.count;
        let wake = match (all_sent, sent_at.last()) {
            (true, Some(last)) => *last + pace.wait,
            _ => next_send,
        };
        if (pace.first_only && received > 0) || (all_sent && (received == pace.count || now >= wake)) {
            break;
        }
        if let Ok(arrival) = tokio::time::timeout_at(wake, session.next_arrival()).await {
            let arrival = arrival?;
            let seq = match arrival.payload.get(8..) {
                Some(rest) if is_probe(&arrival.payload) && rest.starts_with(&run) => {
                    u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize
                }
                _ => continue,
            };
            if let (Some(slot @ None), Some(at)) = (rtts.get_mut(seq), sent_at.get(seq)) {
                *slot = Some(arrival.at.saturating_duration_since(*at));
            }
        }
    }
    Ok(Burst {
        sent: sent_at.len(),
        rtts: rtts.into_iter().flatten().collect(),
    })
}

/// A UDP socket of this machine that echoes probes to whoever sent them.
pub struct EchoPeer {
    port: u16,
    task: JoinHandle<()>,
}

impl EchoPeer {
    /// Listens on every address of `family_of`'s family, on a free port.
    pub async fn start(family_of: IpAddr) -> std::io::Result<EchoPeer> {
        let any = match family_of {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
        let port = socket.local_addr()?.port();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            for _ in 0..MAX_ECHOES {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                if is_probe(&buf[..n]) {
                    let _ = socket.send_to(&buf[..n], from).await;
                }
            }
        });
        Ok(EchoPeer { port, task })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A second allocation echoing probes back to the first one's relayed
/// address, until [`RelayEcho::stop`] hands its session back.
pub struct RelayEcho {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Session>,
}

impl RelayEcho {
    pub fn start(mut session: Session, back_to: SocketAddr) -> RelayEcho {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            for _ in 0..MAX_ECHOES {
                let arrival = tokio::select! {
                    _ = &mut stopped => break,
                    arrival = session.next_arrival() => arrival,
                };
                match arrival {
                    Ok(arrival) if is_probe(&arrival.payload) => {
                        if session.send_to(back_to, &arrival.payload).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            session
        });
        RelayEcho { stop, task }
    }

    /// Stops echoing; the session, unless its task ended abnormally.
    pub async fn stop(self) -> Option<Session> {
        let _ = self.stop.send(());
        self.task.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_median_of_a_burst() {
        let ms = Duration::from_millis;
        let burst = Burst {
            sent: 4,
            rtts: vec![ms(4), ms(1), ms(3)],
        };
        assert_eq!(burst.received(), 3);
        assert_eq!(burst.loss_percent(), 25.0);
        assert_eq!(burst.median(), Some(ms(3)));
        assert_eq!((burst.min(), burst.max()), (Some(ms(1)), Some(ms(4))));
        let even = Burst {
            sent: 2,
            rtts: vec![ms(2), ms(4)],
        };
        assert_eq!(even.median(), Some(ms(3)));
        let none = Burst { sent: 0, rtts: vec![] };
        assert_eq!((none.loss_percent(), none.median()), (0.0, None));
    }

    #[tokio::test]
    async fn the_peer_echoes_probes_only() {
        let peer = EchoPeer::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(("127.0.0.1", peer.port())).await.unwrap();
        let mut probe = MAGIC.to_vec();
        probe.extend_from_slice(&[7; 12]);
        client.send(b"not a probe at all").await.unwrap();
        client.send(&probe).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], &probe[..], "the first answer is the probe's echo");
    }
}
