"""roomlab.Link: the shaping core with a fake clock and fixed seeds, then real aiortc peer connections
on loopback shaped through the hook (roomlab/net/link.py, roomlab/net/link_hook.py)."""

from __future__ import annotations

import asyncio
import statistics
import struct

import pytest
from aiortc import RTCPeerConnection

from roomlab.net import ice, sctp
from roomlab.net.link import (
    IP_UDP_HEADER_BYTES,
    MIN_QUEUE_BYTES,
    BurstLoss,
    DeliveryTrace,
    Link,
    LinkParameters,
    Shaper,
)
from roomlab.net.link_hook import _ShapedTransport, attached_link

from .conftest import eventually

# the core, with time passed in ----------------------------------------------------------------


def drops(shaper: Shaper, n: int, size: int = 100) -> list[bool]:
    return [shaper.offer(size, i * 0.001) is None for i in range(n)]


def burst_lengths(lost: list[bool]) -> list[int]:
    lengths, run = [], 0
    for x in lost:
        if x:
            run += 1
        elif run:
            lengths.append(run)
            run = 0
    return lengths


def test_random_loss_matches_the_probability_and_the_seed_fixes_which_packets():
    lost = drops(Shaper(LinkParameters(loss=0.1), seed=7), 100_000)
    assert 0.097 <= sum(lost) / len(lost) <= 0.103
    assert drops(Shaper(LinkParameters(loss=0.1), seed=7), 100_000) == lost
    assert drops(Shaper(LinkParameters(loss=0.1), seed=8), 100_000) != lost
    assert statistics.mean(burst_lengths(lost)) < 1.2  # independent losses: mostly single


def test_gilbert_elliott_loss_comes_in_bursts_of_mean_one_over_r():
    burst = BurstLoss(p=0.01, r=0.25)
    assert burst.mean_loss == pytest.approx(0.01 / 0.26)
    lost = drops(Shaper(LinkParameters(burst_loss=burst), seed=3), 200_000)
    assert sum(lost) / len(lost) == pytest.approx(burst.mean_loss, abs=0.004)
    assert statistics.mean(burst_lengths(lost)) == pytest.approx(1 / burst.r, rel=0.1)


def test_gilbert_elliott_with_loss_in_both_states():
    burst = BurstLoss(p=0.05, r=0.2, loss_good=0.02, loss_bad=0.5)
    assert burst.mean_loss == pytest.approx((0.05 * 0.5 + 0.2 * 0.02) / 0.25)
    lost = drops(Shaper(LinkParameters(burst_loss=burst), seed=4), 200_000)
    assert sum(lost) / len(lost) == pytest.approx(burst.mean_loss, abs=0.005)


def test_token_bucket_paces_packets_at_the_rate():
    shaper = Shaper(LinkParameters(kbps=1000))  # 125,000 bytes/s; bucket of one 1500-byte packet
    times = [shaper.offer(1250, 0.0) for _ in range(5)]
    # the first leaves at once (1500 tokens), the second when 1000 more have come, then every 10 ms
    assert times == pytest.approx([0.0, 0.008, 0.018, 0.028, 0.038])
    assert shaper.offer(1250, 1.0) == 1.0  # idle long enough: the bucket is full again


def test_token_bucket_depth_lets_a_burst_through_after_a_pause():
    shaper = Shaper(LinkParameters(kbps=1000, bucket_bytes=3000))
    assert [shaper.offer(1500, 0.0) for _ in range(3)] == pytest.approx([0.0, 0.0, 0.012])


def test_queue_drops_the_tail_when_full_and_drains_at_the_rate():
    shaper = Shaper(LinkParameters(kbps=1000))  # 100 ms at 1000 kbps: 12,500 bytes
    assert LinkParameters(kbps=1000).queue_limit_bytes == 12_500
    times = [shaper.offer(1250, 0.0) for _ in range(15)]
    # the first leaves at once; ten more fill the queue; the rest are dropped
    assert times[:11] == pytest.approx([0.0, 0.008] + [0.008 + 0.01 * k for k in range(1, 10)])
    assert times[11:] == [None] * 4
    counters = shaper.counters
    assert (counters.packets_queue_dropped, counters.bytes_queue_dropped) == (4, 5000)
    assert shaper.queued_bytes(0.0) == 12_500
    assert shaper.queued_bytes(0.0385) == 12_500 - 4 * 1250
    assert shaper.offer(1250, 0.0385) == pytest.approx(0.108)  # room again, behind the others


