"""Turning aiortc's RTP statistics and roomlab's data-channel counters into telemetry rows.

aiortc's `getStats()` is thin (no bytes received, no data-channel stats), so: inbound bitrate
comes from the sender's RTCP sender reports (payload octets), and data channels are counted by
roomlab itself in `ChannelCounters`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCDataChannel, RTCRtpReceiver

from ..net.rtp import received_stream
from .recorder import Telemetry, now_ns

log = logging.getLogger(__name__)

#: Seconds between two samples of RTP and data-channel statistics.
SAMPLE_INTERVAL = 1.0
CLOCK_RATES = {"audio": 48_000, "video": 90_000}


@dataclass(frozen=True)
class RtpStream:
    """One direction of one media track, as a participant sees it."""

    participant: str
    track: str
    kind: str
    direction: str  # "outbound": the participant sends it; "inbound": the participant receives it
    endpoint: Any  # the aiortc RTCRtpSender or RTCRtpReceiver that carries it
    frames: Callable[[], int | None] | None = None
    track_name: str | None = None
    publisher: str | None = None
    """Identity of the track's publisher (the participant itself for what it sends)."""
    layer: str | Callable[[], str | None] | None = None
    """The video layer it carries (a layered track's publisher sends one stream per layer), or what
    tells the layer it carries now (a subscriber's stream changes layer)."""


class RtcStatsSampler:
    """Samples RTP streams into `rtc_stats`, keeping what bitrates need between samples."""

    def __init__(self, telemetry: Telemetry, source: str) -> None:
        self.telemetry = telemetry
        self.source = source
        self._last_bytes: dict[tuple[str, str, str, str | None], tuple[int, int]] = {}
        #: per inbound stream, (expected, received) at the previous sample: loss per interval
        self._last_counts: dict[tuple[str, str, str, str | None], tuple[int, int]] = {}

    async def sample(self, streams: Iterable[RtpStream]) -> None:
        for stream in list(streams):
            try:
                report = await stream.endpoint.getStats()
            except Exception:  # a stream closing while sampled is not an error worth more than a line
                log.debug("stats of %s/%s unavailable", stream.participant, stream.track)
                continue
            self.record(stream, list(report.values()), now_ns())

    def record(self, stream: RtpStream, stats: list[Any], at_ns: int) -> None:
        by_type: dict[str, Any] = {}
        for item in stats:
            by_type.setdefault(item.type, item)
        clock_rate = CLOCK_RATES.get(stream.kind, 90_000)
        layer = stream.layer() if callable(stream.layer) else stream.layer
        # a layered track's publisher sends one stream per layer; a subscriber's one stream changes layer
        key = (stream.participant, stream.track, stream.direction, layer if stream.direction == "outbound" else None)
        packets = lost = None
        fraction = jitter = rtt = None
        octets = None
        octets_at_ns = at_ns  # when `octets` was counted: now, or when the sender wrote its report
        # the endpoint decides which statistics apply: a sender reports outbound-rtp, a receiver
        # inbound-rtp (the server receives what a publisher sends, "outbound" from its side)
        sent = by_type.get("outbound-rtp")
        if sent is not None and "inbound-rtp" not in by_type:
            packets, octets = sent.packetsSent, sent.bytesSent
            remote = by_type.get("remote-inbound-rtp")
            if remote is not None:
                lost = remote.packetsLost
                fraction = remote.fractionLost / 256
                jitter = remote.jitter / clock_rate * 1000
                rtt = None if remote.roundTripTime is None else remote.roundTripTime * 1000
        else:
            # the media SSRC's counters: aiortc's inbound-rtp is the RTX stream's after a retransmission
            media = received_stream(stream.endpoint) if isinstance(stream.endpoint, RTCRtpReceiver) else None
            if media is None:
                return
            packets, lost = media.received, max(media.expected - media.received, 0)
            jitter = media.jitter / clock_rate * 1000
            before_expected, before_received = self._last_counts.get(key, (0, 0))
            self._last_counts[key] = (media.expected, media.received)
            interval_expected = media.expected - before_expected
            if interval_expected > 0:
                fraction = min(max(interval_expected - (media.received - before_received), 0) / interval_expected, 1.0)
            sender_report = by_type.get("remote-outbound-rtp")
            if sender_report is not None and sender_report.remoteTimestamp is not None:
                octets = sender_report.bytesSent
                octets_at_ns = int(sender_report.remoteTimestamp.timestamp() * 1e9)
        bitrate = None
        if octets is not None:
            previous = self._last_bytes.get(key)
            # a sender report not renewed since the last sample says nothing new: no bitrate
            if previous is not None and octets_at_ns > previous[0]:
                bitrate = max(octets - previous[1], 0) * 8 / ((octets_at_ns - previous[0]) / 1e9)
            self._last_bytes[key] = (octets_at_ns, octets)
        frames = stream.frames() if stream.frames is not None else None
        self.telemetry.record(
            "rtc_stats",
            at_ns,
            stream.participant,
            stream.track,
            stream.track_name,
            stream.publisher,
            stream.kind,
            stream.direction,
            bitrate if bitrate is None or math.isfinite(bitrate) else None,
            packets,
            lost,
            fraction,
            jitter,
            rtt,
            frames,
            layer,
            self.source,
        )


