"""Data tracks at the edge of the SDK's transport: the SDK sends and expects plain payloads, the
forwarding plane carries roomlab's framing (SPEC §6).

- In: each message from an SDK publisher is framed as it arrives, with what the server knows: a
  sequence number per published track (1, 2, ...) and the arrival time as the send time. roomlab
  subscribers therefore see gaps and reordering after the server, and latency from the server on.
- Out: each frame for an SDK subscriber leaves as one data-channel message holding its payload
  alone (text as text, bytes as bytes): the SDK has no framing, so frames are not batched.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from aiortc import RTCDataChannel

from ...protocol import framing
from ...protocol.batching import ChannelOutlet
from ...telemetry.sampling import ChannelCounters


def frame_arrivals(channel: RTCDataChannel, deliver: Callable[[bytes, int], None]) -> None:
    """Frame every message the client sends on `channel` (sequence and arrival time) and hand it
    to `deliver(frame, size_on_the_wire)`."""
    sequence = itertools.count(1)

    def on_message(message: bytes | str) -> None:
        size = len(message.encode()) if isinstance(message, str) else len(message)
        deliver(framing.encode(message, next(sequence), framing.now_us()), size)

    channel.on("message", on_message)


class PlainOutlet(ChannelOutlet):
    """A subscriber's end of a data path to an SDK client: each frame's payload as its own message
    (the SDK has no framing, so nothing is batched), bounded and held while opening as any outlet."""

    __slots__ = ("counters",)

    def __init__(
        self, channel: RTCDataChannel, counters: ChannelCounters, on_drop: Callable[[int], None] | None = None
    ) -> None:
        super().__init__(channel, on_drop)
        self.counters = counters

    def add(self, frames: bytes, count: int = 1) -> bool:
        if not self._admit(count):
            return False
        for frame in framing.decode(frames):
            self._deliver(frame.payload, 1, frame.size)
        return True

    def flush(self) -> None:
        """Nothing waits here once the channel is open: every payload leaves when it is added."""

    def _sent(self, size: int, count: int) -> None:
        self.counters.sent(self.channel, size)
