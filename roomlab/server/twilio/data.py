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
    bounded like `Batcher` (over the bound, frames are dropped and counted), and, like it, holding
    what is written while the channel is still opening until it opens."""

    __slots__ = ("channel", "bound", "dropped", "counters", "on_drop", "_waiting", "_waiting_bytes")

    def __init__(
        self, channel: RTCDataChannel, counters: ChannelCounters, on_drop: Callable[[int], None] | None = None
    ) -> None:
        self.channel = channel
        self.bound = buffer_bound(channel)
        self.dropped = 0
        self.counters = counters
        self.on_drop = on_drop
        self._waiting: list[framing.Frame] = []
        self._waiting_bytes = 0
        if channel.readyState == "connecting":
            channel.once("open", self._send_waiting)

    @property
    def usable(self) -> bool:
        """The channel is open, or opening (what is written waits for it)."""
        return self.channel.readyState in ("open", "connecting")

    @property
    def queued(self) -> int:
        """Bytes not yet handed to the channel (waiting for it to open), as `Batcher.queued`."""
        return self._waiting_bytes

    def add(self, frames: bytes, count: int = 1) -> bool:
        if self.channel.bufferedAmount + self._waiting_bytes > self.bound:
            self.dropped += count
            if self.on_drop is not None:
                self.on_drop(count)
            return False
        for frame in framing.decode(frames):
            if self.channel.readyState == "connecting":
                self._waiting.append(frame)
                self._waiting_bytes += frame.size
            else:
                self._send(frame)
        return True

    def flush(self) -> None:
        """Nothing waits here once the channel is open: every payload leaves when it is added."""

    def _send(self, frame: framing.Frame) -> None:
        if self.channel.readyState != "open":
            return
        try:
            self.channel.send(frame.payload)
        except ValueError:  # larger than the far end accepts: nothing else to do with it
            return
        self.counters.sent(self.channel, frame.size)

    def _send_waiting(self) -> None:
        waiting, self._waiting, self._waiting_bytes = self._waiting, [], 0
        for frame in waiting:
            self._send(frame)
