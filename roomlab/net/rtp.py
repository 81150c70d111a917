"""Taps on aiortc's RTP receivers and senders, for media that is forwarded or replayed, not
decoded or encoded frame by frame (the server's forwarding plane, and simulated participants),
and for what the server measures of each participant's network (RTCP as it arrives, the
counters aiortc keeps per stream, RFC 6464 audio levels as packets enter the jitter buffer).

These reach into private attributes of aiortc 1.16.0 (pinned): a receiver's decoder queue,
jitter buffer, stream statistics and bitrate estimator, a sender's `_send_keyframe`,
`_next_encoded_frame`, counters and last sender report, a DTLS transport's RTP router. Tests cover each.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCDtlsTransport, RTCRtpReceiver, RTCRtpSender
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpsender import RTP_HISTORY_SIZE
from aiortc.rtp import AnyRtcpPacket, RtpPacket
from aiortc.utils import uint16_gt

log = logging.getLogger(__name__)


class EncodedFrameTap(queue.Queue):  # type: ignore[type-arg]
    """Stands in for an RTCRtpReceiver's decoder queue: encoded frames go to `deliver` instead.

    aiortc's decoder thread starts on the first `receive()`; `get()` answering None tells it to
    stop at once, so no decoder runs for a forwarded track.
    """

    def __init__(self, deliver: Callable[[Any, Any], None]) -> None:
        super().__init__()
        self._deliver = deliver

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:  # None is aiortc's stop signal to its (already stopped) decoder
            self._deliver(*item)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return None


#: Bytes each RTP packet carries besides its payload on the wire, as roomlab.Link counts them: IPv4
#: (20) and UDP (8) headers, the RTP header (12), aiortc's header extensions (mid, and abs-send-time
#: or the audio level: 12 with their one-byte header) and the SRTP authentication tag (10).
RTP_PACKET_OVERHEAD_BYTES = 62
#: The largest RTP payload aiortc's video packetizers make (aiortc.codecs.vpx.PACKET_MAX).
RTP_PAYLOAD_MAX_BYTES = 1300


def frame_wire_bytes(size: int) -> int:
    """What a video frame of `size` bytes takes on the wire once packetized (payload plus each
    packet's headers)."""
    packets = max(1, -(-size // RTP_PAYLOAD_MAX_BYTES))
    return size + packets * RTP_PACKET_OVERHEAD_BYTES


#: What follows a VP8 key frame's frame tag (RFC 6386 §9.1).
VP8_START_CODE = b"\x9d\x01\x2a"


def is_keyframe(mime_type: str, data: bytes) -> bool:
    """Whether an encoded video frame (as aiortc's depacketizer assembles it) starts a picture that
    decodes on its own: a VP8 key frame, or an H.264 access unit with an IDR slice.

    A VP8 key frame has the P bit of its frame tag clear and the start code after it (RFC 6386
    §9.1). Both are checked: the first frame a receiver re-assembles may be only the tail of a
    picture whose first packets came before it listened, and half of all such tails have the bit
    clear; forwarded as a key frame, a tail is what a subscriber's decoder fails on."""
    if not data:
        return False
    codec = mime_type.lower()
    if codec == "video/vp8":
        return not data[0] & 0x01 and data[3:6] == VP8_START_CODE
    if codec == "video/h264":
        return any(nal and nal[0] & 0x1F == 5 for nal in data.split(b"\x00\x00\x01"))
    return True  # no way to tell: do not hold frames back


def picture_size(mime_type: str, data: bytes) -> tuple[int, int] | None:
    """The width and height a VP8 key frame carries (RFC 6386 §9.1), None for anything else."""
    if mime_type.lower() != "video/vp8" or len(data) < 10 or data[0] & 0x01 or data[3:6] != VP8_START_CODE:
        return None
    return int.from_bytes(data[6:8], "little") & 0x3FFF, int.from_bytes(data[8:10], "little") & 0x3FFF


class AudioPassThrough(JitterBuffer):
    """Stands in for an RTCRtpReceiver's audio jitter buffer when frames are forwarded or replayed,
    not played: each packet is handed on as it arrives.

    Opus carries one frame per packet, so there is nothing to re-assemble; timing out jitter is
    the playing end's job. aiortc's buffer instead holds every packet after a lost one until 16
    more have come (0.3 s of speech, 6 s of DTX silence), then discards to catch up: each hop
    through it added delay and turned one lost packet into several.

    `observe`, if given, gets every packet's RFC 6464 level (0-127 as carried: minus dBov), which
    aiortc has already parsed: an attribute look-up and a call per packet, nothing decoded.
    """

    def __init__(self, observe: Callable[[int], None] | None = None) -> None:
        super().__init__(capacity=16)
        self._newest: int | None = None
        self._observe = observe

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        if self._observe is not None:
            level = packet.extensions.audio_level
            if level is not None:
                self._observe(level[1])
        sequence = packet.sequence_number
        if self._newest is not None and not uint16_gt(sequence, self._newest):
            return False, None  # a duplicate, or too late: its successor already went on
        if not packet._data:  # type: ignore[attr-defined]
            return False, None  # aiortc could not depayload it
        self._newest = sequence
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]


class AudioLevelTap(JitterBuffer):
    """aiortc's audio jitter buffer, for a receiver that decodes, handing every packet's RFC 6464
    level to `observe` on its way in (as `AudioPassThrough` does)."""

    def __init__(self, capacity: int, prefetch: int, observe: Callable[[int], None]) -> None:
        super().__init__(capacity=capacity, prefetch=prefetch)
        self._observe = observe

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        level = packet.extensions.audio_level
        if level is not None:
            self._observe(level[1])
        return super().add(packet)


def tap_receiver(
    receiver: RTCRtpReceiver,
    kind: str,
    deliver: Callable[[Any, Any], None],
    audio_level: Callable[[int], None] | None = None,
) -> None:
    """Take `receiver`'s encoded frames before decoding (call before aiortc starts receiving);
    `audio_level` gets the RFC 6464 level of every audio packet."""
    receiver._RTCRtpReceiver__decoder_queue = EncodedFrameTap(deliver)  # type: ignore[attr-defined]
    if kind == "audio":
        receiver._RTCRtpReceiver__jitter_buffer = AudioPassThrough(audio_level)  # type: ignore[attr-defined]


def observe_audio_levels(receiver: RTCRtpReceiver, observe: Callable[[int], None]) -> None:
    """Give `observe` the RFC 6464 level of every packet of an audio receiver that decodes (its
    jitter buffer keeps aiortc's size and prefetch; call before packets arrive)."""
    current = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__jitter_buffer = AudioLevelTap(  # type: ignore[attr-defined]
        current.capacity, current._prefetch, observe
    )


def route_keyframe_requests(sender: RTCRtpSender, request_keyframe: Callable[[], None]) -> None:
    """Call `request_keyframe` on the far end's PLI/FIR, instead of setting aiortc's encoder flag
    (which packets passed through, not encoded, ignore)."""
    sender._send_keyframe = request_keyframe  # type: ignore[method-assign]


#: A packet is retransmitted at most once per this long: aiortc's receivers repeat every packet still
#: missing (up to 128 back) in each NACK they send, on every new gap.
RETRANSMIT_MIN_INTERVAL_S = 0.25
#: Retransmissions may take at most this share of the media bytes a sender sends (libwebrtc limits
#: them too): enough to repair random loss of 20 %, and a congested downlink is not flooded with
#: repeats of what it already dropped.
RETRANSMIT_SHARE = 0.25
#: The most retransmission credit a sender saves up, bytes. A sender starts with none: a new
#: subscription's first second may overflow a downlink not estimated yet, and three senders' full
#: credit answering its NACKs at once is a second of a 400 kbit/s link.
RETRANSMIT_CREDIT_MAX_BYTES = 16_000


def limit_retransmissions(sender: RTCRtpSender, clock: Callable[[], float] = time.monotonic) -> None:
    """Answer NACKs sparingly: each packet at most once per RETRANSMIT_MIN_INTERVAL_S, and all of them
    within RETRANSMIT_SHARE of what the sender sends. Without this, aiortc resends every packet of
    each NACK, and a receiver behind a congested link asks again for all it misses at each new
    loss: 1 to 3 Mbit/s of repeats offered to a 400 kbit/s link (measured)."""
    original = sender._retransmit
    history = sender._RTCRtpSender__rtp_history  # type: ignore[attr-defined]
    last_sent: dict[int, float] = {}
    state = {"credit": 0.0, "octets": 0}

    async def retransmit(sequence_number: int) -> None:
        now = clock()
        if now - last_sent.get(sequence_number, -1e9) < RETRANSMIT_MIN_INTERVAL_S:
            return
        octets = sender._RTCRtpSender__octet_count  # type: ignore[attr-defined]
        earned = max(0, octets - state["octets"]) * RETRANSMIT_SHARE
        state["octets"] = octets
        state["credit"] = min(float(RETRANSMIT_CREDIT_MAX_BYTES), state["credit"] + earned)
        packet = history.get(sequence_number % RTP_HISTORY_SIZE)
        size = len(packet.payload) + RTP_PACKET_OVERHEAD_BYTES if packet is not None else 0
        if not size or state["credit"] < size:
            return
        state["credit"] -= size
        last_sent[sequence_number] = now
        if len(last_sent) > 4 * RTP_HISTORY_SIZE:
            for seq, at in list(last_sent.items()):
                if now - at >= RETRANSMIT_MIN_INTERVAL_S:
                    del last_sent[seq]
        await original(sequence_number)

    sender._retransmit = retransmit  # type: ignore[method-assign]


def set_audio_level(sender: RTCRtpSender, level: Callable[[], int | None]) -> None:
    """Stamp the RFC 6464 audio level (dBov, -127..0; None: none) on every packet `sender` sends.

    aiortc computes the level only for frames it encodes itself; replayed packets carry none.
    """
    original = sender._next_encoded_frame

    async def next_encoded_frame(codec: Any) -> Any:
        frame = await original(codec)
        if frame is not None:
            frame.audio_level = level()
        return frame

    sender._next_encoded_frame = next_encoded_frame  # type: ignore[method-assign]


# --- what the server measures -----------------------------------------------------------------------


def observe_rtcp(transport: RTCDtlsTransport, observe: Callable[[AnyRtcpPacket], None]) -> bool:
    """Show `observe` every RTCP packet that arrives on `transport`, once, before aiortc routes it
    to its senders and receivers (a Chromium REMB naming several SSRCs is one packet here, where
    each sender it names would see it). Returns False if `observe` was already installed there.
    An exception in `observe` is logged (the first one with its traceback) and the packet is routed
    all the same: raised here, it would end the transport's receive loop, and its media with it."""
    router = transport._rtp_router
    if getattr(router, "_roomlab_rtcp_observer", None) is observe:
        return False
    route = type(router).route_rtcp.__get__(router)
    failures = 0

    def route_rtcp(packet: AnyRtcpPacket) -> Any:
        nonlocal failures
        try:
            observe(packet)
        except Exception:
            failures += 1
            if failures == 1:
                log.exception("measuring an RTCP packet failed; it is routed all the same")
            else:
                log.debug("measuring an RTCP packet failed (%d times)", failures, exc_info=True)
        return route(packet)

    router.route_rtcp = route_rtcp  # type: ignore[method-assign]
    router._roomlab_rtcp_observer = observe  # type: ignore[attr-defined]
    return True


@dataclass(frozen=True)
class SenderCounters:
    """What an RTCRtpSender has sent, and its last sender report (for round-trip times)."""

    ssrc: int
    packets: int
    octets: int
    """Payload bytes, cumulative."""
    last_sr_lsr: int | None
    """The LSR value of its last sender report (the middle 32 bits of its NTP timestamp)."""
    last_sr_time: float | None
    """When that report was sent (UNIX time)."""


def sender_counters(sender: RTCRtpSender) -> SenderCounters:
    return SenderCounters(
        sender._ssrc,
        sender._RTCRtpSender__packet_count,  # type: ignore[attr-defined]
        sender._RTCRtpSender__octet_count,  # type: ignore[attr-defined]
        sender._RTCRtpSender__lsr,  # type: ignore[attr-defined]
        sender._RTCRtpSender__lsr_time,  # type: ignore[attr-defined]
    )


@dataclass(frozen=True)
class ReceivedStream:
    """A receiver's statistics of the stream it receives (its media SSRC, not retransmissions)."""

    ssrc: int
    expected: int
    """Packets expected from the sequence numbers seen, cumulative."""
    received: int
    """Packets received on the media SSRC, cumulative (retransmissions arrive on another)."""
    jitter: int
    """Interarrival jitter, RTP clock ticks."""


def received_stream(receiver: RTCRtpReceiver) -> ReceivedStream | None:
    """The media stream's statistics (None before its first packet). aiortc's `getStats()`
    reports one stream per receiver, the last it saw: after a retransmission that is the RTX
    stream's, so this reads the media SSRC's counters directly."""
    streams = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
    rtx = receiver._RTCRtpReceiver__rtx_ssrc  # type: ignore[attr-defined]
    for ssrc, stream in streams.items():
        if ssrc not in rtx and stream.max_seq is not None:
            return ReceivedStream(ssrc, stream.packets_expected, stream.packets_received, stream.jitter)
    return None


def receiver_estimate_bps(receiver: RTCRtpReceiver) -> float | None:
    """What a video receiver's REMB says the sender may send (aiortc's remote bitrate estimate),
    or None before it has an estimate (audio receivers have none)."""
    estimator = receiver._RTCRtpReceiver__remote_bitrate_estimator  # type: ignore[attr-defined]
    if estimator is None or not estimator.rate_control.current_bitrate_initialized:
        return None
    return float(estimator.rate_control.current_bitrate)
