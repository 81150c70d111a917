"""Joining and leaving over signaling: refusals with Twilio's codes, disconnects delivered to the
right clients, subscriptions following the rules, vanished clients removed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VideoGrant

import roomlab

from .conftest import FAST_CALLBACKS, eventually


def disconnects(room: roomlab.Room) -> list:
    """Collect the errors a room's `disconnected` event carries."""
    seen: list = []
    room.on("disconnected", lambda r, error: seen.append(error))
    return seen


async def test_participants_see_each_other_come_and_go(join, server):
    alice = await join("alice", room="hall")
    arrivals, departures = [], []
    alice.on("participant_connected", lambda p: arrivals.append(p.identity))
    alice.on("participant_disconnected", lambda p: departures.append(p.identity))
    bob = await join("bob", room="hall")
    assert [p.identity for p in bob.participants.values()] == ["alice"]
    await eventually(lambda: arrivals)
    assert arrivals == ["bob"]
    assert alice.sid == bob.sid and alice.name == "hall"
    client = server.twilio_client()
    listed = await asyncio.to_thread(lambda: client.video.v1.rooms("hall").participants.list())
    assert {p.identity for p in listed} == {"alice", "bob"}
    await bob.disconnect()
    await eventually(lambda: departures)
    assert departures == ["bob"] and alice.participants == {}
    gone = await asyncio.to_thread(lambda: client.video.v1.rooms("hall").participants.list(status="disconnected"))
    assert [p.identity for p in gone] == ["bob"]


async def test_metadata_changes_reach_others(join):
    alice, bob = await join("alice", metadata="seat 1"), await join("bob")
    seen_alice = next(iter(bob.participants.values()))
    assert seen_alice.metadata == "seat 1"
    changes: list = []
    seen_alice.on("metadata_changed", lambda p: changes.append(p.metadata))
    alice.local_participant.set_metadata("seat 7")
    assert await eventually(lambda: changes) == ["seat 7"]


async def test_data_tracks_show_in_rest_and_callbacks(server, receiver, join):
    client = server.twilio_client()
    await asyncio.to_thread(lambda: client.video.v1.rooms.create(unique_name="wired", status_callback=receiver.url))
    alice, bob = await join("alice", room="wired"), await join("bob", room="wired")
    track = roomlab.LocalDataTrack("cursor")
    await alice.local_participant.publish_track(track)
    await eventually(lambda: any(p.track for x in bob.participants.values() for p in x.tracks.values()))
    published = await asyncio.to_thread(
        lambda: client.video.v1.rooms("wired").participants("alice").published_tracks.list()
    )
    assert [(t.sid, t.name, t.kind) for t in published] == [(track.sid, "cursor", "data")]
    subscribed = await asyncio.to_thread(
        lambda: client.video.v1.rooms("wired").participants("bob").subscribed_tracks.list()
    )
    assert [(t.sid, t.publisher_sid) for t in subscribed] == [(track.sid, alice.local_participant.sid)]
    got = await asyncio.to_thread(receiver.wait_for, 4)
    events = [(r.form["StatusCallbackEvent"], r.form.get("ParticipantIdentity")) for r in got]
    assert sorted(events[:4], key=str) == sorted(
        [
            ("room-created", None),
            ("participant-connected", "alice"),
            ("participant-connected", "bob"),
            ("track-added", "alice"),
        ],
        key=str,
    )


async def test_room_full_53105(server, join):
    client = server.twilio_client()
    await asyncio.to_thread(lambda: client.video.v1.rooms.create(unique_name="pair", max_participants=2))
    await join("alice", room="pair")
    await join("bob", room="pair")
    with pytest.raises(roomlab.RoomError) as refused:
        await join("carol", room="pair")
    assert refused.value.code == 53105


