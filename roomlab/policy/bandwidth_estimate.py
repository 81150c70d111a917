"""A per-subscriber downlink estimate (issue 11), for the allocator and for network quality.

The server cannot measure a subscriber's downlink directly: it sees what it sends, and what the
subscriber reports back. aiortc subscribers send REMB per video SSRC, an estimate that rises to
about 1.5 times the incoming rate and never beyond, and falls to 0.85 times the incoming rate on
over-use; Chromium sends one REMB for all SSRCs together. So REMB tells congestion, not room. Room
is learned by probing with media: the allocator steps tracks up a layer (aiortc cannot pad) and
the estimator watches whether the downlink carries it.

Each second the estimator looks for congestion in three independent signals: loss rising above the
link's own loss (the median of the last 10 s without congestion, without a probe, and not held after
a cut: those seconds' reports count the overflow) by 10 points (GCC's threshold), for two seconds,
or together with another signal; by 5 points, at once, during a probe or while sending beyond the
prior (a downlink overloaded from its first second has no loss of its own to learn); a standing
queue (the lowest RTT of three reports in a row, measured in the seconds they came, above its 30 s
minimum by 50 ms, 25 ms during a probe, and not draining: a burst of keyframes queues some reports,
an overload all of them; on the prior, sending within it, only with loss: a path's delay stepping up
reads as a growing queue for a second or two); and a REMB that stopped rising below 90 % of what the
server sends on its SSRCs. What the downlink carried is what the subscriber received (the packets
its receiver reports count, over their arrival times: `received_bps`), with the link's own loss
added back (a lossy link carries what is sent; but not for a cut on the prior, whose loss so far may
be the overflow's). On congestion the estimate falls at once to 0.85 times that (or, on loss, times
what was sent less the share its reports say was lost, if less: the receive rate lags a link that
just narrowed; the more of what was sent that second and the one before, as reports lag), as GCC
does, and holds for 3 s while reports catch up (the hold's first sample's reports count the
overload's loss: the estimate is at most what they say got through of what was sent then; from its
second sample on it is at most the most that got through since, if that is less than the downlink
carried before: it narrowed); the first congestion replaces the initial estimate even upwards
(evidence beats the prior). The prior's overload, like a probe's, ends at the first receiver report
that counts its loss (`on_loss_report`, between samples; a stream's first report counts too, and
before the first sample with media, what is being sent stands in for one); that cut is at most 0.85
times the prior (loss reported early says too much got through), and the first receive rate of the
hold's first two samples lifts it to 0.85 times what the receiver got of the overload, if more. (The
loss of a stream's last packets before it was switched off is left out when it is switched back on:
`roomlab.server.measurements.loss_since_resumed`.) Once that congestion is over, a probe goes back
to where the cut came from (a burst may have caused it), whatever the probe interval. Without
congestion the estimate rises to what was carried (the lowest of the last three seconds), and beyond
only through a probe: when the allocator wants more (its `probe_step_bps`), no congestion has been
seen for 3 s, the probe interval has passed and, on the prior, the lowest layers it let on have
flowed for 3 s (they are its first test), the estimator sets a probe goal (the next step plus 20 %,
or double the estimate, whichever is larger: GCC probes at 2x; at most 15 % above the most the
allocator wanted in the last 5 s, as layers' bitrates wander) and the allocator fills it. After 2 s
(time for a keyframe and for feedback; up to 5 s while the reports still lag what was sent) the
estimate rises to what the probe carried: all that was sent once the reports have caught up without
a sign of congestion. A probe that carried half the increase it asked for (over the estimate, or
over what was carried before it if less) succeeded, and the next may follow at once; one that the
allocator could not fill tested nothing, and the next may follow a second later. If congestion
appears, the probe ends at once, between samples (the allocation follows at once): at the first REMB
of a stream already sent that falls below what is sent on it (`on_remb`: the receiver's delay
detector sees the probe queue the downlink, before the queue overflows; behind 400 kbit/s, traced,
it ended a failed probe 0.7 s before a report counted its loss), or at the first receiver report
that counts its loss (`on_loss_report`). The estimate becomes what got through, within what it was
before and the goal (for a REMB, as the next sample shows, 0.85 times that if its reports show loss
or a queue, and if the next two samples' reports show neither, what was being sent at the REMB, but
for what the queue held; for a report's loss, it stays what it was; in both, lower if the next
reports say less got through: the downlink narrowed); the next probe waits 4 s, doubling up to 12 s,
and only step-sized probes follow until two succeed in a row. The estimate is thus damped by
construction: noise in REMB, RTT or loss within the thresholds moves nothing.

`estimate_bps` covers all the subscriber's media; `video_budget_bps` is what is left for video
after the audio and data delivered in the last second (served first). Every result carries its
signals and its reason.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# --- the model's constants ------------------------------------------------------------------------

#: Estimate before any evidence: Chromium's GCC start bitrate.
INITIAL_ESTIMATE_BPS = 300_000.0
#: The estimate's reason while it is still the prior (the allocator switches nothing off on it).
INITIAL_REASON = "initial"
#: The estimate never falls below this (a probe must stay possible; audio alone needs ~30 kbit/s).
MIN_ESTIMATE_BPS = 50_000.0
#: On congestion the estimate falls to this fraction of what got through (GCC, aiortc: 0.85).
BACKOFF = 0.85
#: A REMB entry not refreshed within this long is dropped (aiortc sends one every 0.5-1 s per SSRC).
REMB_EXPIRY_S = 2.0
#: A REMB below this fraction of what the server sends on its SSRCs, and not higher than the
#: previous REMB for them, is over-use (a receiver's REMB rises 8 %/s up to 1.5x what arrives while
#: it sees none, and is set to 0.85x what arrives on over-use). aiortc's receivers also report
#: over-use on the delay spikes of keyframe bursts, so once the estimator has evidence a REMB only
#: confirms loss; alone it counts only before, in a second with loss (a downlink congested from its
#: first second has no loss or delay baseline to rise above; a path delay's step, or a busy
#: machine's stall, is over-use to a receiver too, with nothing lost). During a probe, a REMB that
#: fell below it ends the probe on its own: the overload is deliberate, and a false alarm costs a
#: probe, never the estimate.
REMB_OVERUSE_RATIO = 0.9
#: Loss above the link's own loss by this much is congestion (a tail-drop queue overflowing). GCC's
#: loss-based controller holds its estimate between 2 % and 10 % loss and cuts only above: a link whose
#: random loss steps up by a few points (notebook 03's 6 %) is lossy, not narrow, and cutting on it
#: switched video off that the link carried. An overload of a few percent fills the queue first, and
#: the standing queue tells it.
LOSS_RISE = 0.10
#: During a probe, or while sending beyond the prior, a rise by this much is enough: the overload is
#: deliberate or unproven, and its first sign ends it (each second of it costs audio its share).
OVERLOAD_LOSS_RISE = 0.05
#: After a REMB ended a probe, the reports of this many samples of the hold must show neither loss
#: nor a queue before the estimate takes what was being sent at the REMB as carried (traced: of 17
#: probes ended by a REMB while sending beyond a 400 kbit/s downlink, 3 left no trace in the first
#: sample's reports, and a loss or 48 ms of queue in the second's; on 600 kbit/s, 5 of 7 that sent
#: 587-655 kbit/s left 1-25 ms and nothing lost in both).
REMB_END_CLEAR_SAMPLES = 2
#: After a cut of the prior's overload made before the receive rate was known, the first receive rate of
#: this many samples of the hold is what the receiver got of the overload (its reports start 0.5-1.5 s
#: after the media: traced, the first overload was cut before the hold's first sample had one in 1 of 6
#: runs on 600 kbit/s; the second's reports of 2.5 s still count mostly the overload).
BLIND_CUT_SAMPLES = 2
#: The link's own loss: the median of this many recent one-second samples.
LOSS_BASE_SAMPLES = 10
#: On queueing delay without loss, the downlink carried at least this share of what was sent (the
#: rest may be waiting in its queue: 100 ms of an emulated link's rate).
QUEUED_SHARE = 0.9
#: The link's own loss is taken as at most this when what it carries is inferred from what got through.
OWN_LOSS_MAX = 0.5
#: Loss alone must persist this many samples (a second of random loss can look like a rise).
LOSS_CONFIRM_SAMPLES = 2
#: Loss rises only with at least this many packets lost: a track switched back on reports a packet or
#: two lost now and then that no link dropped (measured: 1 of 4, 2 of 15), and a probe's overload
#: loses tens. A receiver report that counts as many (of one stream, since its previous report), above
#: the link's own loss by OVERLOAD_LOSS_RISE, ends a probe, or the prior while sending beyond it, as it arrives:
#: reports come every 0.5-1.5 s per stream, several streams together about every 0.2 s, and each
#: second of a failed probe, or of a new subscriber's first overload, costs audio its share of the loss.
REPORT_MIN_LOST = 3
#: Queueing delay (RTT above its recent minimum) beyond this is congestion: half the emulated
#: link's 100 ms queue, well above its jitter.
QUEUE_DELAY_CONGESTION_S = 0.050
#: Queueing delay counts only when it stands: the lowest RTT of this many reports in a row (of this
#: second and the ones just before; a second without one breaks the row) must be above the baseline
#: (CoDel's test: a burst queues some packets, an overload all of them). Three cameras' keyframes
#: arrive together (a new subscriber's keyframe requests align them): on a downlink they fill to
#: 90 %, single RTT samples reach 50-80 ms every few seconds while nothing is lost.
STANDING_QUEUE_SAMPLES = 3
#: A probe is a deliberate overload: it ends at the first sign, one second of rising loss or
#: queueing delay above this (each second of a failed probe costs audio its share of the loss).
PROBE_QUEUE_DELAY_S = 0.025
#: The RTT baseline: the minimum of this many recent seconds' lowest RTTs.
RTT_BASE_SAMPLES = 30
#: Outside a probe, a standing queue is congestion only while it grows: above the limit in two
#: seconds in a row, and higher by this much than a second before. A queue fed beyond the link's
#: rate grows until it overflows (then loss tells); a path whose delay stepped up (a new route, an
#: emulated link's `delay_ms` raised) shows the same RTT above the baseline, but it stands still
#: and everything sent gets through: no reason to cut, or to switch a video off.
RTT_GROWTH_S = 0.010
#: An RTT that has stood above the baseline, within RTT_GROWTH_S of where it was, this many seconds
#: in a row with no loss rising is the path's own delay: it becomes the baseline (else every probe
#: on that path would end at its first second, and its queues would be measured from the old one).
PATH_DELAY_SAMPLES = 3
#: An RTT lower than the previous by this much is a queue draining after a cut: not congestion.
RTT_DRAINING_S = 0.005
#: Without congestion the estimate rises to the lowest delivered bitrate of this many samples.
DELIVERED_PROOF_SAMPLES = 3
#: After a cut, congestion signals cut again only this long later: receiver reports (every
#: 0.5-1.5 s) and the queue still describe what was sent before the cut (GCC waits an RTT).
CUT_HOLD_S = 3.0
#: After a failed probe, the same for this long (the allocation is back within the estimate at once,
#: the emulated queue drains in 100 ms, but the reports of the seconds that follow still count the
#: probe's losses: a receiver reports every 0.5-1.5 s, and is sampled once a second).
PROBE_FAILED_HOLD_S = 3.0
#: A probe lasts this long: a layer switch waits for a keyframe (<= 1 s here), then feedback (RR
#: every 0.5-1.5 s, REMB every 0.5-1 s) must show what the downlink did with it.
PROBE_DURATION_S = 2.0
#: A probe may last up to this long while the subscriber's reports show less received than sent
#: (by more than PROBE_RECEIVED_RATIO): they lag by a report interval.
PROBE_MAX_DURATION_S = 5.0
PROBE_RECEIVED_RATIO = 0.9
#: The first probe starts this long after the first sample; after a successful probe the next may
#: start at once.
PROBE_INTERVAL_S = 1.0
#: After a failed probe the next waits this long, and each failure in a row multiplies the wait by
#: PROBE_BACKOFF, up to PROBE_INTERVAL_MAX_S: a downlink that improves is found within that long, and
#: a steady bottleneck costs a step-sized probe that often, a second or less of overload each (LiveKit
#: waits 3 s, backing off to 2 min; Twilio switches tracks back on in "typically around 20 s").
PROBE_FAILED_INTERVAL_S = 4.0
PROBE_BACKOFF = 2.0
PROBE_INTERVAL_MAX_S = 12.0
#: No probe within this long of congestion.
PROBE_AFTER_CONGESTION_S = 3.0
#: A probe asks for the allocator's next step times this (LiveKit probes 120 % of the layer delta),
#: and at least the step plus PROBE_MIN_EXTRA_BPS (audio varies between the allocator's step and the
#: probe; LiveKit's minimum is 200 kbit/s)...
PROBE_OVERSHOOT = 1.2
PROBE_MIN_EXTRA_BPS = 50_000.0
#: A probe asks for no more than what the allocator wants plus this share of it: a layer's bitrate
#: wanders by a tenth from one second to the next, and a goal of exactly what the layers measured a
#: second ago may not fit them when the allocator fills it (the probe then tests nothing, and the
#: next one waits its interval).
PROBE_WANTED_MARGIN = 0.15
#: ...of the most the allocator wanted over this many samples (a layer measured low a second ago
#: would set a goal that it does not fit the next second).
PROBE_WANTED_SAMPLES = 5
#: ...or for the estimate times (1 + this), whichever is larger (GCC probes at 2x the estimate),
#: until the downlink shows its limit (a probe fails, or congestion cuts the estimate: GCC's slow start
#: ends at the first loss); from then on only the next step, until this many in a row have succeeded.
PROBE_RAMP = 1.0
RAMP_AFTER_SUCCESSES = 2
#: A probe succeeds when the downlink carried at least this share of the increase it asked for, over
#: the estimate or what the downlink carried before it, whichever is less (after a drop every camera may
#: be off, the estimate just below a lowest layer: the probe asks for that layer and a margin, and a
#: layer carried from nothing is room shown); one that carried more than the estimate but less than
#: that raises the estimate to what it carried, and counts neither way (a layer's bitrate wanders by a
#: tenth: a probe filled by nothing but that wandering proves nothing about room for the next step).
PROBE_SUCCESS_SHARE = 0.5


# --- inputs and outputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownlinkSample:
    """What the server measured about one subscriber's downlink over the last second."""

    video_bps: Mapping[int, float] = field(default_factory=dict)
    """Bitrate sent per outgoing video SSRC (the SSRCs the subscriber's REMBs name)."""
    other_bps: float = 0.0
    """Audio and data sent to the subscriber (served before video)."""
    fraction_lost: float | None = None
    """Loss over the subscriber's receiver reports of the last second, packet-weighted, 0-1."""
    rtt_s: float | None = None
    """Round-trip time from those reports, seconds (drop samples of paused senders: stale LSR); None
    when none of the second's reports gave one (an RTT held from earlier seconds is no news)."""
    rtt_samples: tuple[float, ...] = ()
    """The round-trip time of each of those reports, in the order they arrived (empty: `rtt_s` is
    taken as the one sample)."""
    lost_bps: float | None = None
    """What the reports say was lost, stream by stream: each stream's bitrate times its own loss (a
    dropped video packet weighs what it carried, an audio one little); None: `fraction_lost` of all."""
    received_bps: float | None = None
    """What the subscriber received lately by its reports (packets received over the reports'
    arrival times): on a congested downlink, its rate. None: not known (then `lost_bps` tells)."""
    packets: int | None = None
    """Packets those reports expected (None: not known; a rise of loss needs REPORT_MIN_LOST of them
    lost: a packet or two is no news of the downlink)."""

    @property
    def delivered_bps(self) -> float:
        """What was sent (the name says what the estimate takes as delivered while nothing is lost)."""
        return sum(self.video_bps.values()) + self.other_bps

    @property
    def few_lost(self) -> bool:
        """Its reports counted fewer than REPORT_MIN_LOST packets lost, a packet or two: no news of the
        downlink (False when the packets are not known)."""
        loss, packets = self.fraction_lost, self.packets
        return packets is not None and loss is not None and loss * packets < REPORT_MIN_LOST

    @property
    def through_bps(self) -> float:
        """What got through: what the subscriber received, else what was sent less what the reports
        say was lost."""
        if self.received_bps is not None:
            return self.received_bps
        if self.lost_bps is not None:
            return max(0.0, self.delivered_bps - self.lost_bps)
        return self.delivered_bps * (1.0 - (self.fraction_lost or 0.0))


