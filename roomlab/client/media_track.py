"""Audio and video tracks: local sources to publish (a tone, a test pattern, a file, a device) and
the remote tracks a subscriber receives."""

from __future__ import annotations

import asyncio
import fractions
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError

from ..policy.allocation import PRIORITIES
from ..protocol.layers import LAYER_NAMES, LayerSpec, check_layers
from .events import EventEmitter

if TYPE_CHECKING:
    from .participant import RemoteParticipant

AUDIO_RATE = 48_000
AUDIO_PTIME = 0.020
VIDEO_CLOCK = 90_000


class _Pacer:
    """Hands out media timestamps and sleeps so that frames leave in real time."""

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.start: float | None = None
        self.timestamp = 0

    async def next(self, step: int) -> int:
        if self.start is None:
            self.start = time.time()
            return 0
        self.timestamp += step
        delay = self.start + self.timestamp / self.clock_rate - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        return self.timestamp


class ToneSource(MediaStreamTrack):
    """A sine tone, 48 kHz mono, in 20 ms frames."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0, amplitude: float = 0.3) -> None:
        super().__init__()
        if not 0 < frequency < AUDIO_RATE / 2:
            raise ValueError(f"frequency must be between 0 and {AUDIO_RATE // 2} Hz, got {frequency}")
        self.frequency = frequency
        self.amplitude = amplitude
        self._pacer = _Pacer(AUDIO_RATE)
        self._samples = int(AUDIO_RATE * AUDIO_PTIME)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        import numpy as np  # loaded where samples are made: importing roomlab should not

        pts = await self._pacer.next(self._samples)
        t = (np.arange(self._samples) + pts) / AUDIO_RATE
        samples = (self.amplitude * 32767 * np.sin(2 * math.pi * self.frequency * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame


class PatternSource(MediaStreamTrack):
    """Moving colour bars with a frame counter band: easy to see and to check at the far end."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 180, fps: float = 15) -> None:
        super().__init__()
        for name, value, low, high in (("width", width, 16, 3840), ("height", height, 16, 2160), ("fps", fps, 1, 60)):
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}, got {value}")
        if width % 2 or height % 2:
            raise ValueError(f"width and height must be even (YUV 4:2:0), got {width}x{height}")
        self.width, self.height, self.fps = width, height, fps
        self._pacer = _Pacer(VIDEO_CLOCK)
        self._count = 0
        import numpy as np  # loaded where pictures are made: importing roomlab should not

        bars = np.array(
            [
                [235, 235, 235],
                [235, 235, 16],
                [16, 235, 235],
                [16, 235, 16],
                [235, 16, 235],
                [235, 16, 16],
                [16, 16, 235],
            ],
            dtype=np.uint8,
        )
        columns = (np.arange(width) * len(bars) // width).astype(int)
        self._bars = np.repeat(bars[columns][np.newaxis, :, :], height, axis=0)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        import numpy as np

        pts = await self._pacer.next(int(VIDEO_CLOCK / self.fps))
        image = np.roll(self._bars, self._count * 4, axis=1)
        image[: self.height // 8] = (self._count * 8) % 256  # a band whose shade counts frames
        self._count += 1
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame


class _Outgoing(MediaStreamTrack):
    """What one RTCRtpSender sends of a local track: the track's frames. aiortc stops the track of
    a sender whose connection closes; this stops only itself, so that the local track lives on and
    is sent on the room's next connection after a reconnection."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        return await self.source.recv()


class LocalMediaTrack:
    """An audio or video source to publish (a layered video track has one source per layer)."""

    kind = ""

    def __init__(self, media: MediaStreamTrack, name: str | None = None, *, player: MediaPlayer | None = None) -> None:
        if media.kind != self.kind:
            raise ValueError(f"{type(self).__name__} needs a {self.kind} source, got {media.kind}")
        self.media = media
        self.name = name or str(uuid.uuid4())
        self.sid: str | None = None
        self._player = player
        #: called with each RTCRtpSender that carries this track, one per layer of a layered track
        #: (`sender.track.source` is that layer's source), for replayed media's hooks; called again for
        #: the senders of a new connection after a reconnection
        self.on_sender: Callable[[Any], None] | None = None
        self._outgoing: dict[str | None, _Outgoing] = {}

    def _sender_track(self, layer: str | None = None) -> MediaStreamTrack:
        """The track to give the sender of `layer` (None: a track without layers) on the room's
        current connection."""
        outgoing = self._outgoing.get(layer)
        if outgoing is None or outgoing.readyState != "live":
            outgoing = self._outgoing[layer] = _Outgoing(self.sources()[layer])
        return outgoing

    def _is_sent_by(self, track: MediaStreamTrack | None, layer: str | None = None) -> bool:
        """Whether `track` (a sender's) carries `layer` of this track now."""
        outgoing = self._outgoing.get(layer)
        return outgoing is not None and track is outgoing

    def sources(self) -> dict[str | None, MediaStreamTrack]:
        """What is sent, by layer name (None: the one stream of a track without layers)."""
        return {None: self.media}

    def stop(self) -> None:
        for source in self.sources().values():
            source.stop()

    @classmethod
    def _open(cls, path: str, format: str | None, options: dict[str, str] | None, name: str | None) -> Any:
        if format is None and not Path(path).exists():
            raise FileNotFoundError(f"no media file at {path!r}")
        try:
            player = MediaPlayer(path, format=format, options=options or {})
        except (av.FFmpegError, OSError) as exc:
            raise ValueError(f"cannot open {path!r}{f' as {format}' if format else ''}: {exc}") from None
        media = player.audio if cls.kind == "audio" else player.video
        if media is None:
            raise ValueError(f"{path!r} has no {cls.kind} stream")
        return cls(media, name, player=player)

    @classmethod
    def from_file(cls, path: str | Path, name: str | None = None) -> Any:
        """The first stream of this kind in a media file, decoded with PyAV, played in real time."""
        return cls._open(str(path), None, None, name)

    @classmethod
    def from_device(
        cls, device: str, format: str, options: dict[str, str] | None = None, name: str | None = None
    ) -> Any:
        """A capture device through FFmpeg (for example `"default", "pulse"` or `"/dev/video0", "v4l2"`)."""
        return cls._open(device, format, options, name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} sid={self.sid}>"


class LocalAudioTrack(LocalMediaTrack):
    kind = "audio"

    @classmethod
    def tone(cls, frequency: float = 440.0, name: str | None = None) -> LocalAudioTrack:
        return cls(ToneSource(frequency), name)


@dataclass(frozen=True)
class VideoLayer:
    """One quality layer of a layered `LocalVideoTrack`: a video source and what it sends."""

    source: MediaStreamTrack
    """The layer's frames (or pre-encoded packets). Layers need no common timeline (the server
    re-stamps at every switch); keyframes at the same instants make switches quick."""
    width: int
    """Picture width, pixels."""
    height: int
    """Picture height, pixels."""
    bitrate_bps: int
    """About what the layer sends, bit/s."""


class LocalVideoTrack(LocalMediaTrack):
    """A video source to publish, or with `layers` a layered (simulcast) track: one publication whose
    layers (`low`, `standard`, `high`) travel to the server as RTP streams of their own, of which
    the server forwards one to each subscriber."""

    kind = "video"

    def __init__(
        self,
        media: MediaStreamTrack | None = None,
        name: str | None = None,
        *,
        layers: Mapping[str, VideoLayer] | None = None,
        player: MediaPlayer | None = None,
    ) -> None:
        if layers is None:
            if media is None:
                raise ValueError("LocalVideoTrack needs a source (media) or layers")
            self.layers: dict[str, VideoLayer] = {}
            super().__init__(media, name, player=player)
            return
        if media is not None:
            raise ValueError("give LocalVideoTrack either a source (media) or layers, not both")
        if not isinstance(layers, Mapping):
            raise ValueError(f"layers must be a mapping of layer name ({', '.join(LAYER_NAMES)}) to VideoLayer")
        for layer_name, layer in layers.items():
            if not isinstance(layer, VideoLayer):
                raise ValueError(f"layer {layer_name!r} must be a VideoLayer, got {type(layer).__name__}")
            if getattr(layer.source, "kind", None) != "video":
                raise ValueError(f"layer {layer_name!r} needs a video source")
        specs = check_layers(LayerSpec(n, v.width, v.height, v.bitrate_bps) for n, v in layers.items())
        if len({id(layers[spec.name].source) for spec in specs}) != len(specs):
            raise ValueError("each layer needs a source of its own")
        self.layers = {spec.name: layers[spec.name] for spec in specs}
        super().__init__(self.layers[specs[-1].name].source, name)

    def layer_specs(self) -> tuple[LayerSpec, ...]:
        """The layers as announced to the server, lowest first (empty for a track without layers)."""
        return tuple(LayerSpec(n, v.width, v.height, v.bitrate_bps) for n, v in self.layers.items())

    def sources(self) -> dict[str | None, MediaStreamTrack]:
        if not self.layers:
            return super().sources()
        return {layer_name: layer.source for layer_name, layer in self.layers.items()}

    @classmethod
    def pattern(cls, width: int = 320, height: int = 180, fps: float = 15, name: str | None = None) -> LocalVideoTrack:
        return cls(PatternSource(width, height, fps), name)


class FrameTap:
    """Reads a received track continuously (so frames never pile up) and hands the newest to
    whoever asks. One per receiver; it outlives the remote tracks it carries in turn."""

    def __init__(self, source: MediaStreamTrack) -> None:
        self.source = source
        self.frames = 0
        self._next = self._new_future()
        self._task = asyncio.get_running_loop().create_task(self._drain())

    @staticmethod
    def _new_future() -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # an end nobody awaited is fine
        return future

    async def _drain(self) -> None:
        try:
            while True:
                frame = await self.source.recv()
                self.frames += 1
                if not self._next.done():
                    self._next.set_result(frame)
                self._next = self._new_future()
        except (MediaStreamError, asyncio.CancelledError):
            if not self._next.done():
                self._next.set_exception(MediaStreamError())

    async def recv(self) -> Any:
        return await asyncio.shield(self._next)

    def stop(self) -> None:
        self._task.cancel()


class EncodedTap:
    """A received track's encoded frames (after the jitter buffer, never decoded), for clients
    that only count or forward media, such as simulated participants. `recv()` gives the next
    frame's bytes. Installed on the receiver before it starts (see roomlab.net.rtp.tap_receiver)."""

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0
        self._next = FrameTap._new_future()

    def deliver(self, codec: Any, frame: Any) -> None:
        self.frames += 1
        self.bytes += len(frame.data)
        if not self._next.done():
            self._next.set_result(frame.data)
        self._next = FrameTap._new_future()

    async def recv(self) -> Any:
        return await asyncio.shield(self._next)

    def stop(self) -> None:
        if not self._next.done():
            self._next.set_exception(MediaStreamError())


class RemoteMediaTrack(EventEmitter):
    """A subscribed audio or video track; `await recv()` returns its next decoded frame."""

    kind = ""

    def __init__(
        self,
        sid: str,
        name: str,
        tap: FrameTap | EncodedTap,
        participant: RemoteParticipant,
        reconnecting: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__()
        self.sid = sid
        self.name = name
        self.participant = participant
        self.is_enabled = True
        self.is_switched_off = False
        self._tap = tap
        self._frames_at_start = tap.frames
        #: whether the room is reconnecting (then an ended receiver is not the end of the track)
        self._reconnecting = reconnecting
        self._changed: asyncio.Future[None] | None = None

    @property
    def frames_received(self) -> int:
        return self._tap.frames - self._frames_at_start

    async def recv(self) -> Any:
        """The next frame: decoded (av.AudioFrame / av.VideoFrame), or its encoded bytes when the
        room was joined with `decode_media=False`."""
        while True:
            tap = self._tap
            try:
                return await tap.recv()
            except MediaStreamError:
                if self._tap is not tap:
                    continue  # the room reconnected with a new connection: go on with its receiver
                if not self._reconnecting():
                    raise
                if self._changed is None or self._changed.done():
                    self._changed = asyncio.get_running_loop().create_future()
                await self._changed  # the old connection's receiver ended: wait for the new one

    def _retap(self, tap: FrameTap | EncodedTap) -> None:
        """The subscription continues on the receiver of a new connection (after a break)."""
        received, old = self.frames_received, self._tap
        self._tap = tap
        self._frames_at_start = tap.frames - received
        old.stop()
        self._wake()

    def _wake(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} sid={self.sid} from {self.participant.identity!r}>"


class RemoteAudioTrack(RemoteMediaTrack):
    kind = "audio"


class RemoteVideoTrack(RemoteMediaTrack):
    """A subscribed video track. Of a layered publication the server forwards one layer at a time:
    `layer` says which (None before the first frame, while switched off, or for a track without
    layers), and `layer_changed(layer)` is emitted when the server switches.

    The server's bandwidth allocation (SPEC §11) may switch it off: `is_switched_off`,
    `switch_off_reason` (`bandwidth`, `max_tracks`, `subscriber`, `publisher`, `disabled`; None while
    on), events `switched_off(track)` and `switched_on(track)` (also `track_switched_off` /
    `track_switched_on` on the participant and the room). `set_priority(p or None)` overrides the
    publisher's priority for you; `switch_off()` / `switch_on()` switch it off and back on yourself.
    """

    kind = "video"

    def __init__(
        self,
        sid: str,
        name: str,
        tap: FrameTap | EncodedTap,
        participant: RemoteParticipant,
        reconnecting: Callable[[], bool] = lambda: False,
        send: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(sid, name, tap, participant, reconnecting)
        self.layer: str | None = None
        #: your priority for this track (None: the publisher's applies)
        self.priority: str | None = None
        self.switch_off_reason: str | None = None
        self._send = send

    def _set_layer(self, layer: str | None) -> bool:
        """The server switched this subscriber to `layer`; True when that is a change."""
        if layer == self.layer:
            return False
        self.layer = layer
        self.emit("layer_changed", layer)
        return True

    def _set_switched_off(self, reason: str | None) -> bool:
        """The server switched this track off for `reason` (None: on); True when on/off changed
        (the track's event was emitted)."""
        changed = (reason is not None) != self.is_switched_off
        self.is_switched_off, self.switch_off_reason = reason is not None, reason
        if changed:
            self.emit("switched_off" if reason is not None else "switched_on", self)
        return changed

    def set_priority(self, priority: str | None) -> None:
        """Your priority for this track (`low`, `standard`, `high`), over the publisher's; None goes
        back to the publisher's (Twilio's `RemoteVideoTrack.setPriority`)."""
        if priority is not None and priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)} or None, got {priority!r}")
        self._control({"type": "set_subscriber_priority", "track_sid": self.sid, "priority": priority})
        self.priority = priority

    def switch_off(self) -> None:
        """Stop receiving this track (reason `subscriber`) until `switch_on()`; its slot is kept."""
        self._control({"type": "switch_track", "track_sid": self.sid, "switched_off": True})

    def switch_on(self) -> None:
        """Receive this track again after `switch_off()` (bandwidth allowing)."""
        self._control({"type": "switch_track", "track_sid": self.sid, "switched_off": False})

    def _control(self, message: dict[str, Any]) -> None:
        if self._send is None:
            raise RuntimeError("this track is not subscribed in a room")
        self._send(message)