async def test_duplicate_identity_disconnects_the_older_session_53205(join):
    first = await join("alice", room="dup")
    first_errors = disconnects(first)
    watcher = await join("bob", room="dup")
    second = await join("alice", room="dup")
    await eventually(lambda: first_errors)
    assert first_errors[0].code == 53205
    assert first.state == "disconnected"
    assert second.state == "connected"
    identities = await eventually(lambda: [p.identity for p in watcher.participants.values()] == ["alice"] and watcher)
    assert next(iter(identities.participants.values())).sid == second.local_participant.sid


async def test_ending_the_room_disconnects_everyone_53118(server, join):
    alice, bob = await join("alice", room="ending"), await join("bob", room="ending")
    errors_a, errors_b = disconnects(alice), disconnects(bob)
    client = server.twilio_client()
    await asyncio.to_thread(lambda: client.video.v1.rooms("ending").update(status="completed"))
    await eventually(lambda: errors_a and errors_b)
    assert (errors_a[0].code, errors_b[0].code) == (53118, 53118)
    assert alice.state == bob.state == "disconnected"


async def test_rest_removal_disconnects_that_participant_only(server, join):
    alice, bob = await join("alice", room="kick"), await join("bob", room="kick")
    errors_a, errors_b = disconnects(alice), disconnects(bob)
    left: list = []
    alice.on("participant_disconnected", lambda p: left.append(p.identity))
    client = server.twilio_client()
    await asyncio.to_thread(lambda: client.video.v1.rooms("kick").participants("bob").update(status="disconnected"))
    await eventually(lambda: errors_b and left)
    assert errors_b[0].code == 53204 and "removed" in errors_b[0].message
    assert left == ["bob"] and errors_a == [] and alice.state == "connected"


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (lambda s: "garbage", 20101),
        (lambda s: s.token("alice", ttl=1)[:-4] + "AAAA", 20107),
        (
            lambda s: roomlab.server.auth.mint_access_token(
                roomlab.server.auth.Credentials(s.account_sid, "SK" + "0" * 32, s.api_secret), "alice"
            ),
            20103,
        ),
        (lambda s: AccessToken(s.account_sid, s.api_key, s.api_secret, identity="alice", ttl=-5).to_jwt(), 20104),
        (lambda s: AccessToken(s.account_sid, s.api_key, s.api_secret, identity="alice").to_jwt(), 20106),
        (lambda s: s.token("alice", room="somewhere-else"), 20106),
    ],
)
async def test_token_refusals(server, make_token, code):
    with pytest.raises(roomlab.RoomError) as refused:
        await roomlab.connect(server.url, make_token(server), name="guarded")
    assert refused.value.code == code
    assert refused.value.message
    client = server.twilio_client()
    # nothing of the room was created or revealed
    assert await asyncio.to_thread(lambda: client.video.v1.rooms.list(unique_name="guarded")) == []


async def test_token_from_twilio_helper_with_room_grant_joins(server, rooms_to_close):
    token = AccessToken(server.account_sid, server.api_key, server.api_secret, identity="dana")
    token.add_grant(VideoGrant(room="granted"))
    room = await roomlab.connect(server.url, token.to_jwt())  # the room comes from the grant
    rooms_to_close.append(room)
    assert room.name == "granted" and room.local_participant.identity == "dana"


async def test_automatic_subscription_false_and_live_subscribe_rules(server, join):
    alice = await join("alice", room="rules")
    bob = await join("bob", room="rules", automatic_subscription=False)
    await alice.local_participant.publish_track(roomlab.LocalDataTrack("a-track"))
    publication = await eventually(lambda: next(iter(next(iter(bob.participants.values())).tracks.values()), None))
    await asyncio.sleep(0.2)
    assert publication.track is None  # published, not subscribed
    client = server.twilio_client()
    rules = client.video.v1.rooms("rules").participants("bob").subscribe_rules
    await asyncio.to_thread(lambda: rules.update(rules=[{"type": "include", "publisher": "alice"}]))
    assert await eventually(lambda: publication.track is not None)
    unsubscribed: list = []
    bob.on("track_unsubscribed", lambda track, pub, participant: unsubscribed.append(track.name))
    await asyncio.to_thread(lambda: rules.update(rules=[{"type": "exclude", "all": True}]))
    await eventually(lambda: unsubscribed)
    assert unsubscribed == ["a-track"] and publication.track is None


