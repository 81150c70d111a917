"""Data tracks and publish_data over real WebRTC: real server, real aiortc clients."""

from __future__ import annotations

import asyncio

import pytest
import requests

import roomlab
from roomlab.protocol import framing

from .conftest import eventually


def subscribed_data_track(room: roomlab.Room, identity: str, name: str) -> roomlab.RemoteDataTrack | None:
    for participant in room.participants.values():
        if participant.identity == identity:
            for publication in participant.tracks.values():
                if publication.track_name == name and publication.track is not None:
                    return publication.track  # type: ignore[return-value]
    return None


async def test_reliable_ordered_track_delivers_every_message_in_order(join):
    alice = await join("alice")
    bob = await join("bob")
    track = roomlab.LocalDataTrack("whiteboard")
    await alice.local_participant.publish_track(track)
    remote = await eventually(lambda: subscribed_data_track(bob, "alice", "whiteboard"))
    received: list = []
    remote.on("message", received.append)
    sent = [f"stroke {i}" if i % 3 else i.to_bytes(4, "big") * (i % 7 + 1) for i in range(2000)]
    for payload in sent:
        track.send(payload)
    await eventually(lambda: len(received) >= len(sent), timeout=30)
    assert received == sent  # every one, in order, str as str and bytes as bytes
    assert {type(x) for x in received} == {str, bytes}


async def test_reliability_options_reach_the_subscriber(join):
    alice = await join("alice")
    bob = await join("bob")
    await alice.local_participant.publish_track(roomlab.LocalDataTrack("cursor", ordered=False, max_retransmits=0))
    await alice.local_participant.publish_track(roomlab.LocalDataTrack("telemetry", max_packet_life_time=250))
    await alice.local_participant.publish_track(roomlab.LocalDataTrack("chat"))
    cursor = await eventually(lambda: subscribed_data_track(bob, "alice", "cursor"))
    telemetry = await eventually(lambda: subscribed_data_track(bob, "alice", "telemetry"))
    chat = await eventually(lambda: subscribed_data_track(bob, "alice", "chat"))
    assert (cursor.ordered, cursor.max_retransmits, cursor.max_packet_life_time, cursor.reliable) == (
        False,
        0,
        None,
        False,
    )
    assert (telemetry.ordered, telemetry.max_packet_life_time, telemetry.max_retransmits) == (True, 250, None)
    assert chat.reliable and chat.ordered
    # the server's channel to the subscriber carries the same options (the second hop)
    assert (cursor._channel.ordered, cursor._channel.maxRetransmits) == (False, 0)
    assert telemetry._channel.maxPacketLifeTime == 250


def test_data_track_argument_errors():
    with pytest.raises(ValueError, match="not both"):
        roomlab.LocalDataTrack(max_packet_life_time=100, max_retransmits=3)
    with pytest.raises(ValueError, match="0 to 65535"):
        roomlab.LocalDataTrack(max_retransmits=70_000)
    with pytest.raises(ValueError, match="0 to 65535"):
        roomlab.LocalDataTrack(max_packet_life_time=-1)
    with pytest.raises(ValueError, match="ordered"):
        roomlab.LocalDataTrack(ordered="yes")  # type: ignore[arg-type]


async def test_oversized_payload_is_refused_and_the_session_goes_on(join):
    alice = await join("alice")
    bob = await join("bob")
    track = roomlab.LocalDataTrack("files")
    await alice.local_participant.publish_track(track)
    remote = await eventually(lambda: subscribed_data_track(bob, "alice", "files"))
    received: list = []
    remote.on("message", received.append)
    with pytest.raises(ValueError, match="message too large.*16384 bytes"):
        track.send(b"x" * 300_000)
    with pytest.raises(ValueError, match="message too large"):
        alice.local_participant.publish_data(b"x" * 300_000)
    track.send(b"y" * 16_384)
    track.send("after")
    await eventually(lambda: len(received) == 2)
    assert received == [b"y" * 16_384, "after"]


async def test_unpublished_track_cannot_send():
    with pytest.raises(RuntimeError, match="not published"):
        roomlab.LocalDataTrack("lonely").send("hello?")


async def test_publish_data_to_everyone_and_to_named_identities(join):
    alice, bob, carol = await join("alice"), await join("bob"), await join("carol")
    inbox: dict[str, list] = {"alice": [], "bob": [], "carol": []}
    for name, room in (("alice", alice), ("bob", bob), ("carol", carol)):
        room.on(
            "data_received",
            lambda payload, participant, topic, n=name: inbox[n].append(
                (payload, participant.identity if participant else None, topic)
            ),
        )
    alice.local_participant.publish_data("hello all", topic="chat")
    alice.local_participant.publish_data(b"psst", destination_identities=["carol"], topic="dm")
    alice.local_participant.publish_data("lossy ping", reliable=False)
    await eventually(lambda: len(inbox["carol"]) == 3 and len(inbox["bob"]) == 2)
    await asyncio.sleep(0.1)
    assert inbox["carol"] == [("hello all", "alice", "chat"), (b"psst", "alice", "dm"), ("lossy ping", "alice", None)]
    assert inbox["bob"] == [("hello all", "alice", "chat"), ("lossy ping", "alice", None)]
    assert inbox["alice"] == []  # nobody hears their own messages


