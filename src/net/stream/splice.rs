//! The bytes of an RFC 6062 data connection after its ConnectionBind
//! (RFC 6062 §5.4): no more frames, its bytes are spliced with its peer
//! connection's, unframed, both ways.
//!
//! Every read is reported to the core before it is written on
//! ([`Shard::spliced_bytes`]): the core counts it as the allocation's
//! traffic and, while the allocation's or its user's byte rates are
//! spent, holds it back. A stream is slowed, never cut: nothing more is
//! read from that side meanwhile, so TCP's flow control slows its sender
//! instead of the relay dropping bytes.
//!
//! Invariants:
//! * a read is at most [`MAX_SPLICE_CHUNK`] bytes, and is written on
//!   whole once counted, never dropped;
//! * the end of one side is passed on as a half-close, and the other
//!   direction goes on until it ends too, either fails, or the core closes
//!   the pair (its close signal in the [`Splice`]).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::conn::Splice;
use crate::net::shard::Shard;
use crate::proto::addr::ConnectionId;
use crate::proto::server::{SpliceDirection, SpliceVerdict, MAX_SPLICE_CHUNK};

/// Copies bytes both ways between a data connection and its peer
/// connection until both ends are done, either fails, or the core closes
/// the pair. Every read is reported to the core before it is written on
/// (see [`pump`]).
pub(super) async fn splice_streams<S: AsyncRead + AsyncWrite + Unpin>(
    shard: &Shard,
    data: S,
    splice: Splice,
    leftover: Vec<u8>,
) -> &'static str {
    let Splice { id, mut peer, close } = splice;
    let (mut data_in, mut data_out) = tokio::io::split(data);
    let (mut peer_in, mut peer_out) = peer.split();
    // What followed the ConnectionBind in the same read goes first.
    let to_peer = pump(
        shard,
        id,
        SpliceDirection::ToPeer,
        &leftover,
        &mut data_in,
        &mut peer_out,
    );
    let to_client = pump(shard, id, SpliceDirection::ToClient, &[], &mut peer_in, &mut data_out);
    tokio::select! {
        result = async { tokio::try_join!(to_peer, to_client) } => match result {
            Ok(_) => "splice ended",
            Err(why) => why,
        },
        _ = close.notified() => "peer connection closed",
    }
}

/// One direction of a splice: `first`, then whatever `from` yields, in
/// reads of at most [`MAX_SPLICE_CHUNK`]. The core counts each read and
/// may hold it back for the byte rates; meanwhile nothing more is read
/// from that side, so TCP's flow control slows its sender instead of the
/// relay dropping bytes. At the end of `from`, `to` is shut down (the
/// half-close crosses the splice) and the other direction goes on.
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    shard: &Shard,
    id: ConnectionId,
    direction: SpliceDirection,
    first: &[u8],
    from: &mut R,
    to: &mut W,
) -> Result<(), &'static str> {
    for chunk in first.chunks(MAX_SPLICE_CHUNK) {
        forward(shard, id, direction, chunk, to).await?;
    }
    let mut buf = vec![0u8; MAX_SPLICE_CHUNK];
    loop {
        let n = from.read(&mut buf).await.map_err(|_| "splice read error")?;
        if n == 0 {
            // The other side may have gone already; its end is reported
            // by its own direction.
            let _ = to.shutdown().await;
            return Ok(());
        }
        forward(shard, id, direction, &buf[..n], to).await?;
    }
}

/// Writes `bytes` on once the core has counted them.
async fn forward<W: AsyncWrite + Unpin>(
    shard: &Shard,
    id: ConnectionId,
    direction: SpliceDirection,
    bytes: &[u8],
    to: &mut W,
) -> Result<(), &'static str> {
    loop {
        match shard.spliced_bytes(id, direction, bytes.len()) {
            SpliceVerdict::Forward => break,
            SpliceVerdict::WaitUntil(at) => tokio::time::sleep_until(at.into()).await,
            SpliceVerdict::Close => return Err("peer connection closed"),
        }
    }
    to.write_all(bytes).await.map_err(|_| "splice write error")?;
    // TLS holds what it encrypts until flushed.
    to.flush().await.map_err(|_| "splice write error")
}