#: A short reconnect window, so that a vanished participant is removed within the test's time.
WINDOW = 1.0


async def test_killed_client_process_is_reconnecting_then_removed(receiver):
    """A client whose process dies (its socket closes without a goodbye) may be a client whose
    network broke: it is `reconnecting` at once, and removed when the reconnect window closes."""
    with roomlab.serve(reconnect_window=WINDOW, callback_policy=FAST_CALLBACKS) as server:
        client = server.twilio_client()
        await asyncio.to_thread(
            lambda: client.video.v1.rooms.create(unique_name="fragile", status_callback=receiver.url)
        )
        watcher = await roomlab.connect(server.url, server.token("watcher"), name="fragile")
        seen: list = []
        watcher.on("participant_reconnecting", lambda p: seen.append(("reconnecting", p.identity, time.monotonic())))
        watcher.on("participant_disconnected", lambda p: seen.append(("disconnected", p.identity, time.monotonic())))
        script = Path(__file__).parent / "clients" / "join_and_wait.py"
        process = subprocess.Popen(
            [sys.executable, str(script), server.url, server.token("doomed"), "fragile"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = await asyncio.to_thread(process.stdout.readline)  # type: ignore[union-attr]
            assert line.startswith("joined PA")
            doomed_sid = line.split()[1]
            await eventually(lambda: any(p.identity == "doomed" for p in watcher.participants.values()))
            killed_at = time.monotonic()
            os.kill(process.pid, signal.SIGKILL)
            await eventually(lambda: len(seen) == 2, timeout=10)
            assert [(what, who) for what, who, _ in seen] == [("reconnecting", "doomed"), ("disconnected", "doomed")]
            assert seen[0][2] - killed_at < 1 and WINDOW <= seen[1][2] - killed_at < WINDOW + 2.5
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
        # room-created, two participant-connected, track-added, track-removed, participant-disconnected
        got = await asyncio.to_thread(receiver.wait_for, 6)
        left = [r.form for r in got if r.form["StatusCallbackEvent"] == "participant-disconnected"]
        assert [f["ParticipantIdentity"] for f in left] == ["doomed"]
        removed = [r.form for r in got if r.form["StatusCallbackEvent"] == "track-removed"]
        assert [f["TrackName"] for f in removed] == ["heartbeat"]
        events = server.frame("events")
        doomed = events[(events["participant"] == doomed_sid) & events["event"].str.startswith("participant-")]
        codes = [None if pd.isna(code) else int(code) for code in doomed["code"]]
        assert list(zip(doomed["event"], codes, strict=True)) == [
            ("participant-connected", None),
            ("participant-reconnecting", 53001),
            ("participant-disconnected", 53001),
        ]
        await watcher.disconnect()


async def test_frozen_client_is_removed_by_the_heartbeat():
    """A client that stops answering without closing its socket (SIGSTOP) is found by the
    heartbeat (WebSocket ping every 5 s, gone when a pong is 2.5 s late), `reconnecting`, and
    removed when the reconnect window closes: within 7.5 s plus the window."""
    with roomlab.serve(reconnect_window=WINDOW) as server:
        watcher = await roomlab.connect(server.url, server.token("watcher"), name="frozen")
        departures: list = []
        watcher.on("participant_disconnected", lambda p: departures.append(p.identity))
        script = Path(__file__).parent / "clients" / "join_and_wait.py"
        process = subprocess.Popen(
            [sys.executable, str(script), server.url, server.token("sleepy"), "frozen"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert (await asyncio.to_thread(process.stdout.readline)).startswith("joined")  # type: ignore[union-attr]
            os.kill(process.pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            await eventually(lambda: departures, timeout=15)
            assert departures == ["sleepy"]
            assert time.monotonic() - stopped_at <= 10 + WINDOW + 0.5
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        await watcher.disconnect()
