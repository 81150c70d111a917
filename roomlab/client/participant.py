"""Participants as a client sees them: itself (`LocalParticipant`) and the others."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from ..policy.allocation import PRIORITIES, BandwidthProfile
from ..policy.quality import NetworkQualityConfiguration, NetworkQualityStats
from ..protocol import framing
from .data_track import DRAIN_HIGH_WATER, DRAIN_LOW_WATER, LocalDataTrack, check_write_buffer_limits, drain
from .events import EventEmitter
from .media_track import LocalMediaTrack, LocalVideoTrack
from .publication import LocalTrackPublication, RemoteTrackPublication

if TYPE_CHECKING:
    from .room import Room

#: Seconds a publication may take (server reply, data channel open or media negotiated).
PUBLISH_TIMEOUT = 15.0


class NetworkQualityMixin(EventEmitter):
    """`network_quality_level` (0-5, None when not reported at your verbosity) and
    `network_quality_stats` (a `NetworkQualityStats`), with the event
    `network_quality_level_changed(level, stats)` when the level changes."""

    network_quality_level: int | None
    network_quality_stats: NetworkQualityStats | None

    def _set_network_quality(self, stats: NetworkQualityStats | None) -> bool:
        """Take what the server reported; True if the level changed (the event was emitted)."""
        level = stats.level if stats is not None else None
        changed = level != self.network_quality_level
        self.network_quality_level, self.network_quality_stats = level, stats
        if changed:
            self.emit("network_quality_level_changed", level, stats)
        return changed


class LocalParticipant(NetworkQualityMixin):
    def __init__(self, room: Room, sid: str, identity: str, metadata: str = "") -> None:
        super().__init__()
        self._room = room
        self.sid = sid
        self.identity = identity
        self.metadata = metadata
        self.tracks: dict[str, LocalTrackPublication] = {}
        self.network_quality_level = None
        self.network_quality_stats = None
        #: publish_data sequence numbers: (reliable, destination identity or None) -> last seq
        self._data_seq: dict[tuple[bool, str | None], int] = defaultdict(int)
        self._high_water, self._low_water = DRAIN_HIGH_WATER, DRAIN_LOW_WATER

    async def publish_track(
        self, track: LocalDataTrack | LocalMediaTrack, priority: str = "standard"
    ) -> LocalTrackPublication:
        """Publish a track; returns once subscribers can receive it (its channel or media is up)."""
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
        if not isinstance(track, LocalDataTrack | LocalMediaTrack):
            raise TypeError(
                f"track must be a LocalDataTrack, LocalAudioTrack or LocalVideoTrack, got {type(track).__name__}"
            )
        if track.sid is not None:
            raise ValueError(f"track {track.name!r} is already published (sid {track.sid})")
        options: dict[str, Any] = {"priority": priority}
        if isinstance(track, LocalDataTrack):
            options.update(track.options())
        elif isinstance(track, LocalVideoTrack) and track.layers:
            options["layers"] = [spec.to_wire() for spec in track.layer_specs()]
        reply = await self._room._request(
            {"type": "publish", "name": track.name, "kind": track.kind, "options": options}
        )
        sid = reply["track"]["sid"]
        if isinstance(track, LocalDataTrack):
            channel = await self._room._open_track_channel(sid, track)
            track._bind(sid, channel, self._room._counters, self._room)
        else:
            track.sid = sid
            await asyncio.wait_for(self._room._media_published(sid, track), PUBLISH_TIMEOUT)
        publication = LocalTrackPublication(sid, track.name, track.kind, track, priority, True, self)
        self.tracks[sid] = publication
        return publication

    async def unpublish_track(self, track: LocalDataTrack | LocalMediaTrack) -> None:
        if track.sid is None or track.sid not in self.tracks:
            raise ValueError(f"track {track.name!r} is not published")
        sid = track.sid
        self._room._send({"type": "unpublish", "sid": sid})
        del self.tracks[sid]
        if isinstance(track, LocalDataTrack):
            channel = track._channel
            track._bind(None, None)
            if channel is not None:
                channel.close()
        else:
            track.sid = None

    def set_network_quality_configuration(
        self, local: int | str | None = None, remote: int | str | None = None
    ) -> None:
        """Change how much you hear about your own network (`local`) and the others' (`remote`),
        live: 0-3 or none, minimal, moderate, detailed (None keeps the current value). Turns the
        Network Quality API on if `connect()` did not."""
        current = self._room._network_quality or NetworkQualityConfiguration()
        configuration = NetworkQualityConfiguration(
            current.local if local is None else local, current.remote if remote is None else remote
        )
        self._room._set_network_quality_configuration(configuration)

    def set_bandwidth_profile(self, bandwidth_profile: Any) -> None:
        """Change how the server divides your downlink among the video you receive, live: Twilio's
        Bandwidth Profile options in snake case (as `connect(bandwidth_profile=...)`; they replace the
        current ones, and keys left out take Twilio's defaults). Bad keys or values are ValueErrors
        naming the allowed ones."""
        self._room._set_bandwidth_profile(BandwidthProfile.from_options(bandwidth_profile or {}))

    def set_metadata(self, metadata: str) -> None:
        if not isinstance(metadata, str):
            raise TypeError(f"metadata must be a str, got {type(metadata).__name__}")
        self.metadata = metadata
        self._room._send({"type": "set_metadata", "metadata": metadata})

    def publish_data(
        self,
        payload: str | bytes,
        reliable: bool = True,
        destination_identities: list[str] | None = None,
        topic: str | None = None,
    ) -> None:
        """A message to everyone in the room, or to the named identities (LiveKit's publishData).
        Reliable messages arrive in order; unreliable ones may be lost, like the link."""
        if isinstance(destination_identities, str):
            raise ValueError("destination_identities must be a list of identities, not one string")
        room = self._room
        if destination_identities:
            destinations = []
            for identity in dict.fromkeys(destination_identities):
                key = (reliable, identity)
                destinations.append((identity, self._data_seq[key] + 1))
            frame = framing.encode(payload, 0, topic=topic, destinations=tuple(destinations))
            room._queue_data(frame, reliable)
            for identity, seq in destinations:
                self._data_seq[(reliable, identity)] = seq
        else:
            seq = self._data_seq[(reliable, None)] + 1
            frame = framing.encode(payload, seq, topic=topic)
            room._queue_data(frame, reliable)
            self._data_seq[(reliable, None)] = seq

    def set_write_buffer_limits(self, high: int = DRAIN_HIGH_WATER, low: int = DRAIN_LOW_WATER) -> None:
        """The marks `drain_data()` uses, in bytes (see `LocalDataTrack.set_write_buffer_limits`)."""
        self._high_water, self._low_water = check_write_buffer_limits(high, low)

    async def drain_data(self, reliable: bool = True) -> None:
        """`publish_data`'s `LocalDataTrack.drain()`: wait until the reliable (or lossy) messages
        queued are few enough to send more (reliable ones: also while the server holds too many
        of them for a participant that is receiving); raises RoomError if the room disconnects."""
        room = self._room
        label = room._data_label(reliable)
        await drain(
            lambda: room._data_outlet(label),
            lambda: room._data_queued(label),
            self._high_water,
            self._low_water,
            room,
            room._data_uncongested if reliable else None,
        )

    def __repr__(self) -> str:
        return f"<LocalParticipant {self.identity!r} {self.sid}>"


class RemoteParticipant(NetworkQualityMixin):
    def __init__(self, sid: str, identity: str, metadata: str = "") -> None:
        super().__init__()
        self.sid = sid
        self.identity = identity
        self.metadata = metadata
        self.state = "connected"
        self.tracks: dict[str, RemoteTrackPublication] = {}
        self.network_quality_level = None
        self.network_quality_stats = None

    def _by_kind(self, kind: str) -> dict[str, RemoteTrackPublication]:
        return {sid: p for sid, p in self.tracks.items() if p.kind == kind}

    @property
    def audio_tracks(self) -> dict[str, RemoteTrackPublication]:
        return self._by_kind("audio")

    @property
    def video_tracks(self) -> dict[str, RemoteTrackPublication]:
        return self._by_kind("video")

    @property
    def data_tracks(self) -> dict[str, RemoteTrackPublication]:
        return self._by_kind("data")

    def __repr__(self) -> str:
        return f"<RemoteParticipant {self.identity!r} {self.sid}>"
