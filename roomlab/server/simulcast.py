"""Simulcast on the forwarding plane: which layer of a layered video track each subscriber gets.

aiortc has no simulcast, so a layered track reaches the server as one RTP stream per layer (see
roomlab/protocol/layers.py), all on one RTP timestamp timeline (the publisher's senders share
their timestamp origin: roomlab.net.rtp.SharedTimestampOrigin). For each subscriber a
`LayerSelector` picks frames from one layer: a new target layer is taken at its next keyframe and
the old layer is forwarded until then (as LiveKit's videolayerselector and mediasoup's
SimulcastConsumer do), so the subscriber's decoder never sees a frame it cannot decode. aiortc's
sender then gives the subscriber one continuous stream (its own SSRC, sequence numbers, VP8
picture ids, and timestamps = origin + pts).

Pure bookkeeping, no I/O: the forwarder (media.py) feeds it frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

#: Seconds over which a layer's received bitrate is measured.
BITRATE_WINDOW_S = 2.0
#: RTP timestamps are 32-bit and wrap.
_WRAP = 1 << 32


@dataclass(frozen=True)
class LayerSelection:
    """What one subscriber gets of a layered track."""

    current: str | None
    """The layer forwarded now (None: nothing yet, or switched off)."""
    target: str | None
    """The layer asked for (None: switched off); `current` follows at the target's next keyframe."""
    switch_s: float | None = None
    """How long the last completed switch took, from the request to the target's first frame, seconds."""

    @property
    def switching(self) -> bool:
        return self.current != self.target


class LayerSelector:
    """One subscriber's choice among the layers of a track: switch at the target's keyframe, keep
    the old layer until then, and never let the forwarded timestamps run backwards."""

    def __init__(self, target: str | None, now: float) -> None:
        self.target = target
        self.current: str | None = None
        self.switch_s: float | None = None
        self._requested_at: float | None = now
        #: pts of the last frame forwarded (the timeline of RtpTimeline)
        self.last_pts: int | None = None

    def select(self, layer: str | None, now: float) -> bool:
        """Ask for `layer` (None: switch off at once); True when what is forwarded changed now."""
        self.target = layer
        if layer is None:
            changed = self.current is not None
            self.current = None
            self._requested_at = None
            return changed
        self._requested_at = None if layer == self.current else now
        return False

    def accept(self, layer: str, keyframe: bool, now: float) -> bool:
        """Whether a frame of `layer` goes to this subscriber (a keyframe of the target switches)."""
        if self.target is None:
            return False
        if layer == self.target:
            if self.current == layer:
                return True
            if not keyframe:
                return False
            self.current = layer
            if self._requested_at is not None:
                self.switch_s = now - self._requested_at
                self._requested_at = None
            return True
        return layer == self.current

    @property
    def waiting(self) -> bool:
        """Waiting for a keyframe of the target layer."""
        return self.target is not None and self.current != self.target

    def next_pts(self, pts: int) -> int:
        """The pts to forward a frame with: its own, or one tick after the last when a new layer's
        frame of the same instant follows the old layer's (timestamps must keep rising)."""
        out = pts if self.last_pts is None or pts > self.last_pts else self.last_pts + 1
        self.last_pts = out
        return out

    def selection(self) -> LayerSelection:
        return LayerSelection(self.current, self.target, self.switch_s)


class RtpTimeline:
    """Unwraps 32-bit RTP timestamps of one track (all its layers share them) into one rising pts."""

    def __init__(self) -> None:
        self._last_raw: int | None = None
        self._last: int = 0

    def unwrap(self, timestamp: int) -> int:
        if self._last_raw is None:
            self._last_raw, self._last = timestamp, timestamp
            return timestamp
        delta = (timestamp - self._last_raw + _WRAP // 2) % _WRAP - _WRAP // 2
        self._last += delta
        self._last_raw = timestamp
        return self._last


class BitrateMeter:
    """Bytes received over the last `BITRATE_WINDOW_S` seconds, as a bitrate."""

    def __init__(self, window_s: float = BITRATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()
        self._bytes = 0
        self.first_at: float | None = None
        self.last_at: float | None = None

    def add(self, now: float, size: int) -> None:
        if self.first_at is None:
            self.first_at = now
        self._samples.append((now, size))
        self._bytes += size
        self.last_at = now
        self._expire(now)

    def _expire(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.window_s:
            self._bytes -= self._samples.popleft()[1]

    def bitrate_bps(self, now: float) -> float:
        """Over the window, or over what has been seen of it (at least a second) when younger."""
        self._expire(now)
        if self.first_at is None:
            return 0.0
        return self._bytes * 8 / min(self.window_s, max(now - self.first_at, 1.0))

    def flowing(self, now: float) -> bool:
        """Something arrived within the window."""
        return self.last_at is not None and now - self.last_at <= self.window_s
