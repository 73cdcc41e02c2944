#!/usr/bin/env python3
"""A relay-only WebRTC call between two aiortc peers through turnpike.

Usage: aiortc_call.py <ws-url> <room>

Peer A connects to the signaling endpoint and joins <room>; peer B connects,
joins (and finds A in its `peers`), and, being the newcomer, makes the offer.
Both peers configure their RTCPeerConnection from the `iceServers` of their
own `joined` message with iceTransportPolicy "relay", so the only candidates
are TURN relay candidates and every packet of the call crosses the server.

Over the call:
  * a data channel carries MESSAGES_EACH_WAY messages each way, checked
    for content and order;
  * a synthetic video track goes B -> A and a synthetic audio track A -> B,
    and each receiver must decode at least VIDEO_FRAMES / AUDIO_FRAMES frames;
  * on both sides, the nominated ICE candidate pair of every ICE transport
    in use must be relay <-> relay.
Then B closes its signaling socket and A must get `peer-left` for B within
PEER_LEFT_TIMEOUT seconds.

On success one JSON summary line is printed to stdout and the exit status is
0. On failure a message starting with "aiortc_call: FAIL:" goes to stderr and
the exit status is 1 (2 for bad usage or missing modules). Progress and
library logs go to stderr; set AIORTC_CALL_DEBUG=1 for aiortc/aioice debug
logs. Every wait is bounded, and the whole call by OVERALL_TIMEOUT.
"""

import asyncio
import json
import logging
import os
import re
import sys
import time

try:
    import websockets
    from websockets.asyncio.client import connect as ws_connect
    from aiortc import (
        RTCConfiguration,
        RTCIceServer,
        RTCPeerConnection,
        RTCSessionDescription,
    )
    from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack
    from aiortc.rtcconfiguration import RTCIceTransportPolicy
    from av import VideoFrame
except ImportError as exc:  # pragma: no cover - depends on the environment
    print(
        f"aiortc_call: FAIL: cannot import a dependency ({exc}); "
        "run `pip install -r tests/python/requirements.txt`",
        file=sys.stderr,
    )
    sys.exit(2)

OVERALL_TIMEOUT = 60.0
STEP_TIMEOUT = 15.0
PEER_LEFT_TIMEOUT = 5.0
CLEANUP_TIMEOUT = 5.0

MESSAGES_EACH_WAY = 20
VIDEO_FRAMES = 30
AUDIO_FRAMES = 50
VIDEO_WIDTH, VIDEO_HEIGHT = 160, 120

log = logging.getLogger("aiortc_call")
START = time.monotonic()


class CallError(Exception):
    """A check of the call failed; the message says which."""


def step(msg: str) -> None:
    print(f"[{time.monotonic() - START:6.2f}s] {msg}", file=sys.stderr, flush=True)


async def bounded(aw, timeout: float, what: str):
    """Awaits `aw` for at most `timeout` seconds, failing with `what`."""
    try:
        return await asyncio.wait_for(aw, timeout)
    except asyncio.TimeoutError:
        raise CallError(f"timed out after {timeout:g} s waiting for {what}") from None