def test_queue_limit_in_bytes_and_its_minimum():
    assert LinkParameters(kbps=1000, queue_bytes=2500).queue_limit_bytes == 2500
    assert LinkParameters(kbps=64, queue_ms=10).queue_limit_bytes == MIN_QUEUE_BYTES
    assert LinkParameters(delay_ms=50).queue_limit_bytes is None  # no bottleneck, no queue
    shaper = Shaper(LinkParameters(kbps=1000, queue_bytes=2500))
    assert [shaper.offer(1250, 0.0) is None for _ in range(5)] == [False, False, False, True, True]


def test_delay_and_jitter_stay_within_bounds_and_keep_order():
    shaper = Shaper(LinkParameters(delay_ms=50, jitter_ms=10), seed=1)
    sent = [i * 0.001 for i in range(2000)]
    out = [shaper.offer(200, t) for t in sent]
    delays = [o - t for o, t in zip(out, sent, strict=True)]  # type: ignore[operator]
    assert min(delays) >= 0.040 - 1e-9 and max(delays) <= 0.060 + 1e-9
    assert out == sorted(out)  # type: ignore[type-var]
    assert 0.045 < statistics.median(delays) < 0.060


def test_reorder_lets_jitter_reorder_packets():
    shaper = Shaper(LinkParameters(delay_ms=50, jitter_ms=10, reorder=True), seed=1)
    sent = [i * 0.001 for i in range(2000)]
    out = [shaper.offer(200, t) for t in sent]
    delays = [o - t for o, t in zip(out, sent, strict=True)]  # type: ignore[operator]
    assert min(delays) >= 0.040 - 1e-9 and max(delays) <= 0.060 + 1e-9
    assert out != sorted(out)  # type: ignore[type-var]
    assert statistics.median(delays) == pytest.approx(0.050, abs=0.001)
    again = Shaper(LinkParameters(delay_ms=50, jitter_ms=10, reorder=True), seed=1)
    assert [again.offer(200, t) for t in sent] == out


def test_jitter_larger_than_the_delay_never_goes_below_zero():
    shaper = Shaper(LinkParameters(delay_ms=2, jitter_ms=10, reorder=True), seed=2)
    assert all(shaper.offer(100, 1.0) >= 1.0 for _ in range(500))  # type: ignore[operator]


def test_delivery_trace_opportunities_carry_1500_bytes_and_loop():
    shaper = Shaper(LinkParameters(trace=DeliveryTrace((10, 20, 20, 30))))
    # 1000-byte packets: the second takes the 500 bytes the first left at 10 ms and 500 at 20 ms
    assert [shaper.offer(1000, 0.0) for _ in range(6)] == pytest.approx([0.010, 0.020, 0.020, 0.020, 0.030, 0.030])
    # the trace loops with its last timestamp as the period: opportunities at 40, 50, 50, 60 ms...
    assert [shaper.offer(1500, 0.031) for _ in range(5)] == pytest.approx([0.040, 0.050, 0.050, 0.060, 0.070])
    # an opportunity at the very time a packet arrives is gone already (mahimahi)
    assert shaper.offer(1500, 0.100) == pytest.approx(0.110)


def test_delivery_trace_wastes_what_an_idle_link_does_not_use():
    shaper = Shaper(LinkParameters(trace=DeliveryTrace((10, 20))))
    assert shaper.offer(100, 0.0) == pytest.approx(0.010)
    assert shaper.offer(100, 0.011) == pytest.approx(0.020)  # the rest of the 10 ms one was lost
    later = Shaper(LinkParameters(trace=DeliveryTrace((10, 20))))
    later.origin = 5.0  # a trace counts from the link's start
    assert later.offer(100, 5.0) == pytest.approx(5.010)


def test_delivery_trace_mean_rate_for_a_saturating_sender():
    trace = DeliveryTrace(tuple(range(1, 101)) + (100, 100))  # 102 opportunities per 100 ms
    assert trace.mean_kbps == pytest.approx(102 * 1500 * 8 / 100)
    shaper = Shaper(LinkParameters(trace=trace, queue_bytes=10**9))
    out = [shaper.offer(1500, 0.0) for _ in range(1020)]
    assert out[-1] == pytest.approx(1.0)  # ten periods
    assert out == sorted(out)  # type: ignore[type-var]


