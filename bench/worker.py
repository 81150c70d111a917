"""One process of a benchmark: a publisher, a subscriber, a relay or a group of idle clients.

`run.py` starts it as `python bench/worker.py ROLE PARAMS_JSON`. The worker sets its role up, prints
one JSON line (`{"ready": true, ...}`), then answers each JSON command line on stdin with one JSON
line on stdout (`{"ok": true, ...}` or `{"error": ..., "traceback": ...}`). It exits on `exit` or
when stdin closes, so it never outlives the benchmark. Logs go to stderr.

A payload starts with the benchmark case number (1 byte) and the publisher's send time (8 bytes,
µs since the epoch), so that a subscriber in another process measures one-way latency without an
echo, and counts only the case it was told to count even while a previous case still drains.
roomlab subscribers take payloads from the SDK's `message` event, as a user would; the baselines
wrap each payload in the same 17-byte `roomlab.protocol.framing` header that roomlab puts on the
wire, and unwrap it with `framing.decode`, so every transport carries the same bytes per message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import sys
import time
import traceback
from array import array
from typing import Any

import aiohttp
from aiohttp import web
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole

import roomlab
import roomlab.net.ice  # noqa: F401  (gathers ICE candidates on 127.0.0.1 only)
from roomlab.client.media_track import PatternSource, RemoteMediaTrack, ToneSource
from roomlab.net.ice import rtc_configuration
from roomlab.protocol import framing

log = logging.getLogger("bench.worker")

#: A publisher stops queueing when its data channel holds more than this many unsent bytes...
HIGH_WATER = 256 * 1024
#: ...and goes on once it is down to this many (the channel's `bufferedamountlow` event).
LOW_WATER = 64 * 1024
#: A publisher also yields to the event loop after this many messages in a row.
YIELD_EVERY = 64
#: Seconds a publisher waits for its buffer to drain before it calls the transport stalled.
STALL_TIMEOUT = 20.0
#: Seconds a subscriber waits for the publisher's data track to show up.
SUBSCRIBE_TIMEOUT = 20.0


STAMP = struct.Struct("!Bq")
"""case number, send time in µs"""


def case_payloads(case: int, size: int) -> Any:
    """A function that makes the next payload of a case, stamped with the time it is called."""
    if size < STAMP.size:
        raise ValueError(f"payloads must be at least {STAMP.size} bytes, got {size}")
    filler = b"x" * (size - STAMP.size)
    case %= 256
    return lambda: STAMP.pack(case, framing.now_us()) + filler


class Receiver:
    """Counts the messages of one case, their bytes, arrival times and one-way latencies."""

    def __init__(self) -> None:
        self.last_any = time.monotonic()
        self.reset(-1)

    def reset(self, case: int) -> None:
        self.case = case % 256 if case >= 0 else -1
        self.count = 0
        self.bytes = 0
        self.first_us = 0
        self.last_us = 0
        self.latencies_us = array("q")

    def on_payload(self, payload: bytes | str) -> None:
        now_us = framing.now_us()
        self.last_any = time.monotonic()
        if isinstance(payload, str) or len(payload) < STAMP.size or payload[0] != self.case:
            return
        _, sent_us = STAMP.unpack_from(payload)
        if self.count == 0:
            self.first_us = now_us
        self.count += 1
        self.bytes += len(payload)
        self.last_us = now_us
        self.latencies_us.append(now_us - sent_us)

    def on_framed(self, message: bytes | str) -> None:
        """A baseline's message: framing header(s) and payload(s), as roomlab puts them on the wire."""
        for frame in framing.decode(message):
            self.on_payload(frame.payload)

    async def collect(self, expect: int, idle: float, deadline: float, latencies: bool = False) -> dict[str, Any]:
        """Wait for `expect` messages, at most `deadline` seconds and until none came for `idle` s."""
        start = time.monotonic()
        seen, progress = self.count, start
        while self.count < expect:
            now = time.monotonic()
            if self.count != seen:
                seen, progress = self.count, now
            if now - progress > idle or now - start > deadline:
                break
            await asyncio.sleep(0.02)
        report: dict[str, Any] = {
            "count": self.count,
            "bytes": self.bytes,
            "first_us": self.first_us,
            "last_us": self.last_us,
        }
        if latencies:
            report["latencies_us"] = self.latencies_us.tolist()
        return report

    async def quiet(self, idle: float, cap: float) -> dict[str, Any]:
        """Wait until no message of any case arrived for `idle` seconds (at most `cap` seconds)."""
        start = time.monotonic()
        while time.monotonic() - self.last_any < idle and time.monotonic() - start < cap:
            await asyncio.sleep(0.05)
        return {"quiet": time.monotonic() - self.last_any >= idle, "waited_s": time.monotonic() - start}


