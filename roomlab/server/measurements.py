"""What the server measures of each participant's network, about once a second (SPEC §9, §11).

Per participant, per direction and media kind:

- **recv** (its downlink, the server's senders to it): loss and jitter from the receiver reports
  the participant sends about them, interval by interval (cumulative lost and highest sequence
  number, as RFC 3550 §6.4.1 does), and the rate at which it received each stream (the packets its
  reports count as received, over the reports' arrival times, at the stream's packet size: on a
  congested downlink, the downlink's rate); round-trip time from the same reports' LSR and DLSR, dropping
  a sample whose sender report described a sender paused for more than `RTT_MAX_STALENESS_S`
  (a paused sender repeats its LSR, and a report on an older sender report would then give a
  wrong RTT); the payload bitrate sent (the senders' counters; data from the server's data
  channel counters); REMB as it arrives; and the **downlink estimate** (`Downlink`, one per
  participant).
- **send** (its uplink, the server's receivers of its tracks): loss and jitter from the counters
  of each receiver's media SSRC; RTT from the same participant's downlink (an uplink has none of
  its own); bitrate from the publisher's sender reports; for video, the REMB estimate the
  server's receivers send it.
- **reachable**: its peer connection is connected and, when it has media streams (either way),
  RTCP arrived from it in the last `UNREACHABLE_AFTER_S`; an unreachable participant keeps the
  partials that flowed last, at 0.

Everything comes from what aiortc counts anyway and from RTCP seen as it arrives (one observer per
participant's DTLS transport, before aiortc routes the packet): no `getStats()` call. The server's
`rtc_stats` sampling calls `getStats()` once a second for its table; its inbound statistics would
not do here (aiortc reports one SSRC per receiver, after a retransmission the RTX one; loss only
cumulative; RTT smoothed with the stale samples in it).

`Downlink` is the one downlink estimate of a subscriber: network quality reads it as the
available bandwidth of `video_recv`, and the allocator (issue 11) reads `estimate` and sets
`wanted_video_bps`, `probe_step_bps` and `starved_video_bps` after each of its decisions
(`measurements.downlink(sid)`). Video switched off for lack of bandwidth is scored as `video_recv`
even when no other video reaches the subscriber (no packets, the estimate's budget against what is
wanted).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.rtp import RTCP_PSFB_APP, AnyRtcpPacket, RtcpPsfbPacket, RtcpReceiverInfo, RtcpSrPacket, unpack_remb_fci

from ..net.rtp import (
    RTP_PACKET_OVERHEAD_BYTES,
    observe_rtcp,
    received_stream,
    receiver_estimate_bps,
    sender_counters,
)
from ..policy.bandwidth_estimate import DownlinkEstimate, DownlinkEstimator, DownlinkSample
from ..policy.quality import MediaMeasurement, ParticipantMeasurement

#: RTP clock rates of the media roomlab negotiates (Opus, VP8/H.264).
CLOCK_RATES = {"audio": 48_000, "video": 90_000}
#: An RTT sample is kept only if the sender report it answers was sent at most this long after
#: the sender's last packet (aiortc sends reports 0.5-1.5 s apart: a sender that sent nothing for
#: longer may have repeated the same LSR in two reports, and the RTT would be measured from the
#: wrong one). DTX silence sends a packet every 0.4 s, so talkers in silence still count.
RTT_MAX_STALENESS_S = 0.5
#: Without a new RTT sample, the last one stands this long (receiver reports come every 0.5-1.5 s).
RTT_HOLD_S = 5.0
#: A stream that has carried no packet for this long does not flow (the same as a stalled track).
FLOWING_WITHIN_S = 3.0
#: A participant with media streams that sent no RTCP for this long is unreachable (aiortc sends
#: a report every 0.5-1.5 s per stream).
UNREACHABLE_AFTER_S = 4.0
#: A gap in the highest sequence number beyond this between two reports is a restart, not loss.
MAX_SEQUENCE_GAP = 30_000
#: A stream's receive rate is measured over its receiver reports of this long (two or three of
#: aiortc's, which come every 0.5-1.5 s)...
RECEIVE_RATE_WINDOW_S = 2.5
#: ...spanning at least this long.
RECEIVE_RATE_MIN_SPAN_S = 0.8
#: What is being sent between samples is a rate over at least this long (a new subscriber's first
#: overload is reported before its first sample: the estimator weighs that report against it).
SENDING_MIN_SPAN_S = 0.25
NTP_EPOCH_OFFSET = 2_208_988_800


def _ntp_middle(unix_time: float) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp (the LSR format)."""
    return int((unix_time + NTP_EPOCH_OFFSET) * 65536) & 0xFFFFFFFF


