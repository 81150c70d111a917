"""What simulated participants do: talk, show a camera, move a cursor, chat, draw, or send
whatever an async generator yields.

A behaviour is a small dataclass of parameters (so that it can be sent to a worker process) with
two methods: `tracks()` gives the tracks to publish, `run(room, stop)` drives them until `stop`
is set. Timing uses absolute deadlines, so a late wake-up never accumulates into drift.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ..client.data_track import LocalDataTrack
from ..client.media_track import LocalAudioTrack
from ..client.participant import PRIORITIES
from ..client.room import Room
from ..net.rtp import set_audio_level
from .media import LAYERS, ReplayTrack, camera_track, speech_clip


class Pacer:
    """Wakes at `start + k * interval`; counts how late each wake-up was (timer drift)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_at = asyncio.get_running_loop().time()
        self.max_lateness = 0.0

    async def tick(self, stop: asyncio.Event) -> bool:
        """Wait for the next tick; False once `stop` is set."""
        loop = asyncio.get_running_loop()
        self.next_at += self.interval
        delay = self.next_at - loop.time()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
        self.max_lateness = max(self.max_lateness, loop.time() - self.next_at)  # how late this wake-up was
        return not stop.is_set()


@dataclass
class Behaviour:
    def tracks(self) -> list[Any]:
        return []

    async def run(self, room: Room, stop: asyncio.Event) -> None:
        await stop.wait()

    @property
    def lateness(self) -> float:
        """Largest lateness of a timer since the last `reset_lateness()`, in seconds."""
        return 0.0

    def reset_lateness(self) -> None:
        """Start counting lateness again (the simulation does when its last bot has joined)."""


@dataclass
class Talker(Behaviour):
    """Speech and silence spurts (exponential lengths), pre-encoded Opus with DTX in silence, the
    RFC 6464 audio level in every packet (-20 dBov in speech, silence -127)."""

    mean_talk_s: float = 2.0
    """Mean length of a speech spurt, seconds."""
    mean_silence_s: float = 4.0
    """Mean length of a silence, seconds."""
    seed: int | None = None
    """Random seed of the spurt lengths."""
    name: str = "microphone"
    """Track name."""
    _talking: bool = field(default=False, init=False, repr=False)
    _track: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for label, value in (("mean_talk_s", self.mean_talk_s), ("mean_silence_s", self.mean_silence_s)):
            if not value > 0:
                raise ValueError(f"{label} must be above 0 seconds, got {value}")

    def is_talking(self) -> bool:
        return self._talking

    def tracks(self) -> list[Any]:
        replay = ReplayTrack(speech_clip(), talking=self.is_talking)
        track = LocalAudioTrack(replay, self.name)
        track.on_sender = lambda sender: set_audio_level(sender, lambda: replay.level_dbov)
        self._track = replay
        return [track]

    async def run(self, room: Room, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed)
        self._talking = rng.random() < self.mean_talk_s / (self.mean_talk_s + self.mean_silence_s)
        while not stop.is_set():
            mean = self.mean_talk_s if self._talking else self.mean_silence_s
            try:
                await asyncio.wait_for(stop.wait(), rng.expovariate(1 / mean))
            except TimeoutError:
                self._talking = not self._talking

    @property
    def lateness(self) -> float:
        return self._track.max_lateness if self._track is not None else 0.0

    def reset_lateness(self) -> None:
        if self._track is not None:
            self._track.max_lateness = 0.0


@dataclass
class Camera(Behaviour):
    """Pre-encoded VP8 in quality layers (low, standard, high), published as one layered video
    track: the server forwards one layer of it to each subscriber. The layers share one timeline
    with keyframes every half second at the same frames; a keyframe request jumps every layer to
    the next keyframe."""

    layers: tuple[str, ...] = ("low", "standard", "high")
    """Which layers to publish."""
    fps: int = 15
    """Frames per second."""
    name: str = "camera"
    """Track name."""
    priority: str = "standard"
    """Publish priority (`low`, `standard`, `high`), for the subscribers' bandwidth allocation."""
    _sources: list[Any] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = [layer for layer in self.layers if layer not in LAYERS]
        if unknown or not self.layers or len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers must be distinct names among {', '.join(LAYERS)}, got {list(self.layers)}")
        if not 1 <= self.fps <= 30:
            raise ValueError(f"fps must be between 1 and 30, got {self.fps}")
        if self.priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, got {self.priority!r}")

    def tracks(self) -> list[Any]:
        track = camera_track(tuple(self.layers), self.fps, self.name)
        self._sources = list(track.sources().values())
        return [track]

    @property
    def lateness(self) -> float:
        return max((t.max_lateness for t in self._sources), default=0.0)

    def reset_lateness(self) -> None:
        for track in self._sources:
            track.max_lateness = 0.0


