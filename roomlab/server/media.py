"""Media forwarding: a published track's frames, from the publisher's receiver to each subscriber's
sender, without transcoding.

aiortc decodes every received track in a thread and re-encodes it for every sender. Here the
publisher's receiver hands its encoded frames (re-assembled after the jitter buffer, before any
decoder) to the forwarder, which gives the same `av.Packet` to every subscriber's outgoing track;
aiortc's sender packs a packet into RTP without encoding it. Subscribers still get valid RTP with
their own sequence numbers, SSRC and timestamps. A subscriber's keyframe request (PLI/FIR) is
passed to the publisher.

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
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCRtpReceiver
from aiortc.mediastreams import MediaStreamError

from ..net.rtp import is_keyframe, observe_audio_levels, route_keyframe_requests, tap_receiver

__all__ = ["MEDIA_PATHS", "MediaForwarder", "OutgoingTrack", "route_keyframe_requests", "tap_receiver"]

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
        #: a new subscriber's decoder can only start at a keyframe: frames before it are skipped
        self.awaiting_keyframe = False

    def push(self, frame: Any, keyframe: bool = True) -> None:
        if self.awaiting_keyframe:
            if not keyframe:
                return
            self.awaiting_keyframe = False
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


class MediaForwarder:
    """One published audio or video track and the outgoing tracks of its subscribers."""

    def __init__(self, track_sid: str, kind: str, path: str = "forward") -> None:
        if path not in MEDIA_PATHS:
            raise ValueError(f"media path must be one of {', '.join(MEDIA_PATHS)}, got {path!r}")
        self.track_sid = track_sid
        self.kind = kind
        self.path = path
        self.outlets: set[OutgoingTrack] = set()
        self.codec: Any = None
        self.frames_forwarded = 0
        self._receiver: RTCRtpReceiver | None = None
        self._ssrc: int | None = None
        self._last_keyframe_request = 0.0
        self._reader: asyncio.Task[None] | None = None

    # the publisher's side
    def attach(
        self, receiver: RTCRtpReceiver, track: MediaStreamTrack, audio_level: Callable[[int], None] | None = None
    ) -> None:
        """Start taking frames from the publisher (called from the peer connection's `track`);
        `audio_level` gets the RFC 6464 level of every audio packet, read without decoding; again
        on the new connection of a publisher that reconnected."""
        again = self._receiver is not None
        if self._reader is not None:
            self._reader.cancel()
        self._receiver = receiver
        if again:
            for outlet in self.outlets:  # a new stream: subscribers' decoders restart at a keyframe
                outlet.awaiting_keyframe = self.kind == "video" and self.path == "forward"
        if self.path == "forward":
            tap_receiver(receiver, self.kind, self._on_encoded_frame, audio_level if self.kind == "audio" else None)
        else:
            if audio_level is not None and self.kind == "audio":
                observe_audio_levels(receiver, audio_level)
            self._reader = asyncio.get_running_loop().create_task(self._read_decoded(track))

    def _on_encoded_frame(self, codec: Any, frame: Any) -> None:
        self.codec = codec
        packet = av.Packet(frame.data)
        packet.pts = frame.timestamp
        packet.time_base = fractions.Fraction(1, codec.clockRate)
        self._fan_out(packet, self.kind == "audio" or is_keyframe(codec.mimeType, frame.data))

    async def _read_decoded(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                self._fan_out(await track.recv())
        except MediaStreamError:
            return

    def _fan_out(self, frame: Any, keyframe: bool = True) -> None:
        self.frames_forwarded += 1
        waiting = False
        for outlet in self.outlets:
            outlet.push(frame, keyframe)
            waiting = waiting or outlet.awaiting_keyframe
        if waiting:  # keep asking (at most every 0.5 s): a request may be lost or come too soon after another
            self.request_keyframe()

    def request_keyframe(self) -> None:
        """A subscriber lost a picture: ask the publisher for a keyframe (at most every 0.5 s)."""
        if self.kind != "video" or self._receiver is None:
            return
        now = time.monotonic()
        if now - self._last_keyframe_request < KEYFRAME_REQUEST_INTERVAL:
            return
        self._last_keyframe_request = now
        ssrcs = [s.source for s in self._receiver.getSynchronizationSources()]
        if ssrcs:
            asyncio.get_running_loop().create_task(self._receiver._send_rtcp_pli(ssrcs[0]))

    # the subscribers' side
    def add(self, outlet: OutgoingTrack) -> None:
        outlet.clear()
        outlet.on_keyframe_request = self.request_keyframe
        outlet.awaiting_keyframe = self.kind == "video" and self.path == "forward"
        self.outlets.add(outlet)
        self.request_keyframe()  # a new subscriber needs a keyframe to start decoding

    def remove(self, outlet: OutgoingTrack) -> None:
        if outlet in self.outlets:
            self.outlets.discard(outlet)
            outlet.on_keyframe_request = None
            outlet.clear()

    def close(self) -> None:
        for outlet in list(self.outlets):
            self.remove(outlet)
        if self._reader is not None:
            self._reader.cancel()