async def test_data_received_on_the_remote_participant(join):
    alice, bob = await join("alice"), await join("bob")
    alice_seen_by_bob = next(iter(bob.participants.values()))
    got: list = []
    alice_seen_by_bob.on("data_received", lambda payload, topic: got.append((payload, topic)))
    alice.local_participant.publish_data("hi", topic="wave")
    assert await eventually(lambda: got) == [("hi", "wave")]


async def test_send_data_rest_extension(server, join):
    alice, bob = await join("alice", room="backend"), await join("bob", room="backend")
    inbox: list = []
    bob.on("data_received", lambda payload, participant, topic: inbox.append((payload, participant, topic)))
    alice_inbox: list = []
    alice.on("data_received", lambda payload, participant, topic: alice_inbox.append(payload))
    url = f"{server.url}/v1/Rooms/backend/SendData"
    auth = (server.api_key, server.api_secret)
    reply = await asyncio.to_thread(requests.post, url, data={"Data": "from the backend", "Topic": "ops"}, auth=auth)
    assert reply.status_code == 202 and reply.json()["recipients"] == 2
    reply = await asyncio.to_thread(
        requests.post, url, data={"Data": "AAEC", "Encoding": "base64", "DestinationIdentities": "bob"}, auth=auth
    )
    assert reply.json()["recipients"] == 1
    await eventually(lambda: len(inbox) == 2)
    assert inbox == [("from the backend", None, "ops"), (b"\x00\x01\x02", None, None)]
    assert alice_inbox == ["from the backend"]
    bad = await asyncio.to_thread(requests.post, url, data={"Data": "%%%", "Encoding": "base64"}, auth=auth)
    assert bad.status_code == 400 and bad.json()["code"] == 20001


async def test_messages_carry_sequence_and_send_time_on_the_wire(join):
    """SPEC §6: the subscriber's channel carries the publisher's seq and send time with each payload."""
    alice, bob = await join("alice"), await join("bob")
    track = roomlab.LocalDataTrack("seq")
    await alice.local_participant.publish_track(track)
    remote = await eventually(lambda: subscribed_data_track(bob, "alice", "seq"))
    raw: list = []
    remote._channel.on("message", raw.append)
    before = framing.now_us()
    for i in range(5):
        track.send(f"m{i}")
    await eventually(lambda: sum(len(framing.decode(m)) for m in raw) == 5)
    # sent in one event-loop turn, the five travel as one batch on both hops
    assert len(raw) == 1
    frames = [f for m in raw for f in framing.decode(m)]
    assert [f.seq for f in frames] == [1, 2, 3, 4, 5]
    assert all(before <= f.sent_us <= framing.now_us() for f in frames)
    assert [f.payload for f in frames] == [f"m{i}" for i in range(5)]


async def test_late_joiner_subscribes_to_existing_tracks(join):
    alice = await join("alice")
    track = roomlab.LocalDataTrack("board")
    await alice.local_participant.publish_track(track)
    bob = await join("bob")  # joins after the track was published
    remote = await eventually(lambda: subscribed_data_track(bob, "alice", "board"))
    got: list = []
    remote.on("message", got.append)
    track.send("welcome")
    assert await eventually(lambda: got) == ["welcome"]


async def test_unpublish_reaches_subscribers(join):
    alice, bob = await join("alice"), await join("bob")
    events: list = []
    bob.on("track_unpublished", lambda publication, participant: events.append(("unpublished", publication.track_name)))
    bob.on("track_unsubscribed", lambda track, publication, participant: events.append(("unsubscribed", track.name)))
    track = roomlab.LocalDataTrack("temp")
    await alice.local_participant.publish_track(track)
    await eventually(lambda: subscribed_data_track(bob, "alice", "temp"))
    await alice.local_participant.unpublish_track(track)
    await eventually(lambda: len(events) == 2)
    assert sorted(events) == [("unpublished", "temp"), ("unsubscribed", "temp")]
    assert next(iter(bob.participants.values())).tracks == {}


async def test_a_message_sent_as_soon_as_a_slow_subscriber_sees_the_track_arrives(join):
    alice = await join("alice", room="slow-open")
    track = roomlab.LocalDataTrack("board")
    await alice.local_participant.publish_track(track)
    # bob's acknowledgement of the server's channel takes 150 ms to come back: the server's end
    # is still opening when bob's end is open and bob sees the track
    bob = await join("bob", room="slow-open", link=roomlab.Link(delay_ms=150))
    got: list = []
    remote = await eventually(lambda: subscribed_data_track(bob, "alice", "board"))
    remote.on("message", got.append)
    track.send("welcome")
    track.send("to the board")
    assert await eventually(lambda: len(got) == 2, timeout=3)
    assert got == ["welcome", "to the board"]