@dataclass
class DataBehaviour(Behaviour):
    """Base of the data behaviours: one data track with the reliability options given."""

    name: str = "data"
    ordered: bool = True
    max_packet_life_time: int | None = None
    max_retransmits: int | None = None
    _track: Any = field(default=None, init=False, repr=False)
    _pacer: Any = field(default=None, init=False, repr=False)

    def tracks(self) -> list[Any]:
        self._track = LocalDataTrack(self.name, self.ordered, self.max_packet_life_time, self.max_retransmits)
        return [self._track]

    @property
    def lateness(self) -> float:
        return self._pacer.max_lateness if self._pacer is not None else 0.0

    def reset_lateness(self) -> None:
        if self._pacer is not None:
            self._pacer.max_lateness = 0.0

    def send(self, payload: str | bytes) -> None:
        try:
            self._track.send(payload)
        except Exception:  # a full buffer on a reliable track: the behaviour skips a beat
            pass


@dataclass
class Cursor(DataBehaviour):
    """Cursor moves (a random walk) at `rate_hz` on a data track, unreliable by default."""

    rate_hz: float = 30.0
    name: str = "cursor"
    ordered: bool = False
    max_retransmits: int | None = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.rate_hz <= 1000:
            raise ValueError(f"rate_hz must be in (0, 1000], got {self.rate_hz}")

    async def run(self, room: Room, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed)
        x, y = rng.uniform(0, 1920), rng.uniform(0, 1080)
        self._pacer = Pacer(1 / self.rate_hz)
        while await self._pacer.tick(stop):
            x = min(1920.0, max(0.0, x + rng.gauss(0, 12)))
            y = min(1080.0, max(0.0, y + rng.gauss(0, 12)))
            self.send(json.dumps({"x": round(x, 1), "y": round(y, 1)}))


@dataclass
class Chat(DataBehaviour):
    """Chat messages in bursts (a few lines typed together), on a reliable ordered track."""

    mean_interval_s: float = 3.0
    burst: int = 3
    name: str = "chat"
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.mean_interval_s > 0 or self.burst < 1:
            raise ValueError("mean_interval_s must be above 0 and burst at least 1")

    async def run(self, room: Room, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed)
        count = 0
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), rng.expovariate(1 / self.mean_interval_s))
            except TimeoutError:
                for _ in range(rng.randint(1, self.burst)):
                    count += 1
                    self.send(f"message {count}: " + "lorem ipsum " * rng.randint(1, 8))


@dataclass
class Strokes(DataBehaviour):
    """Whiteboard strokes: points at `rate_hz` while drawing, pauses between strokes; reliable."""

    rate_hz: float = 60.0
    points_per_stroke: int = 40
    pause_s: float = 1.0
    name: str = "strokes"
    seed: int | None = None

    async def run(self, room: Room, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed)
        self._pacer = Pacer(1 / self.rate_hz)
        stroke = 0
        while not stop.is_set():
            stroke += 1
            x, y = rng.uniform(0, 1000), rng.uniform(0, 700)
            for point in range(self.points_per_stroke):
                if not await self._pacer.tick(stop):
                    return
                x, y = x + rng.gauss(2, 3), y + rng.gauss(0, 3)
                self.send(json.dumps({"stroke": stroke, "point": point, "x": round(x, 1), "y": round(y, 1)}))
            try:
                await asyncio.wait_for(stop.wait(), self.pause_s)
            except TimeoutError:
                self._pacer.next_at = asyncio.get_running_loop().time()


@dataclass
class Generator(DataBehaviour):
    """Whatever an async generator yields, sent on a data track of its own.

    `source` is a function returning an async iterator of payloads, or its import path
    ("package.module:function") — the path form is what worker processes can receive.
    """

    source: Callable[[], AsyncIterator[str | bytes]] | str | None = None

    def __post_init__(self) -> None:
        if self.source is None:
            raise ValueError("Generator needs a source: an async generator function or 'module:function'")

    def _factory(self) -> Callable[[], AsyncIterator[str | bytes]]:
        if isinstance(self.source, str):
            module, _, function = self.source.partition(":")
            return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]
        assert self.source is not None
        return self.source

    async def run(self, room: Room, stop: asyncio.Event) -> None:
        iterator = self._factory()().__aiter__()
        while not stop.is_set():
            try:
                payload = await iterator.__anext__()
            except StopAsyncIteration:
                break
            self.send(payload)
        await stop.wait()


def behaviour_from_spec(kind: str, options: dict[str, Any] | None) -> Behaviour:
    """A behaviour from a scenario entry such as `cursor: {rate_hz: 30}`."""
    kinds: dict[str, type[Behaviour]] = {
        "talker": Talker,
        "camera": Camera,
        "cursor": Cursor,
        "chat": Chat,
        "strokes": Strokes,
        "generator": Generator,
    }
    if kind not in kinds:
        raise ValueError(f"unknown behaviour {kind!r}; known: {', '.join(kinds)}")
    options = dict(options or {})
    if "layers" in options:
        options["layers"] = tuple(options["layers"])
    try:
        return kinds[kind](**options)
    except TypeError as exc:
        raise ValueError(f"{kind}: {exc}") from None
