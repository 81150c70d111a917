"""Batching of data frames per channel: frames written in the same event-loop turn leave as one
data-channel message (the framing allows several frames per message), flushed at the end of
that turn, so batching adds no waiting, only fewer and fuller SCTP packets.

A batch stays within one SCTP DATA chunk (aiortc puts at most 1160 bytes of user data in one),
so an unreliable batch is lost or delivered whole, like one message; a frame larger than that
goes alone.

Backpressure: a channel whose send buffer (`bufferedAmount`) is over its bound takes no more
frames; the batcher counts what it drops so that its owner can say so.

A channel still opening (its far end has not acknowledged it yet) cannot send: what is written to
it meanwhile waits, within the same bound, and leaves in order when it opens. (A subscriber sees a
data track as soon as its end opens, and may hear of a message before the server's end has.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiortc import RTCDataChannel

#: Largest batch: what fits one SCTP DATA chunk in aiortc 1.16.
MAX_BATCH_BYTES = 1160
#: Send-buffer bound per channel: reliable channels queue this much for a slow receiver, then drop;
#: unreliable ones drop much earlier (stale data is worthless).
RELIABLE_BUFFER_BOUND = 4 * 1024 * 1024
UNRELIABLE_BUFFER_BOUND = 64 * 1024


def buffer_bound(channel: RTCDataChannel) -> int:
    reliable = channel.maxPacketLifeTime is None and channel.maxRetransmits is None
    return RELIABLE_BUFFER_BOUND if reliable else UNRELIABLE_BUFFER_BOUND


class ChannelOutlet:
    """What every sender of frames on one data channel does alike: it keeps the channel's bound
    (over it, frames are dropped and counted, and `on_drop` told), and it holds what is written
    while the channel is still opening, within that bound, until it opens."""

    __slots__ = ("channel", "bound", "dropped", "on_drop", "_waiting", "_waiting_bytes")

    def __init__(self, channel: RTCDataChannel, on_drop: Callable[[int], None] | None = None) -> None:
        self.channel = channel
        self.bound = buffer_bound(channel)
        self.dropped = 0
        self.on_drop = on_drop
        #: messages written before the channel opened: (message, frames in it, bytes)
        self._waiting: list[tuple[bytes | str, int, int]] = []
        self._waiting_bytes = 0
        if channel.readyState == "connecting":
            channel.once("open", self._send_waiting)

    @property
    def usable(self) -> bool:
        """The channel is open, or opening (what is written waits for it)."""
        return self.channel.readyState in ("open", "connecting")

    @property
    def queued(self) -> int:
        """Bytes not yet handed to the channel (waiting for it to open)."""
        return self._waiting_bytes

    def _admit(self, count: int) -> bool:
        """Room for `count` more frames under the bound; if not, they are dropped and counted."""
        if self.channel.bufferedAmount + self._waiting_bytes <= self.bound:
            return True
        self.dropped += count
        if self.on_drop is not None:
            self.on_drop(count)
        return False

    def _deliver(self, message: bytes | str, count: int, size: int) -> None:
        state = self.channel.readyState
        if state == "connecting":
            self._waiting.append((message, count, size))
            self._waiting_bytes += size
        elif state == "open":
            self._send(message, count, size)

    def _send(self, message: bytes | str, count: int, size: int) -> None:
        try:
            self.channel.send(message)
        except ValueError:  # larger than the far end accepts: nothing else to do with it
            return
        self._sent(size, count)

    def _sent(self, size: int, count: int) -> None:
        """A message of `size` bytes holding `count` frames left."""

    def _send_waiting(self) -> None:
        waiting, self._waiting, self._waiting_bytes = self._waiting, [], 0
        for message, count, size in waiting:
            self._send(message, count, size)


class Batcher(ChannelOutlet):
    """Collects frames for one channel and sends them as few messages as the turn allows."""

    __slots__ = ("on_sent", "_parts", "_size", "_scheduled")

    def __init__(
        self,
        channel: RTCDataChannel,
        on_sent: Callable[[int, int], None] | None = None,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(channel, on_drop)
        self.on_sent = on_sent
        self._parts: list[bytes] = []
        self._size = 0
        self._scheduled = False

    def add(self, frames: bytes, count: int = 1) -> bool:
        """Queue encoded frames (one or more); False if the channel is over its bound (dropped)."""
        if not self._admit(count):
            return False
        if self._size + len(frames) > MAX_BATCH_BYTES and self._parts:
            self.flush()
        self._parts.append(frames)
        self._size += len(frames)
        if self._size >= MAX_BATCH_BYTES:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)
        return True

    @property
    def queued(self) -> int:
        """Bytes not yet handed to the channel: added in this event-loop turn, or waiting for it to open."""
        return self._size + self._waiting_bytes

    def flush(self) -> None:
        self._scheduled = False
        if not self._parts:
            return
        parts, self._parts, self._size = self._parts, [], 0
        message = parts[0] if len(parts) == 1 else b"".join(parts)
        self._deliver(message, len(parts), len(message))

    def _sent(self, size: int, count: int) -> None:
        if self.on_sent is not None:
            self.on_sent(size, count)