async def drain_channel(channel: RTCDataChannel) -> None:
    """Respect the channel's bufferedAmount: past HIGH_WATER, wait until it is back at LOW_WATER."""
    if channel.bufferedAmount <= HIGH_WATER:
        return
    low = asyncio.get_running_loop().create_future()
    channel.once("bufferedamountlow", lambda: low.done() or low.set_result(None))
    try:
        await asyncio.wait_for(low, STALL_TIMEOUT)
    except TimeoutError:
        raise RuntimeError(
            f"data channel stalled: {channel.bufferedAmount} bytes still buffered after {STALL_TIMEOUT} s"
        ) from None


class Sender:
    """Sends case payloads: paced (for latency) or as fast as the transport takes them (for rate)."""

    async def send(self, payload: bytes) -> None:
        raise NotImplementedError

    async def paced(self, case: int, size: int, rate: float, count: int) -> dict[str, Any]:
        payload = case_payloads(case, size)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(count):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.send(payload())
        return {"sent": count, "seconds": loop.time() - start}

    async def flood(self, case: int, size: int, seconds: float, max_messages: int) -> dict[str, Any]:
        payload = case_payloads(case, size)
        t0_us = framing.now_us()
        end = time.monotonic() + seconds
        sent = 0
        while sent < max_messages and time.monotonic() < end:
            await self.send(payload())
            sent += 1
            if sent % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return {"sent": sent, "t0_us": t0_us, "t1_us": framing.now_us()}


class RoomlabDataSender(Sender):
    """`track.send`, paced on the track's data channel (what `LocalDataTrack.buffered_amount` reads)."""

    def __init__(self, track: roomlab.LocalDataTrack) -> None:
        self.track = track
        assert track._channel is not None
        self.channel = track._channel
        self.channel.bufferedAmountLowThreshold = LOW_WATER

    async def send(self, payload: bytes) -> None:
        self.track.send(payload)
        await drain_channel(self.channel)


