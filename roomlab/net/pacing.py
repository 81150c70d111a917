"""A pacer for the server's video towards one subscriber: RTP packets of its video senders leave no
faster than a rate the bandwidth allocation sets, so that a keyframe does not hit the subscriber's
downlink as one burst.

aiortc's sender writes every packet of a frame back to back. A forwarded keyframe is 6 kB (the
simulated camera's low layer) to 47 kB (its high layer); a downlink queue holds 100 ms at its rate
(5 kB at 400 kbit/s, 37 kB at 3 Mbit/s), so unpaced keyframes overflow it even when the average
fits, and the audio packets behind them are lost with them. Real senders pace (libwebrtc at 2.5x
its target, LiveKit's pacer likewise); here the allocation sets the rate (`pacing_rate`) to what the
downlink estimate leaves video, and never below `PACING_FACTOR` times what the layers chosen send:
a keyframe burst waits here, where audio passes it, instead of in the downlink's queue in front of
the audio (three cameras' keyframes, aligned by a new subscriber's keyframe requests, are 18 kB at
their lowest layer: more than twice a 600 kbit/s downlink's queue). Audio, RTCP and retransmissions
are never held.

A paced packet leaves later than aiortc stamped it: its abs-send-time header extension is stamped
again as it leaves, so that the subscriber's delay-based estimator (REMB) sees pacing as sending,
not as queueing.

`pace(sender, pacer)` hooks the sender's DTLS transport (once per transport: `_send_rtp`, the
method every sender and receiver of a bundled connection writes through) and registers the
sender's SSRC; it is idempotent, and is called again after renegotiations (bundling may move a
sender onto another transport). `pace_from_start(sender, pacer)` calls it as the sender starts,
on the transport it starts on (a subscription's first keyframes go out paced). This reaches into
aiortc 1.16.0's private attributes, like net/rtp.py.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import RTCRtpSender, clock

#: Video leaves at least this times what its layers send (their payload, measured over seconds with
#: their keyframes; RTP headers add about 5 %): the pacer keeps up with them, and a downlink they fill
#: to 90 % (three cameras' lowest layers at 600 kbit/s) still gets their keyframes no faster than it
#: carries them.
PACING_FACTOR = 1.1
#: Packets may leave this much ahead of the rate (a burst of a few packets, so that a small frame
#: is not spread needlessly).
PACING_BURST_S = 0.005
#: The rate is never set below this (a stale or tiny estimate must not hold video back for seconds).
MIN_PACING_BPS = 100_000.0
_ONE_BYTE_PROFILE = 0xBEDE


def pacing_rate(video_budget_bps: float, video_bps: float) -> float:
    """The rate for a subscriber's video: what the downlink estimate leaves video (`video_budget_bps`:
    the estimate, or a probe's goal, less audio and data), at least `PACING_FACTOR` times what the
    layers chosen send (`video_bps`: beyond the budget when a mode keeps them on, or on the prior)."""
    return max(video_budget_bps, PACING_FACTOR * video_bps)


class Pacer:
    """One subscriber's video pacing: a virtual clock at `rate_bps` (None: no pacing)."""

    def __init__(self, time: Callable[[], float] | None = None) -> None:
        self.rate_bps: float | None = None
        self._time = time
        self._free_at = 0.0
        #: SSRC of each paced sender -> its abs-send-time extension id (None: it has none)
        self.ssrcs: dict[int, int | None] = {}
        #: packets held, and the longest hold (seconds), since the start
        self.held = 0
        self.longest_hold_s = 0.0

    def set_rate(self, rate_bps: float | None) -> None:
        self.rate_bps = None if rate_bps is None else max(MIN_PACING_BPS, float(rate_bps))

    def delay(self, size: int, now: float) -> float:
        """Seconds a packet of `size` bytes waits before it leaves, given what left before it."""
        if self.rate_bps is None:
            return 0.0
        start = max(self._free_at, now - PACING_BURST_S)
        self._free_at = start + size * 8 / self.rate_bps
        wait = max(0.0, start - now)
        if wait > 0:
            self.held += 1
            self.longest_hold_s = max(self.longest_hold_s, wait)
        return wait

    def now(self) -> float:
        return self._time() if self._time is not None else asyncio.get_running_loop().time()


def _ssrc(data: bytes) -> int | None:
    """The SSRC of an RTP packet (None for RTCP, which is never paced)."""
    if len(data) < 12 or 192 <= data[1] <= 223:  # RTCP packet types 192-223 (RFC 5761)
        return None
    return int.from_bytes(data[8:12], "big")


def restamp_abs_send_time(data: bytes, extension_id: int, ntp: int) -> bytes:
    """`data` (an RTP packet) with its abs-send-time set from `ntp` (a 64-bit NTP time), if it carries one."""
    if not data[0] & 0x10:  # no header extension
        return data
    offset = 12 + 4 * (data[0] & 0x0F)
    if len(data) < offset + 4:
        return data
    profile, length = struct.unpack_from("!HH", data, offset)
    if profile != _ONE_BYTE_PROFILE:
        return data
    position, end = offset + 4, min(len(data), offset + 4 + 4 * length)
    while position < end:
        header = data[position]
        if header == 0:  # padding
            position += 1
            continue
        element_id, size = header >> 4, (header & 0x0F) + 1
        if element_id == 15:
            break
        if element_id == extension_id and size == 3:
            value = ((ntp >> 14) & 0x00FFFFFF).to_bytes(3, "big")
            return data[: position + 1] + value + data[position + 4 :]
        position += 1 + size
    return data


def _abs_send_time_id(sender: RTCRtpSender) -> int | None:
    extensions = sender._RTCRtpSender__rtp_header_extensions_map  # type: ignore[attr-defined]
    return extensions._HeaderExtensionsMap__ids.abs_send_time  # type: ignore[no-any-return]


def pace(sender: RTCRtpSender, pacer: Pacer) -> None:
    """Pace what `sender` sends with `pacer` (idempotent; call again after a renegotiation)."""
    pacer.ssrcs[sender._ssrc] = _abs_send_time_id(sender)
    transport = sender.transport
    if transport is None:
        return
    if getattr(transport, "_roomlab_pacer", None) is pacer:
        return
    transport._roomlab_pacer = pacer  # type: ignore[attr-defined]
    send: Callable[[bytes], Coroutine[Any, Any, None]] = type(transport)._send_rtp.__get__(transport)

    async def send_rtp(data: bytes) -> None:
        ssrc = _ssrc(data)
        if ssrc is None or ssrc not in pacer.ssrcs:
            await send(data)
            return
        wait = pacer.delay(len(data), pacer.now())
        if wait > 0:
            await asyncio.sleep(wait)
            extension_id = pacer.ssrcs.get(ssrc)
            if extension_id:
                data = restamp_abs_send_time(data, extension_id, clock.current_ntp_time())
        await send(data)

    transport._send_rtp = send_rtp  # type: ignore[method-assign]


def pace_from_start(sender: RTCRtpSender, pacer: Pacer) -> None:
    """Pace `sender` with `pacer` as soon as it starts sending: aiortc calls `send()` once the
    negotiation has set its (bundled) transport and header extensions, and its first packet leaves
    from a task that runs after that."""
    start: Callable[[Any], Coroutine[Any, Any, None]] = sender.send

    async def send(parameters: Any) -> None:
        await start(parameters)
        pace(sender, pacer)

    sender.send = send  # type: ignore[method-assign]
