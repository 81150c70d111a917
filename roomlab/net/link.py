"""Link emulation: the network path between one participant and the server, shaped in-process.

`Link` shapes both directions of that path, each on its own: up (participant -> server) and down
(server -> participant). Each direction is a `Shaper`, applying in the order netem does:

1. loss: random (`loss`, a probability per packet) and Gilbert-Elliott burst loss (`burst_loss`);
2. a bottleneck: a token bucket at `kbps`, or a mahimahi delivery trace, behind a FIFO queue
   with tail drop (`queue_ms` worth of the rate, at least `MIN_QUEUE_BYTES`; or `queue_bytes`);
3. propagation: `delay_ms`, plus jitter drawn uniformly from [-jitter_ms, +jitter_ms]. Packets
   keep their order (a packet is held until the one before it is delivered) unless `reorder`.

This module is pure: every decision takes the time as an argument, so tests drive it with a fake
clock. `Link.attach(pc)` (in `link_hook.py`) applies it to the datagrams of one aiortc
RTCPeerConnection, timing deliveries with the event loop. Packet sizes count IP and UDP headers
(`IP_UDP_HEADER_BYTES`), as a real link carries them; mahimahi's 1500-byte opportunities are IP
packets too.

Randomness is seeded per direction and per purpose (`seed`): the same seed and the same sequence
of packets give the same losses and the same jitter. Times in a delivery trace or a step schedule
count from the link's start (`attach()`, or its first packet).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import os
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Direction = Literal["up", "down"]
DIRECTIONS: tuple[Direction, Direction] = ("up", "down")

#: Bytes of one mahimahi delivery opportunity (an Ethernet MTU-sized IP packet).
MTU_BYTES = 1500
#: Header bytes each datagram carries on the wire besides its UDP payload (IPv4 20 + UDP 8).
IP_UDP_HEADER_BYTES = 28
#: Default queue in front of a rate limit: this much time at the rate.
DEFAULT_QUEUE_MS = 100.0
#: The queue holds at least this many bytes whatever the rate (two full packets).
MIN_QUEUE_BYTES = 2 * MTU_BYTES
#: Default depth of the token bucket: one full packet, so a link paces at its rate.
DEFAULT_BUCKET_BYTES = MTU_BYTES


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _probability(name: str, value: Any) -> float:
    number = _number(name, value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return number


def _non_negative(name: str, value: Any) -> float:
    number = _number(name, value)
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return number


def _positive(name: str, value: Any) -> float:
    number = _number(name, value)
    if number <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return number


@dataclass(frozen=True)
class BurstLoss:
    """Gilbert-Elliott loss: a good and a bad state, a loss probability in each, a Markov chain
    stepped once per packet. Mean loss: (p * loss_bad + r * loss_good) / (p + r)."""

    p: float
    """Probability per packet of moving from the good state to the bad state."""
    r: float
    """Probability per packet of moving from the bad state back to the good one (mean burst 1/r)."""
    loss_good: float = 0.0
    """Loss probability of a packet sent in the good state."""
    loss_bad: float = 1.0
    """Loss probability of a packet sent in the bad state."""

    def __post_init__(self) -> None:
        for name in ("p", "r", "loss_good", "loss_bad"):
            object.__setattr__(self, name, _probability(f"burst_loss.{name}", getattr(self, name)))

    @property
    def mean_loss(self) -> float:
        """The long-run loss rate."""
        if self.p + self.r == 0:
            return self.loss_good
        return (self.p * self.loss_bad + self.r * self.loss_good) / (self.p + self.r)


@dataclass(frozen=True)
class DeliveryTrace:
    """A mahimahi delivery trace: each timestamp is an opportunity to deliver `MTU_BYTES` bytes.

    The trace loops with a period of its last timestamp (mm-link(1)). Bytes of an opportunity
    that no queued packet uses are lost; a packet larger than what is left spans opportunities.
    """

    timestamps_ms: tuple[int, ...]
    """Delivery opportunities, in milliseconds from the link's start, non-decreasing."""

    def __post_init__(self) -> None:
        stamps = self.timestamps_ms
        if isinstance(stamps, str | bytes) or not stamps:
            raise ValueError("a delivery trace must be a non-empty list of millisecond timestamps")
        checked = []
        for stamp in stamps:
            if isinstance(stamp, bool) or not isinstance(stamp, int) or stamp < 0:
                raise ValueError(f"trace timestamps must be integers >= 0 (milliseconds), got {stamp!r}")
            if checked and stamp < checked[-1]:
                raise ValueError(f"trace timestamps must be non-decreasing, got {stamp} after {checked[-1]}")
            checked.append(stamp)
        if checked[-1] <= 0:
            raise ValueError("a delivery trace must end after 0 ms (its last timestamp is its period)")
        object.__setattr__(self, "timestamps_ms", tuple(checked))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DeliveryTrace:
        """Read a mahimahi trace file: one integer millisecond timestamp per line."""
        stamps = []
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                stamps.append(int(text))
            except ValueError:
                raise ValueError(f"{path}:{number}: a trace line must be an integer, got {text!r}") from None
        return cls(tuple(stamps))

    @property
    def period_ms(self) -> int:
        return self.timestamps_ms[-1]

    @property
    def mean_kbps(self) -> float:
        """The trace's capacity averaged over one period."""
        return len(self.timestamps_ms) * MTU_BYTES * 8 / self.period_ms

    def opportunity(self, index: int) -> float:
        """Time in seconds (from the link's start) of opportunity `index`, counted across loops."""
        loops, position = divmod(index, len(self.timestamps_ms))
        return (loops * self.period_ms + self.timestamps_ms[position]) / 1000.0

    def first_after(self, seconds: float) -> int:
        """Index of the first opportunity strictly after `seconds` from the link's start."""
        ms = seconds * 1000.0
        loops = max(0, math.floor(ms / self.period_ms))
        position = bisect.bisect_right(self.timestamps_ms, ms - loops * self.period_ms)
        index = loops * len(self.timestamps_ms) + position
        while self.opportunity(index) <= seconds:  # float rounding at a loop's edge
            index += 1
        return index


