"""Network Quality levels 0–5 (SPEC §9): what a participant's network does to its calls, per second.

Each participant gets up to four partial levels, one per media kind and direction that flows
(`audio_send`, `audio_recv`, `video_send`, `video_recv`); its level is their minimum. A partial level
is the worst of two judgements. The first is conversational: the E-model (ITU-T G.107) turns delay
and loss into a rating R and a mean opinion score, and Twilio's preflight thresholds turn the score
into a level, so the numbers match what Twilio's only public quality formula would say. Delay is
the round-trip time (the mouth-to-ear delay between two people on links like this one) plus two
jitters (a jitter buffer) and 10 ms of codec; loss enters through the E-model's robustness curve,
video loss counting 1.25 times audio loss. Delay and loss add up in R, as listeners experience
them, so the partial level can be lower than the latency level or the loss level alone. The second
is bandwidth, for video only: the available bandwidth against what the media needs, one level lost
each time it halves (about one simulcast layer), and at most 2 while wanted video is switched off
for lack of bandwidth (a subscriber who gets no picture of a camera it asked for is told so, even
when no other video reaches it). With no media at all the level is 5; while the participant is
unreachable it is 0.

Levels are damped per partial: a level drops once two of the last three samples are below it (one
bad second never moves it), and rises once the last four samples are all above it (about 4 s at
the server's one sample a second; LiveKit's 5-second windows and smoothing take 15–20 s). Every
level comes with its reason (`limited_by`) and the inputs it was computed from, so the
`network_quality` table explains itself.

`NetworkQualityMeter` is the stateful part (damping, loss pooled over enough packets); `score` is
the stateless judgement of one sample; `network_quality_stats` shapes a result as Twilio's SDK
exposes it, at a verbosity (`NetworkQualityConfiguration`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Kind = Literal["audio", "video"]
Direction = Literal["send", "recv"]
KINDS: tuple[Kind, Kind] = ("audio", "video")
DIRECTIONS: tuple[Direction, Direction] = ("send", "recv")
PARTIALS = ("audio_send", "audio_recv", "video_send", "video_recv")

# --- the model's constants ------------------------------------------------------------------------

#: Best level; also the level of a participant that sends and receives no media (Twilio).
LEVEL_MAX = 5
#: Level of an unreachable participant (Twilio: "network broken", reconnecting).
LEVEL_UNREACHABLE = 0
#: Lowest level a reachable participant gets, however bad its network.
LEVEL_MIN_REACHABLE = 1
#: E-model rating with no impairment: the value Twilio's preflight uses (lib/preflight/mos.ts).
R_MAX = 94.768
#: A jitter buffer holds about two jitters of delay (Twilio preflight, LiveKit's scorer, PingPlotter).
JITTER_BUFFER_FACTOR = 2.0
#: Packetisation and codec look-ahead of a 20 ms Opus/VP8 frame: Twilio preflight's +10 ms.
CODEC_DELAY_S = 0.010
#: G.107's delay impairment, simplified as Twilio and LiveKit do: 1 R per 40 ms up to this knee...
DELAY_KNEE_S = 0.160
#: ...R lost per second of delay below the knee (1 per 40 ms)...
DELAY_R_PER_S = 25.0
#: ...and beyond it 1 R per 10 ms, counted from 120 ms, so the two pieces meet at the knee.
DELAY_R_PER_S_LATE = 100.0
DELAY_LATE_ORIGIN_S = 0.120
#: G.107 caps the delay impairment where conversation stops being possible.
DELAY_R_MAX = R_MAX
#: G.107's equipment impairment: Ie_eff = Ie + (95 - Ie) * loss / (loss + Bpl), loss in percent.
LOSS_IE_LIMIT = 95.0
#: Ie of Opus in the narrow-band E-model scale: no impairment without loss.
LOSS_IE = 0.0
#: Bpl, robustness to random loss: G.113's value for G.711 with loss concealment, standing in for
#: Opus (which conceals at least as well); 2 % loss costs 7 R, 25 % costs 47.
LOSS_ROBUSTNESS = 25.1
#: Video loss counts this much more than audio loss (LiveKit weighs video 10 and Opus 8 per percent).
LOSS_WEIGHT: Mapping[Kind, float] = {"audio": 1.0, "video": 1.25}
#: Twilio preflight's mean opinion score to level: above 4.2 is 5, above 4.0 is 4, ... else 1.
MOS_LEVELS: tuple[tuple[float, int], ...] = ((4.2, 5), (4.0, 4), (3.6, 3), (3.0, 2))
#: Bandwidth level from available / required: one level per halving (a simulcast layer is 2-3x the
#: one below, and perceived quality grows with the log of the bitrate); 0.8 leaves room for noise.
BANDWIDTH_LEVELS: tuple[tuple[float, int], ...] = ((0.8, 5), (0.4, 4), (0.15, 3), (0.05, 2))
#: The highest bandwidth level while wanted video is switched off for lack of bandwidth: a lower
#: layer degrades a picture, a switched-off track loses it, whatever the ratio says of the rest.
BANDWIDTH_SWITCHED_OFF_LEVEL = 2
#: When delay and loss together set a level, the one costing this share of the lost R is named.
DOMINANT_SHARE = 2 / 3
#: Loss measured over fewer packets is pooled with the next seconds' (a second of DTX silence
#: carries 2-3 packets: one loss would read as 33 %).
MIN_LOSS_PACKETS = 20
#: Damping, down: a level drops to the DROP_RANK-th lowest of the last DROP_WINDOW samples, so two
#: bad samples out of three move it and one never does.
DROP_WINDOW = 3
DROP_RANK = 2
#: Damping, up: a level rises to the lowest of the last RISE_WINDOW samples: 4 good seconds in a row
#: at one sample a second (quicker than LiveKit's 15-20 s, slower than one sample).
RISE_WINDOW = 4

Verbosity = int
#: Twilio's NetworkQualityVerbosity names and values.
VERBOSITIES: Mapping[str, int] = {"none": 0, "minimal": 1, "moderate": 2, "detailed": 3}


# --- inputs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaMeasurement:
    """What one media kind measured in one direction of one participant over the last sample
    (about a second). Its presence means that media flows, or, for received video, that video the
    subscriber wants is switched off for lack of bandwidth; unknown values are None and not scored."""

    fraction_lost: float | None = None
    """Packets lost / expected in the interval, 0-1 (send: the server's receiver; recv: the
    participant's receiver reports of the server's senders)."""
    rtt_s: float | None = None
    """Round-trip time between the participant and the server, seconds (the uplink has none of its
    own: use the same participant's downlink RTT)."""
    jitter_s: float | None = None
    """Interarrival jitter, seconds."""
    actual_bps: float | None = None
    """Bitrate that flowed, bit/s."""
    available_bps: float | None = None
    """Estimated available bandwidth in this direction, bit/s."""
    required_bps: float | None = None
    """Bitrate the media needs at the quality wanted (all layers published, or the subscribed
    tracks' desired layers), bit/s; None: the actual bitrate is what is required."""
    switched_off_bps: float | None = None
    """Of `required_bps`, what is switched off for lack of bandwidth (the bandwidth allocation's
    tracks off for reason `bandwidth` under the downlink estimate), bit/s. Video switched off this
    way is scored even when no other video flows."""
    packets: int | None = None
    """Packets expected in the interval, to weigh the loss; None: trust `fraction_lost` as it is."""

    def __post_init__(self) -> None:
        if self.fraction_lost is not None and not 0.0 <= self.fraction_lost <= 1.0:
            raise ValueError(f"fraction_lost must be in [0, 1] or None, got {self.fraction_lost!r}")
        for name in ("rtt_s", "jitter_s", "actual_bps", "available_bps", "required_bps", "switched_off_bps", "packets"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be >= 0 or None, got {value!r}")


@dataclass(frozen=True)
class ParticipantMeasurement:
    """One participant's sample: a `MediaMeasurement` per kind and direction that flows (None: that
    kind does not flow that way), and whether the server can reach it at all."""

    audio_send: MediaMeasurement | None = None
    audio_recv: MediaMeasurement | None = None
    video_send: MediaMeasurement | None = None
    video_recv: MediaMeasurement | None = None
    reachable: bool = True
    """False while the participant is unreachable (media path or signaling lost, reconnecting)."""

    def partial(self, name: str) -> MediaMeasurement | None:
        if name not in PARTIALS:
            raise ValueError(f"partial must be one of {', '.join(PARTIALS)}, got {name!r}")
        return getattr(self, name)


# --- the judgement of one sample ------------------------------------------------------------------------


def delay_impairment(rtt_s: float | None, jitter_s: float | None) -> float:
    """G.107's Id, as Twilio's preflight simplifies it, from the effective one-way delay."""
    delay = (rtt_s or 0.0) + JITTER_BUFFER_FACTOR * (jitter_s or 0.0) + CODEC_DELAY_S
    if delay < DELAY_KNEE_S:
        return DELAY_R_PER_S * delay
    return min(DELAY_R_MAX, DELAY_R_PER_S_LATE * (delay - DELAY_LATE_ORIGIN_S))


def loss_impairment(fraction_lost: float | None, kind: Kind) -> float:
    """G.107's Ie_eff for random loss, video loss weighted up."""
    if not fraction_lost:
        return LOSS_IE
    percent = min(100.0, 100.0 * fraction_lost * LOSS_WEIGHT[kind])
    return LOSS_IE + (LOSS_IE_LIMIT - LOSS_IE) * percent / (percent + LOSS_ROBUSTNESS)


def mos(r: float) -> float:
    """G.107's mean opinion score from R (1.0 to 4.5)."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)


def mos_level(score: float) -> int:
    """Twilio preflight's mapping of a mean opinion score to a level 1-5."""
    for threshold, level in MOS_LEVELS:
        if score > threshold:
            return level
    return LEVEL_MIN_REACHABLE


def bandwidth_level(
    available_bps: float | None,
    required_bps: float | None,
    actual_bps: float | None,
    switched_off_bps: float | None = None,
) -> int | None:
    """Level of the available bandwidth against what is required (the actual bitrate when no
    requirement is given), at most BANDWIDTH_SWITCHED_OFF_LEVEL while some of it is switched off for
    lack of bandwidth. None when no estimate is known: what is sent in one second against what is
    wanted is the publisher's rate (a second between keyframes carries less), not the network's; a
    link that cannot carry it shows in loss and delay, and the estimate's first congestion."""
    cap = BANDWIDTH_SWITCHED_OFF_LEVEL if switched_off_bps else LEVEL_MAX
    need = required_bps if required_bps is not None else actual_bps
    if need is None or available_bps is None:
        return cap if switched_off_bps else None
    if need <= 0:
        return cap
    ratio = available_bps / need
    for threshold, level in BANDWIDTH_LEVELS:
        if ratio >= threshold:
            return min(level, cap)
    return LEVEL_MIN_REACHABLE


@dataclass(frozen=True)
class PartialLevel:
    """The level of one media kind in one direction, with its parts and its reason."""

    level: int
    """The partial level: min(bandwidth, the E-model level of delay and loss together)."""
    latency: int
    """Level of delay (RTT, jitter) alone."""
    fraction_lost: int
    """Level of loss alone."""
    bandwidth: int | None
    """Level of available against required bandwidth (video only; None for audio or unknown)."""
    limited_by: str
    """What sets the level: `bandwidth`, `latency`, `loss`, `latency+loss`, or `none` at 5."""
    mos: float
    """The E-model's mean opinion score of delay and loss together."""
    delay_r: float
    """R lost to delay (G.107's Id)."""
    loss_r: float
    """R lost to loss (G.107's Ie_eff)."""
    measurement: MediaMeasurement
    """The inputs the level was computed from (loss pooled over enough packets)."""


def score_partial(kind: Kind, m: MediaMeasurement) -> PartialLevel:
    """The undamped level of one kind in one direction (monotone: worse inputs never raise it)."""
    delay = delay_impairment(m.rtt_s, m.jitter_s)
    loss = loss_impairment(m.fraction_lost, kind)
    combined = mos(R_MAX - delay - loss)
    latency_level = mos_level(mos(R_MAX - delay))
    loss_level = mos_level(mos(R_MAX - loss))
    conversational = mos_level(combined)
    bandwidth = (
        bandwidth_level(m.available_bps, m.required_bps, m.actual_bps, m.switched_off_bps) if kind == "video" else None
    )
    level = conversational if bandwidth is None else min(bandwidth, conversational)
    limited_by = _limited_by(level, latency_level, loss_level, bandwidth, delay, loss)
    return PartialLevel(level, latency_level, loss_level, bandwidth, limited_by, combined, delay, loss, m)


def _limited_by(level: int, latency: int, loss: int, bandwidth: int | None, delay_r: float, loss_r: float) -> str:
    if level >= LEVEL_MAX:
        return "none"
    if bandwidth is not None and bandwidth <= level:
        return "bandwidth"
    if latency <= level < loss:
        return "latency"
    if loss <= level < latency:
        return "loss"
    # both at the level, or both above it (together they cost more than either alone): name the
    # impairment that costs most of R, or both when neither does
    if loss_r >= DOMINANT_SHARE * (delay_r + loss_r):
        return "loss"
    if delay_r >= DOMINANT_SHARE * (delay_r + loss_r):
        return "latency"
    return "latency+loss"


@dataclass(frozen=True)
class QualityLevels:
    """A participant's level, its partial levels (None where that kind does not flow that way), and
    why: `reason` names the partial that sets the level and what limits it."""

    level: int
    audio_send: int | None
    audio_recv: int | None
    video_send: int | None
    video_recv: int | None
    partials: Mapping[str, PartialLevel] = field(default_factory=dict)
    """The details of each partial that flows."""
    reason: str = ""
    """`no media`, `unreachable`, `good`, or `<partial>: <limited_by>` of the lowest partial."""

    @property
    def latency_level(self) -> int | None:
        """The worst latency level over the partials (None without media)."""
        levels = [p.latency for p in self.partials.values()]
        return min(levels) if levels else None

    def row(self) -> dict[str, Any]:
        """The `network_quality` telemetry columns (SPEC §9): levels, and the inputs per direction
        (the worse of audio and video for loss, RTT and jitter; bitrates summed, estimates shared);
        also the worst latency, loss and bandwidth levels and mean opinion score over the partials,
        what video requires, and how many packets each direction's loss was measured over."""
        row: dict[str, Any] = {"level": self.level, **{name: getattr(self, name) for name in PARTIALS}}
        row["reason"] = self.reason
        parts = list(self.partials.values())
        row["latency_level"] = self.latency_level
        row["loss_level"] = min(p.fraction_lost for p in parts) if parts else None
        bandwidths = [p.bandwidth for p in parts if p.bandwidth is not None]
        row["bandwidth_level"] = min(bandwidths) if bandwidths else None
        row["mos"] = min(p.mos for p in parts) if parts else None
        rtts, jitters = [], []
        for direction in DIRECTIONS:
            measured = [p.measurement for name, p in self.partials.items() if name.endswith(direction)]
            losses = [m.fraction_lost for m in measured if m.fraction_lost is not None]
            row[f"{direction}_fraction_lost"] = max(losses) if losses else None
            available = [m.available_bps for m in measured if m.available_bps is not None]
            row[f"{direction}_available_bps"] = max(available) if available else None
            actual = [m.actual_bps for m in measured if m.actual_bps is not None]
            row[f"{direction}_actual_bps"] = sum(actual) if actual else None
            required = [m.required_bps for m in measured if m.required_bps is not None]
            row[f"{direction}_required_bps"] = sum(required) if required else None
            packets = [m.packets for m in measured if m.packets is not None]
            row[f"{direction}_packets"] = sum(packets) if packets else None
            rtts += [m.rtt_s for m in measured if m.rtt_s is not None]
            jitters += [m.jitter_s for m in measured if m.jitter_s is not None]
        row["rtt_ms"] = 1000.0 * max(rtts) if rtts else None
        row["jitter_ms"] = 1000.0 * max(jitters) if jitters else None
        return row


def _combine(partials: Mapping[str, PartialLevel], reachable: bool) -> QualityLevels:
    levels = {name: (partials[name].level if name in partials else None) for name in PARTIALS}
    if not reachable:
        zeroed = {name: (LEVEL_UNREACHABLE if levels[name] is not None else None) for name in PARTIALS}
        return QualityLevels(LEVEL_UNREACHABLE, **zeroed, partials=partials, reason="unreachable")
    if not partials:
        return QualityLevels(LEVEL_MAX, **levels, reason="no media")
    worst = min(partials, key=lambda name: (partials[name].level, PARTIALS.index(name)))
    level = partials[worst].level
    reason = "good" if level >= LEVEL_MAX else f"{worst}: {partials[worst].limited_by}"
    return QualityLevels(level, **levels, partials=partials, reason=reason)


def score(sample: ParticipantMeasurement) -> QualityLevels:
    """The undamped levels of one sample: no memory, monotone in every input."""
    partials = {}
    for name in PARTIALS:
        m = sample.partial(name)
        if m is not None:
            partials[name] = score_partial(name.split("_")[0], m)  # type: ignore[arg-type]
    return _combine(partials, sample.reachable)


# --- damping --------------------------------------------------------------------------------------------


class _Damper:
    """One level's hysteresis: drop on DROP_RANK of DROP_WINDOW samples, rise on RISE_WINDOW."""

    __slots__ = ("level", "history")

    def __init__(self) -> None:
        self.level = LEVEL_MAX
        self.history: deque[int] = deque(maxlen=max(DROP_WINDOW, RISE_WINDOW))

    def update(self, raw: int) -> int:
        self.history.append(raw)
        # before the windows fill, missing samples count as the current level: they move nothing
        drop_window = ([self.level] * DROP_WINDOW + list(self.history))[-DROP_WINDOW:]
        rise_window = ([self.level] * RISE_WINDOW + list(self.history))[-RISE_WINDOW:]
        drop_to = sorted(drop_window)[DROP_RANK - 1]
        self.level = max(min(self.level, drop_to), min(rise_window))
        return self.level

    def force(self, level: int) -> int:
        self.history.append(level)
        self.level = level
        return level


class _PartialState:
    """Damping of one partial and of its parts, and its loss pooled over enough packets."""

    __slots__ = ("level", "latency", "loss", "bandwidth", "lost", "expected", "pooled_loss")

    def __init__(self) -> None:
        self.level, self.latency, self.loss, self.bandwidth = _Damper(), _Damper(), _Damper(), _Damper()
        self.lost = 0.0
        self.expected = 0
        self.pooled_loss: float | None = None

    def pool(self, m: MediaMeasurement) -> MediaMeasurement:
        """The measurement with its loss over at least MIN_LOSS_PACKETS packets (the last pooled
        value carries over while fewer have been seen)."""
        if m.packets is None or m.fraction_lost is None:
            return m
        self.lost += m.fraction_lost * m.packets
        self.expected += m.packets
        if self.expected >= MIN_LOSS_PACKETS:
            self.pooled_loss = min(1.0, self.lost / self.expected)
            self.lost, self.expected = 0.0, 0
        return replace(m, fraction_lost=self.pooled_loss)


class NetworkQualityMeter:
    """One participant's damped levels: feed it a `ParticipantMeasurement` about once a second.

    A partial that starts flowing starts at 5 and follows the damping rules; one that stops is
    forgotten. Unreachable is not damped (the server decides it with its own timeouts): the level is
    0 at once, and recovers by the rising rule once the participant is back.
    """

    def __init__(self) -> None:
        self._partials: dict[str, _PartialState] = {}
        self.levels: QualityLevels = QualityLevels(LEVEL_MAX, None, None, None, None, reason="no media")
        """The latest result."""

    def update(self, sample: ParticipantMeasurement) -> QualityLevels:
        partials: dict[str, PartialLevel] = {}
        for name in PARTIALS:
            m = sample.partial(name)
            if m is None:
                self._partials.pop(name, None)
                continue
            state = self._partials.setdefault(name, _PartialState())
            raw = score_partial(name.split("_")[0], state.pool(m))  # type: ignore[arg-type]
            if not sample.reachable:
                for damper in (state.level, state.latency, state.loss, state.bandwidth):
                    damper.force(LEVEL_UNREACHABLE)
                partials[name] = raw
                continue
            level = state.level.update(raw.level)
            latency = state.latency.update(raw.latency)
            loss = state.loss.update(raw.fraction_lost)
            bandwidth = state.bandwidth.update(raw.bandwidth) if raw.bandwidth is not None else None
            limited_by = _limited_by(level, latency, loss, bandwidth, raw.delay_r, raw.loss_r)
            partials[name] = PartialLevel(
                level, latency, loss, bandwidth, limited_by, raw.mos, raw.delay_r, raw.loss_r, raw.measurement
            )
        self.levels = _combine(partials, sample.reachable)
        return self.levels


# --- Twilio's stats objects and verbosity ----------------------------------------------------------------


def parse_verbosity(value: Any, name: str = "verbosity") -> int:
    """A NetworkQualityVerbosity from an int 0-3 or its name."""
    if isinstance(value, str) and value in VERBOSITIES:
        return VERBOSITIES[value]
    if isinstance(value, int) and not isinstance(value, bool) and value in VERBOSITIES.values():
        return value
    allowed = ", ".join(f"{v} or {n!r}" for n, v in VERBOSITIES.items())
    raise ValueError(f"{name} must be one of {allowed}; got {value!r}")


@dataclass(frozen=True)
class NetworkQualityConfiguration:
    """Twilio's NetworkQualityConfiguration: how much a participant hears about its own network
    (`local`, at least minimal: Twilio treats none as minimal there) and about the others (`remote`)."""

    local: int = VERBOSITIES["minimal"]
    remote: int = VERBOSITIES["none"]

    def __post_init__(self) -> None:
        local = parse_verbosity(self.local, "local")
        object.__setattr__(self, "local", max(local, VERBOSITIES["minimal"]))
        object.__setattr__(self, "remote", parse_verbosity(self.remote, "remote"))

    @classmethod
    def from_option(cls, option: Any) -> NetworkQualityConfiguration | None:
        """`connect(network_quality=...)`: False or None (off), True (local minimal, remote none), or
        a dict with `local` and/or `remote`."""
        if option is None or option is False:
            return None
        if option is True:
            return cls()
        if isinstance(option, NetworkQualityConfiguration):
            return option
        if isinstance(option, Mapping):
            unknown = set(option) - {"local", "remote"}
            if unknown:
                raise ValueError(f"network_quality has unknown key(s) {sorted(unknown)}; allowed: local, remote")
            return cls(**option)
        raise ValueError(f"network_quality must be True, False, None or a dict with local/remote; got {option!r}")


@dataclass(frozen=True)
class NetworkQualityBandwidthStats:
    actual: float | None
    """Bitrate that flowed, bit/s."""
    available: float | None
    """Estimated available bandwidth, bit/s."""
    level: int | None


@dataclass(frozen=True)
class NetworkQualityLatencyStats:
    jitter: float | None
    """Seconds."""
    rtt: float | None
    """Seconds."""
    level: int | None


@dataclass(frozen=True)
class NetworkQualityFractionLostStats:
    fraction_lost: float | None
    level: int | None


@dataclass(frozen=True)
class NetworkQualitySendOrRecvStats:
    bandwidth: NetworkQualityBandwidthStats
    latency: NetworkQualityLatencyStats
    fraction_lost: NetworkQualityFractionLostStats


@dataclass(frozen=True)
class NetworkQualityMediaStats:
    send: int | None
    recv: int | None
    send_stats: NetworkQualitySendOrRecvStats | None = None
    """Only at `detailed`."""
    recv_stats: NetworkQualitySendOrRecvStats | None = None
    """Only at `detailed`."""


@dataclass(frozen=True)
class NetworkQualityStats:
    level: int
    audio: NetworkQualityMediaStats | None = None
    """From `moderate` up."""
    video: NetworkQualityMediaStats | None = None
    """From `moderate` up."""


def _send_or_recv(p: PartialLevel | None) -> NetworkQualitySendOrRecvStats | None:
    if p is None:
        return None
    m = p.measurement
    return NetworkQualitySendOrRecvStats(
        bandwidth=NetworkQualityBandwidthStats(m.actual_bps, m.available_bps, p.bandwidth),
        latency=NetworkQualityLatencyStats(m.jitter_s, m.rtt_s, p.latency),
        fraction_lost=NetworkQualityFractionLostStats(m.fraction_lost, p.fraction_lost),
    )


def network_quality_stats(levels: QualityLevels, verbosity: Any) -> NetworkQualityStats | None:
    """`network_quality_stats` as a participant sees it at `verbosity`: None at `none`, the level at
    `minimal`, per-media send/recv levels at `moderate`, and their inputs at `detailed`."""
    verbosity = parse_verbosity(verbosity)
    if verbosity == VERBOSITIES["none"]:
        return None
    if verbosity == VERBOSITIES["minimal"]:
        return NetworkQualityStats(levels.level)
    detailed = verbosity == VERBOSITIES["detailed"]
    media = {}
    for kind in KINDS:
        send, recv = levels.partials.get(f"{kind}_send"), levels.partials.get(f"{kind}_recv")
        media[kind] = NetworkQualityMediaStats(
            getattr(levels, f"{kind}_send"),
            getattr(levels, f"{kind}_recv"),
            _send_or_recv(send) if detailed else None,
            _send_or_recv(recv) if detailed else None,
        )
    return NetworkQualityStats(levels.level, media["audio"], media["video"])
