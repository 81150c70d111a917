"""Media forwarding: a published track's frames, from the publisher's receiver to each subscriber's
sender, without transcoding.

aiortc decodes every received track in a thread and re-encodes it for every sender. Here the
publisher's receiver hands its encoded frames (re-assembled after the jitter buffer, before any
decoder) to the forwarder, which gives the same `av.Packet` to every subscriber's outgoing track;
aiortc's sender packs a packet into RTP without encoding it. Subscribers still get valid RTP with
their own sequence numbers, SSRC and timestamps. A subscriber's keyframe request (PLI/FIR) is
passed to the publisher. Of a video track each subscriber gets one layer (a track without layers
is one layer), switched at keyframes and re-stamped onto one rising timeline (simulcast.py);
switching to no layer switches the subscriber off.

`MEDIA_PATHS`: "forward" (the default) or "transcode" (decode once, encode per subscriber, as
aiortc's MediaRelay does), kept so that the two can be measured side by side.

This reaches into a few private attributes of aiortc 1.16.0's RTCRtpReceiver and RTCRtpSender
(the decoder queue, the jitter buffer, `_send_keyframe`, `_send_rtcp_pli`); the version is pinned
and tests cover each.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCRtpReceiver
from aiortc.mediastreams import MediaStreamError

from ..net.rtp import (
    frame_wire_bytes,
    is_keyframe,
    observe_audio_levels,
    picture_size,
    route_keyframe_requests,
    tap_receiver,
)
from .simulcast import SINGLE_LAYER, BitrateMeter, LayerSelection, LayerSelector, RtpTimeline

__all__ = [
    "MEDIA_PATHS",
    "LayerStream",
    "MediaForwarder",
    "OutgoingTrack",
    "route_keyframe_requests",
    "tap_receiver",
]

log = logging.getLogger(__name__)

MEDIA_PATHS = ("forward", "transcode")
#: Frames an outgoing track holds for a slow subscriber before it drops the oldest.
OUTGOING_CAPACITY = {"audio": 25, "video": 30}
#: Least time between two keyframe requests passed to one publisher.
KEYFRAME_REQUEST_INTERVAL = 0.5


class OutgoingTrack(MediaStreamTrack):
    """What one subscriber's sender reads: frames pushed by whichever forwarder feeds it now.

    It never ends while its slot lives (aiortc's sender stops for good when its track ends), and
    it drops the oldest frame rather than grow when its subscriber falls behind.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._frames: deque[Any] = deque(maxlen=OUTGOING_CAPACITY[kind])
        self._waiter: asyncio.Future[None] | None = None
        self.dropped = 0
        self.on_keyframe_request: Callable[[], None] | None = None

    def push(self, frame: Any) -> None:
        if len(self._frames) == self._frames.maxlen:
            self.dropped += 1
        self._frames.append(frame)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._frames.clear()

    async def recv(self) -> Any:
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._frames.popleft()

    def request_keyframe(self) -> None:
        if self.on_keyframe_request is not None:
            self.on_keyframe_request()


@dataclass
class LayerStream:
    """What the server receives of one layer of a track (`SINGLE_LAYER` for a track without layers)."""

    layer: str
    receiver: RTCRtpReceiver | None = None
    meter: BitrateMeter = field(default_factory=BitrateMeter)
    timeline: RtpTimeline = field(default_factory=RtpTimeline)
    """This stream's own timestamps (a new one when the publisher reconnects)."""
    frames: int = 0
    last_keyframe_request: float = -KEYFRAME_REQUEST_INTERVAL
    size: tuple[int, int] | None = None
    """Width and height of its last VP8 keyframe (None: not seen)."""


class MediaForwarder:
    """One published audio or video track and the outgoing tracks of its subscribers.

    A layered video track (`layers`, lowest first) arrives as one stream per layer; a video track
    without layers as one stream, `SINGLE_LAYER`. On the forwarding path each subscriber of a video
    track gets one of them through its one outgoing track, chosen with `select_layer` (by default
    the highest: what a subscriber gets with no bandwidth limit; None switches it off). On the
    transcode path a layered track is decoded from its highest layer only, and the others are
    dropped.
    """

    def __init__(self, track_sid: str, kind: str, path: str = "forward", layers: tuple[str, ...] = ()) -> None:
        if path not in MEDIA_PATHS:
            raise ValueError(f"media path must be one of {', '.join(MEDIA_PATHS)}, got {path!r}")
        if layers and kind != "video":
            raise ValueError(f"only video tracks have layers, not {kind}")
        self.track_sid = track_sid
        self.kind = kind
        self.path = path
        self.layers = layers
        self.outlets: set[OutgoingTrack] = set()
        self.codec: Any = None
        self.frames_forwarded = 0
        self.streams = {layer: LayerStream(layer) for layer in layers or (SINGLE_LAYER,)}
        #: per subscriber of a video track on the forwarding path: which layer it gets
        self._selectors: dict[OutgoingTrack, LayerSelector] = {}
        self._on_layer_changed: dict[OutgoingTrack, Callable[[str | None], None]] = {}
        self._reader: asyncio.Task[None] | None = None

    @property
    def selects_layers(self) -> bool:
        """Subscribers get a layer each, and may be switched off (video on the forwarding path)."""
        return self.kind == "video" and self.path == "forward"

    # the publisher's side
    def attach(
        self,
        receiver: RTCRtpReceiver,
        track: MediaStreamTrack,
        audio_level: Callable[[int], None] | None = None,
        layer: str | None = None,
    ) -> None:
        """Start taking frames from the publisher (called from the peer connection's `track`), of
        `layer` for a layered track; `audio_level` gets the RFC 6464 level of every audio packet,
        read without decoding; again on the new connection of a publisher that reconnected."""
        name = SINGLE_LAYER if layer is None and not self.layers else layer
        if name not in self.streams:
            raise ValueError(f"track {self.track_sid} has no layer {layer!r}; its layers: {self.layers}")
        stream = self.streams[name]  # type: ignore[index]
        if stream.receiver is not None:  # the publisher reconnected: a new stream, on a timeline of its own
            stream.timeline = RtpTimeline()
            for selector in self._selectors.values():
                selector.restart(stream.layer)
        stream.receiver = receiver
        level = audio_level if self.kind == "audio" else None
        if self.path == "forward":
            tap_receiver(receiver, self.kind, lambda codec, frame: self._on_encoded_frame(stream, codec, frame), level)
        elif not self.layers or layer == self.layers[-1]:
            if self._reader is not None:
                self._reader.cancel()
            if level is not None:
                observe_audio_levels(receiver, level)
            self._reader = asyncio.get_running_loop().create_task(self._read_decoded(track))
        else:  # the lower layers of a transcoded track are dropped, never decoded
            tap_receiver(receiver, self.kind, lambda codec, frame: None)

    def _on_encoded_frame(self, stream: LayerStream, codec: Any, frame: Any) -> None:
        self.codec = codec
        stream.frames += 1
        packet = av.Packet(frame.data)
        packet.time_base = fractions.Fraction(1, codec.clockRate)
        if self.kind == "audio":
            packet.pts = frame.timestamp
            self._fan_out(packet)
            return
        now = time.monotonic()
        stream.meter.add(now, frame_wire_bytes(len(frame.data)))  # what forwarding it costs a downlink
        packet.pts = stream.timeline.unwrap(frame.timestamp)
        keyframe = is_keyframe(codec.mimeType, frame.data)
        if keyframe:
            stream.size = picture_size(codec.mimeType, frame.data) or stream.size
        self._fan_out_layer(stream, packet, keyframe, codec.clockRate, now)

    async def _read_decoded(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                self._fan_out(await track.recv())
        except MediaStreamError:
            return

    def _fan_out(self, frame: Any) -> None:
        self.frames_forwarded += 1
        for outlet in self.outlets:
            outlet.push(frame)

    def _fan_out_layer(
        self, stream: LayerStream, packet: av.Packet, keyframe: bool, clock_rate: int, now: float
    ) -> None:
        self.frames_forwarded += 1
        layer = stream.layer
        step = stream.timeline.frame_step(clock_rate)
        waiting: set[str] = set()
        for outlet, selector in self._selectors.items():
            before = selector.current
            if selector.accept(layer, keyframe, now):
                pts = selector.restamp(packet.pts, step, clock_rate, now)
                if pts == packet.pts:
                    outlet.push(packet)
                else:  # a copy: the same packet goes to other subscribers with their own pts
                    moved = av.Packet(bytes(packet))
                    moved.pts, moved.time_base = pts, packet.time_base
                    outlet.push(moved)
            if selector.current != before:
                self._tell_layer(outlet, selector.current)
            if selector.waiting:
                waiting.add(selector.target)  # type: ignore[arg-type]
        for target in waiting:  # keep asking (at most every 0.5 s per layer) until the keyframe comes
            self.request_keyframe(target)

    def request_keyframe(self, layer: str | None = None) -> None:
        """A subscriber lost a picture or waits for a layer: ask the publisher for a keyframe of that
        layer (the highest when not named; at most every 0.5 s per layer)."""
        if self.kind != "video":
            return
        stream = self.streams.get(layer) if layer is not None else self.streams[(self.layers or (SINGLE_LAYER,))[-1]]
        if stream is None or stream.receiver is None:
            return
        now = time.monotonic()
        if now - stream.last_keyframe_request < KEYFRAME_REQUEST_INTERVAL:
            return
        ssrcs = [s.source for s in stream.receiver.getSynchronizationSources()]
        if ssrcs:  # none before the first packet: the request is not spent then
            stream.last_keyframe_request = now
            asyncio.get_running_loop().create_task(stream.receiver._send_rtcp_pli(ssrcs[0]))

    # the subscribers' side
    def add(
        self,
        outlet: OutgoingTrack,
        on_layer_changed: Callable[[str | None], None] | None = None,
        start_lowest: bool = False,
    ) -> None:
        """Forward to `outlet` from now on; a layered track's layer (the highest at first, the lowest with
        `start_lowest`) is told to `on_layer_changed` whenever it changes."""
        outlet.clear()
        self.outlets.add(outlet)
        if self.selects_layers:  # the selector starts the subscriber at a keyframe
            start = self.stream_names[0] if start_lowest else self.stream_names[-1]
            selector = self._selectors[outlet] = LayerSelector(start, time.monotonic())
            if on_layer_changed is not None and self.layers:
                self._on_layer_changed[outlet] = on_layer_changed
            outlet.on_keyframe_request = lambda: self.request_keyframe(selector.current or selector.target)
            self.request_keyframe(selector.target)
        else:
            outlet.on_keyframe_request = self.request_keyframe
            self.request_keyframe()

    @property
    def stream_names(self) -> tuple[str, ...]:
        """What `select_layer` takes besides None: the layers, lowest first, or `SINGLE_LAYER`."""
        return self.layers or (SINGLE_LAYER,)

    def select_layer(self, outlet: OutgoingTrack, layer: str | None) -> None:
        """Forward `layer` to `outlet` from the layer's next keyframe on (the current layer until
        then); None switches the subscriber off at once (nothing is forwarded, the slot stays)."""
        if not self.selects_layers:
            where = " on the transcode path" if self.path != "forward" else f" ({self.kind})"
            raise ValueError(f"track {self.track_sid} has no layers to select{where}")
        if layer is not None and layer not in self.streams:
            raise ValueError(f"layer must be one of {', '.join(self.stream_names)} or None, got {layer!r}")
        selector = self._selectors.get(outlet)
        if selector is None:
            raise ValueError(f"that subscriber does not receive track {self.track_sid}")
        if selector.select(layer, time.monotonic()):
            outlet.clear()
            self._tell_layer(outlet, None)
        if selector.waiting:
            self.request_keyframe(selector.target)

    def selection(self, outlet: OutgoingTrack) -> LayerSelection | None:
        """What `outlet` gets of a video track (None: not a video track it receives on the forwarding path)."""
        selector = self._selectors.get(outlet)
        return selector.selection() if selector is not None else None

    def _tell_layer(self, outlet: OutgoingTrack, layer: str | None) -> None:
        tell = self._on_layer_changed.get(outlet)
        if tell is not None:
            tell(layer)

    def remove(self, outlet: OutgoingTrack) -> None:
        if outlet in self.outlets:
            self.outlets.discard(outlet)
            self._selectors.pop(outlet, None)
            self._on_layer_changed.pop(outlet, None)
            outlet.on_keyframe_request = None
            outlet.clear()

    def close(self) -> None:
        for outlet in list(self.outlets):
            self.remove(outlet)
        if self._reader is not None:
            self._reader.cancel()