def test_trace_file_in_mahimahi_format(tmp_path):
    path = tmp_path / "link.trace"
    path.write_text("5\n5\n\n12\n20\n")
    link = Link(trace=str(path))
    assert link.up.parameters.trace == DeliveryTrace((5, 5, 12, 20)) == link.down.parameters.trace
    link.start(0.0)
    assert link.offer("up", 1500, 0.0) == pytest.approx(0.005)
    path.write_text("5\nten\n")
    with pytest.raises(ValueError, match=r"link.trace:2: a trace line must be an integer"):
        Link(up_trace=path)


def test_each_direction_has_its_own_parameters_and_randomness():
    link = Link(up_kbps=500, down_kbps=2000, delay_ms=40, loss=0.05, down_loss=0.2, up_jitter_ms=5, seed=9)
    assert (link.up.parameters.kbps, link.down.parameters.kbps) == (500, 2000)
    assert (link.up.parameters.delay_ms, link.down.parameters.delay_ms) == (40, 40)
    assert (link.up.parameters.loss, link.down.parameters.loss) == (0.05, 0.2)
    assert (link.up.parameters.jitter_ms, link.down.parameters.jitter_ms) == (5, 0)
    # one direction's traffic does not move the other's random draws
    a, b = Link(loss=0.3, seed=5), Link(loss=0.3, seed=5)
    for i in range(100):
        a.offer("up", 100, i * 0.001)
    assert [a.offer("down", 100, 1.0) for _ in range(200)] == [b.offer("down", 100, 1.0) for _ in range(200)]


def test_update_applies_to_packets_offered_from_then_on():
    link = Link(up_kbps=1000, delay_ms=10, seed=1)
    link.start(0.0)
    queued = [link.offer("up", 1250, 0.0) for _ in range(3)]
    link.update(delay_ms=100, down_loss=1.0)
    assert link.offer("up", 1250, 0.0) == pytest.approx(0.128)  # behind the queue, with the new delay
    assert queued == pytest.approx([0.010, 0.018, 0.028])  # decided already
    assert link.offer("down", 100, 0.0) is None
    link.update(loss=0.0)  # a shared name does not override a per-direction one given earlier...
    assert link.down.parameters.loss == 0.0  # ...it sets both directions, as the constructor does
    link.update(loss=0.5, up_loss=0.0)  # the per-direction one wins, whatever the order
    assert (link.up.parameters.loss, link.down.parameters.loss) == (0.0, 0.5)
    link.update(up_kbps=None, up_trace=[10, 20])
    assert link.up.parameters.trace == DeliveryTrace((10, 20)) and link.up.parameters.kbps is None


def test_update_is_all_or_nothing():
    link = Link(delay_ms=10)
    before = (link.up.parameters, link.down.parameters)
    with pytest.raises(ValueError, match=r"jitter_ms must be >= 0"):
        link.update(delay_ms=20, jitter_ms=-1)
    with pytest.raises(ValueError, match=r"up: a direction is limited by kbps or by a trace, not both"):
        link.update(delay_ms=20, up_kbps=100, trace=[1, 2])
    assert (link.up.parameters, link.down.parameters) == before
    with pytest.raises(ValueError, match=r"update\(\) takes a delivery trace"):
        link.update(trace=[(1.0, {"loss": 0.1})])


def test_burst_loss_given_as_a_dict_and_removed_again():
    link = Link(burst_loss={"p": 0.1, "r": 0.5, "loss_bad": 0.8}, seed=1)
    assert link.up.parameters.burst_loss == BurstLoss(p=0.1, r=0.5, loss_good=0.0, loss_bad=0.8)
    link.start(0.0)
    for i in range(1000):
        link.offer("up", 100, i * 0.001)
    link.update(burst_loss=None)
    assert link.up.parameters.burst_loss is None
    assert all(link.offer("up", 100, 2.0) is not None for _ in range(1000))