@dataclass(frozen=True)
class Step:
    """One step of a link schedule: at `at` seconds from the link's start, `Link.update(**changes)`."""

    at: float
    """Seconds from the link's start."""
    changes: Mapping[str, Any]
    """Keyword arguments of `Link.update()`."""


def _trace(name: str, value: Any) -> DeliveryTrace | None:
    if value is None or isinstance(value, DeliveryTrace):
        return value
    if isinstance(value, str | os.PathLike):
        return DeliveryTrace.load(value)
    if isinstance(value, Sequence):
        try:
            return DeliveryTrace(tuple(value))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    raise ValueError(
        f"{name} must be a mahimahi trace (a file path or a list of millisecond timestamps) or None, got {value!r}"
    )


def _burst_loss(name: str, value: Any) -> BurstLoss | None:
    if value is None or isinstance(value, BurstLoss):
        return value
    if isinstance(value, Mapping):
        allowed = {f.name for f in dataclasses.fields(BurstLoss)}
        unknown = set(value) - allowed
        if unknown or not {"p", "r"} <= set(value):
            raise ValueError(f"{name} takes p and r, optionally loss_good and loss_bad; got {sorted(value)}")
        return BurstLoss(**value)
    raise ValueError(f"{name} must be a BurstLoss, a dict with p and r, or None, got {value!r}")


def _optional_kbps(name: str, value: Any) -> float | None:
    return None if value is None else _positive(name, value)


def _optional_bytes(name: str, value: Any) -> int | None:
    return None if value is None else int(_positive(name, value))


def _bytes(name: str, value: Any) -> int:
    return int(_positive(name, value))


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


#: How each parameter is checked and normalised; the error names the argument as the user wrote it.
_COERCE: dict[str, Any] = {
    "kbps": _optional_kbps,
    "delay_ms": _non_negative,
    "jitter_ms": _non_negative,
    "loss": _probability,
    "burst_loss": _burst_loss,
    "trace": _trace,
    "queue_ms": _positive,
    "queue_bytes": _optional_bytes,
    "bucket_bytes": _bytes,
    "reorder": _bool,
}