@dataclass(frozen=True)
class DownlinkEstimate:
    """The estimate after one sample, with the evidence it was made from."""

    time_s: float
    estimate_bps: float
    """Downlink believed available for all media, bit/s."""
    video_budget_bps: float
    """`estimate_bps` minus the audio and data delivered: what the allocator divides."""
    probe_goal_bps: float | None
    """While probing: the total the allocator may fill now (None otherwise)."""
    probe_video_budget_bps: float | None
    """The probe goal minus audio and data."""
    state: str
    """`stable`, `congested` (this sample), `probing`, or `backoff` (a probe failed recently)."""
    congested: bool
    """Congestion was seen in this sample (for track_switch_off_mode `detected`)."""
    reason: str
    """Why the estimate has its value now: `initial`, `delivered`, `probe-succeeded`, `probe-failed`,
    or the signals that cut it (`loss`, `delay`, `remb`, joined by +)."""
    signals: tuple[str, ...]
    """Congestion signals in this sample: `loss`, `delay`, `remb`."""
    delivered_bps: float
    remb_bps: float | None
    """Sum of the live REMBs (each group of SSRCs counted once)."""
    fraction_lost: float | None
    loss_base: float | None
    queue_delay_s: float | None
    next_probe_s: float | None
    """Earliest time of the next probe."""
    limited: bool = False
    """Congestion has been seen on this downlink: the estimate is a limit it showed. Until then it
    is a prior or a floor (what it carried so far), and the allocator switches nothing off on it."""