class Signaling:
    """One WebSocket signaling session: a reader task queues every message."""

    def __init__(self, name: str, ws) -> None:
        self.name = name
        self.ws = ws
        self.queue: asyncio.Queue = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())
        self.id = None

    @classmethod
    async def connect(cls, name: str, url: str) -> "Signaling":
        try:
            ws = await bounded(
                ws_connect(url, open_timeout=10, close_timeout=2, max_size=2**20),
                STEP_TIMEOUT,
                f"{name}'s WebSocket connection to {url}",
            )
        except (OSError, websockets.InvalidHandshake) as exc:
            raise CallError(f"{name}: cannot open the signaling WebSocket {url}: {exc!r}") from None
        return cls(name, ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    msg = {"type": "<not json>", "raw": str(raw)[:200]}
                log.debug("%s <- %s", self.name, str(raw)[:300])
                await self.queue.put(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            await self.queue.put(None)

    async def send(self, msg: dict) -> None:
        log.debug("%s -> %s", self.name, json.dumps(msg)[:300])
        await bounded(self.ws.send(json.dumps(msg)), STEP_TIMEOUT, f"{self.name} to send {msg['type']}")

    async def expect(self, kind: str, timeout: float = STEP_TIMEOUT, **fields) -> dict:
        """The next message of type `kind` (with `fields`), skipping pongs."""

        async def wait() -> dict:
            while True:
                msg = await self.queue.get()
                if msg is None:
                    raise CallError(f"{self.name}: signaling socket closed while waiting for {kind!r}")
                if msg.get("type") == "error":
                    raise CallError(f"{self.name}: server sent an error while waiting for {kind!r}: {msg}")
                if msg.get("type") == kind and all(msg.get(k) == v for k, v in fields.items()):
                    return msg
                if msg.get("type") != "pong":
                    raise CallError(f"{self.name}: expected {kind!r} {fields or ''}, got {msg}")

        return await bounded(wait(), timeout, f"{self.name} to receive {kind!r} {fields or ''}")

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.ws.close(), CLEANUP_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - cleanup must not mask the real error
            log.warning("%s: closing the WebSocket failed: %r", self.name, exc)
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)


# aiortc (connection_kwargs in aiortc/rtcicetransport.py) uses one STUN URL
# and only the *first* TURN URL it accepts: `turn:` with transport udp or tcp,
# or `turns:` with transport tcp; aioice then opens a single allocation per
# ICE transport on it. turnpike lists turn:?transport=udp, turn:?transport=tcp
# and turns:?transport=tcp (in that order). `turns:` would be dialled with
# Python's default TLS context, which does not trust the test server's
# throwaway CA, and which URL wins should not depend on the server's list
# order, so the entries are passed through with their credentials but with
# the URLs narrowed to STUN and TURN over UDP (the transport under test
# here; TURN over TCP/TLS has its own tests).
TURN_UDP = re.compile(r"^turn:[^?]+\?transport=udp$")


def ice_servers_from(joined: dict, who: str) -> list:
    servers = []
    for entry in joined.get("iceServers") or []:
        urls = entry.get("urls")
        urls = [urls] if isinstance(urls, str) else list(urls or [])
        keep = [u for u in urls if u.startswith("stun:") or TURN_UDP.match(u)]
        if keep:
            servers.append(
                RTCIceServer(urls=keep, username=entry.get("username"), credential=entry.get("credential"))
            )
    turn = [s for s in servers if any(u.startswith("turn:") for u in s.urls)]
    if not turn:
        raise CallError(f"{who}: joined message has no turn:...?transport=udp URL: {joined.get('iceServers')}")
    if not turn[0].username or not turn[0].credential:
        raise CallError(f"{who}: the TURN entry has no username/credential: {joined.get('iceServers')}")
    return servers


def new_peer_connection(joined: dict, who: str) -> RTCPeerConnection:
    config = RTCConfiguration(
        iceServers=ice_servers_from(joined, who),
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
    )
    return RTCPeerConnection(configuration=config)


class PatternVideoTrack(VideoStreamTrack):
    """A small synthetic video: a moving gradient, VIDEO_FRAMES per second."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=VIDEO_WIDTH, height=VIDEO_HEIGHT, format="yuv420p")
        shift = self.count % 256
        luma = bytes((x + shift) % 256 for x in range(VIDEO_WIDTH)) * VIDEO_HEIGHT
        frame.planes[0].update(luma[: frame.planes[0].buffer_size])
        for plane in frame.planes[1:]:
            plane.update(bytes([128]) * plane.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        self.count += 1
        return frame


def selected_pairs(pc: RTCPeerConnection) -> list:
    """The nominated candidate pair of every distinct ICE transport in use.

    aiortc has no getSelectedCandidatePair(); the aioice Connection behind an
    RTCIceTransport (`_connection`) keeps the nominated CandidatePair per
    component in `_nominated`; a pair's `local_candidate` and
    `remote_candidate` are aioice Candidates with `type` ('host', 'srflx',
    'relay', ...), `host` and `port`.
    """
    dtls = []
    for transceiver in pc.getTransceivers():
        dtls.append(transceiver.receiver.transport)
    if pc.sctp is not None:
        dtls.append(pc.sctp.transport)
    seen, pairs = set(), []
    for d in dtls:
        ice = d.transport
        if id(ice) in seen:
            continue
        seen.add(id(ice))
        nominated = getattr(ice._connection, "_nominated", None)
        if nominated is None:
            raise CallError("aioice Connection has no _nominated attribute (aioice internals changed?)")
        if not nominated:
            raise CallError(f"an ICE transport in state {ice.state!r} has no nominated pair")
        for component, pair in sorted(nominated.items()):
            local, remote = pair.local_candidate, pair.remote_candidate
            pairs.append(
                {
                    "component": component,
                    "local_type": local.type,
                    "remote_type": remote.type,
                    "local": f"{local.host}:{local.port}",
                    "remote": f"{remote.host}:{remote.port}",
                }
            )
    return pairs


async def read_frames(track, wanted: int, who: str, check=None) -> int:
    count = 0
    while count < wanted:
        try:
            frame = await track.recv()
        except MediaStreamError:
            raise CallError(f"{who}: remote {track.kind} track ended after {count} frames") from None
        if check is not None:
            check(frame)
        count += 1
    return count


def check_video_frame(frame) -> None:
    if (frame.width, frame.height) != (VIDEO_WIDTH, VIDEO_HEIGHT):
        raise CallError(f"A: received a {frame.width}x{frame.height} video frame, sent {VIDEO_WIDTH}x{VIDEO_HEIGHT}")


def expected_messages(sender: str, receiver: str) -> list:
    # Sizes grow to ~2 KB, so some messages take more than one relayed packet
    # once SCTP/DTLS framing is added.
    return [
        f"{sender}->{receiver} #{i:02d} " + "0123456789abcdef"[i % 16] * (i * 100)
        for i in range(MESSAGES_EACH_WAY)
    ]


class Inbox:
    """Collects data-channel messages until `expected` count arrived."""

    def __init__(self, expected: int) -> None:
        self.messages = []
        self.expected = expected
        self.done = asyncio.Event()

    def on_message(self, message) -> None:
        self.messages.append(message)
        if len(self.messages) >= self.expected:
            self.done.set()


async def run(url: str, room: str) -> dict:
    a = b = pc_a = pc_b = None
    tasks = []
    try:
        # --- signaling: A joins, then B joins and sees A -----------------
        a = await Signaling.connect("A", url)
        await a.send({"type": "join", "room": room, "name": "aiortc-A"})
        joined_a = await a.expect("joined")
        a.id = joined_a["id"]
        if joined_a.get("peers"):
            raise CallError(f"A: room {room!r} was not empty: {joined_a['peers']}")
        step(f"A joined room {room!r} as {a.id}")

        b = await Signaling.connect("B", url)
        await b.send({"type": "join", "room": room, "name": "aiortc-B"})
        joined_b = await b.expect("joined")
        b.id = joined_b["id"]
        if [p.get("id") for p in joined_b.get("peers", [])] != [a.id]:
            raise CallError(f"B: expected peers [{a.id}], got {joined_b.get('peers')}")
        step(f"B joined as {b.id}, sees A")
        await a.expect("peer-joined", id=b.id)
        step("A got peer-joined for B")

        # --- peer connections, relay only ---------------------------------
        pc_a = new_peer_connection(joined_a, "A")
        pc_b = new_peer_connection(joined_b, "B")
        step(f"A uses iceServers {[s.urls for s in ice_servers_from(joined_a, 'A')]}")

        inbox_a = Inbox(MESSAGES_EACH_WAY)  # what A receives from B
        inbox_b = Inbox(MESSAGES_EACH_WAY)  # what B receives from A
        channel_a_fut = asyncio.get_running_loop().create_future()
        video_at_a = asyncio.get_running_loop().create_future()
        audio_at_b = asyncio.get_running_loop().create_future()

        @pc_a.on("datachannel")
        def on_datachannel(channel) -> None:
            channel.on("message", inbox_a.on_message)
            if not channel_a_fut.done():
                channel_a_fut.set_result(channel)

        @pc_a.on("track")
        def on_track_a(track) -> None:
            if track.kind == "video" and not video_at_a.done():
                video_at_a.set_result(track)

        @pc_b.on("track")
        def on_track_b(track) -> None:
            if track.kind == "audio" and not audio_at_b.done():
                audio_at_b.set_result(track)

        # B, the newcomer, offers: video B -> A, audio A -> B, a data channel.
        channel_b = pc_b.createDataChannel("chat")
        channel_b.on("message", inbox_b.on_message)
        channel_b_open = asyncio.Event()
        channel_b.on("open", channel_b_open.set)
        pc_b.addTransceiver(PatternVideoTrack(), direction="sendonly")
        pc_b.addTransceiver("audio", direction="recvonly")

        # aiortc gathers all candidates inside setLocalDescription, so the
        # SDP carries them and no trickling is needed.
        await bounded(pc_b.setLocalDescription(await pc_b.createOffer()), STEP_TIMEOUT, "B to gather candidates")
        offer = pc_b.localDescription
        if " typ relay" not in offer.sdp:
            raise CallError(f"B's offer has no relay candidate (TURN allocation failed?):\n{offer.sdp}")
        if re.search(r" typ (host|srflx|prflx)", offer.sdp):
            raise CallError(f"B's offer has non-relay candidates despite the relay policy:\n{offer.sdp}")
        await b.send({"type": "signal", "to": a.id, "data": {"type": offer.type, "sdp": offer.sdp}})
        step("B sent its offer")

        signal = await a.expect("signal", **{"from": b.id})
        data = signal.get("data") or {}
        if data.get("type") != "offer" or data.get("sdp") != offer.sdp:
            raise CallError("A: the relayed offer differs from what B sent")
        await bounded(
            pc_a.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="offer")),
            STEP_TIMEOUT,
            "A to apply the offer",
        )
        pc_a.addTrack(AudioStreamTrack())  # takes the offered recvonly audio m-line
        await bounded(pc_a.setLocalDescription(await pc_a.createAnswer()), STEP_TIMEOUT, "A to gather candidates")
        answer = pc_a.localDescription
        if " typ relay" not in answer.sdp:
            raise CallError(f"A's answer has no relay candidate (TURN allocation failed?):\n{answer.sdp}")
        await a.send({"type": "signal", "to": b.id, "data": {"type": answer.type, "sdp": answer.sdp}})
        step("A sent its answer")

        signal = await b.expect("signal", **{"from": a.id})
        data = signal.get("data") or {}
        if data.get("type") != "answer" or data.get("sdp") != answer.sdp:
            raise CallError("B: the relayed answer differs from what A sent")
        await bounded(
            pc_b.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="answer")),
            STEP_TIMEOUT,
            "B to apply the answer",
        )
        step("B applied the answer; waiting for the data channel")

        # --- data both ways ------------------------------------------------
        await bounded(channel_b_open.wait(), STEP_TIMEOUT, "B's data channel to open (ICE/DTLS/SCTP over the relay)")
        channel_a = await bounded(channel_a_fut, STEP_TIMEOUT, "A to get B's data channel")
        step(f"data channel open (ICE A={pc_a.iceConnectionState}, B={pc_b.iceConnectionState})")
        for text in expected_messages("B", "A"):
            channel_b.send(text)
        for text in expected_messages("A", "B"):
            channel_a.send(text)
        await bounded(inbox_a.done.wait(), STEP_TIMEOUT, f"A to receive {MESSAGES_EACH_WAY} messages from B")
        await bounded(inbox_b.done.wait(), STEP_TIMEOUT, f"B to receive {MESSAGES_EACH_WAY} messages from A")
        if inbox_a.messages != expected_messages("B", "A"):
            raise CallError(f"A received other messages than B sent: {[m[:20] for m in inbox_a.messages]}")
        if inbox_b.messages != expected_messages("A", "B"):
            raise CallError(f"B received other messages than A sent: {[m[:20] for m in inbox_b.messages]}")
        step(f"{MESSAGES_EACH_WAY} messages each way received intact")

        # --- media both ways ------------------------------------------------
        video_track = await bounded(video_at_a, STEP_TIMEOUT, "A to get B's video track")
        audio_track = await bounded(audio_at_b, STEP_TIMEOUT, "B to get A's audio track")
        tasks = [
            asyncio.create_task(read_frames(video_track, VIDEO_FRAMES, "A", check_video_frame)),
            asyncio.create_task(read_frames(audio_track, AUDIO_FRAMES, "B")),
        ]
        video_frames, audio_frames = await bounded(
            asyncio.gather(*tasks),
            STEP_TIMEOUT,
            f"A to decode {VIDEO_FRAMES} video frames and B {AUDIO_FRAMES} audio frames",
        )
        step(f"A decoded {video_frames} video frames, B {audio_frames} audio frames")

        # --- the pairs in use are relay <-> relay -----------------------------
        pairs_a, pairs_b = selected_pairs(pc_a), selected_pairs(pc_b)
        for who, pairs in (("A", pairs_a), ("B", pairs_b)):
            for pair in pairs:
                if pair["local_type"] != "relay" or pair["remote_type"] != "relay":
                    raise CallError(f"{who}: selected pair is not relay <-> relay: {pair}")
        step(f"selected pairs A: {pairs_a}, B: {pairs_b}")

        # --- B hangs up its signaling; A is told -----------------------------
        left_at = time.monotonic()
        await b.close()
        await a.expect("peer-left", timeout=PEER_LEFT_TIMEOUT, id=b.id)
        peer_left_s = time.monotonic() - left_at
        step(f"A got peer-left for B after {peer_left_s:.3f} s")

        return {
            "result": "ok",
            "room": room,
            "a_id": a.id,
            "b_id": b.id,
            "messages_a_to_b": len(inbox_b.messages),
            "messages_b_to_a": len(inbox_a.messages),
            "video_frames_received_by_a": video_frames,
            "audio_frames_received_by_b": audio_frames,
            "a_local_candidate_type": pairs_a[0]["local_type"],
            "a_remote_candidate_type": pairs_a[0]["remote_type"],
            "b_local_candidate_type": pairs_b[0]["local_type"],
            "b_remote_candidate_type": pairs_b[0]["remote_type"],
            "a_selected_pairs": pairs_a,
            "b_selected_pairs": pairs_b,
            "peer_left_after_s": round(peer_left_s, 3),
        }
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Closing a peer connection deletes its TURN allocations (a Refresh
        # with LIFETIME 0), so the server logs their packet counts.
        for pc in (pc_b, pc_a):
            if pc is not None:
                try:
                    await asyncio.wait_for(pc.close(), CLEANUP_TIMEOUT)
                except Exception as exc:  # noqa: BLE001 - cleanup must not mask the real error
                    log.warning("closing a peer connection failed: %r", exc)
        for sig in (b, a):
            if sig is not None:
                await sig.close()


def main() -> int:
    if len(sys.argv) != 3:
        print(f"usage: {sys.argv[0]} <ws-url> <room>", file=sys.stderr)
        return 2
    url, room = sys.argv[1], sys.argv[2]
    debug = os.environ.get("AIORTC_CALL_DEBUG") not in (None, "", "0")
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        # aioice logs every check at INFO; keep the output readable.
        logging.getLogger("aioice").setLevel(logging.WARNING)
    try:
        summary = asyncio.run(asyncio.wait_for(run(url, room), OVERALL_TIMEOUT))
    except asyncio.TimeoutError:
        print(f"aiortc_call: FAIL: the call did not finish within {OVERALL_TIMEOUT:g} s", file=sys.stderr)
        return 1
    except CallError as exc:
        print(f"aiortc_call: FAIL: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - report anything else clearly too
        logging.exception("unexpected error")
        print(f"aiortc_call: FAIL: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    summary["elapsed_s"] = round(time.monotonic() - START, 3)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
