"""Taps on aiortc's RTP receivers and senders, for media that is forwarded or replayed, not
decoded or encoded frame by frame (the server's forwarding plane, and simulated participants).

These reach into private attributes of aiortc 1.16.0 (pinned): a receiver's decoder queue and
jitter buffer, a sender's `_send_keyframe` and `_next_encoded_frame`. Tests cover each.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_gt


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


def is_keyframe(mime_type: str, data: bytes) -> bool:
    """Whether an encoded video frame (as aiortc's depacketizer assembles it) starts a picture that
    decodes on its own: a VP8 key frame, or an H.264 access unit with an IDR slice."""
    if not data:
        return False
    codec = mime_type.lower()
    if codec == "video/vp8":
        return not data[0] & 0x01  # the frame tag's P bit: 0 for a key frame (RFC 6386 §9.1)
    if codec == "video/h264":
        return any(nal and nal[0] & 0x1F == 5 for nal in data.split(b"\x00\x00\x01"))
    return True  # no way to tell: do not hold frames back


class AudioPassThrough(JitterBuffer):
    """Stands in for an RTCRtpReceiver's audio jitter buffer when frames are forwarded or replayed,
    not played: each packet is handed on as it arrives.

    Opus carries one frame per packet, so there is nothing to re-assemble; timing out jitter is
    the playing end's job. aiortc's buffer instead holds every packet after a lost one until 16
    more have come (0.3 s of speech, 6 s of DTX silence), then discards to catch up: each hop
    through it added delay and turned one lost packet into several.
    """

    def __init__(self) -> None:
        super().__init__(capacity=16)
        self._newest: int | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        sequence = packet.sequence_number
        if self._newest is not None and not uint16_gt(sequence, self._newest):
            return False, None  # a duplicate, or too late: its successor already went on
        if not packet._data:  # type: ignore[attr-defined]
            return False, None  # aiortc could not depayload it
        self._newest = sequence
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]


def tap_receiver(receiver: RTCRtpReceiver, kind: str, deliver: Callable[[Any, Any], None]) -> None:
    """Take `receiver`'s encoded frames before decoding (call before aiortc starts receiving)."""
    receiver._RTCRtpReceiver__decoder_queue = EncodedFrameTap(deliver)  # type: ignore[attr-defined]
    if kind == "audio":
        receiver._RTCRtpReceiver__jitter_buffer = AudioPassThrough()  # type: ignore[attr-defined]


def route_keyframe_requests(sender: RTCRtpSender, request_keyframe: Callable[[], None]) -> None:
    """Call `request_keyframe` on the far end's PLI/FIR, instead of setting aiortc's encoder flag
    (which packets passed through, not encoded, ignore)."""
    sender._send_keyframe = request_keyframe  # type: ignore[method-assign]


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
