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
from ...protocol.batching import buffer_bound
from ...telemetry.sampling import ChannelCounters


def frame_arrivals(channel: RTCDataChannel, deliver: Callable[[bytes, int], None]) -> None:
    """Frame every message the client sends on `channel` (sequence and arrival time) and hand it
    to `deliver(frame, size_on_the_wire)`."""
    sequence = itertools.count(1)

    def on_message(message: bytes | str) -> None:
        size = len(message.encode()) if isinstance(message, str) else len(message)
        deliver(framing.encode(message, next(sequence), framing.now_us()), size)

    channel.on("message", on_message)


class PlainOutlet:
    """A subscriber's end of a data path to an SDK client: each frame's payload as its own message,
    bounded like `Batcher` (over the bound, frames are dropped and counted)."""

    __slots__ = ("channel", "bound", "dropped", "counters", "on_drop")

    def __init__(
        self, channel: RTCDataChannel, counters: ChannelCounters, on_drop: Callable[[int], None] | None = None
    ) -> None:
        self.channel = channel
        self.bound = buffer_bound(channel)
        self.dropped = 0
        self.counters = counters
        self.on_drop = on_drop

    def add(self, frames: bytes, count: int = 1) -> bool:
        if self.channel.bufferedAmount > self.bound:
            self.dropped += count
            if self.on_drop is not None:
                self.on_drop(count)
            return False
        for frame in framing.decode(frames):
            try:
                self.channel.send(frame.payload)
            except ValueError:  # larger than the far end accepts: nothing else to do with it
                continue
            self.counters.sent(self.channel, frame.size)
        return True

    def flush(self) -> None:
        """Nothing waits here: every payload leaves when it is added."""
