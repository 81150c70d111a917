"""Participants, tracks and subscribe rules: joined through the domain model (the media plane
comes later), read and changed through the official twilio library."""

from __future__ import annotations

import json
import re

import pytest
import requests

from roomlab.server.model import Participant, RoomEvent

from .conftest import twilio_error


def join(server, room: str, identity: str, **options) -> Participant:  # type: ignore[no-untyped-def]
    _, participant = server.call(server.rooms.connect, room, identity, **options)
    return participant


def publish(server, participant: Participant, name: str, kind: str):  # type: ignore[no-untyped-def]
    return server.call(server.rooms.publish_track, participant.sid, name, kind)


def events(server, room_sid: str) -> list[RoomEvent]:
    return server.call(lambda: server.store.select(RoomEvent, {"room_sid": room_sid}).records)


def test_participants_list_fetch_and_fields(server, client):
    room = client.video.v1.rooms.create(unique_name="class")
    alice = join(server, "class", "alice")
    bob = join(server, room.sid, "bob")
    listed = client.video.v1.rooms(room.sid).participants.list()
    assert {p.identity for p in listed} == {"alice", "bob"}
    fetched = client.video.v1.rooms("class").participants("alice").fetch()
    assert re.fullmatch(r"PA[0-9a-f]{32}", fetched.sid)
    assert fetched.sid == alice.sid
    assert fetched.room_sid == room.sid
    assert fetched.status == "connected"
    assert fetched.start_time is not None and fetched.end_time is None and fetched.duration is None
    assert fetched.url == f"{server.url}/v1/Rooms/{room.sid}/Participants/{alice.sid}"
    assert client.video.v1.rooms(room.sid).participants(bob.sid).fetch().identity == "bob"
    assert [p.sid for p in client.video.v1.rooms(room.sid).participants.list(identity="bob")] == [bob.sid]


def test_kick_with_status_disconnected(server, client):
    room = client.video.v1.rooms.create(unique_name="kick")
    alice = join(server, "kick", "alice")
    join(server, "kick", "bob")
    kicked = client.video.v1.rooms(room.sid).participants("alice").update(status="disconnected")
    assert kicked.status == "disconnected"
    assert kicked.end_time is not None and kicked.duration == 0
    connected = client.video.v1.rooms(room.sid).participants.list()
    assert [p.identity for p in connected] == ["bob"]
    gone = client.video.v1.rooms(room.sid).participants.list(status="disconnected")
    assert [p.sid for p in gone] == [alice.sid]
    # by identity only connected participants are found; by SID the history stays reachable
    assert twilio_error(lambda: client.video.v1.rooms(room.sid).participants("alice").fetch()).code == 53204
    assert client.video.v1.rooms(room.sid).participants(alice.sid).fetch().status == "disconnected"
    error = twilio_error(lambda: client.video.v1.rooms(room.sid).participants("bob").update(status="connected"))
    assert error.code == 53112


def test_unknown_participant_53204(server, client):
    room = client.video.v1.rooms.create()
    assert twilio_error(lambda: client.video.v1.rooms(room.sid).participants("nobody").fetch()).code == 53204
    assert twilio_error(lambda: client.video.v1.rooms(room.sid).participants("PA" + "0" * 32).fetch()).code == 53204
    error = twilio_error(lambda: client.video.v1.rooms(room.sid).participants("nobody").update(status="disconnected"))
    assert error.code == 53204


def test_max_participants_53105_and_duplicate_identity_53205(server, client):
    room = client.video.v1.rooms.create(unique_name="small", max_participants=2)
    first_alice = join(server, "small", "alice")
    join(server, "small", "bob")
    with pytest.raises(Exception) as refused:
        join(server, "small", "carol")
    assert refused.value.code == 53105
    # the same identity again replaces the older session, which ends with 53205
    second_alice = join(server, "small", "alice")
    assert second_alice.sid != first_alice.sid
    old = client.video.v1.rooms(room.sid).participants(first_alice.sid).fetch()
    assert old.status == "disconnected"
    ended = [e for e in events(server, room.sid) if e.name == "participant-disconnected"]
    assert [(e.participant_sid, e.code) for e in ended] == [(first_alice.sid, 53205)]
    assert {p.identity for p in client.video.v1.rooms(room.sid).participants.list()} == {"alice", "bob"}