@dataclass
class Downlink:
    """A subscriber's downlink: the estimator, its latest estimate and what fed it. The allocator
    reads `estimate` and writes `wanted_video_bps`, `probe_step_bps` and `starved_video_bps` after
    each decision."""

    estimator: DownlinkEstimator = field(default_factory=DownlinkEstimator)
    estimate: DownlinkEstimate | None = None
    """The latest estimate (None before the first sample)."""
    sample: DownlinkSample | None = None
    """What the latest estimate was made from."""
    wanted_video_bps: float | None = None
    """The allocator's `wanted_bps` of its last decision (None: no allocator)."""
    probe_step_bps: float | None = None
    """The allocator's `probe_step_bps` of its last decision."""
    starved_video_bps: float = 0.0
    """The allocator's `starved_bps` of its last decision: wanted video switched off for bandwidth."""


def _wire_bps(packets: int, octets: int, elapsed: float) -> float:
    """What `packets` carrying `octets` bytes of payload took on the wire over `elapsed` seconds, bit/s
    (with each RTP packet's headers, as a link counts them)."""
    return (max(octets, 0) + max(packets, 0) * RTP_PACKET_OVERHEAD_BYTES) * 8 / elapsed


def first_report_loss(report: RtcpReceiverInfo) -> tuple[int, int]:
    """The packets expected and lost that a stream's first receiver report (as the server sees it)
    tells of: its cumulative loss, of what its fraction lost says was expected (since the receiver
    started, in the receiver's first report: 256ths, rounded down). (0, 0) when nothing was lost: the
    expected packets are then not known. Of a receiver that reported before, the fraction is of its
    last interval: the ratio still holds, the counts are larger."""
    if report.packets_lost <= 0 or report.fraction_lost <= 0:
        return 0, 0
    lost = report.packets_lost
    return max(lost, round(lost * 256 / report.fraction_lost)), lost


def loss_since_resumed(expected: int, lost: int, sent_since_report: int) -> tuple[int, int]:
    """The packets expected and lost of a report interval that began while its stream sent nothing
    (switched off, paused), less those sent before the pause: of the packets a report counts,
    `expected` less `sent_since_report` (what the sender sent since the previous report) were sent
    before it, and, as the stream was idle then, were not in flight but lost, at the tail of what it
    sent before the pause. Their loss tells of the downlink as it was then, seconds ago (a track
    switched off because its downlink was overloaded left its last packets in a queue that dropped
    them; the first report after it is switched back on counted them, on a downlink since widened,
    and ended the probe that switched it on)."""
    stale = min(max(expected - sent_since_report, 0), lost)
    return expected - stale, lost - stale