class ChannelCounters:
    """Messages and bytes per data channel, counted by roomlab (aiortc reports none)."""

    def __init__(self) -> None:
        self._counts: dict[RTCDataChannel, list[int]] = {}
        #: channel -> (participant whose end it is, track name, publisher identity)
        self._owners: dict[RTCDataChannel, tuple[str, str | None, str | None]] = {}

    def watch(
        self, channel: RTCDataChannel, participant: str, track_name: str | None = None, publisher: str | None = None
    ) -> None:
        """Count `channel`, `participant`'s end of it, carrying `publisher`'s track `track_name`."""
        self._counts.setdefault(channel, [0, 0, 0, 0])
        self._owners[channel] = (participant, track_name, publisher)

    def sent(self, channel: RTCDataChannel, size: int, messages: int = 1) -> None:
        counts = self._counts.get(channel)
        if counts is not None:
            counts[0] += messages
            counts[1] += size

    def received(self, channel: RTCDataChannel, size: int, messages: int = 1) -> None:
        counts = self._counts.get(channel)
        if counts is not None:
            counts[2] += messages
            counts[3] += size

    def bytes_sent_by_transport(self) -> dict[Any, int]:
        """Bytes sent so far on the watched channels, per SCTP transport (one per peer connection)."""
        totals: dict[Any, int] = {}
        for channel, counts in self._counts.items():
            totals[channel.transport] = totals.get(channel.transport, 0) + counts[1]
        return totals

    def forget(self, channel: RTCDataChannel) -> None:
        self._counts.pop(channel, None)
        self._owners.pop(channel, None)

    def sample(self, telemetry: Telemetry, source: str) -> None:
        at = now_ns()
        for channel, (sent_messages, sent_bytes, received_messages, received_bytes) in list(self._counts.items()):
            participant, track_name, publisher = self._owners[channel]
            telemetry.record(
                "data_channel_stats",
                at,
                participant,
                channel.label,
                track_name,
                publisher,
                channel.protocol,
                channel.id,
                channel.readyState,
                sent_messages,
                sent_bytes,
                received_messages,
                received_bytes,
                source,
            )
            if channel.readyState == "closed":
                self.forget(channel)


async def sample_forever(sample: Callable[[], Awaitable[None]], interval: float = SAMPLE_INTERVAL) -> None:
    """Run `sample` about every `interval` seconds until cancelled; a failing sample is logged."""
    while True:
        await asyncio.sleep(interval)
        try:
            await sample()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("telemetry sampling failed")
