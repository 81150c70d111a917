"""Bandwidth Profiles on the server (SPEC §11): each subscriber's downlink divided among its video
tracks, about once a second and on every change, by the pure allocator (roomlab/policy/allocation.py).

This module gathers the allocator's inputs, calls it, and applies its decisions; it decides nothing
itself. Per subscriber and pass:

- the estimate: the subscriber's `DownlinkEstimate` (server/measurements.py), its video budget
  (audio and data subtracted: they are served first and never switched off), its probe goal and
  whether it saw congestion; the initial estimate before the first sample;
- the subscribed video tracks on the forwarding path: the layers arriving now with their measured
  bitrates (a track without layers is one layer, `single`: it can be switched off too; none for a
  subscription not started yet while the track's layers are still starting and its lowest has not
  arrived: a subscription starts at the lowest layer, `Sfu.start_lowest`, and the allocator raises
  it once it knows the downlink), the
  priority (the subscriber's override, else the publisher's), the publisher's speaking activity and
  whether it is the dominant speaker (server/dominant_speaker.py), whether the publisher disabled
  the track, whether the subscriber switched it off itself;
- the subscriber's `BandwidthProfile`, the sizes it renders tracks at (the SDK's render hints) and
  its previous decision.

Decisions go to the forwarder (`select_layer`, None: switched off), to the subscriber's pacer
(`pacing_rate`: the video budget, or the probe's, and a little more than the layers chosen send;
roomlab/net/pacing.py), to the estimator (the allocator's `wanted_bps` and `probe_step_bps`: what to
probe for), to the `allocations` table (every decision, one row per track), and, when a track is
switched off or on, to the room's history
(`track-switched-off` / `track-switched-on` events, the reason in `detail`), which signaling passes on
to the subscriber.

Passes run from the server's sampler right after the estimates (`update`, about once a second) and,
coalesced into one per loop turn, on every change (`schedule`): a subscription, a priority, a
profile, a track enabled, disabled, stalled or resumed, the dominant speaker, an estimate changed
between samples (a receiver report that ended a probe).

`enabled=False` (`serve(bandwidth_allocation=False)`) forwards every track at the layer a
subscription starts with, the highest, whatever the downlink: for side-by-side comparison. A
subscriber's own switch-off is still honoured then, and nothing is recorded in `allocations`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..net.pacing import pacing_rate
from ..policy.allocation import Allocation, BandwidthProfile, SubscribedVideoTrack, allocate, check_priority
from ..policy.bandwidth_estimate import INITIAL_ESTIMATE_BPS, INITIAL_REASON
from ..telemetry.recorder import Telemetry, now_ns
from ..telemetry.schema import ALLOCATIONS
from .dominant_speaker import DominantSpeakers
from .measurements import NetworkMeasurements
from .model import Participant, PublishedTrack, RoomEvent
from .rooms import LiveRoom, Rooms
from .sfu import MediaTrackForwarder, Sfu

log = logging.getLogger(__name__)

#: The `allocations` columns after time, room and subscriber, in the table's order.
ROW_COLUMNS = tuple(c.name for c in ALLOCATIONS[3:])
#: Room events after which the subscribers of the event's track are allocated again.
TRACK_CHANGES = frozenset(
    {"track-enabled", "track-disabled", "track-priority-changed", "track-stalled", "track-resumed", "track-added"}
)


@dataclass
class SubscriberState:
    """What the allocator keeps for one subscriber (by participant SID: a reconnection keeps it)."""

    profile: BandwidthProfile = field(default_factory=BandwidthProfile)
    priorities: dict[str, str] = field(default_factory=dict)
    """Track SID -> the subscriber's priority override (`RemoteVideoTrack.set_priority`)."""
    switched_off: set[str] = field(default_factory=set)
    """Tracks the subscriber switched off itself (`RemoteVideoTrack.switch_off()`, or the SDK's render
    hint that no element shows it)."""
    render_dimensions: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Track SID -> the size the subscriber renders it at (the SDK's render hints); else the profile's."""
    previous: Allocation | None = None
    told: dict[str, str | None] = field(default_factory=dict)
    """Track SID -> the switch-off reason last announced (None: on)."""


class BandwidthAllocation:
    """Allocation for every subscriber on the server."""

    def __init__(
        self,
        rooms: Rooms,
        sfu: Sfu,
        measurements: NetworkMeasurements,
        speakers: DominantSpeakers | None,
        telemetry: Telemetry,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rooms = rooms
        self.sfu = sfu
        self.measurements = measurements
        self.speakers = speakers
        self.telemetry = telemetry
        self.enabled = enabled
        self.clock = clock
        self._states: dict[str, SubscriberState] = {}
        self._pending: set[str] = set()
        self._scheduled = False
        rooms.on_event(self._on_event)
        measurements.on_estimate = lambda sid: self.schedule([sid])  # a receiver report ended a probe

    # what subscribers and publishers ask for ---------------------------------------------------
    def state(self, participant_sid: str) -> SubscriberState:
        state = self._states.get(participant_sid)
        if state is None:
            state = self._states[participant_sid] = SubscriberState()
        return state

    def set_profile(self, participant_sid: str, profile: BandwidthProfile) -> None:
        """The subscriber's Bandwidth Profile (at connect, or `set_bandwidth_profile`)."""
        self.state(participant_sid).profile = profile
        self.schedule([participant_sid])

    def set_priority(self, participant_sid: str, track_sid: str, priority: str | None) -> None:
        """The subscriber's priority for one track (None: the publisher's again)."""
        state = self.state(participant_sid)
        if priority is None:
            state.priorities.pop(track_sid, None)
        else:
            state.priorities[track_sid] = check_priority(priority)
        self.schedule([participant_sid])

    def switch(self, participant_sid: str, track_sid: str, off: bool) -> None:
        """The subscriber switches a track off (reason `subscriber`) or lets it back on."""
        state = self.state(participant_sid)
        (state.switched_off.add if off else state.switched_off.discard)(track_sid)
        self.schedule([participant_sid])

    def set_render_dimensions(self, participant_sid: str, track_sid: str, size: tuple[int, int] | None) -> None:
        """The size the subscriber shows a track at (None, or an empty size: the profile's for its
        priority)."""
        state = self.state(participant_sid)
        if size is None or size[0] * size[1] <= 0:
            state.render_dimensions.pop(track_sid, None)
        else:
            state.render_dimensions[track_sid] = size
        self.schedule([participant_sid])

    # when --------------------------------------------------------------------------------------
    def schedule(self, participant_sids: Iterable[str]) -> None:
        """Allocate for these subscribers soon: once for all the changes of one loop turn."""
        self._pending.update(participant_sids)
        if not self._scheduled and self._pending:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run_pending)

    def _run_pending(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, set()
        for sid in pending:
            self._allocate_safely(sid)

    def update(self) -> None:
        """The regular pass: every subscriber, right after its estimate was updated."""
        self._pending.clear()
        for sid in list(self.sfu.sessions):
            self._allocate_safely(sid)

    def _allocate_safely(self, sid: str) -> None:
        try:
            self.allocate(sid)
        except Exception:  # one subscriber's failure must not stop the others' allocation
            log.exception("participant %s: bandwidth allocation failed", sid)

    def _on_event(
        self, event: RoomEvent, live: LiveRoom, participant: Participant | None, track: PublishedTrack | None
    ) -> None:
        name = event.name
        if name in ("track-subscribed", "track-unsubscribed") and participant is not None:
            self.schedule([participant.sid])
        elif name in TRACK_CHANGES or name == "dominant-speaker-changed":
            self.schedule(s.sid for s in self.sfu.room_sessions(live.room.sid))
        elif name == "track-removed" and event.track_sid is not None:
            for sid in live.participants:
                state = self._states.get(sid)
                if state is not None:
                    state.priorities.pop(event.track_sid, None)
                    state.switched_off.discard(event.track_sid)
                    state.render_dimensions.pop(event.track_sid, None)
                    state.told.pop(event.track_sid, None)
        elif name == "participant-disconnected" and participant is not None:
            self._states.pop(participant.sid, None)
        elif name == "room-ended":
            for sid in live.participants:
                self._states.pop(sid, None)

    # a pass ------------------------------------------------------------------------------------
    def subscribed(self, participant_sid: str) -> list[MediaTrackForwarder]:
        """The video tracks a subscriber receives on the forwarding path (where layers are selected)."""
        return [
            f
            for f in list(self.sfu.forwarders.values())
            if isinstance(f, MediaTrackForwarder) and f.media.selects_layers and participant_sid in f.subscribers
        ]

    def allocate(self, participant_sid: str) -> Allocation | None:
        """Decide and apply one subscriber's allocation now (None: nothing to allocate)."""
        session = self.sfu.sessions.get(participant_sid)
        if session is None or session.closed:
            return None
        forwarders = self.subscribed(participant_sid)
        state = self.state(participant_sid)
        if not self.enabled:
            self._forward_everything(participant_sid, state, forwarders)
            return None
        now = self.clock()
        live = session.live
        tracks = [self._input(participant_sid, state, f, live) for f in forwarders]
        downlink = self.measurements.downlink(participant_sid)
        estimate = downlink.estimate if downlink is not None else None
        if estimate is not None:
            budget, goal, congested = estimate.video_budget_bps, estimate.probe_video_budget_bps, estimate.congested
            prior = not estimate.limited  # no limit shown yet: nothing is switched off for bandwidth
        else:  # before the first sample: the estimator's prior
            budget = downlink.estimator.estimate_bps if downlink is not None else INITIAL_ESTIMATE_BPS
            goal, congested, prior = None, False, True
        allocation = allocate(
            budget,
            tracks,
            state.profile,
            state.previous,
            now,
            probe_goal_bps=goal,
            congestion_detected=congested,
            prior=prior,
        )
        state.previous = allocation
        if downlink is not None:
            downlink.wanted_video_bps = allocation.wanted_bps
            downlink.probe_step_bps = allocation.probe_step_bps
            downlink.starved_video_bps = allocation.starved_bps
        by_sid = {f.track.sid: f for f in forwarders}
        for decision in allocation.tracks:
            forwarder = by_sid[decision.track]
            if decision.reason != "publisher":  # nothing arrives: the selection waits for it, unchanged
                self._select(participant_sid, forwarder, decision.layer)
            self._tell(participant_sid, state, forwarder, decision.switched_off, decision.reason)
        # the layers chosen get through with their keyframes spread out, within the budget (net/pacing.py)
        session.pace_video(pacing_rate(max(allocation.available_bps, goal or 0.0), allocation.allocated_bps))
        self._record(
            session,
            allocation,
            by_sid,
            estimate.estimate_bps if estimate is not None else budget,
            goal,
            estimate.reason if estimate is not None else INITIAL_REASON,
        )
        return allocation

    def _input(
        self, participant_sid: str, state: SubscriberState, forwarder: MediaTrackForwarder, live: LiveRoom
    ) -> SubscribedVideoTrack:
        track = forwarder.track
        layers = forwarder.layers() if not forwarder.stalled else []
        selection = forwarder.selection(participant_sid)
        if selection is not None and selection.current is None and forwarder.starting():
            layers = []  # a subscription waits for the lowest layer (the first pass would pick what came first)
        publisher = live.participants.get(track.participant_sid)
        activity = 0.0
        dominant = False
        if self.speakers is not None:
            for other in live.tracks.values():
                if other.participant_sid == track.participant_sid and other.kind == "audio":
                    measured = self.speakers.activity(other.sid)
                    activity = max(activity, measured.long if measured is not None else 0.0)
            dominant = self.speakers.dominant(live.room.sid) == track.participant_sid
        return SubscribedVideoTrack(
            track=track.sid,
            publisher=publisher.identity if publisher is not None else track.participant_sid,
            layers=layers,
            priority=state.priorities.get(track.sid, track.options.get("priority", "standard")),
            speaker_activity=activity,
            dominant_speaker=dominant,
            publisher_disabled=not track.enabled,
            subscriber_switched_off=track.sid in state.switched_off,
            render_dimensions=state.render_dimensions.get(track.sid),
        )

    def _forward_everything(
        self, participant_sid: str, state: SubscriberState, forwarders: list[MediaTrackForwarder]
    ) -> None:
        """Allocation off: every track stays at the layer it has (the highest, where a subscription
        starts), and only the subscriber's own switch-offs and switch-ons are applied."""
        for forwarder in forwarders:
            off = forwarder.track.sid in state.switched_off
            if (state.told.get(forwarder.track.sid) is not None) != off:
                self._select(participant_sid, forwarder, None if off else forwarder.media.stream_names[-1])
                self._tell(participant_sid, state, forwarder, off, "subscriber" if off else "optimal")

    def _select(self, participant_sid: str, forwarder: MediaTrackForwarder, layer: str | None) -> None:
        selection = forwarder.selection(participant_sid)
        if selection is not None and selection.target != layer:
            forwarder.select_layer(participant_sid, layer)

    def _tell(
        self, participant_sid: str, state: SubscriberState, forwarder: MediaTrackForwarder, off: bool, reason: str
    ) -> None:
        """Announce a switch off (with its reason, again when the reason changes) or on, once per change.
        A subscription starts on, and a track that never delivered media is not announced off for it."""
        told = reason if off else None
        before = state.told.get(forwarder.track.sid)
        if before == told:
            return
        if before is None and reason == "publisher" and not forwarder.media.frames_forwarded:
            return  # not started yet: nothing was switched off
        state.told[forwarder.track.sid] = told
        self.rooms.note_track_switch(participant_sid, forwarder.track.sid, off, reason)

    def _record(
        self,
        session: Any,
        allocation: Allocation,
        forwarders: dict[str, MediaTrackForwarder],
        estimate_bps: float,
        probe_goal_bps: float | None,
        estimate_reason: str,
    ) -> None:
        at = now_ns()
        room, subscriber = session.live.room.unique_name, session.participant.identity
        for row in allocation.rows():
            forwarder = forwarders.get(row["track"])
            row["track_name"] = forwarder.track.name if forwarder is not None else None
            row["estimate_bps"] = estimate_bps
            row["probe_goal_bps"] = probe_goal_bps
            row["estimate_reason"] = estimate_reason
            self.telemetry.record("allocations", at, room, subscriber, *(row[name] for name in ROW_COLUMNS))
