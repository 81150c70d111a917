"""Media for simulated participants: encoded once (PyAV: Opus, VP8), replayed as packets.

A bot never encodes or decodes per frame: its sender packs replayed `av.Packet`s into RTP, and it
receives with `decode_media=False`. Clips are made on first use in each process and cached.
"""

from __future__ import annotations

import asyncio
import fractions
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av.video.frame import PictureType

from ..client.media_track import LocalVideoTrack, VideoLayer
from ..net.rtp import route_keyframe_requests

AUDIO_RATE = 48_000
AUDIO_FRAME = 960  # 20 ms
VIDEO_CLOCK = 90_000
#: Camera layers (name -> width, height, the encoder's target bitrate), as a publisher of simulcast
#: would offer; the clips come out at about 170, 550 and 1200 kbit/s (`EncodedClip.bitrate_bps`).
LAYERS: dict[str, tuple[int, int, int]] = {
    "low": (160, 90, 150_000),
    "standard": (320, 180, 500_000),
    "high": (640, 360, 1_100_000),
}
#: Seconds between keyframes, at the same frames in every layer: a subscriber switched to another
#: layer gets it at the next keyframe, so within about this long.
KEYFRAME_INTERVAL_S = 0.5
#: libvpx's cap on a keyframe, in percent of an average frame: keyframes every half second stay
#: within the layer's bitrate instead of bursting.
MAX_KEYFRAME_PERCENT = 300
#: In silence, Opus DTX sends one small comfort-noise packet every 400 ms instead of 20 ms frames.
DTX_INTERVAL_FRAMES = 20
SPEECH_LEVEL_DBOV = -20
SILENCE_LEVEL_DBOV = -127


@dataclass(frozen=True)
class EncodedClip:
    """A loop of encoded frames and where its keyframes are."""

    kind: str
    packets: tuple[bytes, ...]
    keyframes: tuple[int, ...]
    clock_rate: int
    frame_ticks: int

    @property
    def seconds(self) -> float:
        return len(self.packets) * self.frame_ticks / self.clock_rate

    @property
    def bitrate_bps(self) -> float:
        return sum(len(p) for p in self.packets) * 8 / self.seconds


@functools.cache
def speech_clip(seconds: float = 2.0, bitrate: int = 32_000) -> EncodedClip:
    """Opus at 48 kHz mono, 20 ms frames, of a voiced, amplitude-modulated signal."""
    import numpy as np  # only to make the clips, once: bots that send no media never load it

    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format = AUDIO_RATE, "mono", "s16"
    codec.bit_rate = bitrate
    codec.time_base = fractions.Fraction(1, AUDIO_RATE)
    rng = np.random.default_rng(7)
    packets = []
    for i in range(int(seconds * AUDIO_RATE / AUDIO_FRAME)):
        t = (np.arange(AUDIO_FRAME) + i * AUDIO_FRAME) / AUDIO_RATE
        pitch = 140 + 30 * np.sin(2 * math.pi * 0.7 * t)
        voice = sum(np.sin(2 * math.pi * k * pitch * t) / k for k in range(1, 6))
        envelope = 0.55 + 0.45 * np.sin(2 * math.pi * 4 * t)  # syllables
        signal = 6000 * envelope * voice + 300 * rng.standard_normal(AUDIO_FRAME)
        frame = av.AudioFrame.from_ndarray(signal.astype(np.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, i * AUDIO_FRAME, codec.time_base
        packets.extend(bytes(p) for p in codec.encode(frame))
    packets.extend(bytes(p) for p in codec.encode(None))
    return EncodedClip("audio", tuple(packets), (), AUDIO_RATE, AUDIO_FRAME)


@functools.cache
def comfort_noise_packet() -> bytes:
    """One Opus packet of near-silence, sent every 400 ms while a talker is quiet (DTX)."""
    import numpy as np  # only to make the clips, once: bots that send no media never load it

    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format = AUDIO_RATE, "mono", "s16"
    codec.bit_rate = 6000
    codec.time_base = fractions.Fraction(1, AUDIO_RATE)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, AUDIO_FRAME), np.int16), format="s16", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, 0, codec.time_base
    packets = [bytes(p) for p in codec.encode(frame)] + [bytes(p) for p in codec.encode(None)]
    return min(packets, key=len)


