"""The server's RTCP observer hook (roomlab/net/rtp.py `observe_rtcp`) on aiortc's own RTP router."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from aiortc.rtcdtlstransport import RtpRouter
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket

from roomlab.net.rtp import observe_rtcp


def receiver_report(ssrc: int) -> RtcpRrPacket:
    info = RtcpReceiverInfo(ssrc=ssrc, fraction_lost=0, packets_lost=0, highest_sequence=10, jitter=0, lsr=0, dlsr=0)
    return RtcpRrPacket(ssrc=99, reports=[info])


def test_every_packet_is_observed_once_and_routed_as_aiortc_would():
    router = RtpRouter()
    sender = object()  # aiortc's router only keeps it, by SSRC
    router.register_sender(sender, 1234)
    seen = []
    observe = seen.append
    transport = SimpleNamespace(_rtp_router=router)
    assert observe_rtcp(transport, observe)
    assert not observe_rtcp(transport, observe)  # once per transport
    packet = receiver_report(1234)
    assert router.route_rtcp(packet) == {sender}
    assert seen == [packet]


def test_a_failing_observer_is_logged_once_and_the_packet_still_reaches_its_sender(caplog):
    router = RtpRouter()
    sender = object()
    router.register_sender(sender, 1234)

    def broken(packet):
        raise KeyError("a measurement's defect")

    observe_rtcp(SimpleNamespace(_rtp_router=router), broken)
    with caplog.at_level(logging.DEBUG, logger="roomlab.net.rtp"):
        routed = [router.route_rtcp(receiver_report(1234)) for _ in range(3)]
    assert routed == [{sender}] * 3  # raised here, it would have ended the transport's receive loop
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert [r.levelno for r in caplog.records].count(logging.DEBUG) == 2