class _Outgoing:
    """One of the server's senders to the participant: a stream of its downlink."""

    __slots__ = (
        "sender",
        "kind",
        "track_sid",
        "ssrc",
        "packets",
        "octets",
        "flowed_at",
        "rr_highest",
        "rr_lost",
        "rr_sent",
        "rr_idle",
        "expected",
        "lost",
        "jitter_s",
        "received",
        "packet_bytes",
    )

    def __init__(
        self, sender: RTCRtpSender, kind: str, track_sid: str, now: float, counted: tuple[int, int] = (0, 0)
    ) -> None:
        counters = sender_counters(sender)
        self.sender = sender
        self.kind = kind
        self.track_sid = track_sid
        self.ssrc = counters.ssrc
        #: the sender's packets and bytes counted so far (`counted`: as the last refresh saw them; the
        #: packets sent since go into the next sample, a new stream's first second included)
        self.packets, self.octets = counted
        self.flowed_at = now if counters.packets > counted[0] else -1e9
        self.rr_highest: int | None = None
        self.rr_lost = 0
        #: the sender's packets at the last report, and whether it sent none since the one before
        self.rr_sent = counters.packets
        self.rr_idle = False
        #: packets expected and lost in the receiver reports since the last sample
        self.expected = 0
        self.lost = 0
        self.jitter_s: float | None = None
        #: (arrival, packets received in all) of the recent receiver reports: the receive rate
        self.received: deque[tuple[float, int]] = deque()
        #: mean bytes of its packets on the wire, lately (None: nothing sent yet)
        self.packet_bytes: float | None = None

    def unsampled(self) -> tuple[int, int]:
        """The packets and payload bytes its sender has sent since a sample last counted them."""
        counters = sender_counters(self.sender)
        return counters.packets - self.packets, counters.octets - self.octets

    def on_report(self, report: RtcpReceiverInfo, now: float) -> tuple[int, int]:
        """Count a receiver report of this stream; the packets expected and lost since its previous one.

        The first report only sets where counting starts, but what it lost is returned (for the
        estimator's early signs, not counted into the sample): a new subscriber's first overload is
        in it. Its expected packets follow from its cumulative loss and its fraction lost (since the
        receiver started, in its first report; since its previous one otherwise, and then the
        ratio is still right), so only when something was lost. A report after one that found the
        stream idle leaves out the loss of what was sent before the pause (`loss_since_resumed`)."""
        expected = lost = 0
        sent = sender_counters(self.sender).packets
        if self.rr_highest is None:
            self.received.append((now, 0))
            expected, lost = first_report_loss(report)
        else:
            expected = (report.highest_sequence - self.rr_highest) & 0xFFFF
            if expected <= MAX_SEQUENCE_GAP:
                lost = min(max(report.packets_lost - self.rr_lost, 0), expected)
                if self.rr_idle:
                    expected, lost = loss_since_resumed(expected, lost, sent - self.rr_sent)
                self.expected += expected
                self.lost += lost
                total = self.received[-1][1] if self.received else 0
                self.received.append((now, total + expected - lost))
            else:
                expected = 0
        self.rr_highest, self.rr_lost = report.highest_sequence, report.packets_lost
        self.rr_sent, self.rr_idle = sent, sent == self.rr_sent
        self.jitter_s = report.jitter / CLOCK_RATES.get(self.kind, 90_000)
        while len(self.received) > 2 and now - self.received[1][0] >= RECEIVE_RATE_WINDOW_S:
            self.received.popleft()
        return expected, lost

    def received_bps(self, now: float) -> float | None:
        """What the receiver got of this stream lately, bit/s on the wire: packets received between
        its reports over their arrival times (None: too few reports to tell)."""
        if self.packet_bytes is None or len(self.received) < 2:
            return None
        (first_at, first), (last_at, last) = self.received[0], self.received[-1]
        if last_at - first_at < RECEIVE_RATE_MIN_SPAN_S or now - last_at > RECEIVE_RATE_WINDOW_S:
            return None
        return (last - first) * self.packet_bytes * 8 / (last_at - first_at)

    def rtt_sample(self, report: RtcpReceiverInfo, now_unix: float) -> float | None:
        counters = sender_counters(self.sender)
        lsr, sent_at = counters.last_sr_lsr, counters.last_sr_time
        if not report.lsr or not report.dlsr or report.lsr != lsr or sent_at is None:
            return None
        staleness = ((_ntp_middle(sent_at) - report.lsr) & 0xFFFFFFFF) / 65536
        rtt = now_unix - sent_at - report.dlsr / 65536
        if staleness > RTT_MAX_STALENESS_S or not 0.0 <= rtt < 60.0:
            return None
        return rtt