def keyframe_interval(fps: int) -> int:
    """Frames from one keyframe to the next at `fps` (8 at 15 fps: 0.53 s)."""
    return max(1, round(fps * KEYFRAME_INTERVAL_S))


@functools.cache
def camera_clip(layer: str = "standard", fps: int = 15, seconds: float = 2.0) -> EncodedClip:
    """VP8 of a moving scene with texture, at the layer's size and bitrate. Keyframes come every
    `keyframe_interval(fps)` frames from the first, and the clip is a whole number of such
    intervals long, so that the clips of all layers have the same frames and keyframes."""
    import numpy as np  # only to make the clips, once: bots that send no media never load it

    if layer not in LAYERS:
        raise ValueError(f"layer must be one of {', '.join(LAYERS)}, got {layer!r}")
    width, height, bitrate = LAYERS[layer]
    interval = keyframe_interval(fps)
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = fractions.Fraction(1, fps)
    codec.bit_rate = bitrate
    codec.gop_size = interval
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "minrate": str(bitrate // 2),
        "max-intra-rate": str(MAX_KEYFRAME_PERCENT),
    }
    rng = np.random.default_rng(11)
    y, x = np.mgrid[0:height, 0:width]
    packets, keyframes = [], []
    for i in range(math.ceil(seconds * fps / interval) * interval):
        image = np.empty((height, width, 3), np.uint8)
        image[..., 0] = (x * 255 // width + i * 6) % 256
        image[..., 1] = (y * 255 // height + i * 3) % 256
        image[..., 2] = ((x + y + i * 5) // 8 % 2) * 200
        patch = slice(height // 4, 3 * height // 4), slice((i * 7) % (width // 2), (i * 7) % (width // 2) + width // 2)
        image[patch] = rng.integers(0, 256, image[patch].shape, dtype=np.uint8)  # detail a camera sees
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = i, codec.time_base
        frame.pict_type = PictureType.I if i % interval == 0 else PictureType.NONE
        for packet in codec.encode(frame):
            if packet.is_keyframe:
                keyframes.append(len(packets))
            packets.append(bytes(packet))
    for packet in codec.encode(None):
        packets.append(bytes(packet))
    return EncodedClip("video", tuple(packets), tuple(keyframes), VIDEO_CLOCK, VIDEO_CLOCK // fps)


class Playhead:
    """Where the layers of one camera are in their clips: one start time and one position for all,
    so that they share one pts timeline and their keyframes stay aligned. A keyframe request
    moves every layer to the next keyframe."""

    def __init__(self, frames: int, keyframes: tuple[int, ...]) -> None:
        self.frames = frames
        self.keyframes = keyframes
        self.start: float | None = None
        self.latest = -1
        #: clip position = frame number + offset, from frame `_jump_from` on (`_offset_before` until then)
        self._offset = 0
        self._offset_before = 0
        self._jump_from = 0

    def index(self, frame_number: int) -> int:
        """The clip position of frame `frame_number` (counted from `start` in frame periods): the
        same in every layer, also for a layer that reads a frame after another layer's jump."""
        self.latest = max(self.latest, frame_number)
        offset = self._offset if frame_number >= self._jump_from else self._offset_before
        return (frame_number + offset) % self.frames

    def jump_to_keyframe(self) -> None:
        """Make the next frame (the one after the latest any layer took) a keyframe, in every layer."""
        if not self.keyframes:
            return
        following = (self.latest + 1 + self._offset) % self.frames
        later = [k for k in self.keyframes if k >= following]
        skip = (later[0] if later else self.keyframes[0] + self.frames) - following
        if skip:
            self._offset_before, self._jump_from = self._offset, self.latest + 1
            self._offset += skip


class ReplayTrack(MediaStreamTrack):
    """Plays a clip in a loop as `av.Packet`s in real time; aiortc packs them without encoding.

    For audio, `talking()` (when given) decides speech or silence: in silence it sends Opus DTX
    comfort noise every 400 ms, and `level_dbov` is what the RTP audio-level extension carries.
    For video, `request_keyframe()` (a subscriber's PLI) jumps to the clip's next keyframe; the
    layers of one camera share a `Playhead` (one pts timeline, keyframes at the same frames).
    """

    def __init__(
        self, clip: EncodedClip, talking: Callable[[], bool] | None = None, playhead: Playhead | None = None
    ) -> None:
        super().__init__()
        self.kind = clip.kind
        self.clip = clip
        self.talking = talking
        self.frames_sent = 0
        self.max_lateness = 0.0
        if playhead is not None and playhead.frames != len(clip.packets):
            raise ValueError(f"the playhead is for clips of {playhead.frames} frames, this one has {len(clip.packets)}")
        self.playhead = (
            playhead if playhead is not None or clip.kind != "video" else Playhead(len(clip.packets), clip.keyframes)
        )
        self._index = 0
        self._ticks = 0
        self._start: float | None = None
        self._time_base = fractions.Fraction(1, clip.clock_rate)

    @property
    def level_dbov(self) -> int:
        return SPEECH_LEVEL_DBOV if self.talking is None or self.talking() else SILENCE_LEVEL_DBOV

    def request_keyframe(self) -> None:
        if self.playhead is not None:
            self.playhead.jump_to_keyframe()

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        loop_time = time.monotonic()
        if self._start is None:
            if self.playhead is None:
                self._start = loop_time
            else:  # a layer that starts late joins the others' timeline at the current frame
                if self.playhead.start is None:
                    self.playhead.start = loop_time
                self._start = self.playhead.start
                period = self.clip.frame_ticks
                self._ticks = int((loop_time - self._start) * self.clip.clock_rate) // period * period
        while True:
            due = self._start + self._ticks / self.clip.clock_rate
            if due > loop_time:
                await asyncio.sleep(due - loop_time)
            self.max_lateness = max(self.max_lateness, time.monotonic() - due)  # how late this frame is
            ticks = self._ticks
            self._ticks += self.clip.frame_ticks
            frame_number = ticks // self.clip.frame_ticks
            if self.talking is not None and not self.talking():
                if frame_number % DTX_INTERVAL_FRAMES:
                    loop_time = time.monotonic()
                    continue  # DTX: nothing this frame
                data = comfort_noise_packet()
            elif self.playhead is not None:
                index = self.playhead.index(frame_number)
                if not self.frames_sent and self.clip.keyframes and index not in self.clip.keyframes:
                    loop_time = time.monotonic()
                    continue  # a stream starts with a keyframe: a layer that starts late waits for the next
                data = self.clip.packets[index]
            else:
                data = self.clip.packets[self._index]
                self._index = (self._index + 1) % len(self.clip.packets)
            packet = av.Packet(data)
            packet.pts = ticks
            packet.time_base = self._time_base
            self.frames_sent += 1
            return packet


def camera_track(
    layers: tuple[str, ...] = ("low", "standard", "high"), fps: int = 15, name: str = "camera"
) -> LocalVideoTrack:
    """A layered `LocalVideoTrack` of pre-encoded camera clips, one layer per name in `layers`, on
    one timeline with aligned keyframes; keyframe requests jump every layer to the next keyframe."""
    unknown = [layer for layer in layers if layer not in LAYERS]
    if unknown or not layers:
        raise ValueError(f"layers must be among {', '.join(LAYERS)}, got {list(layers)}")
    clips = {layer: camera_clip(layer, fps) for layer in layers}
    common = set.intersection(*(set(clip.keyframes) for clip in clips.values()))
    playhead = Playhead(len(clips[layers[0]].packets), tuple(sorted(common)))
    track = LocalVideoTrack(
        name=name,
        layers={
            layer: VideoLayer(ReplayTrack(clip, playhead=playhead), *LAYERS[layer][:2], round(clip.bitrate_bps))
            for layer, clip in clips.items()
        },
    )
    track.on_sender = lambda sender: route_keyframe_requests(sender, sender.track.source.request_keyframe)
    return track