def test_step_schedule_changes_the_link_as_its_time_passes():
    link = Link(trace=[(0, {"up_kbps": 1000}), (1.0, {"loss": 1.0}), (2.0, {"loss": 0.0, "up_kbps": None})])
    link.start(10.0)
    assert link.up.parameters.kbps == 1000
    assert link.offer("up", 100, 10.5) is not None
    assert link.offer("up", 100, 11.0) is None and link.offer("down", 100, 11.5) is None
    assert link.offer("up", 100, 12.0) == 12.0 and link.up.parameters.kbps is None
    with pytest.raises(ValueError, match=r"loss must be in \[0, 1\], got 3"):
        Link(trace=[(0, {"loss": 0.1}), (5, {"loss": 3})])  # a step that would fail fails at once
    with pytest.raises(ValueError, match=r"unknown link parameter 'los'"):
        Link(trace=[(5, {"los": 0.1})])


def test_stun_is_exempt_from_loss_but_not_from_the_queue():
    shaper = Shaper(LinkParameters(kbps=100, loss=1.0, queue_bytes=3000))
    assert shaper.offer(100, 0.0) is None
    # one leaves at once (a full bucket), three wait in the 3000-byte queue, the fifth is dropped
    assert all(shaper.offer(1000, 0.0, lossy=False) is not None for _ in range(4))
    assert shaper.offer(1000, 0.0, lossy=False) is None
    assert (shaper.counters.packets_lost, shaper.counters.packets_queue_dropped) == (1, 1)


def test_stats_count_every_packet_once():
    link = Link(up_kbps=1000, loss=0.2, seed=3)
    link.start(0.0)
    out = [link.offer("up", 1250, 0.0) for _ in range(40)]
    for when in out[:5]:
        if when is not None:
            link.delivered("up", 1250, when)
    up = link.stats()["up"]
    assert up["packets_offered"] == 40 and up["bytes_offered"] == 50_000
    delivered = sum(1 for when in out[:5] if when is not None)
    assert up["packets_delivered"] == delivered
    assert up["packets_lost"] + up["packets_queue_dropped"] == out.count(None)
    assert up["packets_in_flight"] == 40 - delivered - out.count(None)
    assert up["packets_lost"] > 0 and up["packets_queue_dropped"] > 0
    assert link.stats()["down"]["packets_offered"] == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"loss": 1.5}, r"loss must be in \[0, 1\], got 1.5"),
        ({"loss": -0.1}, r"loss must be in \[0, 1\]"),
        ({"down_loss": 2}, r"down_loss must be in \[0, 1\], got 2"),
        ({"up_kbps": 0}, r"up_kbps must be > 0, got 0"),
        ({"down_kbps": -5}, r"down_kbps must be > 0"),
        ({"delay_ms": -1}, r"delay_ms must be >= 0, got -1"),
        ({"jitter_ms": float("nan")}, r"jitter_ms must be a finite number"),
        ({"delay_ms": "10"}, r"delay_ms must be a finite number, got '10'"),
        ({"burst_loss": {"p": 0.1, "r": 1.2}}, r"burst_loss.r must be in \[0, 1\], got 1.2"),
        ({"burst_loss": {"p": 0.1, "q": 0.1}}, r"burst_loss takes p and r"),
        ({"burst_loss": 0.1}, r"burst_loss must be a BurstLoss, a dict with p and r, or None"),
        ({"trace": []}, r"non-empty list of millisecond timestamps"),
        ({"trace": [5, 3]}, r"non-decreasing"),
        ({"trace": [0]}, r"must end after 0 ms"),
        ({"trace": [1.5]}, r"integers >= 0"),
        ({"trace": 7}, r"trace must be a mahimahi trace"),
        ({"up_kbps": 100, "trace": [1, 2]}, r"up: a direction is limited by kbps or by a trace, not both"),
        ({"queue_ms": 0}, r"queue_ms must be > 0"),
        ({"up_queue_bytes": -1}, r"up_queue_bytes must be > 0"),
        ({"reorder": 1}, r"reorder must be True or False"),
        ({"bandwidth": 5}, r"unknown link parameter 'bandwidth'; allowed: up_kbps, down_kbps, delay_ms"),
        ({"sideways_loss": 0.1}, r"unknown link parameter 'sideways_loss'"),
    ],
)
def test_argument_errors_name_the_allowed_range(arguments, message):
    with pytest.raises(ValueError, match=message):
        Link(**arguments)


