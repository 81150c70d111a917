"""Status callbacks, received by a real HTTP server and validated with twilio's RequestValidator."""

from __future__ import annotations

import threading
import time

import requests
from twilio.request_validator import RequestValidator

import roomlab
from roomlab.server.callbacks import DeliveryPolicy

from .conftest import CallbackReceiver


def deliveries(server, room_sid: str) -> list[dict]:  # type: ignore[no-untyped-def]
    url = f"{server.url}/v1/Rooms/{room_sid}/CallbackDeliveries"
    return requests.get(url, params={"PageSize": 1000}, auth=(server.api_key, server.api_secret)).json()[
        "callback_deliveries"
    ]


def wait_until(predicate, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return predicate()


def test_every_event_is_sent_with_twilio_parameters_and_a_valid_signature(server, client, receiver):
    room = client.video.v1.rooms.create(unique_name="callbacks", status_callback=receiver.url)
    _, alice = server.call(server.rooms.connect, "callbacks", "alice")
    track = server.call(server.rooms.publish_track, alice.sid, "mic", "audio")
    server.call(server.rooms.set_track_enabled, track.sid, False)
    server.call(server.rooms.set_track_enabled, track.sid, True)
    server.call(server.rooms.unpublish_track, track.sid)
    client.video.v1.rooms(room.sid).participants("alice").update(status="disconnected")
    client.video.v1.rooms(room.sid).update(status="completed")
    got = receiver.wait_for(8)
    assert len(got) == 8
    by_sequence = sorted(got, key=lambda r: int(r.form["SequenceNumber"]))
    assert [r.form["StatusCallbackEvent"] for r in by_sequence] == [
        "room-created",
        "participant-connected",
        "track-added",
        "track-disabled",
        "track-enabled",
        "track-removed",
        "participant-disconnected",
        "room-ended",
    ]
    assert [int(r.form["SequenceNumber"]) for r in by_sequence] == list(range(1, 9))
    validator = RequestValidator(server.api_secret)
    for request in got:
        assert request.method == "POST"
        assert request.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
        assert validator.validate(request.url, request.form, request.headers["X-Twilio-Signature"])
        assert request.form["AccountSid"] == server.account_sid
        assert request.form["RoomSid"] == room.sid
        assert request.form["RoomName"] == "callbacks"
        assert request.form["RoomType"] == "group"
        assert request.form["Timestamp"].endswith("Z")
    connected = by_sequence[1].form
    assert connected["ParticipantSid"] == alice.sid
    assert connected["ParticipantIdentity"] == "alice"
    assert connected["ParticipantStatus"] == "connected"
    added = by_sequence[2].form
    assert (added["TrackSid"], added["TrackKind"], added["TrackName"]) == (track.sid, "audio", "mic")
    left = by_sequence[6].form
    assert left["ParticipantStatus"] == "disconnected" and left["ParticipantDuration"] == "0"
    ended = by_sequence[7].form
    assert ended["RoomStatus"] == "completed" and ended["RoomDuration"] == "0"
    assert "ParticipantSid" not in ended
    # a tampered parameter fails validation: the signature really covers the parameters
    forged = {**connected, "ParticipantIdentity": "mallory"}
    assert not validator.validate(by_sequence[1].url, forged, by_sequence[1].headers["X-Twilio-Signature"])
    recorded = wait_until(lambda: len(deliveries(server, room.sid)) == 8 and deliveries(server, room.sid))
    assert {d["outcome"] for d in recorded} == {"delivered"}
    assert {d["status"] for d in recorded} == {200}


def test_get_callbacks_sign_the_full_url(server, client, receiver):
    room = client.video.v1.rooms.create(status_callback=receiver.url + "?tenant=7", status_callback_method="GET")
    request = receiver.wait_for(1)[0]
    assert request.method == "GET"
    assert "tenant=7" in request.url and f"RoomSid={room.sid}" in request.url
    assert RequestValidator(server.api_secret).validate(request.url, {}, request.headers["X-Twilio-Signature"])


def test_dead_receiver_is_retried_and_recorded_without_slowing_the_room(server, client):
    dead = "http://127.0.0.1:9/status"  # discard port: nothing listens
    room = client.video.v1.rooms.create(unique_name="dead-end", status_callback=dead)
    for i in range(5):
        server.call(server.rooms.connect, "dead-end", f"bot-{i}")
    assert len(client.video.v1.rooms(room.sid).participants.list()) == 5
    attempts = wait_until(lambda: len(deliveries(server, room.sid)) >= 18 and deliveries(server, room.sid))
    created = [d for d in attempts if d["sequence_number"] == 1]
    assert [d["attempt"] for d in created] == [1, 2, 3]  # DeliveryPolicy(attempts=3)
    assert [d["outcome"] for d in created] == ["retrying", "retrying", "failed"]
    assert all(d["status"] is None and "Connect" in d["error"] for d in created)
    assert len({d["sequence_number"] for d in attempts}) == 6


def test_slow_receiver_does_not_hold_the_room():
    """The receiver holds every request open; REST calls still complete while it holds them."""
    hold = threading.Event()
    slow = CallbackReceiver(hold=hold).start()
    policy = DeliveryPolicy(attempts=1, timeout=30.0)
    try:
        with roomlab.serve(callback_policy=policy) as server:
            client = server.twilio_client()
            room = client.video.v1.rooms.create(unique_name="slow", status_callback=slow.url)
            for i in range(3):
                server.call(server.rooms.connect, "slow", f"p{i}")
            client.video.v1.rooms(room.sid).update(status="completed")
            # all eight events reached the receiver, and none of them has been answered yet
            assert len(slow.wait_for(8)) == 8
            assert not hold.is_set()
            assert deliveries(server, room.sid) == []
            hold.set()
            done = wait_until(lambda: len(deliveries(server, room.sid)) == 8 and deliveries(server, room.sid))
            assert {d["outcome"] for d in done} == {"delivered"}
    finally:
        slow.stop()


def test_receiver_errors_are_retried_then_failed(server, client):
    failing = CallbackReceiver(status=503).start()
    try:
        room = client.video.v1.rooms.create(status_callback=failing.url)
        assert len(failing.wait_for(3)) == 3
        recorded = wait_until(lambda: len(deliveries(server, room.sid)) == 3 and deliveries(server, room.sid))
        assert [d["status"] for d in recorded] == [503, 503, 503]
        assert recorded[-1]["outcome"] == "failed"
    finally:
        failing.stop()


def test_rooms_without_status_callback_send_nothing(server, client, receiver):
    room = client.video.v1.rooms.create(unique_name="quiet")
    server.call(server.rooms.connect, "quiet", "alice")
    client.video.v1.rooms.create(unique_name="loud", status_callback=receiver.url)
    assert [r.form["RoomName"] for r in receiver.wait_for(1)] == ["loud"]
    assert deliveries(server, room.sid) == []