def test_ending_a_room_disconnects_everyone_with_53118(server, client):
    room = client.video.v1.rooms.create(unique_name="ending")
    a, b = join(server, "ending", "a"), join(server, "ending", "b")
    client.video.v1.rooms(room.sid).update(status="completed")
    disconnects = {e.participant_sid: e.code for e in events(server, room.sid) if e.name == "participant-disconnected"}
    assert disconnects == {a.sid: 53118, b.sid: 53118}
    # a completed room lists its participants as disconnected by default
    assert {p.sid for p in client.video.v1.rooms(room.sid).participants.list()} == {a.sid, b.sid}
    with pytest.raises(Exception) as refused:
        join(server, room.sid, "late")
    assert refused.value.code == 53118


def test_ad_hoc_room_is_created_on_join_and_ends_with_its_last_participant(server, client):
    alice = join(server, "hallway", "alice")
    room = client.video.v1.rooms("hallway").fetch()
    assert room.sid == alice.room_sid
    assert (room.empty_room_timeout, room.unused_room_timeout) == (0, 0)
    client.video.v1.rooms(room.sid).participants("alice").update(status="disconnected")
    assert client.video.v1.rooms(room.sid).fetch().status == "completed"


def test_identity_validation(server, client):
    client.video.v1.rooms.create(unique_name="names")
    for identity, code in [("", 53200), ("x" * 129, 53201), ("bell\x07", 53202)]:
        with pytest.raises(Exception) as refused:
            join(server, "names", identity)
        assert refused.value.code == code


def test_published_and_subscribed_tracks(server, client):
    room = client.video.v1.rooms.create(unique_name="tracks")
    alice, bob = join(server, "tracks", "alice"), join(server, "tracks", "bob")
    mic = publish(server, alice, "mic", "audio")
    cursor = publish(server, alice, "cursor", "data")
    published = client.video.v1.rooms(room.sid).participants(alice.sid).published_tracks.list()
    assert {(t.name, t.kind) for t in published} == {("mic", "audio"), ("cursor", "data")}
    one = client.video.v1.rooms(room.sid).participants(alice.sid).published_tracks(mic.sid).fetch()
    assert re.fullmatch(r"MT[0-9a-f]{32}", one.sid)
    assert (one.name, one.kind, one.enabled, one.room_sid) == ("mic", "audio", True, room.sid)
    # bob subscribes to everything by default; alice never to her own tracks
    subscribed = client.video.v1.rooms(room.sid).participants("bob").subscribed_tracks.list()
    assert {(t.sid, t.publisher_sid) for t in subscribed} == {(mic.sid, alice.sid), (cursor.sid, alice.sid)}
    assert client.video.v1.rooms(room.sid).participants("alice").subscribed_tracks.list() == []
    fetched = client.video.v1.rooms(room.sid).participants(bob.sid).subscribed_tracks(cursor.sid).fetch()
    assert (fetched.participant_sid, fetched.kind, fetched.name) == (bob.sid, "data", "cursor")
    # unpublishing removes the track from both lists
    server.call(server.rooms.unpublish_track, mic.sid)
    assert [t.sid for t in client.video.v1.rooms(room.sid).participants(alice.sid).published_tracks.list()] == [
        cursor.sid
    ]
    assert [t.sid for t in client.video.v1.rooms(room.sid).participants(bob.sid).subscribed_tracks.list()] == [
        cursor.sid
    ]
    missing = twilio_error(
        lambda: client.video.v1.rooms(room.sid).participants(bob.sid).subscribed_tracks("MT" + "0" * 32).fetch()
    )
    assert missing.code == 20404


def test_track_validation(server, client):
    client.video.v1.rooms.create(unique_name="validate", audio_only=True)
    alice = join(server, "validate", "alice")
    publish(server, alice, "mic", "audio")
    for name, kind, code in [
        ("mic", "audio", 53304),
        ("", "data", 53301),
        ("x" * 129, "data", 53302),
        ("cam", "video", 53125),
        ("odd", "hologram", 53300),
    ]:
        with pytest.raises(Exception) as refused:
            publish(server, alice, name, kind)
        assert refused.value.code == code


