"""Simulcast on the forwarding plane: which layer of a video track each subscriber gets, and the RTP
timeline the subscriber sees.

aiortc has no simulcast, so a layered track reaches the server as one RTP stream per layer (see
roomlab/protocol/layers.py), each on its own timestamp timeline (aiortc gives every sender a random
timestamp origin). For each subscriber a `LayerSelector` picks frames from one layer: a new target
layer is taken at its next keyframe and the old layer is forwarded until then (as LiveKit's
videolayerselector and mediasoup's SimulcastConsumer do), so the subscriber's decoder never sees a
frame it cannot decode. A video track without layers is one layer, `SINGLE_LAYER`, so that it can
be switched off and on the same way.

Timestamps: the selector re-stamps what it forwards. Within a layer, frames keep their spacing; at
every switch (to another layer, back on after a switch-off, onto a publisher's new stream after it
reconnected) it re-anchors, as mediasoup does when it has no sender reports to align streams by:
the first frame goes one frame step after the last it sent (the step estimated from the layer's
recent timestamp deltas), or as many steps as the time since then holds. So the subscriber's
timestamps keep rising on the frame grid and keep pace with the clock, and the server never needs
the publisher's layers to share a timeline. aiortc's sender then gives the subscriber one
continuous stream (its own SSRC, sequence numbers, VP8 picture ids, timestamps = origin + pts).

Pure bookkeeping, no I/O: the forwarder (media.py) feeds it frames.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

#: Seconds over which a layer's received bitrate is measured.
BITRATE_WINDOW_S = 2.0
#: The one layer of a video track published without layers.
SINGLE_LAYER = "single"
#: Timestamp deltas a frame step is estimated from (their median: a lost frame does not move it).
STEP_SAMPLES = 8
#: Frames per second assumed before a stream has shown its own spacing.
DEFAULT_FPS = 30
#: RTP timestamps are 32-bit and wrap.
_WRAP = 1 << 32


@dataclass(frozen=True)
class LayerSelection:
    """What one subscriber gets of a video track."""

    current: str | None
    """The layer forwarded now (None: nothing yet, or switched off)."""
    target: str | None
    """The layer asked for (None: switched off); `current` follows at the target's next keyframe."""
    switch_s: float | None = None
    """How long the last completed switch took, from the request to the target's first frame, seconds."""

    @property
    def switching(self) -> bool:
        return self.current != self.target


class RtpTimeline:
    """One RTP stream's 32-bit timestamps unwrapped into a rising pts, and its frame step."""

    def __init__(self) -> None:
        self._last_raw: int | None = None
        self._last: int = 0
        self._deltas: deque[int] = deque(maxlen=STEP_SAMPLES)

    def unwrap(self, timestamp: int) -> int:
        if self._last_raw is None:
            self._last_raw, self._last = timestamp, timestamp
            return timestamp
        delta = (timestamp - self._last_raw + _WRAP // 2) % _WRAP - _WRAP // 2
        if delta > 0:
            self._deltas.append(delta)
        self._last += delta
        self._last_raw = timestamp
        return self._last

    def frame_step(self, clock_rate: int) -> int:
        """The ticks between two frames: the median of the recent deltas (a 30 fps step before any)."""
        if not self._deltas:
            return max(1, clock_rate // DEFAULT_FPS)
        return int(statistics.median_low(self._deltas))


class LayerSelector:
    """One subscriber's choice among the layers of a track: switch at the target's keyframe, keep
    the old layer until then, and re-stamp what is forwarded onto one rising timeline."""

    def __init__(self, target: str | None, now: float) -> None:
        self.target = target
        self.current: str | None = None
        self.switch_s: float | None = None
        self._requested_at: float | None = now
        #: pts of the last frame forwarded, and when (the subscriber's timeline)
        self.last_pts: int | None = None
        self._last_at = 0.0
        #: forwarded pts = the stream's pts + offset, re-anchored at every switch (None: at the next frame)
        self._offset: int | None = None

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

    def restart(self, layer: str) -> None:
        """The stream of `layer` starts anew (its publisher reconnected): a subscriber getting it waits
        for its first keyframe, and re-anchors there."""
        if self.current == layer:
            self.current = None
            self._requested_at = None

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
            self._offset = None  # a new stream for this subscriber: re-anchor
            if self._requested_at is not None:
                self.switch_s = now - self._requested_at
                self._requested_at = None
            return True
        return layer == self.current

    @property
    def waiting(self) -> bool:
        """Waiting for a keyframe of the target layer."""
        return self.target is not None and self.current != self.target

    def restamp(self, pts: int, step: int, clock_rate: int, now: float) -> int:
        """The pts to forward a frame of the current layer with (`pts` on its own stream's timeline;
        `step`: that stream's frame step): the stream's spacing within a layer; after a switch, one
        step after the last frame sent, or as many steps as the time since then holds."""
        if self._offset is None or self.last_pts is None or pts + self._offset <= self.last_pts:
            if self.last_pts is None:
                self._offset = 0
            else:
                steps = max(1, round((now - self._last_at) * clock_rate / step))
                self._offset = self.last_pts + steps * step - pts
        out = pts + self._offset
        self.last_pts, self._last_at = out, now
        return out

    def selection(self) -> LayerSelection:
        return LayerSelection(self.current, self.target, self.switch_s)


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

    def young(self, now: float) -> bool:
        """Less than a window has been seen: the bitrate may be under what the stream carries."""
        return self.first_at is None or now - self.first_at < self.window_s

    def flowing(self, now: float) -> bool:
        """Something arrived within the window."""
        return self.last_at is not None and now - self.last_at <= self.window_s
