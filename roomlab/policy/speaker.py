"""Dominant speaker (SPEC §10): who holds the floor, from the RFC 6464 audio levels of forwarded packets.

Every audio packet carries its level (0-127, minus dBov: 0 is the loudest, 127 silence). Each packet
counts as speech in proportion to its loudness (nothing at -55 dBov and below, fully at -25 dBov and
above) for the time it stands for (the gap since the previous packet, at most 60 ms, so the
400 ms gaps of DTX silence count as silence). From that, each track keeps three exponentially
weighted speech activities, 0 to 1: `short` (0.25 s: talking right now), `medium` (0.6 s: has been
talking for the last second or so) and `long` (5 s: how much it speaks in this conversation, the
allocator's "speaking activity").

The floor changes hands only when a challenger (the most active other track) has sustained speech
(`medium` at least 0.6: about 0.55 s of continuous speech; a 300 ms cough reaches 0.39), is
clearly more active than the holder over the last second (`medium` ahead by 0.3), is at least as
active right now (`short`), and the holder has had the floor for 1.5 s: so a speaker holds the
floor through pauses and interruptions that are not taken up, a quick exchange does not flip it
at every turn, and a new steady talker takes it within about a second. Nobody has the floor
until someone qualifies; the holder keeps it through silence until someone else does, or
until its track stops (no packet for 2 s: even DTX silence sends one every 400 ms) or is removed,
when the floor passes to the best qualifying challenger or to nobody.

`observe` runs per packet and does O(1) work without allocating (a table look-up and two
additions); `decide`, every 100-300 ms, folds the packets into the activities.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

# --- the model's constants ------------------------------------------------------------------------

#: RFC 6464's level range: 0 (0 dBov, the loudest) to 127 (-127 dBov, digital silence).
LEVEL_LOUDEST = 0
LEVEL_SILENT = 127
#: At or below this level a packet carries no speech (quiet rooms, comfort noise, hum).
SPEECH_FLOOR_DBOV = -55
#: At or above this level a packet is full speech (normal talking reaches -30 to -15 dBov).
SPEECH_FULL_DBOV = -25
#: A packet stands for the audio since the previous one, but never more than Opus's longest frame.
MAX_PACKET_S = 0.060
#: What the first packet of a track stands for (a 20 ms frame, WebRTC's default).
FIRST_PACKET_S = 0.020
#: Time constant of `short` activity: a few syllables, "talking right now".
SHORT_TAU_S = 0.25
#: Time constant of `medium` activity: the last second or so, what the floor is decided on.
MEDIUM_TAU_S = 0.6
#: Time constant of `long` activity: how much a participant speaks, for "quieter speakers first".
LONG_TAU_S = 5.0
#: A challenger needs this much `medium` activity: 0.55 s of continuous speech (a 300 ms cough gives
#: 0.39, a 0.5 s "mm-hmm" 0.57).
TAKE_FLOOR_ACTIVITY = 0.6
#: ...and this much more `medium` activity than the holder, so overlapping talk and quick exchanges
#: (turns under half a second) leave the floor where it is.
FLOOR_MARGIN = 0.3
#: A new holder keeps the floor at least this long (unless its track stops or is removed), so that
#: quick exchanges do not flip the floor at every turn.
MIN_FLOOR_S = 1.5
#: A track with no packet for this long has stopped (DTX sends one every 400 ms even in silence).
TRACK_TIMEOUT_S = 2.0
#: `speaking` in `SpeakerActivity`: short-term activity above this.
SPEAKING_ACTIVITY = 0.3


def _speech_weight(level: int) -> float:
    dbov = -level
    return min(1.0, max(0.0, (dbov - SPEECH_FLOOR_DBOV) / (SPEECH_FULL_DBOV - SPEECH_FLOOR_DBOV)))


#: Speech weight of each RFC 6464 level, looked up per packet.
SPEECH_WEIGHT: tuple[float, ...] = tuple(_speech_weight(level) for level in range(LEVEL_SILENT + 1))


@dataclass(frozen=True)
class SpeakerActivity:
    """One track's speech activities (0-1) at the last decision."""

    short: float
    """Over the last ~0.25 s: talking right now."""
    medium: float
    """Over the last ~0.6 s: what the floor is decided on."""
    long: float
    """Over the last ~5 s: how much this participant speaks (the allocator's speaking activity)."""
    speaking: bool
    """`short` above SPEAKING_ACTIVITY."""
    stopped: bool
    """No packet for TRACK_TIMEOUT_S: the track is not a candidate."""