def test_subscribe_rules_fetch_update_and_reapply(server, client):
    room = client.video.v1.rooms.create(unique_name="rules")
    alice, bob, carol = (join(server, "rules", n) for n in ("alice", "bob", "carol"))
    publish(server, alice, "mic", "audio")
    publish(server, bob, "mic", "audio")
    rules = client.video.v1.rooms(room.sid).participants(carol.sid).subscribe_rules.fetch()
    assert rules.rules == [
        {"type": "include", "all": True, "kind": None, "publisher": None, "track": None, "priority": None}
    ]
    updated = (
        client.video.v1.rooms(room.sid)
        .participants(carol.sid)
        .subscribe_rules.update(rules=[{"type": "include", "all": True}, {"type": "exclude", "publisher": "bob"}])
    )
    assert [r["type"] for r in updated.rules] == ["include", "exclude"]

    def carol_sees() -> set[str]:
        tracks = client.video.v1.rooms(room.sid).participants(carol.sid).subscribed_tracks.list()
        return {t.publisher_sid for t in tracks}

    assert carol_sees() == {alice.sid}
    # rules are declarative: a track bob publishes later stays excluded, alice's new one is included
    publish(server, bob, "screen", "video")
    publish(server, alice, "cursor", "data")
    subscribed = client.video.v1.rooms(room.sid).participants(carol.sid).subscribed_tracks.list()
    assert {(t.publisher_sid, t.name) for t in subscribed} == {(alice.sid, "mic"), (alice.sid, "cursor")}
    # rules by kind and by track name
    client.video.v1.rooms(room.sid).participants(carol.sid).subscribe_rules.update(
        rules=[{"type": "include", "kind": "audio"}, {"type": "include", "track": "screen"}]
    )
    subscribed = client.video.v1.rooms(room.sid).participants(carol.sid).subscribed_tracks.list()
    assert {(t.publisher_sid, t.name) for t in subscribed} == {
        (alice.sid, "mic"),
        (bob.sid, "mic"),
        (bob.sid, "screen"),
    }


@pytest.mark.parametrize(
    "rules",
    [
        [],
        [{"type": "subscribe", "all": True}],
        [{"all": True}],
        [{"type": "include", "all": False}],
        [{"type": "include", "all": True, "kind": "audio"}],
        [{"type": "include", "kind": "smell"}],
        [{"type": "include", "colour": "red"}],
        [{"type": "include"}],
        [{"type": "include", "all": True}] * 21,
        {"type": "include", "all": True},
    ],
)
def test_invalid_subscribe_rules_53215_leave_rules_unchanged(server, client, rules):
    room = client.video.v1.rooms.create(unique_name="bad-rules")
    alice = join(server, "bad-rules", "alice")
    before = client.video.v1.rooms(room.sid).participants(alice.sid).subscribe_rules.fetch().rules
    error = twilio_error(
        lambda: client.video.v1.rooms(room.sid).participants(alice.sid).subscribe_rules.update(rules=rules)
    )
    assert error.code == 53215
    assert client.video.v1.rooms(room.sid).participants(alice.sid).subscribe_rules.fetch().rules == before


def test_subscribe_rules_not_json_53215(server, client):
    room = client.video.v1.rooms.create(unique_name="not-json")
    alice = join(server, "not-json", "alice")
    url = f"{server.url}/v1/Rooms/{room.sid}/Participants/{alice.sid}/SubscribeRules"
    response = requests.post(url, data={"Rules": "[{"}, auth=(server.api_key, server.api_secret))
    assert response.status_code == 400 and response.json()["code"] == 53215
    response = requests.post(url, data={}, auth=(server.api_key, server.api_secret))
    assert response.json()["code"] == 53215


def test_automatic_subscription_false_starts_from_exclude_all(server, client):
    room = client.video.v1.rooms.create(unique_name="manual")
    alice = join(server, "manual", "alice")
    bob = join(server, "manual", "bob", automatic_subscription=False)
    publish(server, alice, "mic", "audio")
    assert client.video.v1.rooms(room.sid).participants(bob.sid).subscribed_tracks.list() == []
    rules = client.video.v1.rooms(room.sid).participants(bob.sid).subscribe_rules.fetch().rules
    assert rules[0]["type"] == "exclude" and rules[0]["all"] is True


def test_events_extension_lists_lifecycle_in_order(server, client):
    room = client.video.v1.rooms.create(unique_name="story")
    alice = join(server, "story", "alice")
    join(server, "story", "bob")
    mic = publish(server, alice, "mic", "audio")
    server.call(server.rooms.set_track_enabled, mic.sid, False)
    client.video.v1.rooms(room.sid).update(status="completed")
    body = requests.get(f"{server.url}/v1/Rooms/{room.sid}/Events", auth=(server.api_key, server.api_secret)).json()
    names = [e["event"] for e in body["events"]]
    assert names == [
        "room-created",
        "participant-connected",
        "participant-connected",
        "track-added",
        "track-subscribed",
        "track-disabled",
        "track-removed",
        "track-unsubscribed",
        "participant-disconnected",
        "participant-disconnected",
        "room-ended",
    ]
    assert body["events"][3]["track_sid"] == mic.sid
    assert json.dumps(body)  # plain JSON all the way