@dataclass(frozen=True)
class LinkParameters:
    """How one direction of a link shapes its packets."""

    kbps: float | None = None
    """Rate limit in kilobits per second (token bucket), or None for no limit."""
    delay_ms: float = 0.0
    """One-way propagation delay added to every packet, in milliseconds."""
    jitter_ms: float = 0.0
    """Each packet's delay varies uniformly within +/- this many milliseconds (never below 0)."""
    loss: float = 0.0
    """Probability that a packet is lost, independently of the others."""
    burst_loss: BurstLoss | None = None
    """Gilbert-Elliott bursty loss, on top of `loss`."""
    trace: DeliveryTrace | None = None
    """A mahimahi delivery trace giving the capacity over time (instead of `kbps`)."""
    queue_ms: float = DEFAULT_QUEUE_MS
    """Queue in front of the rate limit, in milliseconds at the rate (at least MIN_QUEUE_BYTES)."""
    queue_bytes: int | None = None
    """Queue in bytes; when set it replaces `queue_ms`."""
    bucket_bytes: int = DEFAULT_BUCKET_BYTES
    """Depth of the token bucket: the largest burst that leaves at once after a pause."""
    reorder: bool = False
    """Let jitter reorder packets (each packet then keeps its own delay)."""

    def __post_init__(self) -> None:
        for name, coerce in _COERCE.items():
            object.__setattr__(self, name, coerce(name, getattr(self, name)))
        if self.kbps is not None and self.trace is not None:
            raise ValueError("a direction is limited by kbps or by a trace, not both: set the other to None")

    @property
    def queue_limit_bytes(self) -> int | None:
        """Bytes the bottleneck queue holds (None: no bottleneck, so no queue)."""
        rate_kbps = self.kbps if self.trace is None else self.trace.mean_kbps
        if rate_kbps is None:
            return None
        if self.queue_bytes is not None:
            return self.queue_bytes
        return max(MIN_QUEUE_BYTES, int(rate_kbps * 1000 / 8 * self.queue_ms / 1000))


@dataclass
class LinkCounters:
    """What one direction of a link did with the packets offered to it (sizes include IP+UDP headers)."""

    packets_offered: int = 0
    """Packets handed to the link."""
    bytes_offered: int = 0
    """Bytes handed to the link."""
    packets_delivered: int = 0
    """Packets that came out at the other end."""
    bytes_delivered: int = 0
    """Bytes that came out at the other end."""
    packets_lost: int = 0
    """Packets dropped by random or burst loss."""
    bytes_lost: int = 0
    """Bytes dropped by random or burst loss."""
    packets_queue_dropped: int = 0
    """Packets dropped because the queue was full (tail drop)."""
    bytes_queue_dropped: int = 0
    """Bytes dropped because the queue was full (tail drop)."""