@dataclass(frozen=True)
class SpeakerDecision:
    """The outcome of `decide`."""

    dominant: Hashable | None
    """The key given to `observe` of the track (or participant) holding the floor, or None."""
    changed: bool
    """Whether `dominant` differs from the previous decision's."""
    previous: Hashable | None
    """The holder before this decision."""
    reason: str
    """`took-floor` (a challenger qualified), `stopped` / `removed` (the holder's track ended; the
    floor passed or went to nobody), `held` (no change), `nobody` (no one has spoken yet)."""
    time_s: float


class _Track:
    __slots__ = ("speech_s", "last_packet_s", "folded_s", "short", "medium", "long")

    def __init__(self, time_s: float) -> None:
        self.speech_s = 0.0
        self.last_packet_s = time_s - FIRST_PACKET_S
        self.folded_s = time_s - FIRST_PACKET_S
        self.short = self.medium = self.long = 0.0


class DominantSpeaker:
    """The dominant-speaker detector of one room: `observe` every audio packet, `decide` often."""

    def __init__(self) -> None:
        self._tracks: dict[Hashable, _Track] = {}
        self.dominant: Hashable | None = None
        """The current holder of the floor."""
        self._floor_since_s = float("-inf")

    def observe(self, key: Hashable, time_s: float, level: int) -> None:
        """One audio packet of `key` (a track or a participant) at `time_s` (seconds, any clock that
        `decide` also uses) with its RFC 6464 level (0-127 as carried: minus dBov)."""
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track(time_s)
        gap = time_s - track.last_packet_s
        if gap > 0.0:
            track.speech_s += SPEECH_WEIGHT[level] * (gap if gap < MAX_PACKET_S else MAX_PACKET_S)
            track.last_packet_s = time_s

    def remove(self, key: Hashable) -> None:
        """Forget a track that was unpublished or whose participant left (the next `decide` passes
        the floor on if it held it)."""
        self._tracks.pop(key, None)

    def decide(self, time_s: float) -> SpeakerDecision:
        """Fold the packets seen since the last call into the activities and decide the floor."""
        for track in self._tracks.values():
            _fold(track, time_s)
        previous = self.dominant
        reason = "held" if previous is not None else "nobody"
        live = {key: t for key, t in self._tracks.items() if time_s - t.last_packet_s <= TRACK_TIMEOUT_S}
        holder = live.get(previous) if previous is not None else None
        if previous is not None and holder is None:
            reason = "removed" if previous not in self._tracks else "stopped"
            self.dominant = None
        challenger = max(
            (key for key in live if key != self.dominant),
            key=lambda key: (live[key].medium, live[key].long),
            default=None,
        )
        settled = holder is None or time_s - self._floor_since_s >= MIN_FLOOR_S
        if challenger is not None and settled and _takes_floor(live[challenger], holder):
            self.dominant = challenger
            self._floor_since_s = time_s
            reason = "took-floor"
        return SpeakerDecision(self.dominant, self.dominant != previous, previous, reason, time_s)

    def activity(self, key: Hashable, time_s: float | None = None) -> SpeakerActivity | None:
        """`key`'s activities at the last decision (None for a track never seen or removed)."""
        track = self._tracks.get(key)
        if track is None:
            return None
        now = track.folded_s if time_s is None else time_s
        return SpeakerActivity(
            track.short,
            track.medium,
            track.long,
            track.short > SPEAKING_ACTIVITY,
            now - track.last_packet_s > TRACK_TIMEOUT_S,
        )

    def activities(self, time_s: float | None = None) -> dict[Hashable, SpeakerActivity]:
        """Every known track's activities, for the allocator and for telemetry."""
        return {key: activity for key in self._tracks if (activity := self.activity(key, time_s)) is not None}

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._tracks)


def _fold(track: _Track, time_s: float) -> None:
    """Move a track's activities to `time_s`: the speech seen since the last fold is its mean over
    that interval (exact for exponential averages of a signal held constant over the interval)."""
    interval = time_s - track.folded_s
    if interval <= 0.0:
        return
    speech = min(1.0, track.speech_s / interval)
    track.short += (1.0 - math.exp(-interval / SHORT_TAU_S)) * (speech - track.short)
    track.medium += (1.0 - math.exp(-interval / MEDIUM_TAU_S)) * (speech - track.medium)
    track.long += (1.0 - math.exp(-interval / LONG_TAU_S)) * (speech - track.long)
    track.speech_s = 0.0
    track.folded_s = time_s


def _takes_floor(challenger: _Track, holder: _Track | None) -> bool:
    if challenger.medium < TAKE_FLOOR_ACTIVITY:
        return False
    if holder is None:
        return True
    return challenger.medium >= holder.medium + FLOOR_MARGIN and challenger.short >= holder.short
