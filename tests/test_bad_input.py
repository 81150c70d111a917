"""Bad input gets Twilio-shaped JSON errors, never a 500 or a traceback, and changes nothing."""

from __future__ import annotations

import pytest
import requests


def call(server, method: str, path: str, **kwargs) -> requests.Response:  # type: ignore[no-untyped-def]
    kwargs.setdefault("auth", (server.api_key, server.api_secret))
    return requests.request(method, f"{server.url}{path}", timeout=10, **kwargs)


def assert_twilio_error(response: requests.Response, status: int, code: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "more_info", "status"}
    assert body["code"] == code and body["status"] == status
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert "Traceback" not in response.text and body["message"]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"MaxParticipants": "ten"}, 53107),
        ({"EmptyRoomTimeout": "5.5"}, 53109),
        ({"UnusedRoomTimeout": ""}, None),  # empty means "not given"
        ({"MaxParticipantDuration": "forever"}, 53109),
        ({"AudioOnly": "maybe"}, 20001),
        ({"UniqueName": "x" * 10_000}, 53101),
        ({"StatusCallback": "ftp://127.0.0.1/cb"}, 53111),
    ],
)
def test_malformed_room_fields(server, data, code):
    response = call(server, "POST", "/v1/Rooms", data=data)
    if code is None:
        assert response.status_code == 201
    else:
        assert_twilio_error(response, 400, code)


def test_body_that_is_not_a_form(server):
    response = call(
        server, "POST", "/v1/Rooms", data='{"UniqueName": "json"}', headers={"Content-Type": "application/json"}
    )
    assert_twilio_error(response, 400, 20001)
    response = call(
        server,
        "POST",
        "/v1/Rooms",
        data=b"\xff\xfe=\xff",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code in (201, 400)  # undecodable bytes are replaced or refused, never a 500
    assert "code" in response.json() or "sid" in response.json()


def test_oversized_body(server):
    response = call(server, "POST", "/v1/Rooms", data={"UniqueName": "x" * (2 * 1024 * 1024)})
    assert_twilio_error(response, 413, 20001)
    assert call(server, "GET", "/v1/Rooms").json()["rooms"] == []


def test_unknown_paths_methods_and_sids(server):
    assert_twilio_error(call(server, "GET", "/v1/Nowhere"), 404, 20404)
    assert_twilio_error(call(server, "DELETE", "/v1/Rooms"), 405, 20004)
    assert_twilio_error(call(server, "GET", "/v1/Rooms/RM" + "f" * 32), 404, 53106)
    room = call(server, "POST", "/v1/Rooms", data={}).json()
    assert_twilio_error(call(server, "GET", f"/v1/Rooms/{room['sid']}/Participants/PA{'0' * 32}"), 404, 53204)
    assert_twilio_error(call(server, "GET", f"/v1/Rooms/{room['sid']}/Participants/x/PublishedTracks"), 404, 53204)


@pytest.mark.parametrize(
    "params",
    [
        {"PageSize": "0"},
        {"PageSize": "1001"},
        {"PageSize": "many"},
        {"Page": "-1"},
        {"PageToken": "garbage"},
        {"Status": "sleeping"},
        {"DateCreatedAfter": "last tuesday"},
    ],
)
def test_bad_list_parameters(server, params):
    assert_twilio_error(call(server, "GET", "/v1/Rooms", params=params), 400, 20001)


@pytest.mark.parametrize(
    "auth",
    [
        None,
        ("", ""),
        ("SK" + "0" * 32, "x"),
    ],
)
def test_auth_refusals(server, auth):
    response = requests.get(f"{server.url}/v1/Rooms", auth=auth, timeout=10)
    assert_twilio_error(response, 401, 20003)


def test_garbage_authorization_headers(server):
    for header in ("Basic !!!", "Bearer abc", "Basic " + "QUJD"):
        response = requests.get(f"{server.url}/v1/Rooms", headers={"Authorization": header}, timeout=10)
        assert_twilio_error(response, 401, 20003)


def test_index_needs_no_credentials(server):
    body = requests.get(server.url, timeout=10).json()
    assert body["name"] == "roomlab" and body["api"] == f"{server.url}/v1"
