"""Data tracks (Twilio's DataTrack API): unidirectional messages from one publisher to every
subscriber, with the reliability options of a WebRTC data channel on every hop.

Each message carries the publisher's sequence number and send time (SPEC §6); subscribers see
only the payload in `message` events, and the framing feeds telemetry.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from aiortc import RTCDataChannel

from ..errors import RoomError
from ..protocol import framing
from ..protocol.batching import Batcher
from ..telemetry.sampling import ChannelCounters
from .events import EventEmitter

if TYPE_CHECKING:
    from .participant import RemoteParticipant

UINT16_MAX = 65_535
#: Twilio's recommended largest payload; larger ones work up to the negotiated maximum.
RECOMMENDED_MAX_PAYLOAD = 16 * 1024


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
        """Bytes queued on the way to the server (pace a fast sender on this)."""
        return self._channel.bufferedAmount if self._channel is not None else 0

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

    def _bind(self, sid: str | None, channel: RTCDataChannel | None, counters: ChannelCounters | None = None) -> None:
        self.sid = sid
        self._channel = channel
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
