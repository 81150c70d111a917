"""Malformed signaling from one connection gets a clear error on that connection only; the
participants around it go on exchanging data."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

import roomlab
from roomlab.protocol import signaling

from .conftest import eventually


@pytest.fixture
async def healthy_pair(join):
    """Two participants exchanging data; `check()` proves their session still works."""
    alice, bob = await join("alice", room="shared"), await join("bob", room="shared")
    track = roomlab.LocalDataTrack("pulse")
    await alice.local_participant.publish_track(track)
    remote = await eventually(
        lambda: next((p.track for x in bob.participants.values() for p in x.tracks.values() if p.track), None)
    )
    got: list = []
    remote.on("message", got.append)

    async def check() -> None:
        before = len(got)
        track.send(f"still alive {before}")
        await eventually(lambda: len(got) > before)
        assert got[-1] == f"still alive {before}"
        assert alice.state == bob.state == "connected"

    return check


async def raw_socket(server: roomlab.Server) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(server.url.replace("http", "ws") + signaling.PATH)
    return session, ws


async def next_json(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 5.0) -> dict:
    while True:
        frame = await ws.receive(timeout=timeout)
        assert frame.type == aiohttp.WSMsgType.TEXT, frame
        message = json.loads(frame.data)
        if message["type"] == kind:
            return message


async def joined_raw(
    server: roomlab.Server, identity: str
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    session, ws = await raw_socket(server)
    await ws.send_str(json.dumps({"type": "connect", "version": 1, "token": server.token(identity), "room": "shared"}))
    await next_json(ws, "connected")
    await next_json(ws, "offer")
    return session, ws


async def test_garbage_before_connect_is_refused(server, healthy_pair):
    session, ws = await raw_socket(server)
    try:
        await ws.send_str("{not json")
        error = await next_json(ws, "error")
        assert error["code"] == 53004 and "not valid JSON" in error["message"]
        assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    finally:
        await session.close()
    await healthy_pair()


async def test_wrong_protocol_version_is_refused(server):
    session, ws = await raw_socket(server)
    try:
        await ws.send_str(json.dumps({"type": "connect", "version": 99, "token": server.token("x"), "room": "v"}))
        error = await next_json(ws, "error")
        assert error["code"] == 53004 and "version 99" in error["message"]
    finally:
        await session.close()


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ("][", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"type": "teleport"}), "unknown type 'teleport'"),
        (json.dumps({"kind": "publish"}), "unknown type None"),
        (json.dumps({"type": "publish", "ref": 1, "name": 5, "kind": "data"}), "publish.name must be str"),
        (json.dumps({"type": "publish", "ref": True, "name": "x", "kind": "data"}), "publish.ref must be int"),
        (json.dumps({"type": "publish", "ref": 2, "name": "x", "kind": "smell"}), "Track kind must be one of"),
        (
            json.dumps(
                {
                    "type": "publish",
                    "ref": 3,
                    "name": "x",
                    "kind": "data",
                    "options": {"max_retransmits": 1, "max_packet_life_time": 1},
                }
            ),
            "not both",
        ),
        (json.dumps({"type": "unpublish", "sid": "MT" + "0" * 32}), "not a track you published"),
        (json.dumps({"type": "connect", "version": 1, "token": "t"}), "already connected"),
    ],
)
async def test_bad_messages_get_errors_and_the_session_goes_on(server, healthy_pair, message, words):
    session, ws = await joined_raw(server, "mallory")
    try:
        await ws.send_str(message)
        error = await next_json(ws, "error")
        assert error["code"] in (53004, 53300)
        assert words in error["message"]
        await ws.send_str(json.dumps({"type": "ping"}))
        assert (await next_json(ws, "pong"))["type"] == "pong"  # the bad client's own session continues too
    finally:
        await session.close()
    await healthy_pair()


async def test_invalid_sdp_answer_gets_53403_and_a_fresh_offer(server, healthy_pair):
    session, ws = await raw_socket(server)
    try:
        await ws.send_str(json.dumps({"type": "connect", "version": 1, "token": server.token("sdp"), "room": "shared"}))
        await next_json(ws, "connected")
        await next_json(ws, "offer")
        await ws.send_str(json.dumps({"type": "answer", "sdp": "this is not SDP"}))
        error = await next_json(ws, "error")
        assert error["code"] == 53403
        again = await next_json(ws, "offer")
        assert again["sdp"].startswith("v=0")
    finally:
        await session.close()
    await healthy_pair()


async def test_oversized_and_binary_frames(server, healthy_pair):
    session, ws = await joined_raw(server, "bulky")
    try:
        await ws.send_str(json.dumps({"type": "ping", "padding": "x" * (signaling.MAX_MESSAGE_BYTES + 10)}))
        error = await next_json(ws, "error")
        assert error["code"] == 53004 and "exceeds the limit" in error["message"]
        await ws.send_bytes(b"\x00\x01")
        error = await next_json(ws, "error")
        assert "binary" in error["message"]
        try:
            await ws.send_str("x" * (8 * 1024 * 1024))  # beyond what the server reads at all: the socket closes
        except ConnectionError:
            pass
        closed = await ws.receive(timeout=5)
        while closed.type == aiohttp.WSMsgType.TEXT:
            closed = await ws.receive(timeout=5)
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    finally:
        await session.close()
    await healthy_pair()


async def test_flood_closes_only_the_flooding_connection(server, healthy_pair):
    session, ws = await joined_raw(server, "flooder")
    try:
        for _ in range(1000):
            await ws.send_str('{"type":"ping"}')
        error = await next_json(ws, "error", timeout=10)
        assert error["code"] == 53004 and "burst" in error["message"]
        goodbye = await next_json(ws, "disconnected", timeout=10)
        assert goodbye["code"] == 53004
    finally:
        await session.close()
    client = server.twilio_client()
    flooder = await asyncio.to_thread(lambda: client.video.v1.rooms("shared").participants.list(identity="flooder"))
    assert flooder == []
    await healthy_pair()


async def test_connect_timeout(server, monkeypatch):
    monkeypatch.setattr(roomlab.server.signaling, "CONNECT_TIMEOUT", 0.2)
    session, ws = await raw_socket(server)
    try:
        error = await next_json(ws, "error")
        assert error["code"] == 53002
    finally:
        await session.close()


async def test_answer_without_offer_is_an_error_for_that_client_only(join, healthy_pair):
    carol = await join("carol", room="shared")
    errors: list = []
    carol.on("error", errors.append)
    carol._send({"type": "answer", "sdp": "v=0"})
    await eventually(lambda: errors)
    assert errors[0].code == 53004 and "without a pending offer" in errors[0].message
    assert carol.state == "connected"
    carol.local_participant.publish_data("carol is fine")
    await healthy_pair()