class Shaper:
    """One direction of a link: for each packet offered, whether it is dropped, and if not when it
    comes out. Pure: the time is passed in; randomness comes from seeded generators."""

    def __init__(self, parameters: LinkParameters, seed: int | str | None = None, name: str = "") -> None:
        self.parameters = parameters
        self.counters = LinkCounters()
        #: the link's start: time zero of the delivery trace
        self.origin = 0.0
        self._loss_rng = random.Random(None if seed is None else f"roomlab.link:{seed}:{name}:loss")
        self._jitter_rng = random.Random(None if seed is None else f"roomlab.link:{seed}:{name}:jitter")
        self._bad_state = False
        #: (time the packet leaves the bottleneck, size) of packets queued or being sent
        self._queue: deque[tuple[float, int]] = deque()
        self._queued_bytes = 0
        self._last_departure = -math.inf
        self._tokens = float(parameters.bucket_bytes)
        #: the trace opportunity the last packet finished in (counted across loops), and its bytes left
        self._opportunity = -1
        self._opportunity_bytes = 0
        self._last_delivery = -math.inf

    def update(self, parameters: LinkParameters) -> None:
        """New parameters, for packets offered from now on (queued packets keep their times)."""
        if parameters.burst_loss is None:
            self._bad_state = False
        if parameters.trace != self.parameters.trace:
            self._opportunity, self._opportunity_bytes = -1, 0
        self._tokens = min(self._tokens, float(parameters.bucket_bytes))
        self.parameters = parameters

    def queued_bytes(self, now: float) -> int:
        """Bytes waiting at the bottleneck (or being sent) at `now`."""
        self._drain(now)
        return self._queued_bytes

    def offer(self, size: int, now: float, lossy: bool = True) -> float | None:
        """The time at which a packet of `size` bytes offered at `now` comes out, or None if it is
        dropped. `lossy=False` exempts it from random and burst loss (not from the queue)."""
        counters = self.counters
        counters.packets_offered += 1
        counters.bytes_offered += size
        if lossy and self._lost():
            counters.packets_lost += 1
            counters.bytes_lost += size
            return None
        parameters = self.parameters
        limit = parameters.queue_limit_bytes
        if limit is None:
            departure = now
        else:
            self._drain(now)
            if self._queued_bytes and self._queued_bytes + size > limit:
                counters.packets_queue_dropped += 1
                counters.bytes_queue_dropped += size
                return None
            departure = self._trace_departure(size, now) if parameters.trace else self._bucket_departure(size, now)
            if departure > now:
                self._queue.append((departure, size))
                self._queued_bytes += size
        delivery = departure + self._delay()
        if not parameters.reorder:
            delivery = max(delivery, self._last_delivery)
            self._last_delivery = delivery
        return delivery

    def delivered(self, size: int) -> None:
        """Count a packet that came out (the I/O side calls this when it hands the packet on)."""
        self.counters.packets_delivered += 1
        self.counters.bytes_delivered += size

    def stats(self, now: float) -> dict[str, int]:
        counters = dataclasses.asdict(self.counters)
        in_flight = self.counters.packets_offered - sum(
            counters[k] for k in ("packets_delivered", "packets_lost", "packets_queue_dropped")
        )
        return {**counters, "packets_in_flight": in_flight, "queued_bytes": self.queued_bytes(now)}

    # the decisions -------------------------------------------------------------------------------
    def _lost(self) -> bool:
        parameters, rng = self.parameters, self._loss_rng
        lost = parameters.loss > 0 and rng.random() < parameters.loss
        burst = parameters.burst_loss
        if burst is not None:
            lost = rng.random() < (burst.loss_bad if self._bad_state else burst.loss_good) or lost
            self._bad_state = rng.random() >= burst.r if self._bad_state else rng.random() < burst.p
        return lost

    def _drain(self, now: float) -> None:
        queue = self._queue
        while queue and queue[0][0] <= now:
            self._queued_bytes -= queue.popleft()[1]

    def _bucket_departure(self, size: int, now: float) -> float:
        assert self.parameters.kbps is not None
        rate = self.parameters.kbps * 1000 / 8  # bytes per second
        start = max(now, self._last_departure)
        if self._last_departure == -math.inf:
            tokens = float(self.parameters.bucket_bytes)
        else:
            tokens = min(float(self.parameters.bucket_bytes), self._tokens + (start - self._last_departure) * rate)
        if tokens >= size:
            departure, self._tokens = start, tokens - size
        else:
            departure, self._tokens = start + (size - tokens) / rate, 0.0
        self._last_departure = departure
        return departure

    def _trace_departure(self, size: int, now: float) -> float:
        trace = self.parameters.trace
        assert trace is not None
        index = self._opportunity
        if index >= 0 and self.origin + trace.opportunity(index) > now:
            # the queue is busy until that opportunity: this packet takes what it leaves
            if self._opportunity_bytes == 0:
                index, self._opportunity_bytes = index + 1, MTU_BYTES
        else:
            # idle: the first opportunity after now (what an idle link does not use is lost)
            index, self._opportunity_bytes = trace.first_after(now - self.origin), MTU_BYTES
        remaining = size
        while True:
            used = min(remaining, self._opportunity_bytes)
            remaining -= used
            self._opportunity_bytes -= used
            if remaining == 0:
                break
            index, self._opportunity_bytes = index + 1, MTU_BYTES
        self._opportunity = index
        departure = self.origin + trace.opportunity(index)
        self._last_departure = departure
        return departure

    def _delay(self) -> float:
        parameters = self.parameters
        delay = parameters.delay_ms
        if parameters.jitter_ms:
            delay = max(0.0, delay + self._jitter_rng.uniform(-parameters.jitter_ms, parameters.jitter_ms))
        return delay / 1000.0


