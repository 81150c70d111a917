"""Congestion: end-to-end flow control for reliable data, from subscribers back to the publisher.

The server keeps a bounded queue per subscriber and drops for one that falls past its bound, so
that nobody waits on a slow subscriber. A publisher that wants every message to arrive paces
itself with `drain()`; that alone paces it to its own link to the server. So the server also
tells it when it holds more than CONGESTION_HIGH of its messages for a subscriber that is
receiving, and when every such subscriber is down to CONGESTION_LOW again; `drain()` waits
meanwhile. A subscriber past its bound, or whose queue has not gone down for STALLED_AFTER, may
be stalled: it is not waited for (and is dropped for, as before), so it never holds up the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from ..protocol.batching import Batcher

#: Bytes held for one subscriber above which its publisher is told to wait, and below which
#: (for every subscriber) it is told to go on.
CONGESTION_HIGH, CONGESTION_LOW = 1024 * 1024, 256 * 1024
#: Seconds a subscriber's queue may stay without going down before it is no longer waited for.
#: Above SCTP's retransmission timeout (1 s at least, doubling on each retry): a subscriber that
#: is receiving but lost a packet holds still that long, and at 1 s it was taken for stalled, so
#: its publisher raced on and the server dropped for it (54 of 1280 messages, one run in six).
STALLED_AFTER = 3.0


def watch_outlet(batcher: Batcher, relieve: Callable[[], None]) -> None:
    """Call `relieve` when the outlet's queue falls to the low mark (aiortc's bufferedamountlow)."""
    batcher.channel.bufferedAmountLowThreshold = CONGESTION_LOW
    batcher.channel.on("bufferedamountlow", relieve)


class Congestion:
    """Whether one publisher's reliable messages are held up at the server for a subscriber."""

    def __init__(self, outlets: Callable[[], Iterable[tuple[str, Batcher]]], tell: Callable[[bool], None]) -> None:
        self._outlets = outlets
        self._tell = tell
        self.congested = False
        #: subscriber sid -> (its queue, when that last went down)
        self._progress: dict[str, tuple[int, float]] = {}
        self._watchdog: asyncio.TimerHandle | None = None

    def check(self) -> None:
        """After queueing the publisher's messages: congested above the high mark, no longer
        congested once down to the low mark."""
        if self.congested != self._backlogged(CONGESTION_LOW if self.congested else CONGESTION_HIGH):
            self._set(not self.congested)

    def relieve(self) -> None:
        """A queue went down (or a subscriber left): the publisher may go on."""
        if self.congested and not self._backlogged(CONGESTION_LOW):
            self._set(False)

    def tell_again(self) -> None:
        """For a publisher on a new connection."""
        if self.congested:
            self._tell(True)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _backlogged(self, mark: int) -> bool:
        now = time.monotonic()
        backlogged = False
        outlets = dict(self._outlets())
        for sid, batcher in outlets.items():
            amount = batcher.channel.bufferedAmount
            last, since = self._progress.get(sid, (amount, now))
            since = now if amount < last else since
            self._progress[sid] = (amount, since)
            if mark < amount + batcher.queued <= batcher.bound and now - since < STALLED_AFTER:
                backlogged = True
        for sid in [sid for sid in self._progress if sid not in outlets]:
            del self._progress[sid]
        return backlogged

    def _set(self, congested: bool) -> None:
        self.congested = congested
        if congested and self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(STALLED_AFTER / 2, self._watch)
        self._tell(congested)

    def _watch(self) -> None:
        """While congested, look again now and then: a subscriber that stalls sends no event."""
        self._watchdog = None
        self.relieve()
        if self.congested:
            self._watchdog = asyncio.get_running_loop().call_later(STALLED_AFTER / 2, self._watch)
