"""Data tracks (Twilio's DataTrack API): unidirectional messages from one publisher to every
subscriber, with the reliability options of a WebRTC data channel on every hop.

Each message carries the publisher's sequence number and send time (SPEC §6); subscribers see
only the payload in `message` events, and the framing feeds telemetry.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiortc import RTCDataChannel

from ..errors import RoomError
from ..protocol import framing
from ..protocol.batching import RELIABLE_BUFFER_BOUND, Batcher
from ..telemetry.sampling import ChannelCounters
from .events import EventEmitter

if TYPE_CHECKING:
    from .participant import RemoteParticipant
    from .room import Room

UINT16_MAX = 65_535
#: Twilio's recommended largest payload; larger ones work up to the negotiated maximum.
RECOMMENDED_MAX_PAYLOAD = 16 * 1024
#: `drain()` waits while more than the high-water mark is queued to send, until no more than the
#: low-water mark is (as asyncio's StreamWriter.drain()). A sender that drains after each send
#: never has more than the high mark and one message queued: far from the 4 MiB refusal.
DRAIN_HIGH_WATER = 1024 * 1024
DRAIN_LOW_WATER = 256 * 1024


def check_write_buffer_limits(high: int, low: int) -> tuple[int, int]:
    for name, value in (("high", high), ("low", low)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= RELIABLE_BUFFER_BOUND:
            raise ValueError(f"{name} must be a number of bytes from 0 to {RELIABLE_BUFFER_BOUND}, got {value!r}")
    if low > high:
        raise ValueError(f"low ({low}) must not be above high ({high})")
    return high, low


async def drain(
    outlet: Callable[[], tuple[RTCDataChannel, Batcher] | None],
    queued: Callable[[], int],
    high: int,
    low: int,
    room: Room,
    uncongested: asyncio.Event | None = None,
) -> None:
    """Wait, if more than `high` bytes are `queued()` (or the server says the track is congested:
    `uncongested` clear), until no more than `low` are on the channel `outlet()` gives (None while
    the room reconnects: then until it is back) and the track is not congested; raise the room's
    RoomError if it disconnects meanwhile."""
    if queued() <= high and (uncongested is None or uncongested.is_set()):
        return
    while True:
        if room._ended.done():
            raise room._ended.result()
        current = outlet()
        if current is None:
            await _first(room._ended, room._restored.wait())
            continue
        channel, batcher = current
        batcher.flush()  # what this turn added counts too
        if channel.bufferedAmount > low:
            channel.bufferedAmountLowThreshold = low
            await _first(room._ended, _event(channel, "bufferedamountlow", "close"))
        elif uncongested is not None and not uncongested.is_set():
            await _first(room._ended, uncongested.wait())
        else:
            return


async def _event(channel: RTCDataChannel, *names: str) -> None:
    """The next of these events of `channel`."""
    happened = asyncio.get_running_loop().create_future()

    def wake(*_: Any) -> None:
        if not happened.done():
            happened.set_result(None)

    for name in names:
        channel.on(name, wake)
    try:
        await happened
    finally:
        for name in names:
            channel.remove_listener(name, wake)


async def _first(*awaitables: Any) -> None:
    """Wait until one of them is done (the others are cancelled, futures left alone)."""
    waiting = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task, given in zip(waiting, awaitables, strict=True):
            if task is not given:
                task.cancel()


def _check_limit(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT16_MAX:
        raise ValueError(f"{name} must be None or an integer from 0 to {UINT16_MAX}, got {value!r}")
    return value


def message_limit(channel: RTCDataChannel) -> int | None:
    """The largest message the far end of the channel accepts (aiortc: max-message-size from SDP)."""
    return channel.transport._remote_max_message_size  # type: ignore[no-any-return]


def check_payload_size(frame: bytes, channel: RTCDataChannel | int | None) -> None:
    """Refuse what the far end of the channel would not accept, before it is queued."""
    limit = message_limit(channel) if isinstance(channel, RTCDataChannel) else channel
    if limit and len(frame) > limit:
        overhead = len(frame) - limit
        raise ValueError(
            f"message too large: {len(frame)} bytes with framing, but the server accepts at most {limit} "
            f"(so about {limit - framing.HEADER.size} bytes of payload; {overhead} bytes too many). "
            f"Keep payloads at or under {RECOMMENDED_MAX_PAYLOAD} bytes (16 KiB, as Twilio recommends)."
        )


class LocalDataTrack:
    """A data track to publish: `send(str | bytes)` reaches every subscriber."""

    kind = "data"

    def __init__(
        self,
        name: str | None = None,
        ordered: bool = True,
        max_packet_life_time: int | None = None,
        max_retransmits: int | None = None,
    ) -> None:
        if not isinstance(ordered, bool):
            raise ValueError(f"ordered must be True or False, got {ordered!r}")
        _check_limit("max_packet_life_time", max_packet_life_time)
        _check_limit("max_retransmits", max_retransmits)
        if max_packet_life_time is not None and max_retransmits is not None:
            raise ValueError("set max_packet_life_time or max_retransmits, not both (a channel has one limit)")
        self.name = name or str(uuid.uuid4())
        self.ordered = ordered
        self.max_packet_life_time = max_packet_life_time
        self.max_retransmits = max_retransmits
        self.sid: str | None = None
        self._channel: RTCDataChannel | None = None
        self._batcher: Batcher | None = None
        #: the room it is published in (None before and after)
        self._room: Room | None = None
        #: frames sent while the room reconnects with a new connection, sent once it is up
        self._held: list[bytes] = []
        self._limit: int | None = None
        #: clear while the server says it holds too much of this track for a subscriber
        self._uncongested = asyncio.Event()
        self._uncongested.set()
        self._high_water, self._low_water = DRAIN_HIGH_WATER, DRAIN_LOW_WATER
        self._seq = 0
        self.messages_sent = 0
        self.bytes_sent = 0
        self.messages_dropped = 0

    @property
    def reliable(self) -> bool:
        return self.max_packet_life_time is None and self.max_retransmits is None

    def options(self) -> dict[str, Any]:
        return {
            "ordered": self.ordered,
            "max_packet_life_time": self.max_packet_life_time,
            "max_retransmits": self.max_retransmits,
        }

    @property
    def buffered_amount(self) -> int:
        """Bytes queued on the way to the server (pace a fast sender on this, or `await drain()`)."""
        held = sum(map(len, self._held))
        if self._channel is None or self._batcher is None:
            return held
        return self._channel.bufferedAmount + self._batcher.queued + held

    def set_write_buffer_limits(self, high: int = DRAIN_HIGH_WATER, low: int = DRAIN_LOW_WATER) -> None:
        """The marks `drain()` uses, in bytes (asyncio transports' method of the same name)."""
        self._high_water, self._low_water = check_write_buffer_limits(high, low)

    async def drain(self) -> None:
        """Wait until the queue is low enough to send more, as `asyncio.StreamWriter.drain()`:
        at once when no more than the high-water mark (1 MiB) is queued, otherwise until no more
        than the low-water mark (256 KiB) is. A reliable track also waits while the server says it
        holds too much of it for a subscriber that is receiving (see the README), so that
        `send(); await drain()` in a loop paces a fast sender to its slowest subscriber without
        polling, and nothing is dropped for one that keeps receiving. Raises RoomError if the
        room disconnects."""
        if self._room is None:
            raise RuntimeError(f"data track {self.name!r} is not published in a connected room")
        await drain(
            self._outlet, lambda: self.buffered_amount, self._high_water, self._low_water, self._room, self._uncongested
        )

    def _outlet(self) -> tuple[RTCDataChannel, Batcher] | None:
        if self._channel is None or self._batcher is None or self._channel.readyState != "open":
            return None
        return self._channel, self._batcher

    def send(self, data: str | bytes) -> None:
        """Send one message to every subscriber.

        Messages sent in the same event-loop turn travel together (batched, never delayed).
        Raises ValueError if the message is larger than the server accepts. When the sender is
        far ahead of the network (over 4 MiB queued on a reliable track) it raises RoomError
        rather than lose data; an unreliable track drops the message and counts it in
        `messages_dropped`, as the network would. The track and the session carry on.
        While the room reconnects with a new connection, a reliable track keeps what it is given
        (up to the same 4 MiB) and sends it, in order, once the connection is up."""
        channel, batcher = self._channel, self._batcher
        open_ = channel is not None and batcher is not None and channel.readyState == "open"
        if not open_ and (self._room is None or self._room.state != "reconnecting"):
            raise RuntimeError(f"data track {self.name!r} is not published in a connected room")
        if not isinstance(data, str | bytes | bytearray | memoryview):
            raise TypeError(f"data must be str or bytes, got {type(data).__name__}")
        seq = self._seq + 1
        frame = framing.encode(data, seq)
        check_payload_size(frame, self._limit)
        if open_:
            assert channel is not None and batcher is not None
            kept = batcher.add(frame)
        else:
            kept = self.reliable and self.buffered_amount + len(frame) <= RELIABLE_BUFFER_BOUND
            if kept:
                self._held.append(frame)
        if not kept:
            if self.reliable:
                raise RoomError(
                    53300,
                    f"data track {self.name!r}: {self.buffered_amount} bytes already queued; "
                    "wait for buffered_amount to fall before sending more",
                )
            self.messages_dropped += 1
        self._seq = seq
        self.messages_sent += 1
        self.bytes_sent += len(frame)

    def _bind(
        self,
        sid: str | None,
        channel: RTCDataChannel | None,
        counters: ChannelCounters | None = None,
        room: Room | None = None,
    ) -> None:
        """Published on `channel` (again, after the room reconnected: then what was held leaves
        first); `_bind(None, None)` when unpublished."""
        self.sid = sid
        self._channel = channel
        self._room = room
        self._batcher = None
        if channel is not None:
            on_sent = (lambda size, frames: counters.sent(channel, size)) if counters is not None else None
            self._batcher = Batcher(channel, on_sent=on_sent)
            self._limit = message_limit(channel)
            held, self._held = self._held, []
            for frame in held:
                self._batcher.add(frame)
        else:
            self._held.clear()
            self._uncongested.set()

    def _unbind_channel(self) -> None:
        """The room's connection is being replaced: hold what is sent until `_bind` again."""
        self._channel = None
        self._batcher = None

    def __repr__(self) -> str:
        return f"<LocalDataTrack {self.name!r} sid={self.sid} ordered={self.ordered} reliable={self.reliable}>"


class RemoteDataTrack(EventEmitter):
    """A subscribed data track; emits `message(data)` with each payload as it was sent."""

    kind = "data"

    def __init__(self, sid: str, name: str, options: dict[str, Any], participant: RemoteParticipant) -> None:
        super().__init__()
        self.sid = sid
        self.name = name
        self.ordered: bool = options.get("ordered", True)
        self.max_packet_life_time: int | None = options.get("max_packet_life_time")
        self.max_retransmits: int | None = options.get("max_retransmits")
        self.priority: str = options.get("priority", "standard")
        self.participant = participant
        self.is_switched_off = False
        self.is_enabled = True
        self.messages_received = 0
        self.bytes_received = 0
        #: messages the server could not deliver because this subscriber fell too far behind
        self.messages_dropped = 0
        self._channel: RTCDataChannel | None = None

    @property
    def reliable(self) -> bool:
        return self.max_packet_life_time is None and self.max_retransmits is None

    def __repr__(self) -> str:
        return f"<RemoteDataTrack {self.name!r} sid={self.sid} from {self.participant.identity!r}>"