#: Parameters that `Link()` and `update()` take for both directions, or per direction as up_<name>/down_<name>.
SHARED_PARAMETERS = tuple(f.name for f in dataclasses.fields(LinkParameters) if f.name != "kbps")


def _is_schedule(value: Any) -> bool:
    """Whether `trace` is a step schedule [(seconds, {changes}), ...] rather than a delivery trace."""
    if not isinstance(value, Sequence) or isinstance(value, str | bytes) or not value:
        return False
    return all(
        isinstance(item, Step) or (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], Mapping))
        for item in value
    )


def _steps(value: Sequence[Any]) -> list[Step]:
    steps = []
    for item in value:
        step = item if isinstance(item, Step) else Step(item[0], item[1])
        steps.append(Step(_non_negative("a schedule step's time (seconds)", step.at), dict(step.changes)))
    return sorted(steps, key=lambda s: s.at)


@dataclass
class _LinkState:
    up: LinkParameters = field(default_factory=LinkParameters)
    down: LinkParameters = field(default_factory=LinkParameters)
    ice_loss: bool = False


def _resolve(state: _LinkState, changes: Mapping[str, Any]) -> _LinkState:
    """The link's parameters after `changes` (validated; per-direction names win over shared ones)."""
    shared: dict[str, Any] = {}
    specific: dict[str, dict[str, Any]] = {d: {} for d in DIRECTIONS}
    ice_loss = state.ice_loss
    for key, value in changes.items():
        direction, _, name = key.partition("_")
        if key == "ice_loss":
            ice_loss = _bool(key, value)
        elif key in SHARED_PARAMETERS:
            shared[key] = _COERCE[key](key, value)
        elif direction in DIRECTIONS and name in _COERCE:
            specific[direction][name] = _COERCE[name](key, value)
        else:
            allowed = ", ".join(("up_kbps", "down_kbps", *SHARED_PARAMETERS, "ice_loss"))
            raise ValueError(f"unknown link parameter {key!r}; allowed: {allowed} (all but ice_loss also as up_/down_)")
    result = {}
    for d in DIRECTIONS:
        try:
            result[d] = dataclasses.replace(getattr(state, d), **{**shared, **specific[d]})
        except ValueError as exc:
            raise ValueError(f"{d}: {exc}") from None
    return _LinkState(result["up"], result["down"], ice_loss)


