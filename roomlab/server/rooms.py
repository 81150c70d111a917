"""The room domain model: rooms, participants, tracks and subscriptions, and their lifecycle.

`Rooms` is the one place that changes room state. REST handlers and (later) signaling sessions
call it; it validates, writes through to the store and announces every change as a `RoomEvent`
to its listeners (status callbacks, signaling, telemetry). Time comes from an injectable clock so
that timeouts measured in minutes can be tested without waiting.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import RoomError
from ..policy.subscribe_rules import TrackFacts, subscribed_track_sids, validate_subscribe_rules
from .auth import VideoAccess, token_allows_room
from .model import (
    DEFAULT_MAX_PARTICIPANT_DURATION,
    DEFAULT_ROOM_TIMEOUT_MINUTES,
    EXCLUDE_ALL,
    INCLUDE_ALL,
    MAX_PARTICIPANTS_BY_TYPE,
    MAX_ROOM_DURATION,
    ROOM_TYPES,
    TRACK_KINDS,
    Participant,
    PublishedTrack,
    Room,
    RoomEvent,
    SubscribeRules,
    Subscription,
    is_sid,
    new_sid,
)
from .store import Store

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 128
MAX_URL_LENGTH = 2048
MAX_METADATA_BYTES = 64 * 1024
#: Code a participant removed with REST `Status=disconnected` is told (Twilio tells none; this
#: is the participant code its clients know: the participant is no longer found in the room).
REMOVED_BY_REST = 53204
REMOVED_BY_REST_MESSAGE = "Participant removed from the room through the REST API (Status=disconnected)"
TIMEOUT_MINUTES_RANGE = (1, 60)
PARTICIPANT_DURATION_RANGE = (600, 86_400)
VIDEO_CODECS = ("VP8", "H264")
#: Code a participant is disconnected with when it outstays `max_participant_duration`.
PARTICIPANT_DURATION_EXCEEDED = 53216
#: Seconds a participant whose connection broke stays `reconnecting`, its session kept for it to
#: resume (Twilio keeps a session about 30 s); then it is disconnected with the code of the break.
RECONNECT_WINDOW = 30.0
#: Codes of a break: the signaling connection (53001) or the media connection (53405).
SIGNALING_BROKE, MEDIA_BROKE = 53001, 53405

#: listener(event, live_room, participant, track): what changed, with the records it concerns.
Listener = Callable[["RoomEvent", "LiveRoom", "Participant | None", "PublishedTrack | None"], None]


@dataclass
class LiveRoom:
    """An in-progress room and everything connected to it, kept in memory."""

    room: Room
    participants: dict[str, Participant] = field(default_factory=dict)
    tracks: dict[str, PublishedTrack] = field(default_factory=dict)
    #: subscriber sid -> track sid -> subscription
    subscriptions: dict[str, dict[str, Subscription]] = field(default_factory=dict)
    rules: dict[str, SubscribeRules] = field(default_factory=dict)
    #: participant sid -> (time its reconnect window closes, code of the break), while reconnecting
    reconnecting: dict[str, tuple[float, int]] = field(default_factory=dict)

    def by_identity(self, identity: str) -> Participant | None:
        return next((p for p in self.participants.values() if p.identity == identity), None)


def _check_text(value: str, what: str, codes: tuple[int, int, int]) -> str:
    """Names and identities: non-empty, at most 128 characters, no control characters."""
    invalid, too_long, bad_chars = codes
    if not isinstance(value, str) or not value.strip():
        raise RoomError(invalid, f"{what} must be a non-empty string")
    if len(value) > MAX_NAME_LENGTH:
        raise RoomError(too_long, f"{what} is {len(value)} characters long; the limit is {MAX_NAME_LENGTH}")
    if any(unicodedata.category(c).startswith("C") for c in value) or "/" in value:
        raise RoomError(bad_chars, f"{what} contains control characters or '/'")
    return value


def _check_range(value: int, allowed: tuple[int, int], code: int, what: str) -> int:
    low, high = allowed
    if not low <= value <= high:
        raise RoomError(code, f"{what} must be between {low} and {high}, got {value}")
    return value


def _check_callback(url: str | None, method: str | None) -> tuple[str | None, str]:
    method = (method or "POST").upper()
    if method not in ("GET", "POST"):
        raise RoomError(53110, f"StatusCallbackMethod must be GET or POST, got {method!r}")
    if url is None or url == "":
        return None, method
    if len(url) > MAX_URL_LENGTH or not url.startswith(("http://", "https://")) or " " in url:
        raise RoomError(53111, f"StatusCallback must be an absolute http(s) URL of at most {MAX_URL_LENGTH} characters")
    return url, method


class Rooms:
    """Every room of one server: creation, joins and leaves, tracks, subscriptions, expiry."""

    def __init__(
        self,
        store: Store,
        account_sid: str,
        clock: Callable[[], float] = time.time,
        reconnect_window: float = RECONNECT_WINDOW,
    ) -> None:
        self.store = store
        self.account_sid = account_sid
        self.clock = clock
        self.reconnect_window = reconnect_window
        self.live: dict[str, LiveRoom] = {}
        self._listeners: list[Listener] = []
        self._recover()

    def on_event(self, listener: Listener) -> None:
        """Call `listener(event, live_room, participant, track)` after every change."""
        self._listeners.append(listener)

    # rooms ----------------------------------------------------------------------------------
    def create_room(
        self,
        unique_name: str | None = None,
        *,
        type: str | None = None,
        max_participants: int | None = None,
        max_participant_duration: int | None = None,
        empty_room_timeout: int | None = None,
        unused_room_timeout: int | None = None,
        status_callback: str | None = None,
        status_callback_method: str | None = None,
        record_participants_on_connect: bool = False,
        audio_only: bool = False,
        large_room: bool = False,
        video_codecs: list[str] | None = None,
        media_region: str | None = None,
        origin: str = "rest",
    ) -> Room:
        room_type = type or "group"
        if room_type not in ROOM_TYPES:
            raise RoomError(53108, f"Type must be one of {', '.join(ROOM_TYPES)}, got {room_type!r}")
        ceiling = MAX_PARTICIPANTS_BY_TYPE[room_type]
        if max_participants is None:
            max_participants = ceiling
        _check_range(max_participants, (1, ceiling), 53107, f"MaxParticipants of a {room_type} room")
        if max_participant_duration is None:
            max_participant_duration = DEFAULT_MAX_PARTICIPANT_DURATION
        _check_range(max_participant_duration, PARTICIPANT_DURATION_RANGE, 53109, "MaxParticipantDuration (seconds)")
        if origin == "ad-hoc":
            empty_room_timeout = unused_room_timeout = 0
        else:
            empty_room_timeout = DEFAULT_ROOM_TIMEOUT_MINUTES if empty_room_timeout is None else empty_room_timeout
            unused_room_timeout = DEFAULT_ROOM_TIMEOUT_MINUTES if unused_room_timeout is None else unused_room_timeout
            _check_range(empty_room_timeout, TIMEOUT_MINUTES_RANGE, 53109, "EmptyRoomTimeout (minutes)")
            _check_range(unused_room_timeout, TIMEOUT_MINUTES_RANGE, 53109, "UnusedRoomTimeout (minutes)")
        callback, method = _check_callback(status_callback, status_callback_method)
        codecs = video_codecs or list(VIDEO_CODECS)
        for codec in codecs:
            if codec not in VIDEO_CODECS:
                raise RoomError(53114, f"VideoCodecs must be among {', '.join(VIDEO_CODECS)}, got {codec!r}")
        sid = new_sid("RM")
        if unique_name is not None:
            _check_text(unique_name, "UniqueName", (53100, 53101, 53102))
            if is_sid("RM", unique_name):
                raise RoomError(53100, "UniqueName cannot be a Room SID")
            if self.find_live(unique_name) is not None:
                raise RoomError(53113, f"Room exists: an in-progress room is named {unique_name!r}")
        now = self.clock()
        room = Room(
            sid=sid,
            account_sid=self.account_sid,
            unique_name=unique_name if unique_name is not None else sid,
            date_created=now,
            date_updated=now,
            type=room_type,
            max_participants=max_participants,
            max_participant_duration=max_participant_duration,
            empty_room_timeout=empty_room_timeout,
            unused_room_timeout=unused_room_timeout,
            status_callback=callback,
            status_callback_method=method,
            record_participants_on_connect=record_participants_on_connect,
            audio_only=audio_only,
            large_room=large_room,
            video_codecs=codecs,
            media_region=media_region or "us1",
            origin=origin,
        )
        live = LiveRoom(room)
        self.live[sid] = live
        self.store.save(room)
        self._emit(live, "room-created")
        log.debug("room %s created (%s, %s)", sid, room.unique_name, origin)
        return room

    def find_live(self, key: str) -> LiveRoom | None:
        """The in-progress room with this SID or unique name, if any."""
        live = self.live.get(key)
        if live is not None:
            return live
        return next((r for r in self.live.values() if r.room.unique_name == key), None)

    def admit(self, access: VideoAccess, requested: str | None) -> str:
        """The room a participant holding this verified token joins: the one it asks for, else the
        token's; refused (53100, 20106) when neither names one, or the token grants another room."""
        room_key = requested or access.room
        if not room_key:
            raise RoomError(53100, "Room name is invalid: neither the connect message nor the token names a room")
        live = self.find_live(room_key)
        allowed = token_allows_room(access, room_key, None) or (
            live is not None and token_allows_room(access, live.room.unique_name, live.room.sid)
        )
        if not allowed:
            raise RoomError(20106, "Invalid Access Token grants: the token does not grant access to this room")
        return room_key

    def find_room(self, key: str) -> Room:
        """A room by SID (any status) or unique name (in-progress only), else 53106."""
        live = self.find_live(key)
        if live is not None:
            return live.room
        if is_sid("RM", key):
            room = self.store.get(Room, sid=key)
            if room is not None:
                return room
        raise RoomError(53106, f"Room not found: {key!r}")

    def end_room(self, key: str) -> Room:
        """Complete an in-progress room; every connected participant is disconnected with 53118."""
        room = self.find_room(key)
        live = self.live.get(room.sid)
        if live is None:
            raise RoomError(53112, f"Room {room.sid} is not in-progress (status {room.status})")
        self._end(live, "completed")
        return live.room

    def _end(self, live: LiveRoom, status: str) -> None:
        for participant in list(live.participants.values()):
            self._disconnect(live, participant, code=53118, ending=True)
        now = self.clock()
        live.room.status = status
        live.room.end_time = now
        live.room.date_updated = now
        del self.live[live.room.sid]
        self.store.save(live.room)
        self._emit(live, "room-ended")
        log.debug("room %s %s", live.room.sid, status)

    # participants ---------------------------------------------------------------------------
    def connect(
        self, room_key: str, identity: str, *, automatic_subscription: bool = True, metadata: str = ""
    ) -> tuple[LiveRoom, Participant]:
        """Join `identity` to a room by SID or name, creating an ad-hoc room for a new name."""
        _check_text(identity, "Participant identity", (53200, 53201, 53202))
        live = self.find_live(room_key)
        if live is None:
            if is_sid("RM", room_key):
                room = self.store.get(Room, sid=room_key)
                if room is None:
                    raise RoomError(53106, f"Room not found: {room_key!r}")
                raise RoomError(53118, f"Room {room_key} has ended (status {room.status})")
            live = self.live[self.create_room(room_key, origin="ad-hoc").sid]
        duplicate = live.by_identity(identity)
        if duplicate is not None:
            self._disconnect(live, duplicate, code=53205)
        if len(live.participants) >= live.room.max_participants:
            raise RoomError(53105, f"Room contains too many Participants (max {live.room.max_participants})")
        now = self.clock()
        participant = Participant(
            sid=new_sid("PA"),
            room_sid=live.room.sid,
            account_sid=self.account_sid,
            identity=identity,
            date_created=now,
            date_updated=now,
            start_time=now,
            metadata=metadata,
        )
        rules = INCLUDE_ALL if automatic_subscription else EXCLUDE_ALL
        live.participants[participant.sid] = participant
        live.rules[participant.sid] = SubscribeRules(
            participant.sid, live.room.sid, validate_subscribe_rules(rules), now, now
        )
        live.subscriptions[participant.sid] = {}
        live.room.used = True
        live.room.empty_since = None
        live.room.date_updated = now
        self.store.save_all([live.room, participant, live.rules[participant.sid]])
        self._emit(live, "participant-connected", participant)
        self._resubscribe(live, [participant.sid])
        log.debug("room %s, participant %s (%s) connected", live.room.sid, participant.sid, identity)
        return live, participant

    def is_connected(self, participant_sid: str) -> bool:
        return any(participant_sid in live.participants for live in self.live.values())

    def find_participant(self, room: Room, key: str) -> Participant:
        """A participant by SID (any status) or identity (connected only), else 53204."""
        if is_sid("PA", key):
            participant = self.store.get(Participant, sid=key, room_sid=room.sid)
        else:
            live = self.live.get(room.sid)
            participant = live.by_identity(key) if live else None
        if participant is None:
            raise RoomError(53204, f"Participant not found: {key!r}")
        live = self.live.get(room.sid)
        if live is not None and participant.sid in live.participants:
            return live.participants[participant.sid]
        return participant

    def disconnect(self, room_key: str, participant_key: str, code: int | None = None) -> Participant:
        """Remove a connected participant (REST `Status=disconnected`, or a client's goodbye)."""
        room = self.find_room(room_key)
        participant = self.find_participant(room, participant_key)
        live = self.live.get(room.sid)
        if live is None or participant.sid not in live.participants:
            return participant
        self._disconnect(live, participant, code=code)
        return participant

    def _disconnect(self, live: LiveRoom, participant: Participant, code: int | None, ending: bool = False) -> None:
        for track in [t for t in live.tracks.values() if t.participant_sid == participant.sid]:
            self._unpublish(live, track)
        for subscription in live.subscriptions.pop(participant.sid, {}).values():
            subscription.state = "unsubscribed"
            self.store.save(subscription)
        now = self.clock()
        participant.status = "disconnected"
        participant.end_time = now
        participant.date_updated = now
        participant.end_reason = code
        participant.session_key_hash = None
        del live.participants[participant.sid]
        live.rules.pop(participant.sid, None)
        live.reconnecting.pop(participant.sid, None)
        if not live.participants:
            live.room.empty_since = now
        live.room.date_updated = now
        self.store.save_all([participant, live.room])
        self._emit(live, "participant-disconnected", participant, code=code)
        log.debug("room %s, participant %s disconnected (code %s)", live.room.sid, participant.sid, code)
        if not ending and not live.participants and live.room.empty_room_timeout == 0:
            self._end(live, "completed")

    # breaks and resumption ------------------------------------------------------------------
    def new_session_key(self, participant: Participant) -> str:
        """The key a client resumes this participant's session with; only its hash is kept."""
        key = secrets.token_hex(16)
        participant.session_key_hash = _hash_key(key)
        self.store.save(participant)
        return key

    def start_reconnecting(self, participant_sid: str, code: int) -> None:
        """The participant's connection broke (`code`: 53001 signaling, 53405 media): it stays in
        the room, `reconnecting`, for the reconnect window."""
        live, participant = self._connected(participant_sid)
        if participant.sid in live.reconnecting:
            return
        now = self.clock()
        live.reconnecting[participant.sid] = (now + self.reconnect_window, code)
        participant.status = "reconnecting"
        participant.date_updated = now
        self.store.save(participant)
        self._emit(live, "participant-reconnecting", participant, code=code)
        log.debug("room %s, participant %s reconnecting (code %s)", live.room.sid, participant.sid, code)

    def resumable(self, participant_sid: str, identity: str, key: str) -> tuple[LiveRoom, Participant]:
        """The participant whose session a client asks to resume, if it is still there and the
        key is its own; else 53204 (the session has ended: the window closed, or it was removed)."""
        found = next((live for live in self.live.values() if participant_sid in live.participants), None)
        participant = found.participants[participant_sid] if found is not None else None
        if (
            found is None
            or participant is None
            or participant.identity != identity
            or participant.session_key_hash is None
            or not hmac.compare_digest(participant.session_key_hash, _hash_key(key))
        ):
            raise RoomError(53204, "Participant not found: the session to resume has ended (or the key is wrong)")
        window_closes, code = found.reconnecting.get(participant.sid, (None, None))
        if window_closes is not None and self.clock() >= window_closes:
            self._disconnect(found, participant, code=code)  # (the next expiry round would have)
            raise RoomError(53204, "Participant not found: the session ended when its reconnect window closed")
        return found, participant

    def resume(self, participant_sid: str) -> None:
        """The participant is connected again, with the tracks and subscribe rules it had; its
        subscriptions are re-applied (after a restart, that makes them again)."""
        live, participant = self._connected(participant_sid)
        if participant.sid not in live.reconnecting:
            self.start_reconnecting(participant.sid, SIGNALING_BROKE)  # a break the server had not seen yet
        del live.reconnecting[participant.sid]
        participant.status = "connected"
        participant.date_updated = self.clock()
        self.store.save(participant)
        self._emit(live, "participant-reconnected", participant)
        self._resubscribe(live, [participant.sid])
        log.debug("room %s, participant %s reconnected", live.room.sid, participant.sid)

    def set_metadata(self, participant_sid: str, metadata: str) -> Participant:
        live, participant = self._connected(participant_sid)
        if len(metadata.encode()) > MAX_METADATA_BYTES:
            raise RoomError(53200, f"Participant metadata must be at most {MAX_METADATA_BYTES} bytes")
        participant.metadata = metadata
        participant.date_updated = self.clock()
        self.store.save(participant)
        self._emit(live, "participant-metadata-changed", participant)
        return participant

    # tracks ---------------------------------------------------------------------------------
    def publish_track(
        self, participant_sid: str, name: str, kind: str, options: dict[str, Any] | None = None
    ) -> PublishedTrack:
        live, participant = self._connected(participant_sid)
        if kind not in TRACK_KINDS:
            raise RoomError(53300, f"Track kind must be one of {', '.join(TRACK_KINDS)}, got {kind!r}")
        _check_text(name, "Track name", (53301, 53302, 53303))
        if live.room.audio_only and kind == "video":
            raise RoomError(53125, "Track kind not supported: this room is audio-only")
        if any(t.participant_sid == participant_sid and t.name == name for t in live.tracks.values()):
            raise RoomError(53304, f"Track name is duplicated: {name!r}")
        now = self.clock()
        track = PublishedTrack(
            sid=new_sid("MT"),
            participant_sid=participant_sid,
            room_sid=live.room.sid,
            name=name,
            kind=kind,
            date_created=now,
            date_updated=now,
            options=dict(options or {}),
        )
        live.tracks[track.sid] = track
        self.store.save(track)
        self._emit(live, "track-added", participant, track)
        self._resubscribe(live, list(live.participants))
        return track

    def unpublish_track(self, track_sid: str) -> PublishedTrack:
        live, track = self._published(track_sid)
        self._unpublish(live, track)
        return track

    def _unpublish(self, live: LiveRoom, track: PublishedTrack) -> None:
        now = self.clock()
        track.state = "unpublished"
        track.date_updated = now
        del live.tracks[track.sid]
        self.store.save(track)
        self._emit(live, "track-removed", live.participants[track.participant_sid], track)
        for subscriber_sid, subscribed in live.subscriptions.items():
            if track.sid in subscribed:
                self._drop_subscription(live, subscriber_sid, track.sid, track)

    def set_track_enabled(self, track_sid: str, enabled: bool) -> PublishedTrack:
        live, track = self._published(track_sid)
        if track.enabled != enabled:
            track.enabled = enabled
            track.date_updated = self.clock()
            self.store.save(track)
            self._emit(
                live, "track-enabled" if enabled else "track-disabled", live.participants[track.participant_sid], track
            )
        return track

    def set_track_priority(self, track_sid: str, priority: str) -> PublishedTrack:
        """The publisher changed its track's priority (`LocalTrackPublication.set_priority`)."""
        live, track = self._published(track_sid)
        if track.options.get("priority", "standard") != priority:
            track.options = {**track.options, "priority": priority}
            track.date_updated = self.clock()
            self.store.save(track)
            self._emit(live, "track-priority-changed", live.participants[track.participant_sid], track, detail=priority)
        return track

    def note_track_switch(self, subscriber_sid: str, track_sid: str, switched_off: bool, reason: str) -> None:
        """The bandwidth allocator switched a subscriber's track off or on, for `reason` (the
        allocator's: `bandwidth`, `probe`, ...): an event of the room's history (`track-switched-off`
        / `track-switched-on`, participant: the subscriber, detail: the reason), which signaling
        passes on to the subscriber."""
        live = next((r for r in self.live.values() if subscriber_sid in r.participants), None)
        if live is None:
            return
        name = "track-switched-off" if switched_off else "track-switched-on"
        self._emit(live, name, live.participants[subscriber_sid], live.tracks.get(track_sid), detail=reason)

    def note_media_flow(self, track_sid: str, flowing: bool, detail: str) -> None:
        """The forwarding plane saw a published audio or video track stop (`track-stalled`) or
        start again (`track-resumed`) delivering media: an event of the room's history."""
        live, track = self._published(track_sid)
        name = "track-resumed" if flowing else "track-stalled"
        self._emit(live, name, live.participants[track.participant_sid], track, detail=detail)

    def note_dominant_speaker(
        self, room_sid: str, participant_sid: str | None, track_sid: str | None, detail: str
    ) -> None:
        """The dominant speaker of a room changed (to `participant_sid`, or to nobody): an event of
        the room's history (`dominant-speaker-changed`), which signaling passes on to clients."""
        live = self.live.get(room_sid)
        if live is None:
            return
        participant = live.participants.get(participant_sid) if participant_sid is not None else None
        track = live.tracks.get(track_sid) if track_sid is not None else None
        self._emit(live, "dominant-speaker-changed", participant, track, detail=detail)

    # subscriptions --------------------------------------------------------------------------
    def subscribe_rules(self, room: Room, participant: Participant) -> SubscribeRules:
        live = self.live.get(room.sid)
        if live is not None and participant.sid in live.rules:
            return live.rules[participant.sid]
        stored = self.store.get(SubscribeRules, participant_sid=participant.sid)
        if stored is None:
            stored = SubscribeRules(
                participant.sid,
                room.sid,
                validate_subscribe_rules(INCLUDE_ALL),
                participant.date_created,
                participant.date_created,
            )
        return stored

    def set_subscribe_rules(self, room: Room, participant: Participant, rules: Any) -> SubscribeRules:
        normalised = validate_subscribe_rules(rules)
        live = self.live.get(room.sid)
        if live is None or participant.sid not in live.participants:
            raise RoomError(53204, f"Participant {participant.sid} is not connected")
        current = live.rules[participant.sid]
        current.rules = normalised
        current.date_updated = self.clock()
        self.store.save(current)
        self._resubscribe(live, [participant.sid])
        return current

    def _resubscribe(self, live: LiveRoom, subscriber_sids: list[str]) -> None:
        """Re-apply subscribe rules (they are declarative: re-evaluated whenever tracks change)."""
        facts = [
            TrackFacts(t.sid, t.name, t.kind, t.participant_sid, live.participants[t.participant_sid].identity)
            for t in live.tracks.values()
        ]
        for subscriber_sid in subscriber_sids:
            wanted = subscribed_track_sids(live.rules[subscriber_sid].rules, subscriber_sid, facts)
            current = live.subscriptions[subscriber_sid]
            for track_sid in sorted(set(current) - wanted):
                self._drop_subscription(live, subscriber_sid, track_sid)
            for track_sid in sorted(wanted - set(current)):
                track = live.tracks[track_sid]
                now = self.clock()
                subscription = Subscription(
                    sid=track.sid,
                    participant_sid=subscriber_sid,
                    publisher_sid=track.participant_sid,
                    room_sid=live.room.sid,
                    name=track.name,
                    kind=track.kind,
                    date_created=now,
                    date_updated=now,
                    enabled=track.enabled,
                )
                current[track_sid] = subscription
                self.store.save(subscription)
                self._emit(live, "track-subscribed", live.participants[subscriber_sid], track)

    def _drop_subscription(
        self, live: LiveRoom, subscriber_sid: str, track_sid: str, track: PublishedTrack | None = None
    ) -> None:
        subscription = live.subscriptions[subscriber_sid].pop(track_sid)
        subscription.state = "unsubscribed"
        subscription.date_updated = self.clock()
        self.store.save(subscription)
        event = RoomEvent("track-unsubscribed", subscription.date_updated, live.room.sid, subscriber_sid, track_sid)
        self._record(live, event, live.participants.get(subscriber_sid), track or live.tracks.get(track_sid))

    # lifecycle ------------------------------------------------------------------------------
    def expire(self) -> None:
        """End rooms and remove participants whose time is up (called about once a second)."""
        now = self.clock()
        for live in list(self.live.values()):
            room = live.room
            for participant in list(live.participants.values()):
                window_closes, code = live.reconnecting.get(participant.sid, (None, None))
                if window_closes is not None and now >= window_closes:
                    self._disconnect(live, participant, code=code)
                elif now - participant.start_time >= room.max_participant_duration:
                    self._disconnect(live, participant, code=PARTICIPANT_DURATION_EXCEEDED)
            if room.sid not in self.live:
                continue
            unused = (
                not room.used and room.unused_room_timeout and now - room.date_created >= room.unused_room_timeout * 60
            )
            empty = room.empty_since is not None and now - room.empty_since >= room.empty_room_timeout * 60
            if unused or empty or now - room.date_created >= MAX_ROOM_DURATION:
                self._end(live, "completed")

    def close(self) -> None:
        """The server is stopping; rooms stay in progress in the store. With a file store a
        restarted server can take its participants back: those with a session are left
        `reconnecting` (and get the reconnect window again when it starts); everyone else, and
        everyone of an in-memory server, is disconnected (53000)."""
        for live in list(self.live.values()):
            for participant in list(live.participants.values()):
                if self.store.path is not None and participant.session_key_hash is not None:
                    self.start_reconnecting(participant.sid, SIGNALING_BROKE)
                else:
                    self._disconnect(live, participant, code=53000, ending=True)

    def _recover(self) -> None:
        """Reload in-progress rooms after a restart. Participants with a session (connected when
        a crash came, or left reconnecting by a stop) get the reconnect window to resume it, with
        their tracks and subscribe rules; other participants left connected leave now (53000)."""
        for room in self.store.select(Room, {"status": "in-progress"}).records:
            live = LiveRoom(room)
            self.live[room.sid] = live
            stale = [
                participant
                for status in ("connected", "reconnecting")
                for participant in self.store.select(Participant, {"room_sid": room.sid, "status": status}).records
            ]
            for participant in stale:
                live.participants[participant.sid] = participant
                live.subscriptions[participant.sid] = {}
                rules = self.store.get(SubscribeRules, participant_sid=participant.sid)
                live.rules[participant.sid] = rules or SubscribeRules(
                    participant.sid, room.sid, validate_subscribe_rules(INCLUDE_ALL), self.clock(), self.clock()
                )
            for track in self.store.select(PublishedTrack, {"room_sid": room.sid, "state": "published"}).records:
                if track.participant_sid in live.participants:
                    live.tracks[track.sid] = track
                else:
                    track.state = "unpublished"
                    self.store.save(track)
            for participant in stale:
                if participant.session_key_hash is None:
                    self._disconnect(live, participant, code=53000, ending=True)
                elif participant.status == "reconnecting":  # since the stop: the window starts again
                    live.reconnecting[participant.sid] = (self.clock() + self.reconnect_window, SIGNALING_BROKE)
                else:
                    self.start_reconnecting(participant.sid, SIGNALING_BROKE)  # a crash: record the break
            if room.used and room.empty_since is None and not live.participants:
                room.empty_since = self.clock()
                self.store.save(room)

    # helpers --------------------------------------------------------------------------------
    def _connected(self, participant_sid: str) -> tuple[LiveRoom, Participant]:
        for live in self.live.values():
            if participant_sid in live.participants:
                return live, live.participants[participant_sid]
        raise RoomError(53204, f"Participant {participant_sid} is not connected")

    def _published(self, track_sid: str) -> tuple[LiveRoom, PublishedTrack]:
        for live in self.live.values():
            if track_sid in live.tracks:
                return live, live.tracks[track_sid]
        raise RoomError(53300, f"Track {track_sid} is not published")

    def _emit(
        self,
        live: LiveRoom,
        name: str,
        participant: Participant | None = None,
        track: PublishedTrack | None = None,
        code: int | None = None,
        detail: str | None = None,
    ) -> None:
        event = RoomEvent(
            name,
            self.clock(),
            live.room.sid,
            participant.sid if participant else None,
            track.sid if track else None,
            code,
            detail,
        )
        self._record(live, event, participant, track)

    def _record(
        self, live: LiveRoom, event: RoomEvent, participant: Participant | None, track: PublishedTrack | None
    ) -> None:
        self.store.save(event)
        for listener in self._listeners:
            try:
                listener(event, live, participant, track)
            except Exception:  # a broken observer must never break the room
                log.exception("room %s: listener failed on %s", live.room.sid, event.name)


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