# real peer connections on loopback ------------------------------------------------------------


async def connected_pair(link: Link | None, **channel_options):  # type: ignore[no-untyped-def]
    """pc1 offers (like the server), pc2 answers (like a Room) with `link` attached before it
    negotiates. Returns the pcs and the channel's two ends; pc2's end sends up the link."""
    sctp.install()
    pc1, pc2 = RTCPeerConnection(ice.rtc_configuration()), RTCPeerConnection(ice.rtc_configuration())
    if link is not None:
        link.attach(pc2)
    offerer_end = pc1.createDataChannel("test", **channel_options)
    answerer_ends: list = []
    pc2.on("datachannel", answerer_ends.append)
    await pc1.setLocalDescription(await pc1.createOffer())
    await pc2.setRemoteDescription(pc1.localDescription)
    await pc2.setLocalDescription(await pc2.createAnswer())
    await pc1.setRemoteDescription(pc2.localDescription)
    opened = await eventually(
        lambda: answerer_ends and offerer_end.readyState == "open" and answerer_ends[0].readyState == "open"
    )
    assert opened, "the data channel did not open"
    return pc1, pc2, offerer_end, answerer_ends[0]


def ice_protocols(pc: RTCPeerConnection) -> list:
    transports = pc._RTCPeerConnection__iceTransports  # type: ignore[attr-defined]
    return [p for t in transports for p in t._connection._protocols]


async def test_the_hook_shapes_only_its_own_pc_including_transports_added_later():
    link = Link(seed=1)
    pc1, pc2, _, _ = await connected_pair(link)
    try:
        assert attached_link(pc2) is link and attached_link(pc1) is None
        assert ice_protocols(pc2) and all(isinstance(p.transport, _ShapedTransport) for p in ice_protocols(pc2))
        assert not any(isinstance(p.transport, _ShapedTransport) for p in ice_protocols(pc1))
        stats = link.stats()
        assert stats["up"]["packets_delivered"] > 0 and stats["down"]["packets_delivered"] > 0
        # a renegotiation that adds m-lines: every ICE transport it creates is hooked (then bundled away)
        created: list = []
        create = pc2._RTCPeerConnection__createDtlsTransport  # type: ignore[attr-defined]

        def create_and_record():  # type: ignore[no-untyped-def]
            created.append(create())
            return created[-1]

        pc2._RTCPeerConnection__createDtlsTransport = create_and_record  # type: ignore[attr-defined]
        pc1.addTransceiver("audio")
        pc1.addTransceiver("video")
        await pc1.setLocalDescription(await pc1.createOffer())
        await pc2.setRemoteDescription(pc1.localDescription)
        await pc2.setLocalDescription(await pc2.createAnswer())
        await pc1.setRemoteDescription(pc2.localDescription)
        assert len(created) == 2 and all(d.transport._connection._roomlab_link is link for d in created)
        with pytest.raises(ValueError, match="has a link already"):
            Link().attach(pc2)
    finally:
        await pc1.close()
        await pc2.close()


async def test_a_link_attached_after_connecting_shapes_from_then_on():
    pc1, pc2, offerer_end, answerer_end = await connected_pair(None)
    try:
        link = Link(delay_ms=30, seed=1)
        link.attach(pc2)
        loop = asyncio.get_running_loop()
        delays: list[float] = []
        offerer_end.on("message", lambda m: delays.append(loop.time() - struct.unpack("!d", m)[0]))
        for _ in range(10):
            answerer_end.send(struct.pack("!d", loop.time()))
            await asyncio.sleep(0.005)
        await eventually(lambda: len(delays) == 10, timeout=2)
        assert 0.030 <= min(delays) and max(delays) < 0.040
        assert link.stats()["up"]["packets_delivered"] >= 10
    finally:
        await pc1.close()
        await pc2.close()


async def test_ice_connects_through_ten_percent_loss_of_stun_too():
    link = Link(loss=0.1, ice_loss=True, seed=2)
    pc1, pc2 = RTCPeerConnection(ice.rtc_configuration()), RTCPeerConnection(ice.rtc_configuration())
    link.attach(pc2)
    try:
        pc1.createDataChannel("test")
        await pc1.setLocalDescription(await pc1.createOffer())
        await pc2.setRemoteDescription(pc1.localDescription)
        await pc2.setLocalDescription(await pc2.createAnswer())
        await pc1.setRemoteDescription(pc2.localDescription)
        assert await eventually(lambda: pc2.iceConnectionState == "completed", timeout=5)
        assert link.stats()["up"]["packets_offered"] > 0
    finally:
        await pc1.close()
        await pc2.close()


