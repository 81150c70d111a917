"""Bandwidth Profile allocation (SPEC §11): how one subscriber's downlink is divided among its video tracks.

About once a second, and whenever something changes, the server calls `allocate` for each
subscriber with the downlink estimate (audio and data already subtracted: they are served first
and never switched off), the subscribed video tracks (priority, simulcast layers and their
bitrates, speaking activity, switched off by the publisher or the subscriber), the subscriber's
`BandwidthProfile` and the previous decision. It returns, per track, the layer to forward or
"switched off", the bitrate allocated and the reason, and it remembers what damping needs.

Tracks are ranked by effective priority (`high` > `standard` > `low`; the dominant speaker's video
is raised to `dominant_speaker_priority`), then by speaking activity (quieter speakers lose first;
a track already on gets a small bonus so that close activities do not swap tracks), then by SID.
`max_tracks` keeps the first N on. Each track wants the highest layer that its render dimensions
allow (by area; Twilio's defaults: low 176x144, standard 640x480, high 1280x720). The budget is the
estimate, capped by `max_subscription_bitrate`. Then, as Twilio documents the modes:

- **grid**: every track gets its lowest layer before any track gets more (switching off from the
  bottom of the ranking when even that does not fit), then layers go up one at a time to the track
  with the fewest bits: equal shares, as far as layers allow.
- **collaboration**: the same, with shares in proportion to render area, so higher priorities
  (larger render dimensions) degrade before lower ones are switched off.
- **presentation**: priorities in turn, highest first, each filled to its desired layers before
  the next gets anything: lower priorities are switched off before the top track degrades.

`track_switch_off_mode`: `predicted` switches tracks off as soon as the estimate says they do not
fit; `detected` keeps tracks that are on at their lowest layer until the estimator reports
congestion (loss, queueing delay, a falling REMB), then switches off; `disabled` never switches
off for bandwidth (lowest layers may exceed the budget). `max_tracks` applies in every mode. Until
the downlink has shown a limit (congestion: a new subscriber's first seconds, or for as long as
its link carries everything) every mode behaves as `disabled`: a prior predicts nothing, and a
downlink shows what it carries only once it is asked to carry more.

Damping: downgrades and switch-offs are immediate (they protect audio). A track switched off for
bandwidth comes back only after the budget has fitted it (with `UPGRADE_HEADROOM` to spare) for
`SWITCH_ON_HOLD_S` without a break; a layer goes up after `UPGRADE_HOLD_S`, and not within
`UPGRADE_AFTER_DOWNGRADE_S` of a downgrade. Ranking is the order of recovery, so the highest
priority comes back first. While a recovery is held, the tracks around it keep their layers
instead of making room for it. During a probe (the estimator's `probe_goal_bps`) upgrades that
fit the probe goal happen at once: that is what the probe tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# --- the model's constants ------------------------------------------------------------------------

PRIORITIES = ("low", "standard", "high")
MODES = ("grid", "collaboration", "presentation")
TRACK_SWITCH_OFF_MODES = ("predicted", "detected", "disabled")
#: Why a track is switched off (SPEC §11): the downlink (or max_subscription_bitrate) cannot carry its
#: lowest layer; beyond max_tracks; the subscriber switched it off; the publisher delivers no media of
#: it (no layer arrives: stalled, or not started); the publisher disabled it (Twilio's `disable()`).
SWITCH_OFF_REASONS = ("bandwidth", "max_tracks", "subscriber", "publisher", "disabled")
#: Why a track that is on has its layer: its desired layer is the top one; render dimensions cap
#: its desired layer; the budget holds it below its desired layer; damping holds it below what the
#: budget allows; a probe raised it.
LAYER_REASONS = ("optimal", "render_dimensions", "bandwidth", "damping", "probe")
#: Twilio's default render dimensions per priority (QCIF, VGA, HD).
DEFAULT_RENDER_DIMENSIONS: Mapping[str, tuple[int, int]] = {
    "low": (176, 144),
    "standard": (640, 480),
    "high": (1280, 720),
}
#: A track switched off for bandwidth is switched on once the budget has fitted it this long without
#: a break (Twilio: "typically around 20 seconds"; roomlab's estimator only rises through probes
#: and proven throughput, so half of that is enough to ride out a noisy estimate).
SWITCH_ON_HOLD_S = 10.0
#: A layer goes up once the budget has allowed it this long without a break.
UPGRADE_HOLD_S = 3.0
#: No upgrade of a track within this long of its downgrade (mediasoup waits 10 s after a
#: bandwidth downgrade before a spatial upgrade).
UPGRADE_AFTER_DOWNGRADE_S = 10.0
#: An upgrade or a switch-on needs the budget to exceed the new total by this fraction, so that an
#: estimate wandering around a threshold does not move a layer up and down (downgrades need none).
UPGRADE_HEADROOM = 0.1
#: Speaking activity (0-1) added to a track that is on when ranking, so that two speakers of close
#: activity do not swap places every second.
RANKING_HYSTERESIS = 0.2


# --- the profile -----------------------------------------------------------------------------------


def check_priority(priority: Any, name: str = "priority") -> str:
    """A track priority, or a ValueError naming the allowed ones."""
    if priority not in PRIORITIES:
        raise ValueError(f"{name} must be one of {', '.join(PRIORITIES)}; got {priority!r}")
    return priority


def _dimensions(name: str, value: Any) -> tuple[int, int]:
    if isinstance(value, Mapping):
        unknown = set(value) - {"width", "height"}
        if unknown or len(value) != 2:
            raise ValueError(f"{name} must be (width, height) or {{'width': w, 'height': h}}; got {value!r}")
        value = (value["width"], value["height"])
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(f"{name} must be (width, height) with positive integers; got {value!r}")
    return (value[0], value[1])


@dataclass(frozen=True)
class VideoBandwidthProfile:
    """Twilio's VideoBandwidthProfileOptions, in snake case."""

    mode: str = "grid"
    """`grid`, `collaboration` or `presentation`."""
    max_subscription_bitrate: float | None = None
    """Cap on the sum of the video allocations, bit/s; 0 or None: no cap."""
    max_tracks: int | None = None
    """At most this many video tracks on; 0 or None: no limit."""
    render_dimensions: Mapping[str, tuple[int, int]] = field(default_factory=lambda: dict(DEFAULT_RENDER_DIMENSIONS))
    """Per priority, the largest (width, height) worth sending; missing priorities keep Twilio's defaults."""
    dominant_speaker_priority: str | None = "standard"
    """The dominant speaker's video is raised to at least this priority (never lowered)."""
    track_switch_off_mode: str = "predicted"
    """`predicted`, `detected` or `disabled`."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.track_switch_off_mode not in TRACK_SWITCH_OFF_MODES:
            raise ValueError(
                f"track_switch_off_mode must be one of {', '.join(TRACK_SWITCH_OFF_MODES)}; "
                f"got {self.track_switch_off_mode!r}"
            )
        cap = self.max_subscription_bitrate
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int | float) or not cap >= 0):
            raise ValueError(f"max_subscription_bitrate must be a bitrate >= 0 (bit/s), 0 or None; got {cap!r}")
        tracks = self.max_tracks
        if tracks is not None and (isinstance(tracks, bool) or not isinstance(tracks, int) or tracks < 0):
            raise ValueError(f"max_tracks must be an integer >= 0 or None; got {tracks!r}")
        if self.dominant_speaker_priority is not None:
            check_priority(self.dominant_speaker_priority, "dominant_speaker_priority")
        if not isinstance(self.render_dimensions, Mapping):
            raise ValueError(f"render_dimensions must be a dict keyed by {', '.join(PRIORITIES)}")
        dims = dict(DEFAULT_RENDER_DIMENSIONS)
        for priority, value in self.render_dimensions.items():
            check_priority(priority, "render_dimensions key")
            dims[priority] = _dimensions(f"render_dimensions[{priority!r}]", value)
        object.__setattr__(self, "render_dimensions", dims)

    @property
    def subscription_cap_bps(self) -> float | None:
        """The cap on the sum, or None when there is none."""
        return float(self.max_subscription_bitrate) if self.max_subscription_bitrate else None

    @property
    def track_limit(self) -> int | None:
        return self.max_tracks or None

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> VideoBandwidthProfile:
        if options is None:
            return cls()
        if not isinstance(options, Mapping):
            raise ValueError(f"bandwidth_profile['video'] must be a dict; got {options!r}")
        allowed = [f.name for f in cls.__dataclass_fields__.values()]
        unknown = set(options) - set(allowed)
        if unknown:
            raise ValueError(f"bandwidth_profile['video'] has unknown key(s) {sorted(unknown)}; allowed: {allowed}")
        return cls(**options)


@dataclass(frozen=True)
class BandwidthProfile:
    """Twilio's BandwidthProfileOptions: `connect(bandwidth_profile={"video": {...}})`."""

    video: VideoBandwidthProfile = field(default_factory=VideoBandwidthProfile)

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | BandwidthProfile | None) -> BandwidthProfile:
        """Validate a profile given as Twilio's options dict in snake case (None: Twilio's defaults,
        grid and predicted)."""
        if options is None:
            return cls()
        if isinstance(options, BandwidthProfile):
            return options
        if not isinstance(options, Mapping):
            raise ValueError(f"bandwidth_profile must be a dict such as {{'video': {{...}}}}; got {options!r}")
        unknown = set(options) - {"video"}
        if unknown:
            raise ValueError(f"bandwidth_profile has unknown key(s) {sorted(unknown)}; allowed: ['video']")
        return cls(VideoBandwidthProfile.from_options(options.get("video")))

    def options(self) -> dict[str, Any]:
        """The profile as Twilio's options dict in snake case (what `from_options` takes; JSON-ready)."""
        video = self.video
        return {
            "video": {
                "mode": video.mode,
                "max_subscription_bitrate": video.max_subscription_bitrate,
                "max_tracks": video.max_tracks,
                "render_dimensions": {p: list(size) for p, size in video.render_dimensions.items()},
                "dominant_speaker_priority": video.dominant_speaker_priority,
                "track_switch_off_mode": video.track_switch_off_mode,
            }
        }


