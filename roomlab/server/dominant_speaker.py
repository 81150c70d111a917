"""Dominant speaker on the server (SPEC §10): one `DominantSpeaker` per room, fed the RFC 6464
level of every forwarded audio packet and asked to decide every `DECIDE_INTERVAL_S`.

Levels are read as packets enter the server's audio jitter buffer (`roomlab.net.rtp.AudioLevelTap`):
aiortc has parsed the header extension by then, nothing is decoded. A change of the floor is a
room event (`dominant-speaker-changed`, participant: the new holder or none, track: its audio
track, detail: why and who had it), so it is in the room's history, in `events`, and the
signaling tells the clients that asked for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..policy.speaker import DominantSpeaker, SpeakerActivity, SpeakerDecision
from .model import Participant, PublishedTrack, RoomEvent
from .rooms import LiveRoom, Rooms

log = logging.getLogger(__name__)

#: Seconds between two decisions in each room (the detector expects 100-300 ms).
DECIDE_INTERVAL_S = 0.2


class DominantSpeakers:
    """The dominant-speaker detectors of every room on the server."""

    def __init__(self, rooms: Rooms, clock: Callable[[], float] = time.monotonic) -> None:
        self.rooms = rooms
        self.clock = clock
        self._detectors: dict[str, DominantSpeaker] = {}
        #: audio track SID -> (room SID, publisher's participant SID)
        self._tracks: dict[str, tuple[str, str]] = {}
        rooms.on_event(self._on_event)

    def observer(self, track: PublishedTrack) -> Callable[[int], None]:
        """What the forwarding plane calls with each packet's level of this audio track."""
        detector = self._detectors.get(track.room_sid)
        if detector is None:
            detector = self._detectors[track.room_sid] = DominantSpeaker()
        self._tracks[track.sid] = (track.room_sid, track.participant_sid)
        observe, clock, key = detector.observe, self.clock, track.sid

        def on_level(level: int) -> None:
            observe(key, clock(), level)

        return on_level

    def dominant(self, room_sid: str) -> str | None:
        """The participant SID holding the floor in a room (None: nobody)."""
        detector = self._detectors.get(room_sid)
        track = detector.dominant if detector is not None else None
        entry = self._tracks.get(track) if isinstance(track, str) else None
        return entry[1] if entry is not None else None

    def activity(self, track_sid: str) -> SpeakerActivity | None:
        """An audio track's speech activity at the last decision (for bandwidth allocation)."""
        entry = self._tracks.get(track_sid)
        detector = self._detectors.get(entry[0]) if entry is not None else None
        return detector.activity(track_sid) if detector is not None else None

    async def run(self) -> None:
        """Decide in every room every DECIDE_INTERVAL_S, until cancelled."""
        while True:
            await asyncio.sleep(DECIDE_INTERVAL_S)
            try:
                self.decide()
            except Exception:  # a failing decision must not end the loop
                log.exception("dominant speaker decision failed")

    def decide(self) -> None:
        now = self.clock()
        for room_sid, detector in list(self._detectors.items()):
            decision = detector.decide(now)
            if decision.changed:
                self._announce(room_sid, decision)

    def _announce(self, room_sid: str, decision: SpeakerDecision) -> None:
        live = self.rooms.live.get(room_sid)
        if live is None:
            return
        track_sid = decision.dominant if isinstance(decision.dominant, str) else None
        holder = self._tracks.get(track_sid)[1] if track_sid in self._tracks else None  # type: ignore[index]
        previous = self._tracks.get(decision.previous) if isinstance(decision.previous, str) else None
        before = live.participants.get(previous[1]) if previous is not None else None
        detail = f"{decision.reason}; previous: {before.identity if before is not None else 'nobody'}"
        self.rooms.note_dominant_speaker(room_sid, holder, track_sid, detail)

    def _on_event(
        self, event: RoomEvent, live: LiveRoom, participant: Participant | None, track: PublishedTrack | None
    ) -> None:
        if event.name == "track-removed" and track is not None and track.sid in self._tracks:
            detector = self._detectors.get(self._tracks[track.sid][0])
            if detector is not None:
                detector.remove(track.sid)
        elif event.name == "room-ended":
            self._detectors.pop(live.room.sid, None)
            for sid in [sid for sid, (room, _) in self._tracks.items() if room == live.room.sid]:
                del self._tracks[sid]
