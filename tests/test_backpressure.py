"""A subscriber that stops reading never blocks the publisher or the other subscribers: the
server queues a bounded amount for it, then drops and says so."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import roomlab
import roomlab.protocol.batching
from roomlab.client.data_track import DRAIN_HIGH_WATER
from roomlab.telemetry.analysis import latency, loss

from .conftest import eventually
from .test_data_tracks import subscribed_data_track

SCRIPTS = Path(__file__).parent / "clients"
SCRIPT = SCRIPTS / "join_and_wait.py"


async def test_stalled_subscriber_does_not_slow_the_others(server, join, monkeypatch):
    # a smaller bound than the documented 4 MiB, so that the test overflows it in a moment
    bound = 256 * 1024
    monkeypatch.setattr(roomlab.protocol.batching, "RELIABLE_BUFFER_BOUND", bound)
    alice, bob = await join("alice", room="stall"), await join("bob", room="stall")
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), server.url, server.token("carol"), "stall"], stdout=subprocess.PIPE, text=True
    )
    try:
        line = await asyncio.to_thread(process.stdout.readline)  # type: ignore[union-attr]
        carol_sid = line.split()[1]
        bulk, pulse = roomlab.LocalDataTrack("bulk"), roomlab.LocalDataTrack("pulse")
        await alice.local_participant.publish_track(bulk)
        await alice.local_participant.publish_track(pulse)
        forwarder = server.sfu.forwarders[bulk.sid]

        def everyone_subscribed() -> bool:
            tracks = [p.track for x in bob.participants.values() for p in x.tracks.values() if p.track]
            return carol_sid in forwarder.outlets and len(tracks) == 2

        await eventually(everyone_subscribed)
        os.kill(process.pid, signal.SIGSTOP)  # carol stops reading; her socket stays open
        # 1. overflow what the server will queue for carol
        sent, payload = 0, b"z" * 16_000
        while sent * len(payload) < 2 * bound:
            if bulk.buffered_amount > 128 * 1024:  # alice paces herself on her own link
                await asyncio.sleep(0.005)
                continue
            bulk.send(payload)
            sent += 1
            await asyncio.sleep(0)
        carol_outlet = forwarder.outlets[carol_sid]  # (kept: the heartbeat removes carol some seconds on)
        await eventually(lambda: carol_outlet.dropped > 0, timeout=5)
        await eventually(lambda: len(bob.frame("messages")) >= sent, timeout=10)
        # 2. with carol still stalled and overflowing, small messages at 100 msg/s
        for i in range(150):
            pulse.send(f"pulse {i}")
            await asyncio.sleep(0.01)
        await eventually(lambda: len(bob.frame("messages")) >= sent + 150)
        # the server kept at most its bound for carol, then dropped for her alone
        assert carol_outlet.dropped > 0
        assert carol_outlet.bound == bound
        assert carol_outlet.channel.bufferedAmount <= bound + len(payload) + 100
        messages = bob.frame("messages")
        assert loss(messages)["lost"].tolist() == [0, 0]  # bob lost nothing, on either track
        assert messages[messages["track"] == "bulk"]["seq"].tolist() == list(range(1, sent + 1))
        pulses = latency(messages[messages["track"] == "pulse"])
        assert pulses["count"].iloc[0] == 150
        assert pulses["p50"].iloc[0] < 20, pulses  # bob is served on time while carol is stalled
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


async def test_a_sender_that_drains_paces_itself_and_every_message_arrives_in_order(server, join):
    """`await drain()` after each send: 20 MB on a data track and 8 MB of publish_data leave
    without meeting the 4 MiB refusal, and a subscriber gets every message, in order, although it
    shares this process (and its CPU) with the sender: the server tells the sender to wait while
    it holds too much for the subscriber, instead of dropping for it. The same loop without
    drain() is refused."""
    alice, bob = await join("alice", room="drain"), await join("bob", room="drain")
    bulk = roomlab.LocalDataTrack("bulk")
    await alice.local_participant.publish_track(bulk)
    on_track: list[int] = []
    by_publish_data: list[int] = []
    bob.on("track_message", lambda data, track, p: on_track.append(int(data[:8])))
    bob.on("data_received", lambda data, p, topic: by_publish_data.append(int(data[:8])))
    remote = await eventually(lambda: subscribed_data_track(bob, "alice", "bulk"))
    message = 16 * 1024
    filler = b"x" * (message - 8)
    sent_on_track, sent_by_publish_data = 20 * 1024 * 1024 // message, 8 * 1024 * 1024 // message
    highest = 0
    for i in range(sent_on_track):
        bulk.send(b"%08d" % i + filler)
        highest = max(highest, bulk.buffered_amount)
        await bulk.drain()
        assert bulk.buffered_amount <= DRAIN_HIGH_WATER
    for i in range(sent_by_publish_data):
        alice.local_participant.publish_data(b"%08d" % i + filler)
        await alice.local_participant.drain_data()
    assert highest <= DRAIN_HIGH_WATER + message
    assert await eventually(lambda: len(on_track) == sent_on_track and len(by_publish_data) == sent_by_publish_data)
    assert on_track == list(range(sent_on_track)) and by_publish_data == list(range(sent_by_publish_data))
    assert remote.messages_dropped == 0
    hasty = roomlab.LocalDataTrack("hasty")
    await alice.local_participant.publish_track(hasty)
    with pytest.raises(roomlab.RoomError) as refused:  # the same loop without drain()
        for i in range(sent_on_track):
            hasty.send(b"%08d" % i + filler)
    assert refused.value.code == 53300


async def test_a_drain_waiting_when_the_room_disconnects_raises_its_room_error(join):
    alice = await join("alice", room="drain-ends")
    track = roomlab.LocalDataTrack("last")
    await alice.local_participant.publish_track(track)
    track.set_write_buffer_limits(high=0, low=0)
    for _ in range(100):
        track.send(b"z" * 16_000)  # 1.6 MB queued at once: the drain below has to wait
    waiting = asyncio.ensure_future(track.drain())
    await asyncio.sleep(0)
    assert not waiting.done()
    await alice.disconnect()
    with pytest.raises(roomlab.RoomError) as ended:
        await waiting
    assert ended.value.code == 53001 and "left" in ended.value.message
    with pytest.raises(ValueError, match="low .* must not be above high"):
        track.set_write_buffer_limits(high=10, low=20)


async def test_a_stalled_subscriber_does_not_hold_up_a_sender_that_drains(server, join):
    """The server waits (tells the sender to) only for subscribers that are receiving: one that
    stops (SIGSTOP) is no longer waited for after STALLED_AFTER, and is dropped for past its bound,
    while the one that keeps receiving gets everything."""
    alice, bob = await join("alice", room="stalled-drain"), await join("bob", room="stalled-drain")
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), server.url, server.token("carol"), "stalled-drain"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        carol_sid = (await asyncio.to_thread(process.stdout.readline)).split()[1]  # type: ignore[union-attr]
        bulk = roomlab.LocalDataTrack("bulk")
        await alice.local_participant.publish_track(bulk)
        received: list[int] = []
        bob.on("track_message", lambda data, track, p: received.append(int(data[:8])))
        forwarder = server.sfu.forwarders[bulk.sid]
        await eventually(lambda: carol_sid in forwarder.outlets and subscribed_data_track(bob, "alice", "bulk"))
        os.kill(process.pid, signal.SIGSTOP)
        filler = b"x" * (16 * 1024 - 8)
        count = 8 * 1024 * 1024 // (16 * 1024)
        for i in range(count):
            bulk.send(b"%08d" % i + filler)
            await asyncio.wait_for(bulk.drain(), 10)
        assert await eventually(lambda: len(received) == count, timeout=10)
        assert received == list(range(count))
        assert forwarder.outlets[carol_sid].dropped > 0  # carol, stalled, was dropped for instead
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


async def test_a_subscriber_that_holds_still_for_less_than_stalled_after_is_waited_for_and_gets_everything(
    server, join
):
    """SCTP holds still for its retransmission timeout (1 s at least) after a lost packet, so a
    subscriber that is receiving may show no progress for a second or two. The server keeps telling
    the sender to wait for it, and it gets every message, in order, with nothing dropped (with
    STALLED_AFTER at 1 s it was taken for stalled: its sender raced on and the server dropped for it).
    Here the subscriber, a process of its own, is stopped for 2 s while the sender drains."""
    count = 12 * 1024 * 1024 // (16 * 1024)
    alice = await join("alice", room="pause")
    bulk = roomlab.LocalDataTrack("bulk")
    await alice.local_participant.publish_track(bulk)
    process = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "join_and_count.py"), server.url, server.token("carol"), "pause", str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        carol_sid = (await asyncio.to_thread(process.stdout.readline)).split()[1]  # type: ignore[union-attr]
        forwarder = server.sfu.forwarders[bulk.sid]
        await eventually(lambda: carol_sid in forwarder.outlets)
        filler = b"x" * (16 * 1024 - 8)
        loop = asyncio.get_running_loop()
        for i in range(count):
            if i == count // 6:
                os.kill(process.pid, signal.SIGSTOP)
                loop.call_later(2.0, os.kill, process.pid, signal.SIGCONT)
            bulk.send(b"%08d" % i + filler)
            await asyncio.wait_for(bulk.drain(), 10)
        report = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 30)  # type: ignore[union-attr]
        assert report.split() == ["received", str(count), "True", "0"]  # carol's own count
        assert forwarder.outlets[carol_sid].dropped == 0
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