class _Incoming:
    """One of the server's receivers of the participant's tracks: a stream of its uplink."""

    __slots__ = ("receiver", "kind", "track_sid", "ssrc", "expected", "received", "flowed_at", "sr", "bitrate_bps")

    def __init__(self, receiver: RTCRtpReceiver, kind: str, track_sid: str) -> None:
        self.receiver = receiver
        self.kind = kind
        self.track_sid = track_sid
        self.ssrc: int | None = None
        self.expected = self.received = 0
        self.flowed_at = -1e9
        #: (NTP time in seconds, payload octets) of the last sender report
        self.sr: tuple[float, int] | None = None
        self.bitrate_bps: float | None = None

    def on_sender_report(self, packet: RtcpSrPacket) -> None:
        info = packet.sender_info
        ntp_s, octets = info.ntp_timestamp / 2**32, info.octet_count
        if self.sr is not None and ntp_s > self.sr[0]:
            self.bitrate_bps = ((octets - self.sr[1]) & 0xFFFFFFFF) * 8 / (ntp_s - self.sr[0])
        if self.sr is None or ntp_s > self.sr[0]:
            self.sr = (ntp_s, octets)


@dataclass
class _Totals:
    """One media kind in one direction over the last sample."""

    expected: int = 0
    lost: int = 0
    jitter_s: float | None = None
    actual_bps: float | None = None
    available_bps: float | None = None

    def add_bitrate(self, bps: float | None) -> None:
        if bps is not None:
            self.actual_bps = bps if self.actual_bps is None else self.actual_bps + bps

    def add_jitter(self, jitter_s: float | None) -> None:
        if jitter_s is not None:
            self.jitter_s = jitter_s if self.jitter_s is None else max(self.jitter_s, jitter_s)

    def measurement(
        self, rtt_s: float | None, required_bps: float | None = None, switched_off_bps: float | None = None
    ) -> MediaMeasurement:
        return MediaMeasurement(
            fraction_lost=self.lost / self.expected if self.expected else 0.0,
            rtt_s=rtt_s,
            jitter_s=self.jitter_s,
            actual_bps=self.actual_bps,
            available_bps=self.available_bps,
            required_bps=required_bps,
            switched_off_bps=switched_off_bps,
            packets=self.expected,
        )


