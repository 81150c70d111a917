"""Headless Chromium with roomlab.js against a real roomlab server and an aiortc Python client:
data-track messages both ways and publish_data, through the server's forwarding path, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import pytest

import roomlab

from .browser import Chromium, Page
from .conftest import eventually
from .test_data_tracks import subscribed_data_track

ROOM = "browser-room"
COUNT = 200


@pytest.fixture
def web_root(server: roomlab.Server) -> str:
    """The browser client and its pages, as the roomlab server serves them."""
    return f"{server.url}/web/"


@pytest.fixture
async def chromium() -> AsyncIterator[Chromium]:
    browser = await Chromium.launch()
    yield browser
    await browser.close()


def payload(i: int) -> str | bytes:
    """Message i of a run: text and binary alternate in an irregular pattern, with non-ASCII text."""
    return f"message {i} ✓" if i % 3 else bytes([i % 256, 0, 255]) * (i % 5 + 1)


async def page_eventually(page: Page, expression: str, predicate, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    """Evaluate `expression` in the page until `predicate(value)` holds; return the last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await page.evaluate(expression)
        if predicate(value) or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.05)


async def server_ice(server: roomlab.Server, identity: str) -> tuple[tuple, set[str]]:
    """The server's ICE view of `identity`'s connection: the nominated pair (local, remote address)
    and the addresses of every remote candidate it knows, peer-reflexive ones included."""

    async def inspect() -> tuple[tuple, set[str]]:
        session = next(s for s in server.sfu.sessions.values() if s.participant.identity == identity)
        ice = session.pc.sctp.transport.transport._connection  # aioice's Connection
        pair = ice._nominated[1]
        return (pair.local_addr, pair.remote_addr), {c.host for c in ice._remote_candidates}

    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(inspect(), server._loop))


async def test_chromium_and_python_exchange_data_through_the_server(server, join, web_root, chromium):
    from_python = roomlab.LocalDataTrack("from-python")
    py = await join("py", room=ROOM, tracks=[from_python])
    query = {"url": server.url, "token": server.token("chromium"), "room": ROOM, "identity": "chromium"}
    page = await chromium.open(f"{web_root}test-page.html?{urlencode(query)}")
    await page_eventually(page, "typeof window.ready", lambda kind: kind == "object")  # the module has run
    joined = await page.evaluate("window.ready", timeout=15)
    assert joined["identity"] == "chromium" and joined["room"] == ROOM

    # each side subscribes to the other's track, through the server
    remote = await eventually(lambda: subscribed_data_track(py, "chromium", "from-chromium"), timeout=10)
    assert remote is not None, "the Python client never subscribed to from-chromium"
    subscribed = await page_eventually(page, "window.subscribedTracks()", lambda names: "py/from-python" in names)
    assert subscribed == ["py/from-python"], page.console

    py_received: list[str | bytes] = []
    remote.on("message", py_received.append)
    py_data: list[tuple[str | bytes, str | None, str | None]] = []
    py.on(
        "data_received",
        lambda data, participant, topic: py_data.append((data, participant and participant.identity, topic)),
    )

    sent = [payload(i) for i in range(1, COUNT + 1)]
    started_ms = time.time() * 1000
    for message in sent:
        from_python.send(message)
    as_js = [m if isinstance(m, str) else list(m) for m in sent]
    seqs = await page.evaluate(f"{json.dumps(as_js)}.map(m => window.sendOnTrack(m))")
    assert seqs == list(range(1, COUNT + 1))
    await page.evaluate("window.room.localParticipant.publishData('hello from chromium', {topic: 'chat'})")
    py.local_participant.publish_data(b"\x00hello browser", topic="greetings")

    # Python -> server -> Chromium: every message, in order, text as text and bytes as bytes, seq 1..200
    got = await page_eventually(page, "window.receivedForTest()", lambda received: len(received) >= COUNT)
    assert [r["seq"] for r in got] == list(range(1, COUNT + 1)), page.console
    assert {(r["track"], r["from"]) for r in got} == {("from-python", "py")}
    assert [r["text"] if "text" in r else bytes(r["bytes"]) for r in got] == sent
    assert all(started_ms - 50 < r["sentMs"] < time.time() * 1000 for r in got)  # the frames' send times
    # the Python client and the server batch frames: Chromium decoded several per data-channel message
    channel_messages = await page.evaluate(
        "[...window.room.participants.values()][0].tracks.values().next().value.track.channelMessagesReceived"
    )
    assert 0 < channel_messages < COUNT

    # Chromium -> server -> Python: the same, with the frames' seq from the Python client's telemetry
    await eventually(lambda: len(py_received) >= COUNT and py_data, timeout=10)
    assert py_received == sent
    messages = py.frame("messages")
    on_track = messages[messages["track"] == "from-chromium"]
    assert list(on_track["seq"]) == list(range(1, COUNT + 1))
    assert set(on_track["publisher"]) == {"chromium"}
    assert (on_track["latency_ms"] > -50).all() and (on_track["latency_ms"] < 10_000).all()  # send times decoded
    assert py_data == [("hello from chromium", "chromium", "chat")]

    # publish_data from Python reaches Chromium with its sender and topic
    data = await page_eventually(page, "window.dataReceived.map(d => ({...d, payload: null}))", bool)
    assert len(data) == 1 and data[0]["from"] == "py" and data[0]["topic"] == "greetings" and data[0]["seq"] == 1
    assert await page.evaluate("new Uint8Array(window.dataReceived[0].payload)[0] === 0")

    # ICE ran over 127.0.0.1 alone. Chromium's selected pair: its own 127.0.0.1 candidate, and the
    # server's 127.0.0.1 candidate (learned as peer-reflexive, so Chromium redacts its address in
    # stats: it is matched by port with the candidates the server offered).
    pair = await page.evaluate("window.room.getSelectedCandidatePair()")
    assert pair["local"]["address"] == "127.0.0.1" and pair["remote"]["offeredAddress"] == "127.0.0.1", pair
    answer = await page.evaluate("window.room._lastAnswer")
    addresses = {line.split()[4] for line in answer.splitlines() if line.startswith("a=candidate:")}
    assert addresses == {"127.0.0.1"} and not re.search(r"\.local\b", answer)
    # ...and the server's: the pair it nominated, and every address Chromium's checks came from
    nominated, remotes = await server_ice(server, "chromium")
    assert nominated == (("127.0.0.1", pair["remote"]["port"]), ("127.0.0.1", pair["local"]["port"]))
    assert remotes == {"127.0.0.1"}

    # the server saw the browser join, as it sees any participant
    events = server.frame("events")
    joined_events = events[(events["event"] == "participant-connected") & (events["identity"] == "chromium")]
    assert len(joined_events) == 1 and set(joined_events["room"]) == {ROOM}

    # leaving: the server gets `leave` (no error code), and the Python client sees Chromium go
    await page.evaluate("window.room.disconnect()")
    await eventually(lambda: not py.participants, timeout=5)
    assert not py.participants
    events = server.frame("events")
    left = events[(events["event"] == "participant-disconnected") & (events["identity"] == "chromium")]
    assert len(left) == 1 and left["code"].isna().all(), left