class ChannelSender(Sender):
    def __init__(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        self.channel.bufferedAmountLowThreshold = LOW_WATER
        self.seq = 0

    async def send(self, payload: bytes) -> None:
        self.seq += 1
        self.channel.send(framing.encode(payload, self.seq))
        await drain_channel(self.channel)


class WebSocketSender(Sender):
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seq = 0

    async def send(self, payload: bytes) -> None:
        self.seq += 1
        await self.ws.send_bytes(framing.encode(payload, self.seq))  # waits while the socket buffer is full


async def wait_open(channel: RTCDataChannel) -> None:
    if channel.readyState == "open":
        return
    opened = asyncio.get_running_loop().create_future()
    channel.once("open", lambda: opened.done() or opened.set_result(None))
    await asyncio.wait_for(opened, SUBSCRIBE_TIMEOUT)


# roles --------------------------------------------------------------------------------------
class Role:
    """A worker's state and its commands: `do_<command>(**params)` returns the reply."""

    ready: dict[str, Any] = {}

    async def setup(self) -> None:
        pass

    async def close(self) -> None:
        pass


class PublisherRole(Role):
    sender: Sender

    async def do_paced(self, **params: Any) -> dict[str, Any]:
        return await self.sender.paced(**params)

    async def do_flood(self, **params: Any) -> dict[str, Any]:
        return await self.sender.flood(**params)


class SubscriberRole(Role):
    def __init__(self) -> None:
        self.receiver = Receiver()

    async def do_reset(self, case: int) -> dict[str, Any]:
        self.receiver.reset(case)
        return {}

    async def do_collect(self, **params: Any) -> dict[str, Any]:
        return await self.receiver.collect(**params)

    async def do_quiet(self, **params: Any) -> dict[str, Any]:
        return await self.receiver.quiet(**params)


class RoomlabPublisher(PublisherRole):
    def __init__(self, url: str, token: str, room: str) -> None:
        self.url, self.token, self.room_name = url, token, room

    async def setup(self) -> None:
        track = roomlab.LocalDataTrack("bench", ordered=True)
        self.room = await roomlab.connect(self.url, self.token, name=self.room_name, tracks=[track])
        self.sender = RoomlabDataSender(track)

    async def close(self) -> None:
        await self.room.disconnect()


class RoomlabSubscriber(SubscriberRole):
    """Takes payloads from the subscribed track's `message` event, as a user would."""

    def __init__(self, url: str, token: str, room: str, record: bool = True) -> None:
        super().__init__()
        self.url, self.token, self.room_name, self.record = url, token, room, record

    async def setup(self) -> None:
        self.room = await roomlab.connect(self.url, self.token, name=self.room_name, record=self.record)
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
        while (track := self._data_track()) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no subscribed data track within {SUBSCRIBE_TIMEOUT} s")
            await asyncio.sleep(0.05)
        track.on("message", self.receiver.on_payload)

    def _data_track(self) -> roomlab.RemoteDataTrack | None:
        for participant in self.room.participants.values():
            for publication in participant.tracks.values():
                track = publication.track
                if isinstance(track, roomlab.RemoteDataTrack):
                    return track
        return None

    async def close(self) -> None:
        await self.room.disconnect()


class P2PPublisher(PublisherRole):
    """The offering end of a raw aiortc peer connection; run.py carries the SDP between processes."""

    def __init__(self, media: str | None = None) -> None:
        self.media = media

    async def setup(self) -> None:
        self.pc = RTCPeerConnection(rtc_configuration())
        if self.media is None:
            self.channel = self.pc.createDataChannel("bench", ordered=True)
            self.sender = ChannelSender(self.channel)
        else:
            self.pc.addTrack(ToneSource() if self.media == "audio" else PatternSource())
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.ready = {"offer": self.pc.localDescription.sdp}

    async def do_connect(self, answer: str) -> dict[str, Any]:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        if self.media is None:
            await wait_open(self.channel)
        return {}

    async def close(self) -> None:
        await self.pc.close()


class P2PSubscriber(SubscriberRole):
    def __init__(self) -> None:
        super().__init__()
        self.channel: asyncio.Future[RTCDataChannel] | None = None
        self.hole = MediaBlackhole()
        self.frames = 0

    async def setup(self) -> None:
        self.pc = RTCPeerConnection(rtc_configuration())
        self.channel = asyncio.get_running_loop().create_future()
        self.pc.on("datachannel", lambda channel: self.channel.done() or self.channel.set_result(channel))
        self.pc.on("track", self.hole.addTrack)

    async def do_accept(self, offer: str) -> dict[str, Any]:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await self.hole.start()
        return {"answer": self.pc.localDescription.sdp}

    async def do_wait_open(self) -> dict[str, Any]:
        assert self.channel is not None
        channel = await asyncio.wait_for(self.channel, SUBSCRIBE_TIMEOUT)
        await wait_open(channel)
        channel.on("message", self.receiver.on_framed)
        return {}

    async def close(self) -> None:
        await self.hole.stop()
        await self.pc.close()


class WebSocketRelay(Role):
    """What a user might write instead of an SFU: one aiohttp WebSocket endpoint, publishers' messages
    sent on to every subscriber in turn."""

    async def setup(self) -> None:
        self.subscribers: set[web.WebSocketResponse] = set()
        app = web.Application()
        app.router.add_get("/ws", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.ready = {"port": site._server.sockets[0].getsockname()[1]}  # type: ignore[union-attr]

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        publisher = request.query.get("role") == "pub"
        if not publisher:
            self.subscribers.add(ws)
        try:
            async for message in ws:
                if publisher and message.type == aiohttp.WSMsgType.BINARY:
                    for subscriber in list(self.subscribers):
                        await subscriber.send_bytes(message.data)
        finally:
            self.subscribers.discard(ws)
        return ws

    async def do_subscribers(self) -> dict[str, Any]:
        return {"subscribers": len(self.subscribers)}

    async def close(self) -> None:
        await self.runner.cleanup()


async def close_websocket(ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession) -> None:
    """Close, without waiting long for the relay's answer (it may still be busy with a backlog)."""
    try:
        await asyncio.wait_for(ws.close(), 2.0)
    except TimeoutError:
        pass
    await session.close()


class WebSocketPublisher(PublisherRole):
    def __init__(self, url: str) -> None:
        self.url = url

    async def setup(self) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(f"{self.url}?role=pub")
        self.sender = WebSocketSender(self.ws)

    async def close(self) -> None:
        await close_websocket(self.ws, self.session)


class WebSocketSubscriber(SubscriberRole):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    async def setup(self) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(f"{self.url}?role=sub")
        self.reader = asyncio.get_running_loop().create_task(self.read())

    async def read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                self.receiver.on_framed(message.data)

    async def close(self) -> None:
        self.reader.cancel()
        await close_websocket(self.ws, self.session)


class MediaPublisher(Role):
    def __init__(self, url: str, token: str, room: str, kind: str) -> None:
        self.url, self.token, self.room_name, self.kind = url, token, room, kind

    async def setup(self) -> None:
        track = roomlab.LocalAudioTrack.tone() if self.kind == "audio" else roomlab.LocalVideoTrack.pattern()
        self.room = await roomlab.connect(self.url, self.token, name=self.room_name, tracks=[track])

    async def close(self) -> None:
        await self.room.disconnect()


class MediaSubscriber(Role):
    """Subscribes to the room's media; the SDK decodes every frame. Reports frames received."""

    def __init__(self, url: str, token: str, room: str) -> None:
        self.url, self.token, self.room_name = url, token, room

    async def setup(self) -> None:
        self.room = await roomlab.connect(self.url, self.token, name=self.room_name)

    async def do_frames(self) -> dict[str, Any]:
        frames = 0
        for participant in self.room.participants.values():
            for publication in participant.tracks.values():
                track = publication.track
                if isinstance(track, RemoteMediaTrack):
                    frames += track.frames_received
        return {"frames": frames, "time": time.monotonic()}

    async def close(self) -> None:
        await self.room.disconnect()


class IdleParticipants(Role):
    """`count` participants in one room, each publishing one data track, doing nothing else."""

    def __init__(self, url: str, tokens: list[str], room: str) -> None:
        self.url, self.tokens, self.room_name = url, tokens, room
        self.rooms: list[roomlab.Room] = []

    async def setup(self) -> None:
        for i, token in enumerate(self.tokens):
            track = roomlab.LocalDataTrack(f"idle{i}")
            self.rooms.append(await roomlab.connect(self.url, token, name=self.room_name, tracks=[track]))
        self.ready = {"connected": len(self.rooms)}

    async def do_leave(self) -> dict[str, Any]:
        await asyncio.gather(*(room.disconnect() for room in self.rooms))
        self.rooms.clear()
        return {}

    async def close(self) -> None:
        await self.do_leave()


class IdleWebSockets(Role):
    def __init__(self, url: str, count: int) -> None:
        self.url, self.count = url, count

    async def setup(self) -> None:
        self.session = aiohttp.ClientSession()
        self.sockets = [await self.session.ws_connect(f"{self.url}?role=sub") for _ in range(self.count)]
        self.ready = {"connected": len(self.sockets)}

    async def close(self) -> None:
        for ws in self.sockets:
            await ws.close()
        await self.session.close()


class TelemetryBuild(Role):
    """Appends rows like a subscriber's `messages` telemetry to a Table, then builds the frame."""

    async def do_build(self, rows: int) -> dict[str, Any]:
        from roomlab.telemetry.recorder import Table

        table = Table("messages", max_rows=rows + 1)
        now = time.time_ns()
        subscribers = [f"sub{i}" for i in range(10)]
        start = time.perf_counter()
        for i in range(rows):
            sent = now + i * 1_000_000
            table.append(sent + 2_000_000, sent, 2.0, "bench", "pub", subscribers[i % 10], "bench", i, 64, True, None)
        appended = time.perf_counter()
        frame = table.frame()
        built = time.perf_counter()
        return {
            "rows": len(frame),
            "append_s": appended - start,
            "frame_s": built - appended,
            "columns": len(frame.columns),
        }


ROLES: dict[str, type[Role]] = {
    "roomlab-pub": RoomlabPublisher,
    "roomlab-sub": RoomlabSubscriber,
    "p2p-pub": P2PPublisher,
    "p2p-sub": P2PSubscriber,
    "ws-relay": WebSocketRelay,
    "ws-pub": WebSocketPublisher,
    "ws-sub": WebSocketSubscriber,
    "media-pub": MediaPublisher,
    "media-sub": MediaSubscriber,
    "idle-participants": IdleParticipants,
    "idle-websockets": IdleWebSockets,
    "telemetry": TelemetryBuild,
}


# the command loop ---------------------------------------------------------------------------
def reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def failure(exc: BaseException) -> dict[str, Any]:
    return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


async def serve(role: Role) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    try:
        await role.setup()
    except Exception as exc:
        reply(failure(exc))
        return
    reply({"ready": True, **role.ready})
    while line := await stdin.readline():
        command = json.loads(line)
        name = command.pop("cmd")
        if name == "exit":
            break
        try:
            result = await getattr(role, f"do_{name}")(**command)
            reply({"ok": True, **result})
        except Exception as exc:
            reply(failure(exc))
    try:
        await asyncio.wait_for(role.close(), 10)
    except Exception:
        log.exception("closing %s", type(role).__name__)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    role = ROLES[sys.argv[1]](**json.loads(sys.argv[2]))
    asyncio.run(serve(role))


if __name__ == "__main__":
    main()
