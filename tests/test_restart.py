"""A server restarted on the same SQLite file keeps every room's history."""

from __future__ import annotations

import sqlite3

import requests

import roomlab


def test_restart_keeps_rooms_participants_tracks_events_and_credentials(tmp_path):
    db = tmp_path / "rooms.db"
    with roomlab.serve(db=db) as first:
        client = first.twilio_client()
        done = client.video.v1.rooms.create(unique_name="finished", max_participants=8, empty_room_timeout=9)
        _, alice = first.call(first.rooms.connect, "finished", "alice")
        mic = first.call(first.rooms.publish_track, alice.sid, "mic", "audio")
        client.video.v1.rooms(done.sid).update(status="completed")
        open_room = client.video.v1.rooms.create(unique_name="still-open")
        _, bob = first.call(first.rooms.connect, "still-open", "bob")
        before = client.video.v1.rooms(done.sid).fetch()
        credentials = (first.account_sid, first.api_key, first.api_secret)
        events_before = requests.get(f"{first.url}/v1/Rooms/{done.sid}/Events", auth=credentials[1:]).json()["events"]

    with roomlab.serve(db=db) as second:
        assert (second.account_sid, second.api_key, second.api_secret) == credentials
        client = second.twilio_client()
        completed = client.video.v1.rooms.list(status="completed")
        assert [r.sid for r in completed] == [done.sid]
        after = completed[0]
        for field in (
            "sid",
            "unique_name",
            "status",
            "type",
            "max_participants",
            "empty_room_timeout",
            "date_created",
            "end_time",
            "duration",
            "account_sid",
        ):
            assert getattr(after, field) == getattr(before, field), field
        gone = client.video.v1.rooms(done.sid).participants.list()
        assert [(p.sid, p.identity, p.status) for p in gone] == [(alice.sid, "alice", "disconnected")]
        track = client.video.v1.rooms(done.sid).participants(alice.sid).published_tracks(mic.sid).fetch()
        assert (track.name, track.kind) == ("mic", "audio")
        events_after = requests.get(f"{second.url}/v1/Rooms/{done.sid}/Events", auth=credentials[1:]).json()["events"]
        assert events_after == events_before
        # the room that was open is still open; its participant left when the server stopped
        reopened = client.video.v1.rooms("still-open").fetch()
        assert reopened.sid == open_room.sid and reopened.status == "in-progress"
        assert client.video.v1.rooms(open_room.sid).participants(bob.sid).fetch().status == "disconnected"
        # and it accepts people again
        second.call(second.rooms.connect, "still-open", "carol")
        assert [p.identity for p in client.video.v1.rooms(open_room.sid).participants.list()] == ["carol"]


def test_given_credentials_win_over_stored_ones(tmp_path):
    db = tmp_path / "rooms.db"
    with roomlab.serve(db=db) as first:
        account = first.account_sid
    key, secret = "SK" + "e" * 32, "f" * 32
    with roomlab.serve(db=db, api_key=key, api_secret=secret) as second:
        assert (second.account_sid, second.api_key, second.api_secret) == (account, key, secret)
        assert second.twilio_client().video.v1.rooms.list() == []


def test_a_file_from_before_an_event_field_existed_opens_and_keeps_its_events(tmp_path):
    db = tmp_path / "rooms.db"
    with roomlab.serve(db=db) as first:
        room = first.twilio_client().video.v1.rooms.create(unique_name="old")
        auth = (first.api_key, first.api_secret)
    with sqlite3.connect(db) as old:
        old.execute("ALTER TABLE events DROP COLUMN detail")  # as roomlab 0.1.0 wrote it
    with roomlab.serve(db=db) as second:
        events = requests.get(f"{second.url}/v1/Rooms/{room.sid}/Events", auth=auth).json()["events"]
        assert [(e["event"], e["detail"]) for e in events] == [("room-created", None)]
        second.twilio_client().video.v1.rooms(room.sid).update(status="completed")
        events = requests.get(f"{second.url}/v1/Rooms/{room.sid}/Events", auth=auth).json()["events"]
        assert [e["event"] for e in events] == ["room-created", "room-ended"]
