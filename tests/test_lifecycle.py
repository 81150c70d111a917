"""Room and participant timeouts, on a clock the test moves forward."""

from __future__ import annotations

from roomlab.server.model import RoomEvent


def expire(server) -> None:  # type: ignore[no-untyped-def]
    server.call(server.rooms.expire)


def test_unused_room_ends_after_unused_room_timeout(clocked_server, clock):
    client = clocked_server.twilio_client()
    room = client.video.v1.rooms.create(unique_name="nobody-came", unused_room_timeout=2)
    clock.advance(119)
    expire(clocked_server)
    assert client.video.v1.rooms(room.sid).fetch().status == "in-progress"
    clock.advance(2)
    expire(clocked_server)
    ended = client.video.v1.rooms(room.sid).fetch()
    assert ended.status == "completed"
    assert ended.duration == 121


def test_used_room_ignores_unused_timeout_and_ends_after_empty_timeout(clocked_server, clock):
    client = clocked_server.twilio_client()
    room = client.video.v1.rooms.create(unique_name="meeting", unused_room_timeout=1, empty_room_timeout=3)
    clocked_server.call(clocked_server.rooms.connect, "meeting", "alice")
    clock.advance(600)
    expire(clocked_server)
    assert client.video.v1.rooms(room.sid).fetch().status == "in-progress"
    client.video.v1.rooms(room.sid).participants("alice").update(status="disconnected")
    clock.advance(179)
    expire(clocked_server)
    assert client.video.v1.rooms(room.sid).fetch().status == "in-progress"
    # someone rejoining resets the empty timer
    clocked_server.call(clocked_server.rooms.connect, "meeting", "bob")
    clock.advance(300)
    expire(clocked_server)
    assert client.video.v1.rooms(room.sid).fetch().status == "in-progress"
    client.video.v1.rooms(room.sid).participants("bob").update(status="disconnected")
    clock.advance(180)
    expire(clocked_server)
    assert client.video.v1.rooms(room.sid).fetch().status == "completed"


def test_participant_removed_after_max_participant_duration(clocked_server, clock):
    client = clocked_server.twilio_client()
    room = client.video.v1.rooms.create(unique_name="long", max_participant_duration=600)
    _, alice = clocked_server.call(clocked_server.rooms.connect, "long", "alice")
    clock.advance(300)
    _, bob = clocked_server.call(clocked_server.rooms.connect, "long", "bob")
    clock.advance(300)
    expire(clocked_server)
    assert [p.identity for p in client.video.v1.rooms(room.sid).participants.list()] == ["bob"]
    gone = client.video.v1.rooms(room.sid).participants(alice.sid).fetch()
    assert (gone.status, gone.duration) == ("disconnected", 600)
    events = clocked_server.call(lambda: clocked_server.store.select(RoomEvent, {"room_sid": room.sid}).records)
    assert [(e.participant_sid, e.code) for e in events if e.name == "participant-disconnected"] == [(alice.sid, 53216)]


def test_rooms_end_after_24_hours(clocked_server, clock):
    client = clocked_server.twilio_client()
    room = client.video.v1.rooms.create(unique_name="marathon")
    clocked_server.call(clocked_server.rooms.connect, "marathon", "alice")
    clock.advance(86_400)
    expire(clocked_server)
    assert client.video.v1.rooms(room.sid).fetch().status == "completed"


def test_expiry_runs_by_itself(clocked_server, clock):
    """The server checks timeouts on its own, about once a second."""
    import time

    client = clocked_server.twilio_client()
    room = client.video.v1.rooms.create(unique_name="self-expiring", unused_room_timeout=1)
    clock.advance(61)
    deadline = time.monotonic() + 5
    while client.video.v1.rooms(room.sid).fetch().status != "completed" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.video.v1.rooms(room.sid).fetch().status == "completed"