async def test_measured_loss_matches_the_configured_loss_over_10000_packets():
    link = Link(seed=11)
    pc1, pc2, offerer_end, answerer_end = await connected_pair(link, ordered=False, maxRetransmits=0)
    try:
        got: set[int] = set()
        offerer_end.on("message", lambda message: got.add(int(message)))
        link.update(loss=0.1)  # once connected: ICE, DTLS and SCTP set up without waiting out losses
        before = link.stats()["up"]
        for i in range(10_000):
            answerer_end.send(b"%05d" % i)
            await asyncio.sleep(0)  # one message per datagram: let SCTP send it before the next
        await asyncio.sleep(0.2)
        after = link.stats()["up"]
        datagrams = after["packets_offered"] - before["packets_offered"]
        datagram_loss = (after["packets_lost"] - before["packets_lost"]) / datagrams
        message_loss = 1 - len(got) / 10_000
        print(f"datagrams {datagrams}, datagram loss {datagram_loss:.4f}, message loss {message_loss:.4f}")
        assert 10_000 <= datagrams <= 10_300  # about one datagram per message (and a few FORWARD-TSNs)
        assert abs(message_loss - 0.1) <= 0.015
        assert abs(datagram_loss - 0.1) <= 0.015
    finally:
        await pc1.close()
        await pc2.close()


async def one_way_delays(link: Link | None, count: int = 300) -> list[float]:
    pc1, pc2, offerer_end, answerer_end = await connected_pair(link)
    try:
        loop = asyncio.get_running_loop()
        delays: list[float] = []
        offerer_end.on("message", lambda m: delays.append(loop.time() - struct.unpack("!d", m)[0]))
        for _ in range(count):
            answerer_end.send(struct.pack("!d", loop.time()))
            await asyncio.sleep(0.003)
        await eventually(lambda: len(delays) == count, timeout=2)
        return delays
    finally:
        await pc1.close()
        await pc2.close()


async def test_added_one_way_delay_matches_the_configured_delay_at_p50():
    baseline = statistics.median(await one_way_delays(None))
    shaped = statistics.median(await one_way_delays(Link(delay_ms=50, seed=1)))
    print(f"p50 one-way: {baseline * 1000:.2f} ms without a link, {shaped * 1000:.2f} ms with 50 ms")
    assert abs((shaped - baseline) * 1000 - 50) <= 2


async def test_rate_limit_holds_the_delivered_bitrate_for_a_saturating_sender():
    link = Link(up_kbps=2000, seed=1)
    pc1, pc2, offerer_end, answerer_end = await connected_pair(link)
    try:
        loop = asyncio.get_running_loop()
        received = {"bytes": 0}
        offerer_end.on("message", lambda m: received.__setitem__("bytes", received["bytes"] + len(m)))
        samples: list[tuple[float, int, int]] = []
        start = loop.time()
        message = b"x" * 1024
        while loop.time() - start < 4.0:
            while answerer_end.bufferedAmount < 256 * 1024:
                answerer_end.send(message)
            await asyncio.sleep(0.01)
            elapsed = loop.time() - start
            if (not samples and elapsed >= 1.0) or (len(samples) == 1 and elapsed >= 4.0):
                samples.append((loop.time(), link.stats()["up"]["bytes_delivered"], received["bytes"]))
        (t0, wire0, app0), (t1, wire1, app1) = samples
        wire_kbps = (wire1 - wire0) * 8 / (t1 - t0) / 1000
        goodput_kbps = (app1 - app0) * 8 / (t1 - t0) / 1000
        up = link.stats()["up"]
        print(f"delivered {wire_kbps:.0f} kbps on the wire, {goodput_kbps:.0f} kbps of messages; {up}")
        assert abs(wire_kbps - 2000) <= 100  # IP packets (UDP payload + IP_UDP_HEADER_BYTES), within 5%
        assert IP_UDP_HEADER_BYTES == 28
    finally:
        await pc1.close()
        await pc2.close()
