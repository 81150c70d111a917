"""Track publications: a track as published in a room, on the publisher's side and on the others'."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..policy.allocation import PRIORITIES
from ..protocol.layers import LayerSpec

if TYPE_CHECKING:
    from .data_track import LocalDataTrack, RemoteDataTrack
    from .media_track import LocalMediaTrack, RemoteMediaTrack
    from .participant import LocalParticipant


@dataclass
class LocalTrackPublication:
    track_sid: str
    track_name: str
    kind: str
    track: LocalDataTrack | LocalMediaTrack
    priority: str = "standard"
    is_track_enabled: bool = True
    _participant: LocalParticipant | None = field(default=None, repr=False)

    async def unpublish(self) -> None:
        if self._participant is not None:
            await self._participant.unpublish_track(self.track)

    def set_priority(self, priority: str) -> None:
        """The track's priority for the subscribers' bandwidth allocation (`low`, `standard`,
        `high`), live; a subscriber's own priority for it wins (`RemoteVideoTrack.set_priority`)."""
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
        if self._participant is None:
            raise RuntimeError("this publication is not in a room")
        self._participant._room._send({"type": "set_track_priority", "sid": self.track_sid, "priority": priority})
        self.priority = priority


@dataclass
class RemoteTrackPublication:
    track_sid: str
    track_name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    is_track_enabled: bool = True
    track: RemoteDataTrack | RemoteMediaTrack | None = None

    @property
    def is_subscribed(self) -> bool:
        return self.track is not None

    @property
    def publish_priority(self) -> str:
        return str(self.options.get("priority", "standard"))

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        """The quality layers of a layered video publication, lowest first (empty for other tracks)."""
        return tuple(LayerSpec.from_wire(layer) for layer in self.options.get("layers", ()))
