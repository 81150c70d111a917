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

SCRIPT = Path(__file__).parent / "clients" / "join_and_wait.py"
COUNTER = Path(__file__).parent / "clients" / "count_messages.py"


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
    without meeting the 4 MiB refusal, and a subscriber (a process of its own, so that it keeps
    up) gets every message, in order. The same loop without drain() is refused."""
    message = 16 * 1024
    on_track, by_publish_data = 20 * 1024 * 1024 // message, 8 * 1024 * 1024 // message
    counter = subprocess.Popen(
        [
            sys.executable,
            str(COUNTER),
            server.url,
            server.token("bob"),
            "drain",
            "bulk",
            str(on_track + by_publish_data),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert (await asyncio.to_thread(counter.stdout.readline)).strip() == "joined"  # type: ignore[union-attr]
        alice = await join("alice", room="drain")
        bulk = roomlab.LocalDataTrack("bulk")
        await alice.local_participant.publish_track(bulk)
        await eventually(lambda: server.sfu.forwarders[bulk.sid].outlets)
        filler = b"x" * (message - 8)
        highest = 0
        for i in range(on_track):
            bulk.send(b"%08d" % i + filler)
            highest = max(highest, bulk.buffered_amount)
            await bulk.drain()
            assert bulk.buffered_amount <= DRAIN_HIGH_WATER
        for i in range(by_publish_data):
            alice.local_participant.publish_data(b"%08d" % i + filler)
            await alice.local_participant.drain_data()
        assert highest <= DRAIN_HIGH_WATER + message
        report = (await asyncio.to_thread(counter.communicate, timeout=60))[0].splitlines()
        assert report == [f"track {on_track} True", f"data {by_publish_data} True", "dropped 0"]
    finally:
        if counter.poll() is None:
            counter.kill()
            counter.wait()
    hasty = roomlab.LocalDataTrack("hasty")
    await alice.local_participant.publish_track(hasty)
    with pytest.raises(roomlab.RoomError) as refused:  # the same loop without drain()
        for i in range(on_track):
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