@dataclass
class _Probe:
    start_s: float
    goal_bps: float
    carried_before: float | None = None
    """What the downlink carried in the last second without congestion before the probe."""
    delivered: list[float] = field(default_factory=list)
    """What the downlink carried in each sample of the probe (as far as the reports show yet)."""
    sent: list[float] = field(default_factory=list)
    """What was sent in each sample of the probe."""


@dataclass
class _Remb:
    time_s: float
    bitrate_bps: float
    ssrcs: frozenset[int]
    previous_bps: float | None

    def below_sent(self, sample: DownlinkSample) -> bool:
        """Below REMB_OVERUSE_RATIO times what `sample` says is sent on its SSRCs."""
        return self.bitrate_bps < REMB_OVERUSE_RATIO * sum(sample.video_bps.get(s, 0.0) for s in self.ssrcs)


@dataclass(frozen=True)
class _RembEnd:
    """A probe a REMB ended, until the hold's samples say what the downlink carried of it."""

    goal_bps: float
    sent_bps: float
    """What was being sent when the REMB came: since the last sample, or in it if that was too short a
    time to tell (traced: 53 of 137 REMBs that ended a probe in link-steps runs)."""


class DownlinkEstimator:
    """One subscriber's downlink estimate: `on_remb` for every REMB, `on_loss_report` for every
    receiver report of one of its streams, `update` about once a second."""

    def __init__(self, initial_bps: float = INITIAL_ESTIMATE_BPS) -> None:
        if not initial_bps > 0:
            raise ValueError(f"initial_bps must be > 0; got {initial_bps!r}")
        self.estimate_bps = float(initial_bps)
        self._remb: dict[int, _Remb] = {}
        self._losses: deque[float] = deque(maxlen=LOSS_BASE_SAMPLES)
        self._rtts: deque[float] = deque(maxlen=RTT_BASE_SAMPLES)
        self._delivered: deque[float] = deque(maxlen=DELIVERED_PROOF_SAMPLES)
        self._previous_rtt: float | None = None
        self._previous_queue: float | None = None
        self._still_queue_seconds = 0
        self._recent_rtts: deque[float] = deque(maxlen=STANDING_QUEUE_SAMPLES)
        self._queue_delay: float | None = None
        self._loss_streak = 0
        self._last_update_s: float | None = None
        self._last_congestion_s: float | None = None
        self._hold_until_s: float | None = None
        self._previous_through: float | None = None
        self._next_probe_s: float | None = None
        self._probe_interval_s = PROBE_INTERVAL_S
        self._probe: _Probe | None = None
        self._failed_probe = False
        self._limit_shown = False
        self._successes = 0
        self._reason = INITIAL_REASON
        self._recover_bps: float | None = None
        self._video_seconds = 0
        self._last_sample: DownlinkSample | None = None
        self._held_through: float | None = None
        self._last_carried: float | None = None
        self._carried_before_hold: float | None = None
        self._held_samples = 0
        #: a probe a REMB ended, until the hold's samples say what it carried
        self._remb_end: _RembEnd | None = None
        #: the hold follows a cut of the prior bounded by the prior, before the receive rate was known
        self._blind_cut = False
        self._wanted: deque[float] = deque(maxlen=PROBE_WANTED_SAMPLES)

    @property
    def probing(self) -> bool:
        """A probe is under way (its REMBs are weighed against what is being sent: `on_remb`)."""
        return self._probe is not None

    # -- REMB --

    def on_remb(
        self, time_s: float, bitrate_bps: float, ssrcs: Iterable[int], sending: DownlinkSample | None = None
    ) -> DownlinkEstimate | None:
        """A REMB from the subscriber naming `ssrcs` (one per aiortc receiver, all of them at once
        from Chromium: a REMB counts once for the SSRCs it names). During a probe, a REMB that fell
        below its previous one and below REMB_OVERUSE_RATIO times what is sent on its SSRCs (by
        `sending`, what is being sent since the last sample, else that sample) is the receiver's
        over-use: the probe's overload queues the downlink, and the probe ends at once, as on loss
        (`on_loss_report`), before the queue overflows. Returns the estimate when it changed (to be
        allocated at once), else None."""
        group = frozenset(ssrcs)
        if not group:
            return None
        old = {id(entry): entry for s in group if (entry := self._remb.get(s)) is not None}
        previous = None
        for entry in old.values():
            if entry.ssrcs == group:
                previous = entry.bitrate_bps
            else:  # an older grouping of these SSRCs: its value no longer applies to any of them
                for s in entry.ssrcs:
                    if self._remb.get(s) is entry:
                        del self._remb[s]
        entry = _Remb(time_s, float(bitrate_bps), group, previous)
        for s in group:
            self._remb[s] = entry
        if self._probe is None or previous is None or bitrate_bps >= previous:
            return None
        sample = sending if sending is not None else self._last_sample
        if sample is None or not entry.below_sent(sample):
            return None
        end = _RembEnd(self._probe.goal_bps, sample.delivered_bps)
        self._fail_probe(time_s)
        self._remb_end = end
        return self._result(time_s, sample, ("remb",), self._median_loss())

    def forget(self, ssrc: int) -> None:
        """The SSRC is no longer sent to this subscriber."""
        entry = self._remb.pop(ssrc, None)
        if entry is not None:
            for s in entry.ssrcs:
                if self._remb.get(s) is entry:
                    del self._remb[s]

    def _live_rembs(self, time_s: float) -> list[_Remb]:
        unique = {id(e): e for e in self._remb.values() if time_s - e.time_s <= REMB_EXPIRY_S}
        return list(unique.values())

    def remb_bps(self, time_s: float) -> float | None:
        """Sum of the live REMBs, each group of SSRCs once; None when there is none."""
        live = self._live_rembs(time_s)
        return sum(e.bitrate_bps for e in live) if live else None

    # -- the estimate --

    def update(
        self,
        time_s: float,
        sample: DownlinkSample,
        wanted_video_bps: float | None = None,
        probe_step_bps: float | None = None,
    ) -> DownlinkEstimate:
        """Take one second's measurements and the allocator's wishes (its `wanted_bps` and
        `probe_step_bps` from the last decision); return the estimate and any probe goal."""
        if self._next_probe_s is None:
            self._next_probe_s = time_s + PROBE_INTERVAL_S
        delivered = sample.delivered_bps
        signals, capacity = self._congestion(time_s, sample)
        congested = bool(signals)
        loss_base = statistics.median(self._losses) if self._losses else None
        # the link's own loss, not its overflow: not while congested, nor while a hold waits out the
        # reports of the congestion just acted on, nor during a probe (a deliberate overload)
        held = self._hold_until_s is not None and time_s < self._hold_until_s
        if sample.fraction_lost is not None and not congested and not held and self._probe is None:
            self._losses.append(sample.fraction_lost)
        self._last_update_s = time_s
        if wanted_video_bps is not None:
            self._wanted.append(wanted_video_bps)

        self._previous_through = sample.through_bps
        if held:  # (each hold starts its count, and what got through during it, afresh)
            self._held_samples += 1
            if self._remb_end is not None:
                self._credit_queued_probe(sample)
            else:
                if self._blind_cut:
                    self._lift_blind_cut(sample)
                if self._held_samples == 1:
                    self._recount_overload(sample)
        if congested:
            self._last_congestion_s = time_s
            self._delivered.clear()
            blind = self._reason == INITIAL_REASON and sample.received_bps is None and capacity > self.estimate_bps
            if blind:
                # what was sent less the loss reported so far, before the receive rate is known, is
                # above what got through (loss is reported up to a second late): no higher than the prior
                # (until the hold's samples measure the receive rate: `_lift_blind_cut`)
                capacity = self.estimate_bps
            if self._probe is not None:
                # the downlink carries less than the goal, and at least what it carried before the probe:
                # what got through while the probe over-used, within those (no back-off: the allocator
                # goes back below it with layers to spare; what got through is measured over seconds
                # that may reach back before the probe; not what was sent: the loss of a probe's first
                # second of overload may not be reported yet)
                goal, before = self._probe.goal_bps, self._probe.carried_before
                self._end_probe(time_s, success=False)
                self.estimate_bps = max(MIN_ESTIMATE_BPS, min(goal, max(capacity, self.estimate_bps)))
                self._hold(time_s, PROBE_FAILED_HOLD_S, before)
                self._reason = "probe-failed"
            else:
                overflowing = self._reason == INITIAL_REASON and (sample.fraction_lost or 0.0) >= OVERLOAD_LOSS_RISE
                if "loss" not in signals and not overflowing:
                    # a queue without loss: everything sent got through, later (the receive rate, measured
                    # over seconds, lags behind a rise); the queue holds at most a tenth of a second of the rate
                    # (on the prior, loss learnt as the link's own may be the overflow's: then it is no queue)
                    capacity = max(capacity, QUEUED_SHARE * delivered)
                cut = max(MIN_ESTIMATE_BPS, BACKOFF * min(capacity, self._sent_less_lost(sample, signals)))
                if not held and (cut < self.estimate_bps or self._reason == INITIAL_REASON):  # evidence beats the prior
                    if self._reason != INITIAL_REASON:  # to probe for again once the congestion is over
                        self._recover_bps = max(self._recover_bps or 0.0, self.estimate_bps)
                    self.estimate_bps = cut
                    self._hold(time_s, CUT_HOLD_S, self._last_carried)
                    self._blind_cut = blind
                    self._reason = "+".join(signals)
                    self._limit_found()
            if held and sample.received_bps is not None and self._held_samples > 1:
                self._narrow(capacity, signals)
        else:
            if sample.video_bps and sum(sample.video_bps.values()) > 0:
                self._video_seconds += 1
            carried = self._last_carried = self._carried(sample)
            self._delivered.append(carried)  # proof is what the downlink carried
            probe = self._probe
            if probe is not None:
                probe.delivered.append(carried)
                probe.sent.append(delivered)
                age = time_s - probe.start_s
                # the receive rate is measured over the last reports: wait until it shows the probe
                lagging = carried < PROBE_RECEIVED_RATIO * delivered
                if age >= PROBE_DURATION_S and (not lagging or age >= PROBE_MAX_DURATION_S):
                    # what the probe carried in its last seconds (its first second switches layers; a
                    # layer's seconds vary by a tenth around its rate, so the larger of two): once the
                    # reports have caught up without a sign of congestion, all that was sent (the receive
                    # rate, over reports of 2.5 s, still counts seconds before the probe: a probe that
                    # switches a track back on would never show more than an estimate just below its layer)
                    carried = max((probe.delivered if lagging else probe.sent)[-2:])
                    if carried > self.estimate_bps:

                        def showed_room_over(base: float) -> bool:
                            return carried >= base + PROBE_SUCCESS_SHARE * (probe.goal_bps - base)

                        before = probe.carried_before
                        base = self.estimate_bps if before is None else min(self.estimate_bps, before)
                        self._end_probe(
                            time_s,
                            success=True if showed_room_over(base) else None,
                            toward_ramp=showed_room_over(self.estimate_bps),
                        )
                        self.estimate_bps = min(probe.goal_bps, carried)
                        self._reason = "probe-succeeded"
                    else:  # the allocator found nothing to fill it with: nothing was learnt
                        self._end_probe(time_s, success=None)
            elif len(self._delivered) == DELIVERED_PROOF_SAMPLES and min(self._delivered) > self.estimate_bps:
                self.estimate_bps = min(self._delivered)
                self._reason = "delivered"
            if self._probe is None and self._probe_wanted(time_s, sample, wanted_video_bps, probe_step_bps):
                self._start_probe(time_s, sample, wanted_video_bps, probe_step_bps)  # type: ignore[arg-type]

        self._last_sample = sample
        return self._result(time_s, sample, signals, loss_base)

    def on_loss_report(
        self, time_s: float, lost: int, expected: int, sending: DownlinkSample | None = None
    ) -> DownlinkEstimate | None:
        """One receiver report's loss as it arrives: `lost` of the `expected` packets of one stream
        since its previous report. While probing, or on the prior while sending beyond it (a blind
        overload), loss of at least REPORT_MIN_LOST packets above the link's own by OVERLOAD_LOSS_RISE ends the
        probe (the estimate stays what it was) or the prior (cut to BACKOFF times what the last
        sample got through, at most the prior) at once, not at the next update. `sending` (what is
        being sent since the last sample, without reports) stands in for a last sample that carried
        nothing: a new subscriber's first overload is reported before its first sample with media (up
        to a second after its media started). Returns the estimate when it changed (to be allocated
        at once), else None."""
        sample = self._last_sample
        if sending is not None and (sample is None or sample.delivered_bps <= 0):
            sample = sending
        if sample is None or expected <= 0 or lost < REPORT_MIN_LOST:
            return None
        overload = self._overloading(sample)
        if self._probe is None and not overload:
            return None
        if lost / expected < self._loss_base(overload) + self._loss_rise(overload):
            return None
        if self._probe is not None:
            self._fail_probe(time_s)
        else:
            self._last_congestion_s = time_s
            self._delivered.clear()
            got_through = sample.delivered_bps * (1.0 - lost / expected)
            blind = got_through > self.estimate_bps  # (the prior bounds it: see `_lift_blind_cut`)
            self.estimate_bps = max(MIN_ESTIMATE_BPS, BACKOFF * min(got_through, self.estimate_bps))
            self._hold(time_s, CUT_HOLD_S, self._last_carried)
            self._blind_cut = blind
            self._reason = "loss"
            self._limit_found()
        return self._result(time_s, sample, ("loss",), self._median_loss())

    def _fail_probe(self, time_s: float) -> None:
        """A probe's overload shown between samples: it ends now, the estimate stays what it was, and
        the reports of the next seconds (which still count the overload) are held."""
        assert self._probe is not None
        self._last_congestion_s = time_s
        self._delivered.clear()
        before = self._probe.carried_before
        self._end_probe(time_s, success=False)
        self._hold(time_s, PROBE_FAILED_HOLD_S, before)
        self._reason = "probe-failed"

    def _median_loss(self) -> float | None:
        return statistics.median(self._losses) if self._losses else None

    def _result(
        self, time_s: float, sample: DownlinkSample, signals: tuple[str, ...], loss_base: float | None
    ) -> DownlinkEstimate:
        goal = self._probe.goal_bps if self._probe is not None else None
        congested = bool(signals)
        if goal is not None:
            state = "probing"
        else:
            state = "congested" if congested else "backoff" if self._failed_probe else "stable"
        return DownlinkEstimate(
            time_s=time_s,
            estimate_bps=self.estimate_bps,
            video_budget_bps=max(0.0, self.estimate_bps - sample.other_bps),
            probe_goal_bps=goal,
            probe_video_budget_bps=max(0.0, goal - sample.other_bps) if goal is not None else None,
            state=state,
            congested=congested,
            reason=self._reason,
            signals=signals,
            delivered_bps=sample.delivered_bps,
            remb_bps=self.remb_bps(time_s),
            fraction_lost=sample.fraction_lost,
            loss_base=loss_base,
            queue_delay_s=self._queue_delay,
            next_probe_s=self._next_probe_s if self._probe is None else None,
            limited=self._last_congestion_s is not None,
        )

    def _hold(self, time_s: float, seconds: float, carried_before: float | None) -> None:
        """No cut for this long: the reports still tell of the congestion just acted on (`carried_before`:
        what the downlink carried before it, before the probe if a probe caused it). It starts afresh:
        the records of the hold before (a REMB-ended probe, a blind cut) go with it."""
        self._hold_until_s = time_s + seconds
        self._carried_before_hold = carried_before
        self._held_through = None
        self._held_samples = 0
        self._remb_end = None
        self._blind_cut = False

    def _credit_queued_probe(self, sample: DownlinkSample) -> None:
        """A sample of a hold after a REMB ended a probe (`_remb_end` set). At the first, the probe
        queued the downlink, so what got through meanwhile is what the downlink carries (the estimate
        becomes that, within what it was and the probe's goal, as for a probe that fails at a sample;
        BACKOFF times that if this sample's reports show the overload: traced, a probe on 600 kbit/s
        that had 11 % lost and 55 ms of queue in them set the estimate to the 606 kbit/s that got
        through, and the allocation that filled it overflowed the downlink again).
        A probe that asked for 3 % more than a 600 kbit/s downlink carries queues it slowly, and ends on
        the receiver's REMB long before anything is lost: what it showed must not be lost with it. What
        got through is measured over reports of 2.5 s, mostly seconds before a probe that lasted a
        fraction of one: if the reports of the hold's first REMB_END_CLEAR_SAMPLES samples show neither
        loss nor a queue (`_left_no_trace`), the downlink carried what was being sent when the REMB came,
        but for what its queue held (QUEUED_SHARE): the receiver's over-use was a keyframe burst's delay,
        or a queue that had only begun. Nor is the estimate lowered by the loss the first sample's
        reports count (`_recount_overload`): the probe was ended within a fraction of the second, and
        that loss, weighed over all the second's sending, said a 600 kbit/s downlink carried 410; a
        downlink that narrowed meanwhile shows in the hold's next samples (`_narrow`)."""
        end = self._remb_end
        assert end is not None
        if self._held_samples == 1:
            carried = self._carried(sample)
            if self._shows_overload(sample):  # it overflowed or queued: back off from it, as on congestion
                carried *= BACKOFF
            self.estimate_bps = max(self.estimate_bps, min(end.goal_bps, carried))
        if not self._left_no_trace(sample):
            self._remb_end = None
        elif self._held_samples >= REMB_END_CLEAR_SAMPLES:
            self._remb_end = None
            self.estimate_bps = max(self.estimate_bps, min(end.goal_bps, QUEUED_SHARE * end.sent_bps))

    def _shows_overload(self, sample: DownlinkSample) -> bool:
        """This sample's reports show the downlink overflowing (at least REPORT_MIN_LOST packets lost,
        or OVERLOAD_LOSS_RISE above its own loss) or queueing (their RTT more than PROBE_QUEUE_DELAY_S
        above its baseline)."""
        loss, rtt = sample.fraction_lost, sample.rtt_s
        lost = loss is not None and loss > 0 and not (sample.few_lost and loss < self._own_loss() + OVERLOAD_LOSS_RISE)
        queued = rtt is not None and bool(self._rtts) and rtt - min(self._rtts) > PROBE_QUEUE_DELAY_S
        return lost or queued

    def _left_no_trace(self, sample: DownlinkSample) -> bool:
        """This sample's reports show the downlink neither overflowing nor queueing (`_shows_overload`);
        a sample without reports, or without an RTT, shows nothing."""
        if sample.fraction_lost is None or sample.rtt_s is None or not self._rtts:
            return False
        return not self._shows_overload(sample)

    def _lift_blind_cut(self, sample: DownlinkSample) -> None:
        """A sample of the hold after a cut of the prior's overload made before the receive rate was
        known (in `update` or `on_loss_report`: loss reported early says too much got through, so the
        cut is at most BACKOFF times the prior). The first receive rate of the hold's first
        BLIND_CUT_SAMPLES samples measures what the receiver got of the overload (over reports of
        2.5 s): the estimate becomes BACKOFF times that, if more, within what was sent (as a
        delay-based controller backs off to a share of its receive rate). Traced: a 600 kbit/s downlink
        overloaded by its first second's keyframes (632-664 kbit/s for the three lowest layers) was cut
        to 255 kbit/s, then took probes of 10-23 s to climb back; its receive rate in the hold's first
        two samples was 438-591 kbit/s."""
        before, received = self._last_sample, sample.received_bps
        if received is not None:
            sent = max(before.delivered_bps if before is not None else 0.0, sample.delivered_bps)
            self.estimate_bps = max(self.estimate_bps, BACKOFF * min(received, sent))
        if received is not None or self._held_samples >= BLIND_CUT_SAMPLES:
            self._blind_cut = False

    def _recount_overload(self, sample: DownlinkSample) -> None:
        """The first sample of a hold: its reports count the loss of the overload just acted on. What
        they say got through of what was sent then bounds the estimate (a cut made as the downlink
        narrowed, before most of its loss was reported, stayed above the new rate: 600 to 300 kbit/s,
        cut to 378 and held there; a probe that failed on a downlink just narrowed kept the estimate
        from before). The overload was sent in the second before (a cut's), or in this one (a probe, or a
        first overload, ended by a receiver report between samples): the more of the two is taken. The
        loss is packet-weighted: audio's small packets count as much as video's large ones and are dropped
        less often. So if anything this says too much got through; the estimate is only ever lowered here."""
        before = self._last_sample
        loss = sample.fraction_lost
        if before is None or loss is None:
            return
        if sample.few_lost:
            return  # a packet or two: no news of the downlink
        own = self._own_loss()
        if loss < own + OVERLOAD_LOSS_RISE:
            return  # the link's own loss, give or take its noise: no news either
        sent = max(before.delivered_bps, sample.delivered_bps)
        got_through = sent * (1.0 - loss) / (1.0 - own)
        if got_through < self.estimate_bps:
            self.estimate_bps = max(MIN_ESTIMATE_BPS, got_through)

    def _narrow(self, capacity: float, signals: tuple[str, ...]) -> None:
        """A hold waits out the reports of the congestion just acted on, but if even the most that got
        through since, from the second sample of the hold on (the first one's reports still count what was
        sent before the cut), is less than the downlink carried before, it narrowed (just as a probe
        failed or a cut was made): no more than that, at once (a cut from a receive rate that still counted
        the wider link's seconds stayed above a link that halved; what got through, over reports of 2.5 s,
        says little once the allocation fits again)."""
        self._held_through = max(self._held_through or 0.0, capacity)
        before = self._carried_before_hold
        if before is not None and self._held_through < before and self._held_through < self.estimate_bps:
            self.estimate_bps = max(MIN_ESTIMATE_BPS, self._held_through)
            self._reason = "+".join(signals)

    def _congestion(self, time_s: float, sample: DownlinkSample) -> tuple[tuple[str, ...], float]:
        """The congestion signals of this sample and what got through (with the link's own loss)."""
        delivered = sample.delivered_bps
        # what the subscriber received is measured over its last reports; what was sent less what was
        # lost is not aligned with the reports, which lag it by up to a second: over two samples then
        through = sample.through_bps
        if sample.received_bps is None and self._previous_through is not None:
            through = (through + self._previous_through) / 2
        signals: list[str] = []
        capacity = delivered
        loss = sample.fraction_lost
        overload = self._overloading(sample)
        base = self._loss_base(overload)
        rise = self._loss_rise(overload)
        # with no loss of its own known, a rise is measured from none while the overload is deliberate
        # (a probe) or unproven (sending beyond the prior)
        overloaded = overload or self._probe is not None
        if loss is not None and (self._losses or overloaded) and loss >= base + rise and not sample.few_lost:
            self._loss_streak += 1
        else:
            self._loss_streak = 0
        rtts = sample.rtt_samples or ((sample.rtt_s,) if sample.rtt_s is not None else ())
        if not rtts:
            self._recent_rtts.clear()  # a standing queue is one of reports in a row
            self._queue_delay = None
        else:
            self._rtts.append(min(rtts))
            self._recent_rtts.extend(rtts)
            standing = min(self._recent_rtts)
            queue = self._queue_delay = standing - min(self._rtts)
            previous, previous_queue = self._previous_rtt, self._previous_queue
            draining = previous is not None and standing < previous - RTT_DRAINING_S
            limit = PROBE_QUEUE_DELAY_S if self._probe is not None else QUEUE_DELAY_CONGESTION_S
            standing_queue = len(self._recent_rtts) == STANDING_QUEUE_SAMPLES and queue > limit and not draining
            growing = (
                previous is not None
                and previous_queue is not None
                and previous_queue > limit
                and standing > previous + RTT_GROWTH_S
            )
            # on the prior, sending within it, a growing queue tells congestion only with loss: a path's
            # delay stepping up shows as one for a second or two (reports in flight across the step), and
            # a link narrower than what is sent overflows its queue within a second
            blind = self._reason == INITIAL_REASON and not overload and not self._loss_streak
            if standing_queue and (self._probe is not None or (growing and not blind)):
                signals.append("delay")
            still = standing_queue and not growing and self._loss_streak == 0
            self._still_queue_seconds = self._still_queue_seconds + 1 if still else 0
            if self._still_queue_seconds >= PATH_DELAY_SAMPLES:  # the path's own delay: the new baseline
                self._rtts.clear()
                self._rtts.append(standing)
                self._still_queue_seconds = 0
            self._previous_rtt, self._previous_queue = standing, queue if standing_queue else None
        remb = False
        for entry in self._live_rembs(time_s):
            fresh = self._last_update_s is None or entry.time_s > self._last_update_s
            # a receiver's REMB rises while it sees no over-use; below what is sent and not rising, it
            # is over-use (its value lags, so it tells that, not by how much: capacity stays `delivered`)
            rising = entry.previous_bps is None or entry.bitrate_bps > entry.previous_bps
            if fresh and not rising and entry.below_sent(sample):
                remb = True
                break
        # a probe is a deliberate overload, and the prior has no loss of its own: one second of loss tells
        confirmed = self._loss_streak >= LOSS_CONFIRM_SAMPLES or self._probe is not None or overload
        if self._loss_streak and (confirmed or signals or remb):
            signals.insert(0, "loss")
        # on the prior a REMB alone tells an overload only with loss to show for it: a receiver also
        # reports over-use on a path delay's step, or on a busy machine's stalls, where nothing is lost
        lossy = loss is not None and loss >= rise
        if remb and (signals or (self._reason == INITIAL_REASON and lossy)):
            signals.append("remb")
        if signals:  # what got through, whichever signal told of the congestion
            capacity = through / (1.0 - self._own_loss_for_a_cut())
        return tuple(signals), capacity

    def _overloading(self, sample: DownlinkSample) -> bool:
        """Sending beyond the prior, before any evidence: loss then is congestion, not the link's own (a
        downlink overloaded from its first second would learn its overflow as its own loss)."""
        return self._reason == INITIAL_REASON and sample.delivered_bps > self.estimate_bps

    def _loss_base(self, overload: bool) -> float:
        """The loss a rise is measured from: the link's own as learnt (none while overloading)."""
        return statistics.median(self._losses) if self._losses and not overload else 0.0

    def _loss_rise(self, overload: bool) -> float:
        """How far above the link's own loss congestion starts: less during a probe or an overload."""
        return OVERLOAD_LOSS_RISE if self._probe is not None or overload else LOSS_RISE

    def _sent_less_lost(self, sample: DownlinkSample, signals: tuple[str, ...]) -> float:
        """On loss, what was sent less what this second's reports say was lost (with the link's own loss
        added back): the receive rate counts reports of 2.5 s, mostly seconds before a downlink that just
        narrowed (600 to 300 kbit/s: a cut from it stayed above the new link, and the next waited out a
        hold). The reports lag what was sent by up to a second: what was sent is the more of this second
        and the one before (a hold that ended as the allocation fell left loss of 12 % counted against
        the 349 kbit/s then sent, not the 578 it was of: a 600 kbit/s downlink cut to 277). Not for what
        got through during a hold: the allocation has fallen by then, and reports still count the
        overflow before it."""
        if "loss" not in signals or sample.lost_bps is None:
            return float("inf")
        before = self._last_sample
        sent = max(sample.delivered_bps, before.delivered_bps if before is not None else 0.0)
        # the share of bits lost (each stream's loss weighed by its bitrate)
        lost_share = min(1.0, sample.lost_bps / sample.delivered_bps) if sample.delivered_bps > 0 else 1.0
        return sent * (1.0 - lost_share) / (1.0 - self._own_loss_for_a_cut())

    def _own_loss_for_a_cut(self) -> float:
        """The link's own loss to add back to what got through on congestion: none on the prior, where the
        loss learnt so far may be this overflow's (a downlink narrower than the lowest layers from its first
        second, whose REMB tells it seconds later)."""
        return 0.0 if self._reason == INITIAL_REASON else self._own_loss()

    def _own_loss(self) -> float:
        """The link's own loss (random, before any bottleneck), as learnt: at most OWN_LOSS_MAX."""
        return min(OWN_LOSS_MAX, statistics.median(self._losses)) if self._losses else 0.0

    def _carried(self, sample: DownlinkSample) -> float:
        """What the downlink carried of what was sent: what got through, with the link's own loss
        added back (a lossy link carries what is sent; its loss is not a limit of its rate)."""
        return min(sample.delivered_bps, sample.through_bps / (1.0 - self._own_loss()))

    def _probe_wanted(self, time_s: float, sample: DownlinkSample, wanted: float | None, step: float | None) -> bool:
        if not step or step <= 0 or wanted is None:
            return False
        recovering = self._recover_bps is not None and self._recover_bps > self.estimate_bps
        if not recovering and self._next_probe_s is not None and time_s < self._next_probe_s:
            return False
        if self._last_congestion_s is not None and time_s - self._last_congestion_s < PROBE_AFTER_CONGESTION_S:
            return False
        if self._reason == INITIAL_REASON and sample.delivered_bps > self.estimate_bps:
            return False  # already sending beyond the prior: that is the test
        if self._reason == INITIAL_REASON and self._video_seconds < DELIVERED_PROOF_SAMPLES:
            return False  # the lowest layers, which the prior lets on, are the first test: let it show
        return wanted + sample.other_bps > self.estimate_bps

    def _start_probe(self, time_s: float, sample: DownlinkSample, wanted: float, step: float) -> None:
        # double while probes succeed (GCC's slow start); once the downlink has shown its limit, only the
        # next step, until RAMP_AFTER_SUCCESSES of them in a row have succeeded (the downlink widened)
        ramping = not self._limit_shown or self._successes >= RAMP_AFTER_SUCCESSES
        ramp = PROBE_RAMP * self.estimate_bps if ramping else 0.0
        increase = max(PROBE_OVERSHOOT * step, step + PROBE_MIN_EXTRA_BPS, ramp)
        most = max(self._wanted, default=wanted) * (1.0 + PROBE_WANTED_MARGIN) + sample.other_bps
        goal = min(most, self.estimate_bps + increase)
        if self._recover_bps is not None:  # back to where a cut came from, whatever the back-off
            goal = max(goal, min(most, self._recover_bps))
            self._recover_bps = None
        goal = max(goal, self.estimate_bps + step)
        self._probe = _Probe(time_s, goal, self._last_carried)

    def _end_probe(self, time_s: float, success: bool | None, toward_ramp: bool = True) -> None:
        """`success` None: the probe tested nothing (the allocator could not fill it, or filled little
        of it): it overloaded nothing, so nothing backs off; the next one may follow PROBE_INTERVAL_S
        later, with a goal from the allocator's step as it is then (a layer measured low for a second
        set a goal that no layer fitted once measured again: waiting out the back-off, 12 s, after it
        left the cameras off on a link that had risen to 3 Mbit/s), and the back-off stays as it was
        for the next failure. `toward_ramp` False: a success shown only over what was carried before the
        probe (a layer carried from nothing) does not count toward doubling: it showed room for that layer,
        not beyond the estimate (counted, two of them would let the next probe double: on a 400 kbit/s
        downlink with one camera on, a goal of twice the estimate is every camera at once)."""
        self._probe = None
        if success:  # the next one may follow at once, from the new estimate
            self._probe_interval_s = PROBE_INTERVAL_S
            self._failed_probe = False
            if toward_ramp:
                self._successes += 1
            self._next_probe_s = time_s
            return
        if success is None:
            self._next_probe_s = time_s + PROBE_INTERVAL_S
            return
        backoff = max(PROBE_FAILED_INTERVAL_S, self._probe_interval_s * PROBE_BACKOFF)
        self._probe_interval_s = min(PROBE_INTERVAL_MAX_S, backoff)
        self._failed_probe = True
        self._limit_found()
        self._next_probe_s = time_s + self._probe_interval_s

    def _limit_found(self) -> None:
        """A probe failed or congestion cut the estimate: probes step, no longer ramp."""
        self._limit_shown = True
        self._successes = 0
