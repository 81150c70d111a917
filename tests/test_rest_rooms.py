"""The Rooms resource through the official twilio library, against a real server."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import requests

from .conftest import plain_client, twilio_error

SID = re.compile(r"^RM[0-9a-f]{32}$")


def test_server_identity_has_twilio_shapes(server):
    assert re.fullmatch(r"AC[0-9a-f]{32}", server.account_sid)
    assert re.fullmatch(r"SK[0-9a-f]{32}", server.api_key)
    assert len(server.api_secret) == 32
    assert server.url.startswith("http://127.0.0.1:")


def test_create_room_has_twilio_fields(client, server):
    room = client.video.v1.rooms.create(
        unique_name="standup",
        type="group",
        max_participants=12,
        status_callback="http://127.0.0.1:1/cb",
        status_callback_method="GET",
        empty_room_timeout=7,
        unused_room_timeout=3,
        max_participant_duration=3600,
        audio_only=True,
    )
    assert SID.match(room.sid)
    assert room.unique_name == "standup"
    assert room.status == "in-progress"
    assert room.type == "group"
    assert room.max_participants == 12
    assert room.max_participant_duration == 3600
    assert room.empty_room_timeout == 7
    assert room.unused_room_timeout == 3
    assert room.status_callback == "http://127.0.0.1:1/cb"
    assert room.status_callback_method == "GET"
    assert room.audio_only is True
    assert room.account_sid == server.account_sid
    assert room.end_time is None and room.duration is None
    assert room.url == f"{server.url}/v1/Rooms/{room.sid}"
    assert room.links["participants"] == f"{room.url}/Participants"
    # the library parsed Twilio's time format into aware datetimes
    assert isinstance(room.date_created, datetime) and room.date_created.tzinfo is not None
    assert abs((datetime.now(UTC) - room.date_created).total_seconds()) < 5


def test_defaults_follow_twilio(client):
    room = client.video.v1.rooms.create()
    assert room.unique_name == room.sid
    assert room.type == "group"
    assert room.max_participants == 50
    assert room.max_participant_duration == 14400
    assert room.empty_room_timeout == 5 and room.unused_room_timeout == 5
    assert room.status_callback_method == "POST"
    assert room.video_codecs == ["VP8", "H264"]


def test_fetch_by_sid_and_by_unique_name(client):
    room = client.video.v1.rooms.create(unique_name="design-review")
    assert client.video.v1.rooms(room.sid).fetch().unique_name == "design-review"
    assert client.video.v1.rooms("design-review").fetch().sid == room.sid


def test_end_room_and_completed_rooms(client):
    room = client.video.v1.rooms.create(unique_name="retro")
    ended = client.video.v1.rooms(room.sid).update(status="completed")
    assert ended.status == "completed"
    assert ended.end_time is not None
    assert ended.duration == 0
    # a completed room is found by SID, no longer by name; its name is free again
    assert client.video.v1.rooms(room.sid).fetch().status == "completed"
    assert twilio_error(lambda: client.video.v1.rooms("retro").fetch()).code == 53106
    again = client.video.v1.rooms.create(unique_name="retro")
    assert again.sid != room.sid
    # ending it twice is refused
    assert twilio_error(lambda: client.video.v1.rooms(room.sid).update(status="completed")).code == 53112


def test_list_filters(client):
    a = client.video.v1.rooms.create(unique_name="alpha")
    b = client.video.v1.rooms.create(unique_name="beta")
    client.video.v1.rooms(b.sid).update(status="completed")
    in_progress = {r.sid for r in client.video.v1.rooms.list()}
    assert in_progress == {a.sid}  # Status defaults to in-progress
    assert {r.sid for r in client.video.v1.rooms.list(status="completed")} == {b.sid}
    assert [r.sid for r in client.video.v1.rooms.list(unique_name="alpha")] == [a.sid]
    assert client.video.v1.rooms.list(unique_name="beta") == []
    assert [r.sid for r in client.video.v1.rooms.list(status="completed", unique_name="beta")] == [b.sid]
    today = datetime.now(UTC)
    yesterday, tomorrow = today - timedelta(days=1), today + timedelta(days=1)
    assert {r.sid for r in client.video.v1.rooms.list(date_created_after=yesterday)} == {a.sid}
    assert client.video.v1.rooms.list(date_created_after=tomorrow) == []
    assert {r.sid for r in client.video.v1.rooms.list(date_created_before=tomorrow)} == {a.sid}
    assert client.video.v1.rooms.list(date_created_before=yesterday) == []


def test_paging_across_pages(client, server):
    sids = [client.video.v1.rooms.create(unique_name=f"room-{i}").sid for i in range(7)]
    # the library follows next_page_url until the last page
    listed = [r.sid for r in client.video.v1.rooms.list(page_size=3)]
    assert sorted(listed) == sorted(sids) and len(listed) == 7
    assert listed == list(reversed(sids))  # newest first
    first = client.video.v1.rooms.page(page_size=3)
    second = first.next_page()
    third = second.next_page()
    assert [len(list(p)) for p in (first, second, third)] == [3, 3, 1]
    assert third.next_page() is None
    # the raw envelope carries Twilio's meta
    body = requests.get(
        f"{server.url}/v1/Rooms", params={"PageSize": 3}, auth=(server.api_key, server.api_secret)
    ).json()
    meta = body["meta"]
    assert meta["key"] == "rooms" and meta["page"] == 0 and meta["page_size"] == 3
    assert meta["previous_page_url"] is None
    assert meta["next_page_url"].startswith(f"{server.url}/v1/Rooms?")
    assert "PageToken=PT" in meta["next_page_url"]
    # Page without a token works too (offset paging)
    page1 = requests.get(
        f"{server.url}/v1/Rooms", params={"PageSize": 3, "Page": 1}, auth=(server.api_key, server.api_secret)
    ).json()
    assert [r["sid"] for r in page1["rooms"]] == list(reversed(sids))[3:6]
    assert page1["meta"]["previous_page_url"] is not None


def test_plain_client_with_account_sid_credentials(server):
    client = plain_client(server, username=server.account_sid)
    room = client.video.v1.rooms.create(unique_name="by-account")
    assert client.video.v1.rooms(room.sid).fetch().unique_name == "by-account"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"type": "conference"}, 53108),
        ({"max_participants": 0}, 53107),
        ({"max_participants": 51}, 53107),
        ({"type": "go", "max_participants": 3}, 53107),
        ({"empty_room_timeout": 0}, 53109),
        ({"unused_room_timeout": 61}, 53109),
        ({"max_participant_duration": 86401}, 53109),
        ({"status_callback": "not a url"}, 53111),
        ({"status_callback": "http://127.0.0.1/" + "x" * 3000}, 53111),
        ({"status_callback": "http://127.0.0.1/cb", "status_callback_method": "PUT"}, 53110),
        ({"unique_name": "x" * 129}, 53101),
        ({"unique_name": "bad/name"}, 53102),
        ({"unique_name": "tab\tname"}, 53102),
        ({"video_codecs": ["AV1"]}, 53114),
    ],
)
def test_create_refusals(client, params, code):
    error = twilio_error(lambda: client.video.v1.rooms.create(**params))
    assert error.code == code
    assert error.status == 400
    assert client.video.v1.rooms.list() == []  # nothing half-created


def test_duplicate_unique_name_53113(client):
    client.video.v1.rooms.create(unique_name="daily")
    error = twilio_error(lambda: client.video.v1.rooms.create(unique_name="daily"))
    assert error.code == 53113


def test_unknown_room_53106(client):
    assert twilio_error(lambda: client.video.v1.rooms("RM" + "0" * 32).fetch()).code == 53106
    assert twilio_error(lambda: client.video.v1.rooms("no-such-room").fetch()).code == 53106
    assert twilio_error(lambda: client.video.v1.rooms("no-such-room").participants.list()).code == 53106


def test_update_status_other_than_completed_53112(client):
    room = client.video.v1.rooms.create()
    assert twilio_error(lambda: client.video.v1.rooms(room.sid).update(status="in-progress")).code == 53112
    assert client.video.v1.rooms(room.sid).fetch().status == "in-progress"


def test_bad_credentials_20003(server):
    wrong_secret = plain_client(server, password="x" * 32)
    error = twilio_error(lambda: wrong_secret.video.v1.rooms.list())
    assert (error.status, error.code) == (401, 20003)
    wrong_key = plain_client(server, username="SK" + "1" * 32)
    assert twilio_error(lambda: wrong_key.video.v1.rooms.create()).code == 20003
    response = requests.get(f"{server.url}/v1/Rooms")
    assert response.status_code == 401
    assert response.json()["code"] == 20003
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    # nothing was created by the refused calls
    assert server.twilio_client().video.v1.rooms.list() == []
