"""The records a room is made of: rooms, participants, tracks, subscriptions, events.

Plain dataclasses whose fields are the store's columns. Times are UNIX seconds (float, UTC);
the REST layer formats them the way Twilio does.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

RoomStatus = Literal["in-progress", "completed", "failed"]
RoomType = Literal["group", "group-small", "peer-to-peer", "go"]
ParticipantStatus = Literal["connected", "disconnected", "reconnecting"]
TrackKind = Literal["audio", "video", "data"]

ROOM_TYPES: tuple[str, ...] = ("group", "group-small", "peer-to-peer", "go")
#: Largest `max_participants` per room type (Twilio's published limits); also the default.
MAX_PARTICIPANTS_BY_TYPE: dict[str, int] = {"group": 50, "group-small": 4, "peer-to-peer": 10, "go": 2}
TRACK_KINDS: tuple[str, ...] = ("audio", "video", "data")
DEFAULT_ROOM_TIMEOUT_MINUTES = 5
DEFAULT_MAX_PARTICIPANT_DURATION = 14_400
MAX_ROOM_DURATION = 86_400
#: Subscribe rules a participant starts with (Twilio's default, and automaticSubscription=false).
INCLUDE_ALL: list[dict[str, Any]] = [{"type": "include", "all": True}]
EXCLUDE_ALL: list[dict[str, Any]] = [{"type": "exclude", "all": True}]


def new_sid(prefix: str) -> str:
    """A Twilio-style SID: two-letter prefix and 32 lowercase hex digits."""
    return prefix + secrets.token_hex(16)


def is_sid(prefix: str, value: str) -> bool:
    if len(value) != 34 or not value.startswith(prefix):
        return False
    try:
        int(value[2:], 16)
    except ValueError:
        return False
    return True


@dataclass
class Room:
    sid: str
    account_sid: str
    unique_name: str
    date_created: float
    date_updated: float
    status: str = "in-progress"
    type: str = "group"
    max_participants: int = 50
    max_participant_duration: int = DEFAULT_MAX_PARTICIPANT_DURATION
    empty_room_timeout: int = DEFAULT_ROOM_TIMEOUT_MINUTES
    unused_room_timeout: int = DEFAULT_ROOM_TIMEOUT_MINUTES
    status_callback: str | None = None
    status_callback_method: str = "POST"
    record_participants_on_connect: bool = False
    audio_only: bool = False
    large_room: bool = False
    video_codecs: list[str] = field(default_factory=lambda: ["VP8", "H264"])
    media_region: str = "us1"
    end_time: float | None = None
    #: How the room came to be: "rest" (POST /v1/Rooms) or "ad-hoc" (a participant joined a name).
    origin: str = "rest"
    #: When the last participant left (None while anyone is connected or nobody ever joined).
    empty_since: float | None = None
    #: Whether anyone ever joined (the unused-room timeout applies only before that).
    used: bool = False
    #: Last status-callback sequence number handed out for this room.
    callback_sequence: int = 0

    @property
    def duration(self) -> int | None:
        if self.end_time is None:
            return None
        return int(round(self.end_time - self.date_created))


@dataclass
class Participant:
    sid: str
    room_sid: str
    account_sid: str
    identity: str
    date_created: float
    date_updated: float
    start_time: float
    status: str = "connected"
    end_time: float | None = None
    metadata: str = ""
    #: Twilio error code that ended the session (53118, 53205, ...) or None for a normal leave.
    end_reason: int | None = None
    #: SHA-256 of the key a client resumes its session with after a break (None: no session).
    session_key_hash: str | None = None

    @property
    def duration(self) -> int | None:
        if self.end_time is None:
            return None
        return int(round(self.end_time - self.start_time))


@dataclass
class PublishedTrack:
    sid: str
    participant_sid: str
    room_sid: str
    name: str
    kind: str
    date_created: float
    date_updated: float
    enabled: bool = True
    #: "published" while the publisher has it, "unpublished" afterwards (kept for history).
    state: str = "published"
    #: Publisher-side options (data-track reliability, priority); free-form for the media plane.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Subscription:
    """A subscriber receiving a published track (Twilio's SubscribedTrack)."""

    sid: str  # the track's MT sid, as Twilio's SubscribedTrack resource shows it
    participant_sid: str  # the subscriber
    publisher_sid: str
    room_sid: str
    name: str
    kind: str
    date_created: float
    date_updated: float
    enabled: bool = True
    state: str = "subscribed"


@dataclass
class SubscribeRules:
    participant_sid: str
    room_sid: str
    rules: list[dict[str, Any]]
    date_created: float
    date_updated: float


@dataclass
class RoomEvent:
    """One lifecycle event, in the words of Twilio's status callbacks (`room-created`, ...)."""

    name: str
    time: float
    room_sid: str
    participant_sid: str | None = None
    track_sid: str | None = None
    #: Twilio code explaining a disconnect (53118 room completed, 53205 duplicate identity, ...).
    code: int | None = None
    #: What else explains it, in words (for example how long a stalled track has sent no media).
    detail: str | None = None
    id: int | None = None


@dataclass
class CallbackDelivery:
    """One attempt to deliver a status callback."""

    room_sid: str
    sequence_number: int
    event: str
    url: str
    method: str
    attempt: int
    time: float
    #: HTTP status the receiver answered, or None when it could not be reached.
    status: int | None
    error: str | None
    elapsed_ms: float
    #: "delivered", "retrying" or "failed" (the last attempt failed).
    outcome: str
    id: int | None = None