class ParticipantNetwork:
    """What the server knows of one participant's network, gathered between two samples."""

    def __init__(self, session: Any, now: float, on_estimate: Callable[[str], None] | None = None) -> None:
        self.sid: str = session.sid
        #: called with the participant's SID when its downlink estimate changed between samples
        self.on_estimate = on_estimate
        self.identity: str = session.participant.identity
        self.room_sid: str = session.live.room.sid
        self.room: str = session.live.room.unique_name
        self.downlink = Downlink()
        self.rtt_s: float | None = None
        #: whether `rtt_s` was measured in the last sample (not held from an earlier one)
        self.rtt_fresh = False
        self._rtt_at = -1e9
        self._rtts: list[float] = []
        self.last_rtcp_at = now
        self._outgoing: dict[int, _Outgoing] = {}
        #: packets and bytes of every sending slot's sender at the last refresh (idle ones too)
        self._counted: dict[RTCRtpSender, tuple[int, int]] = {}
        self._incoming: dict[RTCRtpReceiver, _Incoming] = {}
        self._incoming_by_ssrc: dict[int, _Incoming] = {}
        self._transports: set[Any] = set()
        self._data_sent: int | None = None
        #: partial -> (when, its last measurement): what an unreachable participant is scored on
        self._flowed: dict[str, tuple[float, MediaMeasurement]] = {}
        self._sampled_at = now
        self._refreshed = False

    # as RTCP arrives -------------------------------------------------------------------------
    def on_rtcp(self, packet: AnyRtcpPacket) -> None:
        now = time.monotonic()
        self.last_rtcp_at = now
        reports = getattr(packet, "reports", None)
        if reports:
            now_unix = time.time()
            for report in reports:
                outgoing = self._outgoing.get(report.ssrc)
                if outgoing is not None:
                    expected, lost = outgoing.on_report(report, now)
                    if expected:  # a probe, or a new subscriber's first overload, ends at once
                        sending = self._sending(now) if lost else None
                        self._estimated(self.downlink.estimator.on_loss_report(now, lost, expected, sending))
                    rtt = outgoing.rtt_sample(report, now_unix)
                    if rtt is not None:
                        self._rtts.append(rtt)
        if isinstance(packet, RtcpSrPacket):
            incoming = self._incoming_by_ssrc.get(packet.ssrc)
            if incoming is not None:
                incoming.on_sender_report(packet)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            estimator = self.downlink.estimator
            sending = self._sending(now) if estimator.probing else None  # what a probe's REMB is weighed against
            self._estimated(estimator.on_remb(now, bitrate, ssrcs, sending))

    def _estimated(self, estimate: DownlinkEstimate | None) -> None:
        """An estimate changed between samples (a probe, or a first overload, ended): allocated at once."""
        if estimate is not None:
            self.downlink.estimate = estimate
            if self.on_estimate is not None:
                self.on_estimate(self.sid)

    def _sending(self, now: float) -> DownlinkSample | None:
        """What the server has sent the participant since the last sample, on the wire (None: too
        short a time to tell a rate)."""
        elapsed = now - self._sampled_at
        if elapsed < SENDING_MIN_SPAN_S:
            return None
        video_bps: dict[int, float] = {}
        other_bps = 0.0
        for outgoing in self._outgoing.values():
            wire_bps = _wire_bps(*outgoing.unsampled(), elapsed)
            if outgoing.kind == "video":
                video_bps[outgoing.ssrc] = wire_bps
            else:
                other_bps += wire_bps
        return DownlinkSample(video_bps=video_bps, other_bps=other_bps)

    # once a second ---------------------------------------------------------------------------
    def refresh(self, session: Any, now: float) -> None:
        """Follow the session's streams: new senders and receivers, RTCP observed on its transports."""
        outgoing: dict[int, _Outgoing] = {}
        incoming: dict[RTCRtpReceiver, _Incoming] = {}
        known = {o.sender: o for o in self._outgoing.values()}
        first = not self._refreshed
        self._refreshed = True
        counted = self._counted
        self._counted = {}
        for slot in session.slots:
            transceiver = slot.transceiver
            if transceiver is not None and slot.role == "subscribe":
                counters = sender_counters(transceiver.sender)
                self._counted[transceiver.sender] = (counters.packets, counters.octets)
                if first:  # what was sent before the network was first seen belongs to no sample
                    counted[transceiver.sender] = self._counted[transceiver.sender]
            if transceiver is None or slot.track_sid is None:
                continue
            if slot.role == "subscribe":
                sender = transceiver.sender
                state = known.get(sender)
                if state is None or state.track_sid != slot.track_sid:
                    state = _Outgoing(sender, transceiver.kind, slot.track_sid, now, counted.get(sender, (0, 0)))
                outgoing[state.ssrc] = state
            elif slot.role == "publish":
                receiver = transceiver.receiver
                current = self._incoming.get(receiver)
                incoming[receiver] = current or _Incoming(receiver, transceiver.kind, slot.track_sid)
            for transport in (transceiver.sender.transport, transceiver.receiver.transport):
                if transport is not None and transport not in self._transports:
                    observe_rtcp(transport, self.on_rtcp)
                    self._transports.add(transport)
        self._outgoing, self._incoming = outgoing, incoming

    def measure_uplink(self, now: float) -> tuple[dict[str, _Totals], dict[str, float]]:
        """The send direction per kind, and the bitrate each published track arrives at."""
        totals: dict[str, _Totals] = {}
        track_bps: dict[str, float] = {}
        by_ssrc: dict[int, _Incoming] = {}
        rembs: list[float | None] = []
        for incoming in self._incoming.values():
            stream = received_stream(incoming.receiver)
            if stream is None:
                continue
            if stream.ssrc != incoming.ssrc:  # first packets (or a new SSRC): start counting from here
                incoming.ssrc, incoming.expected, incoming.received = stream.ssrc, stream.expected, stream.received
                incoming.flowed_at = now
            by_ssrc[stream.ssrc] = incoming
            expected = stream.expected - incoming.expected
            received = stream.received - incoming.received
            incoming.expected, incoming.received = stream.expected, stream.received
            if received > 0:
                incoming.flowed_at = now
            if now - incoming.flowed_at > FLOWING_WITHIN_S:
                continue
            kind = totals.setdefault(incoming.kind, _Totals())
            kind.expected += max(expected, 0)
            kind.lost += min(max(expected - received, 0), max(expected, 0))
            kind.add_jitter(stream.jitter / CLOCK_RATES.get(incoming.kind, 90_000))
            kind.add_bitrate(incoming.bitrate_bps)
            if incoming.bitrate_bps is not None:
                track_bps[incoming.track_sid] = incoming.bitrate_bps
            if incoming.kind == "video":
                rembs.append(receiver_estimate_bps(incoming.receiver))
        self._incoming_by_ssrc = by_ssrc
        if "video" in totals and rembs and None not in rembs:  # known for every video track, or not at all
            totals["video"].available_bps = sum(r for r in rembs if r is not None)
        return totals, track_bps

    def measure_downlink(
        self, now: float, data_sent: int | None
    ) -> tuple[dict[str, _Totals], dict[int, float], float, float, float | None, tuple[int, int]]:
        """The recv direction per kind (payload bitrates), the video bitrate per outgoing SSRC and
        the rest of what was sent (audio and data: served before video), these two on the wire
        (with each RTP packet's headers, as the link carries them: what the downlink estimate and
        the allocator count), what the receiver reports lost of them, stream by stream, what
        its reports say it received lately (None: not known for every stream that flows), and the
        packets expected and lost of the streams that sent in this sample (the downlink estimate's
        loss: a stream switched off reports the loss of its last second for a while, an overload
        already acted on, not one of this second)."""
        elapsed = max(now - self._sampled_at, 1e-3)
        totals: dict[str, _Totals] = {}
        video_bps: dict[int, float] = {}
        other_bps = lost_bps = 0.0
        received: float | None = 0.0
        sending_expected = sending_lost = 0
        for outgoing in self._outgoing.values():
            packets, octets = outgoing.unsampled()
            outgoing.packets += packets
            outgoing.octets += octets
            if packets > 0:
                outgoing.flowed_at = now
            bps = max(octets, 0) * 8 / elapsed
            wire_bps = _wire_bps(packets, octets, elapsed)
            if packets > 0:
                size = octets / packets + RTP_PACKET_OVERHEAD_BYTES
                previous = outgoing.packet_bytes
                outgoing.packet_bytes = size if previous is None else 0.5 * previous + 0.5 * size
            expected, lost = outgoing.expected, outgoing.lost
            outgoing.expected = outgoing.lost = 0
            if now - outgoing.flowed_at > FLOWING_WITHIN_S:
                continue
            kind = totals.setdefault(outgoing.kind, _Totals())
            kind.expected += expected
            kind.lost += lost
            if packets > 0:
                sending_expected += expected
                sending_lost += lost
            kind.add_jitter(outgoing.jitter_s)
            kind.add_bitrate(bps)
            if outgoing.kind == "video":
                video_bps[outgoing.ssrc] = wire_bps
            else:
                other_bps += wire_bps
            if expected:
                lost_bps += wire_bps * lost / expected
            stream_received = outgoing.received_bps(now)
            if stream_received is None or received is None:
                received = None
            else:
                received += stream_received
        data_bps = 0.0
        if data_sent is not None:
            if self._data_sent is not None:
                data_bps = max(data_sent - self._data_sent, 0) * 8 / elapsed
            self._data_sent = data_sent
        other_bps += data_bps
        if received is not None:
            received += data_bps  # reliable data arrives (or is sent again): as sent
        return totals, video_bps, other_bps, lost_bps, received, (sending_expected, sending_lost)

    def take_rtt(self, now: float) -> float | None:
        """The round-trip time of the last sample (the mean of its reports), or the last one for a while
        (`rtt_fresh` says which)."""
        self.rtt_fresh = bool(self._rtts)
        if self._rtts:
            self.rtt_s = sum(self._rtts) / len(self._rtts)
            self._rtt_at = now
            self._rtts.clear()
        elif now - self._rtt_at > RTT_HOLD_S:
            self.rtt_s = None
        return self.rtt_s

    def measure(
        self,
        now: float,
        session: Any,
        track_bps: Mapping[str, float],
        uplink: dict[str, _Totals],
        data_sent: int | None = None,
    ) -> ParticipantMeasurement:
        down, video_bps, other_bps, lost_bps, received_bps, (expected, lost) = self.measure_downlink(now, data_sent)
        rtt_samples = tuple(self._rtts)
        rtt = self.take_rtt(now)
        video_recv = down.get("video")
        sample = DownlinkSample(
            video_bps=video_bps,
            other_bps=other_bps,
            fraction_lost=lost / expected if expected else None,
            packets=expected,
            rtt_s=rtt if self.rtt_fresh else None,  # a held RTT is no news of the queue
            rtt_samples=rtt_samples,
            lost_bps=lost_bps if expected else None,
            received_bps=received_bps,
        )
        downlink = self.downlink
        downlink.sample = sample
        downlink.estimate = downlink.estimator.update(now, sample, downlink.wanted_video_bps, downlink.probe_step_bps)
        required_video = None
        starved = video_recv is None and bool(downlink.starved_video_bps) and downlink.estimate is not None
        if starved:
            video_recv = _Totals(actual_bps=0.0)  # no picture of what it wants, for lack of bandwidth
        if video_recv is not None:
            video_recv.available_bps = self._video_available(downlink.estimate, video_recv, sample.fraction_lost)
            if downlink.wanted_video_bps is not None:
                required_video = downlink.wanted_video_bps
            else:  # no allocator: everything subscribed is wanted, at the rate it arrives from its publisher
                subscribed = {o.track_sid for o in self._outgoing.values() if o.kind == "video"}
                demand = [track_bps[sid] for sid in subscribed if sid in track_bps]
                required_video = sum(demand) if demand else None
        self._sampled_at = now
        partials = {f"{kind}_send": totals.measurement(rtt) for kind, totals in uplink.items()}
        partials.update({f"{kind}_recv": totals.measurement(rtt) for kind, totals in down.items() if kind != "video"})
        if video_recv is not None:
            partials["video_recv"] = video_recv.measurement(rtt, required_video, downlink.starved_video_bps or None)
            if starved:  # nothing arrives: no loss to measure (an earlier loss must not linger)
                partials["video_recv"] = replace(partials["video_recv"], fraction_lost=None, packets=None)
        for name, partial in partials.items():
            self._flowed[name] = (now, partial)
        # a participant with media streams sends RTCP (reports every 0.5-1.5 s per stream): silence
        # means its path is gone; it is scored unreachable on what flowed until then
        has_streams = bool(self._outgoing) or bool(self._incoming)
        if has_streams and now - self.last_rtcp_at > UNREACHABLE_AFTER_S:
            since = self.last_rtcp_at - FLOWING_WITHIN_S
            flowed = {name: partial for name, (at, partial) in self._flowed.items() if at >= since}
            return ParticipantMeasurement(**flowed, reachable=False)
        return ParticipantMeasurement(**partials)

    @staticmethod
    def _video_available(estimate: DownlinkEstimate, video: _Totals, fraction_lost: float | None) -> float | None:
        """The downlink estimate's video budget; at least what got through when nothing signals
        congestion (the estimator rises to a new demand only after seconds of proof, and that
        delay is not the network's fault); None before the estimator has any evidence (the bandwidth
        level is then unscored)."""
        if estimate.reason == "initial" and not estimate.congested:
            return None
        if estimate.congested:
            return estimate.video_budget_bps
        delivered = (video.actual_bps or 0.0) * (1.0 - (fraction_lost or 0.0))
        return max(estimate.video_budget_bps, delivered)