class Link:
    """The emulated network path between one participant and the server, both directions.

    `up_kbps`/`down_kbps` limit the rate (None: unlimited); `delay_ms`, `jitter_ms`, `loss` (a
    probability in [0, 1]) and `burst_loss` (a `BurstLoss` or a dict with p, r and optionally
    loss_good, loss_bad) apply to both directions. `trace` is a mahimahi delivery trace for both
    directions (a file path or a list of millisecond timestamps), or a step schedule: a list of
    (seconds, {changes}) applied with `update()` as the link's time passes them.

    Options: `reorder`, `queue_ms`, `queue_bytes`, `bucket_bytes` (see `LinkParameters`) for both
    directions; any parameter but ice_loss for one direction as up_<name> or down_<name> (it wins
    over the shared one), e.g. `up_trace`, `down_loss`; `ice_loss=True` applies random and burst
    loss to ICE's STUN datagrams too (by default they cross the link's queue and delay but are
    never lost: aioice sends consent checks once each and closes the connection after 6 misses in a
    row, so a lossy link would end calls that browsers keep).
    """

    def __init__(
        self,
        up_kbps: float | None = None,
        down_kbps: float | None = None,
        delay_ms: float = 0.0,
        jitter_ms: float = 0.0,
        loss: float = 0.0,
        burst_loss: BurstLoss | Mapping[str, float] | None = None,
        trace: Any = None,
        seed: int | str | None = None,
        **options: Any,
    ) -> None:
        changes: dict[str, Any] = {
            "up_kbps": up_kbps,
            "down_kbps": down_kbps,
            "delay_ms": delay_ms,
            "jitter_ms": jitter_ms,
            "loss": loss,
            "burst_loss": burst_loss,
            **options,
        }
        self._steps: list[Step] = []
        if _is_schedule(trace):
            self._steps = _steps(trace)
        else:
            changes["trace"] = trace
        self._state = _resolve(_LinkState(), changes)
        state = self._state
        for step in self._steps:  # a schedule that would fail later fails now
            if "trace" in step.changes and _is_schedule(step.changes["trace"]):
                raise ValueError("a schedule step's changes cannot hold another schedule")
            state = _resolve(state, step.changes)
        self.seed = seed
        self.up = Shaper(self._state.up, seed, "up")
        self.down = Shaper(self._state.down, seed, "down")
        self._next_step = 0
        self._origin: float | None = None
        self._now = 0.0

    def __repr__(self) -> str:
        return f"Link(up={self._state.up}, down={self._state.down})"

    def parameters(self) -> dict[str, Any]:
        """Keyword arguments that make a new Link like this one: `Link(**link.parameters())`.

        The link's parameters as they are now (after any `update()`), its step schedule from the
        start (a copy has not run yet) and its seed; values at their defaults are left out, and
        a parameter that differs between the directions is given as up_<name> and down_<name>.
        """
        defaults = LinkParameters()
        found: dict[str, Any] = {}
        for spec in dataclasses.fields(LinkParameters):
            name = spec.name
            up, down = getattr(self._state.up, name), getattr(self._state.down, name)
            # kbps exists per direction only; a delivery trace beside a schedule must not read as one
            shared = up == down and name != "kbps" and not (name == "trace" and self._steps)
            if shared:
                if up != getattr(defaults, name):
                    found[name] = up
                continue
            for direction, value in (("up", up), ("down", down)):
                if value != getattr(defaults, name):
                    found[f"{direction}_{name}"] = value
        if self._state.ice_loss:
            found["ice_loss"] = True
        if self._steps:
            found["trace"] = [(step.at, dict(step.changes)) for step in self._steps]
        if self.seed is not None:
            found["seed"] = self.seed
        return found

    @property
    def ice_loss(self) -> bool:
        return self._state.ice_loss

    def shaper(self, direction: Direction) -> Shaper:
        return self.up if direction == "up" else self.down

    def update(self, **changes: Any) -> None:
        """Change parameters while running (same names as the constructor, but no schedule).

        All or nothing: a ValueError leaves the link as it was. Packets already queued keep their
        times; the changes apply to packets offered from now on.
        """
        if "trace" in changes and _is_schedule(changes["trace"]):
            raise ValueError("update() takes a delivery trace; a step schedule is given to Link()")
        self._state = _resolve(self._state, changes)
        self.up.update(self._state.up)
        self.down.update(self._state.down)

    def start(self, now: float) -> None:
        """Set the link's time zero (for traces and the schedule), unless it has started already."""
        if self._origin is None:
            self._origin = now
            self.up.origin = self.down.origin = now
        self._advance(now)

    def offer(self, direction: Direction, size: int, now: float, lossy: bool = True) -> float | None:
        """When a packet of `size` bytes offered at `now` in `direction` comes out, or None if dropped."""
        self.start(now)
        return self.shaper(direction).offer(size, now, lossy)

    def delivered(self, direction: Direction, size: int, now: float) -> None:
        """Count a packet that came out at the far end (the I/O side calls this)."""
        self._now = max(self._now, now)
        self.shaper(direction).delivered(size)

    def stats(self, now: float | None = None) -> dict[str, dict[str, int]]:
        """Counters per direction: packets and bytes offered, delivered, lost, dropped by the queue,
        in flight; and the bytes queued at `now` (default: the last time the link saw a packet)."""
        if now is None:
            now = self._now
        return {d: self.shaper(d).stats(now) for d in DIRECTIONS}

    def attach(self, pc: Any) -> None:
        """Shape the datagrams of this aiortc RTCPeerConnection (see `link_hook.attach`)."""
        from .link_hook import attach

        attach(self, pc)

    def _advance(self, now: float) -> None:
        self._now = max(self._now, now)
        assert self._origin is not None
        while self._next_step < len(self._steps) and self._origin + self._steps[self._next_step].at <= now:
            step = self._steps[self._next_step]
            self._next_step += 1
            self.update(**step.changes)


__all__ = [
    "BurstLoss",
    "DeliveryTrace",
    "Direction",
    "Link",
    "LinkCounters",
    "LinkParameters",
    "Shaper",
    "Step",
]
