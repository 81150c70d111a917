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
    high: int,
    low: int,
    ended: asyncio.Future[RoomError],
) -> None:
    """Wait, if more than `high` bytes are queued on the channel `outlet()` gives, until no more
    than `low` are; raise the room's RoomError if it disconnects meanwhile."""
    current = outlet()
    if current is not None and current[0].bufferedAmount + current[1].queued <= high:
        return
    loop = asyncio.get_running_loop()
    while True:
        if ended.done():
            raise ended.result()
        current = outlet()
        if current is not None:
            channel, batcher = current
            batcher.flush()  # what this turn added counts too
            if channel.bufferedAmount <= low:
                return
            channel.bufferedAmountLowThreshold = low
        woken: asyncio.Future[None] = loop.create_future()

        def wake(*_: Any, woken: asyncio.Future[None] = woken) -> None:
            if not woken.done():
                woken.set_result(None)

        if current is not None:
            current[0].on("bufferedamountlow", wake)
            current[0].on("close", wake)
        try:
            await asyncio.wait({woken, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if current is not None:
                current[0].remove_listener("bufferedamountlow", wake)
                current[0].remove_listener("close", wake)


def _check_limit(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT16_MAX:
        raise ValueError(f"{name} must be None or an integer from 0 to {UINT16_MAX}, got {value!r}")
    return value


def check_payload_size(frame: bytes, channel: RTCDataChannel) -> None:
    """Refuse what the far end of the channel would not accept, before it is queued."""
    limit = channel.transport._remote_max_message_size  # aiortc: the max-message-size from SDP
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
        #: set when the room this track is published in disconnects (with the reason)
        self._ended: asyncio.Future[RoomError] | None = None
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
        if self._channel is None or self._batcher is None:
            return 0
        return self._channel.bufferedAmount + self._batcher.queued

    def set_write_buffer_limits(self, high: int = DRAIN_HIGH_WATER, low: int = DRAIN_LOW_WATER) -> None:
        """The marks `drain()` uses, in bytes (asyncio transports' method of the same name)."""
        self._high_water, self._low_water = check_write_buffer_limits(high, low)

    async def drain(self) -> None:
        """Wait until the queue is low enough to send more, as `asyncio.StreamWriter.drain()`:
        at once when no more than the high-water mark (1 MiB) is queued, otherwise until no more
        than the low-water mark (256 KiB) is. `send(); await drain()` in a loop paces a fast
        sender to the network without polling. Raises RoomError if the room disconnects."""
        if self._ended is None:
            raise RuntimeError(f"data track {self.name!r} is not published in a connected room")
        await drain(self._outlet, self._high_water, self._low_water, self._ended)

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
        `messages_dropped`, as the network would. The track and the session carry on."""
        channel, batcher = self._channel, self._batcher
        if channel is None or batcher is None or channel.readyState != "open":
            raise RuntimeError(f"data track {self.name!r} is not published in a connected room")
        if not isinstance(data, str | bytes | bytearray | memoryview):
            raise TypeError(f"data must be str or bytes, got {type(data).__name__}")
        seq = self._seq + 1
        frame = framing.encode(data, seq)
        check_payload_size(frame, channel)
        if not batcher.add(frame):
            if self.reliable:
                raise RoomError(
                    53300,
                    f"data track {self.name!r}: {channel.bufferedAmount} bytes already queued; "
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
        ended: asyncio.Future[RoomError] | None = None,
    ) -> None:
        self.sid = sid
        self._channel = channel
        self._ended = ended
        self._batcher = None
        if channel is not None:
            on_sent = (lambda size, frames: counters.sent(channel, size)) if counters is not None else None
            self._batcher = Batcher(channel, on_sent=on_sent)

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