class NetworkMeasurements:
    """The server's measurements of every connected participant (`update` about once a second)."""

    def __init__(self) -> None:
        self._participants: dict[str, ParticipantNetwork] = {}
        self._last: dict[str, ParticipantMeasurement] = {}
        #: called with a participant's SID when its downlink estimate changed between samples (a
        #: receiver report ended a probe): the bandwidth allocation allocates again at once
        self.on_estimate: Callable[[str], None] | None = None

    def _estimate_changed(self, participant_sid: str) -> None:
        if self.on_estimate is not None:
            self.on_estimate(participant_sid)

    def participant(self, participant_sid: str) -> ParticipantNetwork | None:
        return self._participants.get(participant_sid)

    def downlink(self, participant_sid: str) -> Downlink | None:
        """The participant's downlink estimate (None until its connection is up)."""
        network = self._participants.get(participant_sid)
        return network.downlink if network is not None else None

    def update(
        self, sessions: Iterable[Any], data_sent: Mapping[Any, int] | None = None, now: float | None = None
    ) -> dict[str, ParticipantMeasurement]:
        """One sample of every session whose peer connection is up, from its second update on (the first
        sets where its counters start): participant SID -> measurement.
        `data_sent`: bytes sent so far on data channels, per SCTP transport (`pc.sctp`)."""
        now = time.monotonic() if now is None else now
        live: dict[str, tuple[ParticipantNetwork, Any]] = {}
        results: dict[str, ParticipantMeasurement] = {}
        present = set()
        for session in list(sessions):
            if session.closed:
                continue
            present.add(session.sid)
            network = self._participants.get(session.sid)
            if session.pc.connectionState != "connected":
                last = self._last.get(session.sid)
                if last is not None:  # it was measured: unreachable now, with what flowed before
                    results[session.sid] = replace(last, reachable=False)
                continue
            if network is None:  # its streams are counted from now: its first sample is the next one
                network = self._participants[session.sid] = ParticipantNetwork(session, now, self._estimate_changed)
                network.refresh(session, now)
                continue
            network.refresh(session, now)
            live[session.sid] = (network, session)
        for sid in set(self._participants) - present:
            del self._participants[sid]
            self._last.pop(sid, None)
        uplinks: dict[str, dict[str, _Totals]] = {}
        track_bps: dict[str, float] = {}
        for sid, (network, _) in live.items():
            uplinks[sid], tracks = network.measure_uplink(now)
            track_bps.update(tracks)
        for sid, (network, session) in live.items():
            data = data_sent.get(session.pc.sctp) if data_sent is not None else None
            results[sid] = self._last[sid] = network.measure(now, session, track_bps, uplinks[sid], data)
        return results
