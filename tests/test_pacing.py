"""The video pacer (roomlab/net/pacing.py): its virtual clock on a fake time, and abs-send-time
stamped again on a real RTP packet as aiortc serializes it."""

from __future__ import annotations

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from roomlab.net.pacing import MIN_PACING_BPS, PACING_BURST_S, Pacer, pacing_rate, restamp_abs_send_time


def test_packets_leave_at_the_rate_after_a_short_burst():
    pacer = Pacer()
    assert pacer.delay(1200, now=0.0) == 0.0  # no rate: nothing is held
    pacer.set_rate(960_000)  # 1200-byte packets every 10 ms
    waits = [pacer.delay(1200, now=10.0) for _ in range(5)]
    assert waits[0] == 0.0
    assert waits[1:] == pytest.approx([0.01 - PACING_BURST_S + 0.01 * i for i in range(4)])
    assert pacer.held == 4 and pacer.longest_hold_s == pytest.approx(waits[-1])
    assert pacer.delay(1200, now=11.0) == 0.0  # idle since: the next one leaves at once
    pacer.set_rate(1.0)
    assert pacer.rate_bps == MIN_PACING_BPS  # never slower than this
    pacer.set_rate(None)
    assert pacer.delay(50_000, now=12.0) == 0.0


def test_video_is_paced_at_its_budget_and_a_little_faster_than_its_layers():
    # 400 kbit/s downlink, 165 kbit/s of audio: one low layer (175 kbit/s) leaves within what is left,
    # so a keyframe waits at the server and not in front of the audio in the downlink's queue
    assert pacing_rate(video_budget_bps=235e3, video_bps=175e3) == 235e3
    # beyond the budget (a mode that keeps the lowest layers on, or the prior): the pacer keeps up
    assert pacing_rate(video_budget_bps=135e3, video_bps=525e3) == pytest.approx(1.1 * 525e3)


def test_abs_send_time_is_stamped_again_and_nothing_else_changes():
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                RTCRtpHeaderExtensionParameters(id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
            ]
        )
    )
    packet = RtpPacket(payload_type=96, sequence_number=7, timestamp=1234, ssrc=42, payload=b"\x10" * 100)
    packet.extensions.mid = "12"
    packet.extensions.abs_send_time = 0x000001
    data = packet.serialize(extensions)
    ntp = (5 << 32) | (1 << 31)  # 5.5 s
    stamped = RtpPacket.parse(restamp_abs_send_time(data, 3, ntp), extensions)
    assert stamped.extensions.abs_send_time == (ntp >> 14) & 0xFFFFFF
    assert (stamped.extensions.mid, stamped.sequence_number, stamped.payload) == ("12", 7, b"\x10" * 100)
    assert restamp_abs_send_time(data, 9, ntp) == data  # no such extension: unchanged
    plain = RtpPacket(payload_type=96, sequence_number=8, ssrc=42, payload=b"x").serialize()
    assert restamp_abs_send_time(plain, 3, ntp) == plain