# --- inputs and outputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One simulcast layer a publisher sends."""

    name: str
    width: int
    height: int
    bitrate_bps: float
    """What forwarding it costs, bit/s (measured or nominal)."""

    @property
    def area(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class SubscribedVideoTrack:
    """One video track the subscriber is subscribed to, as the allocator sees it."""

    track: str
    """Track SID."""
    publisher: str
    """Publisher identity (or SID)."""
    layers: Sequence[Layer]
    """Layers the publisher sends now, in any order (empty: none arrives, reason `publisher`)."""
    priority: str = "standard"
    """Effective priority: the subscriber's override, else the publisher's."""
    speaker_activity: float = 0.0
    """The publisher's speaking activity, 0-1 (roomlab.policy.speaker's `long`)."""
    dominant_speaker: bool = False
    """The publisher is the dominant speaker."""
    publisher_disabled: bool = False
    """The publisher disabled the track (reason `disabled`)."""
    subscriber_switched_off: bool = False
    """The subscriber switched it off (or does not render it)."""
    render_dimensions: tuple[int, int] | None = None
    """The subscriber's own render size for this track; None: the profile's for its priority."""

    def __post_init__(self) -> None:
        check_priority(self.priority)
        object.__setattr__(self, "layers", tuple(sorted(self.layers, key=lambda layer: layer.bitrate_bps)))


@dataclass(frozen=True)
class TrackAllocation:
    """The decision for one track, with what the next decision's damping needs."""

    track: str
    publisher: str
    priority: str
    """Effective priority after the dominant speaker's raise."""
    layer: str | None
    """Layer forwarded, None when switched off."""
    allocated_bps: float
    switched_off: bool
    reason: str
    """One of SWITCH_OFF_REASONS when switched off, else one of LAYER_REASONS."""
    desired_layer: str | None
    """The layer it would get with enough bandwidth."""
    limited_by: str | None = None
    """`estimate` or `max_subscription_bitrate` when bandwidth set the decision."""
    since_s: float = 0.0
    """When the layer (or on/off) last changed."""
    upgrade_since_s: float | None = None
    """Since when the budget has allowed more than this without a break (damping)."""
    downgraded_s: float | None = None
    """When it last went down or off for bandwidth."""

    @property
    def switch_off_reason(self) -> str | None:
        return self.reason if self.switched_off else None


@dataclass(frozen=True)
class Allocation:
    """One subscriber's decision."""

    time_s: float
    estimate_bps: float
    """The estimate given (audio and data already subtracted)."""
    available_bps: float
    """The budget: the estimate capped by max_subscription_bitrate."""
    allocated_bps: float
    """Sum of the allocations."""
    wanted_bps: float
    """What the tracks would take with no bandwidth limit (capped by max_subscription_bitrate)."""
    probe_step_bps: float | None
    """How much more budget the next improvement needs (for the estimator's probe), None when
    nothing more is wanted or only max_subscription_bitrate stands in the way."""
    probing: bool
    mode: str
    tracks: tuple[TrackAllocation, ...] = ()
    """In ranking order."""
    starved_bps: float = 0.0
    """What the tracks switched off for lack of downlink bandwidth (reason `bandwidth` under the
    estimate, not under max_subscription_bitrate) would take at their desired layers: network
    quality scores the subscriber's video reception on it."""

    @property
    def by_track(self) -> dict[str, TrackAllocation]:
        return {t.track: t for t in self.tracks}

    def rows(self) -> list[dict[str, Any]]:
        """`allocations` telemetry rows (SPEC §11), one per track, with what explains them: the layer
        it would get with enough bandwidth, what limited it, what the subscriber wants in all, and
        whether a probe was under way."""
        return [
            {
                "publisher": t.publisher,
                "track": t.track,
                "priority": t.priority,
                "available_bps": self.available_bps,
                "allocated_bps": t.allocated_bps,
                "layer": t.layer,
                "switched_off": t.switched_off,
                "reason": t.reason,
                "mode": self.mode,
                "desired_layer": t.desired_layer,
                "limited_by": t.limited_by,
                "wanted_bps": self.wanted_bps,
                "probing": self.probing,
            }
            for t in self.tracks
        ]


# --- the allocator ------------------------------------------------------------------------------------

_RANK = {p: i for i, p in enumerate(PRIORITIES)}
_OFF = -1


@dataclass
class _Slot:
    """Working state of one track during one allocation."""

    spec: SubscribedVideoTrack
    priority: str
    desired: int
    weight: float
    level: int = _OFF
    ceiling: int | None = None
    """Damping's limit on the level (None: the desired layer)."""

    @property
    def top(self) -> int:
        return self.desired if self.ceiling is None else min(self.desired, self.ceiling)

    def cost(self, level: int | None = None) -> float:
        level = self.level if level is None else level
        return 0.0 if level == _OFF else self.spec.layers[level].bitrate_bps


def _effective_priority(track: SubscribedVideoTrack, profile: VideoBandwidthProfile) -> str:
    raise_to = profile.dominant_speaker_priority
    if track.dominant_speaker and raise_to is not None and _RANK[raise_to] > _RANK[track.priority]:
        return raise_to
    return track.priority


def _desired(track: SubscribedVideoTrack, render: tuple[int, int]) -> int:
    area = render[0] * render[1]
    fitting = [i for i, layer in enumerate(track.layers) if layer.area <= area]
    return fitting[-1] if fitting else 0


def _fill(slots: list[_Slot], budget: float, mode: str, keep_on: set[str]) -> None:
    """Set each slot's level within `budget` (slots in ranking order), none above its `top`. Tracks in
    `keep_on` that do not fit stay on at their lowest layer instead of being switched off."""
    remaining = budget
    for s in slots:
        s.level = _OFF
    groups = [slots] if mode != "presentation" else [[s for s in slots if s.priority == p] for p in PRIORITIES[::-1]]
    fits = True
    for group in groups:
        for s in group:  # switch on in ranking order: the first that does not fit closes the ranking
            if s.top == _OFF:
                continue  # held off by damping: it does not close the ranking
            fits = fits and s.cost(0) <= remaining
            if fits or s.spec.track in keep_on:
                s.level = 0
                remaining -= s.cost()
        while True:  # then one layer at a time to the track with the fewest bits per unit of weight
            candidates = [
                (s.cost() / s.weight, i)
                for i, s in enumerate(group)
                if s.level != _OFF and s.level < s.top and _step(s) <= remaining
            ]
            if not candidates:
                break
            best = group[min(candidates)[1]]
            remaining -= _step(best)
            best.level += 1


def _step(s: _Slot) -> float:
    return s.cost(s.level + 1) - s.cost()


def _probe_step(slots: list[_Slot], budget: float, cap: float | None) -> float | None:
    """The least extra budget with which the allocation would improve, None when all are at their
    desired layers or only `cap` stands in the way."""
    allocated = sum(s.cost() for s in slots)
    steps = []
    off = [s for s in slots if s.level == _OFF]
    if off:
        steps.append(off[0].cost(0))
    steps += [_step(s) for s in slots if s.level != _OFF and s.level < s.desired]
    steps = [step for step in steps if cap is None or allocated + step <= cap]
    if not steps:
        return None
    return max(0.0, allocated + min(steps) - budget)


def allocate(
    estimate_bps: float,
    tracks: Iterable[SubscribedVideoTrack],
    profile: BandwidthProfile | VideoBandwidthProfile | None = None,
    previous: Allocation | None = None,
    now_s: float = 0.0,
    probe_goal_bps: float | None = None,
    congestion_detected: bool = False,
    prior: bool = False,
) -> Allocation:
    """Divide `estimate_bps` (the subscriber's downlink estimate minus its audio and data) among its
    video `tracks`. `probe_goal_bps` (same units): the estimator is probing, upgrades that fit it
    happen now. `congestion_detected`: the estimator saw congestion (track_switch_off_mode
    `detected`). `prior`: the estimate is no limit the downlink has shown (the estimator's prior, or
    what it carried so far without congestion): nothing is switched off for bandwidth (every track
    keeps its lowest layer, as in `disabled`, within max_subscription_bitrate) until it shows one.
    Pure: the same inputs give the same decision."""
    if isinstance(profile, BandwidthProfile):
        profile = profile.video
    profile = profile or VideoBandwidthProfile()
    if not estimate_bps >= 0:
        raise ValueError(f"estimate_bps must be >= 0; got {estimate_bps!r}")
    before = previous.by_track if previous is not None else {}
    cap = profile.subscription_cap_bps
    budget, limited_by = float(estimate_bps), "estimate"
    if cap is not None and cap < budget:
        budget, limited_by = cap, "max_subscription_bitrate"
    probing = probe_goal_bps is not None and probe_goal_bps > budget and limited_by == "estimate"

    decisions: dict[str, TrackAllocation] = {}
    slots: list[_Slot] = []
    for spec in tracks:
        priority = _effective_priority(spec, profile)
        render = spec.render_dimensions or profile.render_dimensions[priority]
        desired = _desired(spec, render) if spec.layers else _OFF
        reason = (
            "disabled"
            if spec.publisher_disabled
            else "subscriber"
            if spec.subscriber_switched_off
            else "publisher"
            if not spec.layers
            else None
        )
        if reason is not None:
            desired_name = spec.layers[desired].name if spec.layers else None
            decisions[spec.track] = _decision(spec, priority, _OFF, reason, desired_name, None, before, now_s)
            continue
        slots.append(_Slot(spec, priority, desired, float(render[0] * render[1])))
    if profile.mode != "collaboration":
        for s in slots:
            s.weight = 1.0

    def rank(s: _Slot) -> tuple:
        was_on = s.spec.track in before and not before[s.spec.track].switched_off
        activity = s.spec.speaker_activity + (RANKING_HYSTERESIS if was_on else 0.0)
        return (-_RANK[s.priority], not s.spec.dominant_speaker, -activity, s.spec.track)

    slots.sort(key=rank)
    limit = profile.track_limit
    over_limit = slots[limit:] if limit is not None else []
    slots = slots[:limit] if limit is not None else slots
    for s in over_limit:
        decisions[s.spec.track] = _decision(
            s.spec, s.priority, _OFF, "max_tracks", s.spec.layers[s.desired].name, None, before, now_s
        )

    # `disabled` never switches off for bandwidth; `detected` keeps what is on until congestion shows
    keep_on: set[str] = set()
    if profile.track_switch_off_mode == "disabled":
        keep_on = {s.spec.track for s in slots}
    elif prior:  # within max_subscription_bitrate, which is the subscriber's own limit, not a prediction
        lowest = 0.0
        for s in slots:
            lowest += s.cost(0) if s.spec.layers else 0.0
            if cap is None or lowest <= cap:
                keep_on.add(s.spec.track)
    elif profile.track_switch_off_mode == "detected" and not congestion_detected:
        keep_on = {s.spec.track for s in slots if _level_of(s.spec, before.get(s.spec.track)) != _OFF}

    fill_to = budget
    if probing:  # a probe tests the downlink, never the subscriber's own cap
        fill_to = min(probe_goal_bps, cap) if cap is not None else probe_goal_bps  # type: ignore[type-var]
    # what the budget allows, with no damping: what the estimator may probe for
    _fill(slots, budget, profile.mode, keep_on)
    wanted = sum(s.cost(s.desired) for s in slots)
    step = None if limited_by != "estimate" else _probe_step(slots, budget, cap)
    allowed = {s.spec.track: s.level for s in slots}
    # what the budget allows with headroom: upgrades and switch-ons wait for this
    _fill(slots, fill_to if probing else budget / (1.0 + UPGRADE_HEADROOM), profile.mode, keep_on)
    upgrade_to = {s.spec.track: s.level for s in slots}

    # damping: a track may rise only to what the headroom allows, and only once it has for long enough
    held: set[str] = set()
    pending: set[str] = set()
    for s in slots:
        prev = before.get(s.spec.track)
        if prev is None or prev.switched_off and prev.reason != "bandwidth":
            continue  # new, or let back by the subscriber, the publisher or max_tracks: at once
        was = _level_of(s.spec, prev)
        s.ceiling = was
        if upgrade_to[s.spec.track] <= was or not probing and allowed[s.spec.track] <= was:
            continue
        pending.add(s.spec.track)
        since = prev.upgrade_since_s if prev.upgrade_since_s is not None else now_s
        hold = SWITCH_ON_HOLD_S if was == _OFF else UPGRADE_HOLD_S
        recently_down = prev.downgraded_s is not None and now_s - prev.downgraded_s < UPGRADE_AFTER_DOWNGRADE_S
        if probing or now_s - since >= hold and not recently_down:
            s.ceiling = upgrade_to[s.spec.track]
        else:
            held.add(s.spec.track)
    _fill(slots, fill_to, profile.mode, keep_on)

    for s in slots:
        level, desired = s.level, s.desired
        prev_level = _level_of(s.spec, before.get(s.spec.track))
        if level == _OFF:
            reason = "bandwidth"
        elif probing and level > prev_level and s.spec.track in before:
            reason = "probe"
        elif s.spec.track in held and level < allowed[s.spec.track]:
            reason = "damping"
        elif level < desired:
            reason = "bandwidth"
        elif desired < len(s.spec.layers) - 1:
            reason = "render_dimensions"
        else:
            reason = "optimal"
        decisions[s.spec.track] = _decision(
            s.spec,
            s.priority,
            level,
            reason,
            s.spec.layers[desired].name,
            limited_by if reason == "bandwidth" else None,
            before,
            now_s,
            upgrade_pending=s.spec.track in pending and level < upgrade_to[s.spec.track],
        )

    starved = sum(s.cost(s.desired) for s in slots if s.level == _OFF) if limited_by == "estimate" else 0.0
    order = [s.spec.track for s in slots] + [s.spec.track for s in over_limit]
    order += [t for t in decisions if t not in order]
    ordered = tuple(decisions[t] for t in order)
    return Allocation(
        time_s=now_s,
        estimate_bps=float(estimate_bps),
        available_bps=budget,
        allocated_bps=sum(t.allocated_bps for t in ordered),
        wanted_bps=min(wanted, cap) if cap is not None else wanted,
        probe_step_bps=step,
        probing=probing,
        mode=profile.mode,
        tracks=ordered,
        starved_bps=starved,
    )


def _level_of(spec: SubscribedVideoTrack, decision: TrackAllocation | None) -> int:
    if decision is None or decision.switched_off or decision.layer is None:
        return _OFF
    names = [layer.name for layer in spec.layers]
    if decision.layer in names:
        return names.index(decision.layer)
    return _OFF  # the layer it had is gone: treat as off, so it is not "downgraded"


def _decision(
    spec: SubscribedVideoTrack,
    priority: str,
    level: int,
    reason: str,
    desired: str | None,
    limited_by: str | None,
    before: Mapping[str, TrackAllocation],
    now_s: float,
    upgrade_pending: bool = False,
) -> TrackAllocation:
    prev = before.get(spec.track)
    old = _level_of(spec, prev)
    layer = spec.layers[level] if level != _OFF else None
    changed = prev is None or old != level or prev.switched_off != (level == _OFF)
    since = now_s if changed else prev.since_s
    down = prev.downgraded_s if prev is not None else None
    if prev is not None and level < old and reason == "bandwidth":
        down = now_s
    upgrade_since = None
    if upgrade_pending:
        upgrade_since = prev.upgrade_since_s if prev is not None and prev.upgrade_since_s is not None else now_s
    return TrackAllocation(
        track=spec.track,
        publisher=spec.publisher,
        priority=priority,
        layer=layer.name if layer is not None else None,
        allocated_bps=layer.bitrate_bps if layer is not None else 0.0,
        switched_off=level == _OFF,
        reason=reason,
        desired_layer=desired,
        limited_by=limited_by,
        since_s=since,
        upgrade_since_s=upgrade_since,
        downgraded_s=down,
    )
