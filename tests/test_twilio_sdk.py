"""Twilio's own JavaScript SDK (twilio-video from npm, unmodified) in headless Chromium, joining a
real roomlab server beside roomlab's Python client (SPEC §16): data tracks and media both ways
through the server's forwarding plane, participant and track events, refusals with Twilio's
codes, REST and telemetry. One Chromium for the module, one tab per test, a page of the test's own
(tests/pages/twilio-video.html) that loads the SDK's browser build from the roomlab server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from aiohttp import web
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VideoGrant

import roomlab
from roomlab.web import INSTALL_TWILIO_VIDEO, twilio_video_version

from .browser import Chromium, Page
from .conftest import eventually
from .test_data_tracks import subscribed_data_track

SDK_VERSION = twilio_video_version()
pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(SDK_VERSION is None, reason=f"twilio-video is not installed: {INSTALL_TWILIO_VIDEO}"),
]

PAGES = Path(__file__).parent / "pages"
COUNT = 150
#: Data tracks published by each side: one per reliability mode the SDK and roomlab offer.
DATA_TRACKS = (
    {"name": "ordered"},
    {"name": "lifetime", "ordered": False, "maxPacketLifeTime": 3000},
    {"name": "retransmits", "ordered": True, "maxRetransmits": 5},
)


def python_track(spec: dict) -> roomlab.LocalDataTrack:
    return roomlab.LocalDataTrack(
        spec["name"],
        ordered=spec.get("ordered", True),
        max_packet_life_time=spec.get("maxPacketLifeTime"),
        max_retransmits=spec.get("maxRetransmits"),
    )


def payload(i: int) -> str | bytes:
    """Message i of a run: text and binary, irregular sizes, non-ASCII text."""
    return f"message {i} ✓" if i % 3 else bytes([i % 256, 0, 255]) * (i % 5 + 1)


def as_js(message: str | bytes) -> str | list[int]:
    return message if isinstance(message, str) else list(message)


def from_js(received: dict) -> str | bytes:
    return received["text"] if "text" in received else bytes(received["bytes"])


async def page_eventually(page: Page, expression: str, predicate, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    """Evaluate `expression` in the page until `predicate(value)` holds; return the last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await page.evaluate(expression)
        if predicate(value) or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium() -> AsyncIterator[Chromium]:
    browser = await Chromium.launch()
    yield browser
    await browser.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pages_url() -> AsyncIterator[str]:
    """The test's own pages, from an HTTP server on 127.0.0.1 beside the roomlab server."""
    app = web.Application()
    app.router.add_static("/", PAGES)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


OpenPage = Callable[[], Awaitable[Page]]


@pytest_asyncio.fixture(loop_scope="module")
async def open_page(chromium: Chromium, pages_url: str, server: roomlab.Server) -> AsyncIterator[OpenPage]:
    """`await open_page()`: a tab with the SDK loaded, pointed at this test's server."""
    opened: list[Page] = []

    async def opener() -> Page:
        query = {"sdk": f"{server.url}/web/twilio-video.min.js", "ws": server.twilio_ws_url}
        page = await chromium.open(f"{pages_url}/twilio-video.html?{urlencode(query)}")
        opened.append(page)
        await page_eventually(page, "typeof window.sdkLoaded", lambda kind: kind == "object")
        assert await page.evaluate("window.sdkLoaded") == SDK_VERSION
        return page

    yield opener
    for page in opened:
        await page.close()


@pytest_asyncio.fixture(loop_scope="module")
async def join(server: roomlab.Server) -> AsyncIterator[Callable[..., Awaitable[roomlab.Room]]]:
    """`await join("alice", room="standup", **options)`: a roomlab client in this module's loop."""
    joined: list[roomlab.Room] = []

    async def joiner(identity: str, room: str = "room", **options) -> roomlab.Room:  # type: ignore[no-untyped-def]
        connected = await roomlab.connect(server.url, server.token(identity), name=room, **options)
        joined.append(connected)
        return connected

    yield joiner
    for room in joined:
        await room.disconnect()


async def js_join(page: Page, token: str, timeout: float = 20.0, **options) -> dict:  # type: ignore[no-untyped-def]
    return await page.evaluate(f"window.join({json.dumps(token)}, {json.dumps(options)})", timeout=timeout)


async def test_sdk_and_roomlab_exchange_data_on_every_reliability_mode(server, join, open_page):
    py_tracks = {spec["name"]: python_track(spec) for spec in DATA_TRACKS}
    py = await join("py", room="data", tracks=list(py_tracks.values()))
    page = await open_page()
    joined = await js_join(page, server.token("js"), name="data", data=list(DATA_TRACKS))
    assert joined["identity"] == "js" and joined["name"] == "data" and joined["sid"] == py.sid, page.console

    # the SDK's publications get SIDs; roomlab subscribes to them with the options the SDK chose
    published = await page_eventually(page, "window.publishedSids()", lambda sids: len(sids) == len(DATA_TRACKS))
    assert set(published) == {spec["name"] for spec in DATA_TRACKS}, page.console
    remote = {}
    for spec in DATA_TRACKS:
        remote[spec["name"]] = await eventually(lambda n=spec["name"]: subscribed_data_track(py, "js", n), timeout=10)
    for spec in DATA_TRACKS:
        track = remote[spec["name"]]
        assert track is not None and track.sid == published[spec["name"]]
        assert (track.ordered, track.max_packet_life_time, track.max_retransmits) == (
            spec.get("ordered", True),
            spec.get("maxPacketLifeTime"),
            spec.get("maxRetransmits"),
        )
        # the server's channel to the Python subscriber keeps them too (the second hop)
        assert (track._channel.ordered, track._channel.maxPacketLifeTime, track._channel.maxRetransmits) == (
            spec.get("ordered", True),
            spec.get("maxPacketLifeTime"),
            spec.get("maxRetransmits"),
        )
    # ...and the SDK subscribes to roomlab's tracks, with theirs
    seen = await page_eventually(page, "window.subscribed()", lambda tracks: len(tracks) == len(DATA_TRACKS))
    by_name = {t["name"]: t for t in seen}
    assert set(by_name) == set(py_tracks), page.console
    for spec in DATA_TRACKS:
        track = by_name[spec["name"]]
        assert track["from"] == "py" and track["kind"] == "data"
        assert (track["ordered"], track["maxPacketLifeTime"], track["maxRetransmits"]) == (
            spec.get("ordered", True),
            spec.get("maxPacketLifeTime"),
            spec.get("maxRetransmits"),
        )

    py_received: dict[str, list] = {name: [] for name in remote}
    for name, track in remote.items():
        track.on("message", py_received[name].append)
    sent = [payload(i) for i in range(1, COUNT + 1)]
    for track in py_tracks.values():
        for message in sent:
            track.send(message)
    for spec in DATA_TRACKS:
        await page.evaluate(f"window.sendAll({json.dumps(spec['name'])}, {json.dumps([as_js(m) for m in sent])})")

    # roomlab -> server -> SDK: every message of every track, in order, text as text, bytes as bytes
    total = COUNT * len(DATA_TRACKS)
    got = await page_eventually(page, "window.messages", lambda received: len(received) >= total, timeout=15)
    assert len(got) == total, page.console
    for name in py_tracks:
        on_track = [m for m in got if m["track"] == name]
        assert {m["from"] for m in on_track} == {"py"}
        assert [from_js(m) for m in on_track] == sent, name

    # SDK -> server -> roomlab: the same
    await eventually(lambda: all(len(r) >= COUNT for r in py_received.values()), timeout=15)
    for name, received in py_received.items():
        assert received == sent, name
    # the server framed each message as it arrived: a sequence per track, and its arrival time
    messages = py.frame("messages")
    for name in remote:
        rows = messages[messages["track"] == name]
        assert list(rows["seq"]) == list(range(1, COUNT + 1)), name
        assert set(rows["publisher"]) == {"js"} and set(rows["subscriber"]) == {"py"}
        assert (rows["latency_ms"] >= 0).all() and (rows["latency_ms"] < 5_000).all()
        assert list(rows["size"]) == [len(m.encode()) if isinstance(m, str) else len(m) for m in sent]


def forged_token(server: roomlab.Server, identity: str) -> str:
    """A token with this server's account and key, signed with another secret."""
    token = AccessToken(server.account_sid, server.api_key, "not-the-secret-" + "x" * 17, identity=identity)
    token.add_grant(VideoGrant(room="data"))
    jwt = token.to_jwt()
    return jwt.decode() if isinstance(jwt, bytes) else jwt


async def test_a_forged_token_is_refused_with_twilios_code(server, open_page):
    page = await open_page()
    result = await js_join(page, forged_token(server, "mallory"), name="data")
    assert result["error"]["code"] == 20107, result
    assert "signature" in result["error"]["message"]
    assert server.rooms is not None and server.rooms.find_live("data") is None  # nobody joined anything


async def test_media_crosses_both_ways_without_transcoding(server, join, open_page):
    camera = roomlab.LocalVideoTrack.pattern(width=320, height=180, fps=15)
    py = await join("py", room="media", tracks=[camera])
    page = await open_page()
    joined = await js_join(page, server.token("js"), name="media", media=True)
    assert joined["name"] == "media", page.console

    # the page's camera and microphone reach the Python client, decoded frame by frame
    published = await page_eventually(page, "window.publishedSids()", lambda sids: len(sids) == 2)
    assert set(published) == {"camera", "microphone"}, page.console

    def remote_media(name: str):  # type: ignore[no-untyped-def]
        for participant in py.participants.values():
            for publication in participant.tracks.values():
                if publication.track_name == name and publication.track is not None:
                    return publication.track
        return None

    js_camera = await eventually(lambda: remote_media("camera"), timeout=10)
    js_microphone = await eventually(lambda: remote_media("microphone"), timeout=10)
    assert js_camera is not None and js_microphone is not None
    frame = await asyncio.wait_for(js_camera.recv(), 10)
    assert (frame.width, frame.height) == (320, 240)
    audio = await asyncio.wait_for(js_microphone.recv(), 10)
    assert audio.sample_rate == 48_000
    await eventually(lambda: js_camera.frames_received >= 15 and js_microphone.frames_received >= 50, timeout=10)
    assert js_camera.frames_received >= 15 and js_microphone.frames_received >= 50

    # the Python client's pattern reaches the page: subscribed, decoded and shown in a <video>
    subscribed = await page_eventually(page, "window.subscribed()", lambda tracks: len(tracks) == 1)
    assert [(t["from"], t["kind"]) for t in subscribed] == [("py", "video")], page.console
    name = subscribed[0]["name"]
    progress = await page_eventually(
        page, "window.videoProgress()", lambda p: p.get(name, {}).get("shown", 0) >= 15, timeout=15
    )
    assert progress[name]["shown"] >= 15 and progress[name]["width"] == 320, (progress, page.console)
    by_sid = progress[subscribed[0]["sid"]]
    assert by_sid["packets"] > 0 and by_sid["bytes"] > 0

    # forwarded, not transcoded: the server moved encoded frames for every published track
    assert server.sfu is not None
    forwarded = {f.track.name: f.media.frames_forwarded for f in server.sfu.forwarders.values()}
    assert forwarded["camera"] > 0 and forwarded["microphone"] > 0 and forwarded[name] > 0


async def test_participant_and_track_events_follow_the_room(server, join, open_page):
    page = await open_page()
    joined = await js_join(page, server.token("js"), name="events", data=[{"name": "js-chat"}])
    assert joined["name"] == "events", page.console
    py_chat = roomlab.LocalDataTrack("py-chat")
    py = await join("py", room="events", tracks=[py_chat])
    await page_eventually(page, "window.eventsNamed('trackSubscribed')", lambda found: len(found) == 1)
    assert await page.evaluate("window.eventsNamed('participantConnected')") == [["py"]]
    assert await page.evaluate("window.eventsNamed('trackPublished')") == [["py", "py-chat", "data"]]
    assert await page.evaluate("window.eventsNamed('trackSubscribed')") == [["py", "py-chat", "data"]]

    # a track published later, then unpublished
    late = roomlab.LocalDataTrack("late")
    await py.local_participant.publish_track(late)
    await page_eventually(page, "window.eventsNamed('trackSubscribed')", lambda found: len(found) == 2)
    await py.local_participant.unpublish_track(late)
    unsubscribed = await page_eventually(page, "window.eventsNamed('trackUnpublished')", bool)
    assert unsubscribed == [["py", "late"]]
    assert await page.evaluate("window.eventsNamed('trackUnsubscribed')") == [["py", "late"]]

    # subscribe rules set over REST apply to the SDK client
    rules = server.twilio_client().video.v1.rooms("events").participants("js").subscribe_rules
    await asyncio.to_thread(lambda: rules.update(rules=[{"type": "exclude", "all": True}]))
    off = await page_eventually(page, "window.eventsNamed('trackUnsubscribed')", lambda found: len(found) == 2)
    assert off[-1] == ["py", "py-chat"] and await page.evaluate("window.subscribed()") == []
    await asyncio.to_thread(lambda: rules.update(rules=[{"type": "include", "publisher": "py"}]))
    on = await page_eventually(page, "window.subscribed()", lambda tracks: len(tracks) == 1)
    assert [(t["from"], t["name"]) for t in on] == [("py", "py-chat")]
    # ...and the channel works again
    py_chat.send("after the rules")
    message = await page_eventually(page, "window.messages", bool)
    assert message == [{"from": "py", "track": "py-chat", "text": "after the rules"}]

    # the SDK leaves: roomlab sees it go, with no error code
    gone: list = []
    py.on("participant_disconnected", lambda p: gone.append(p.identity))
    await page.evaluate("window.room.disconnect()")
    await eventually(lambda: gone, timeout=5)
    assert gone == ["js"] and not py.participants
    events = server.frame("events")
    left = events[(events["event"] == "participant-disconnected") & (events["identity"] == "js")]
    assert len(left) == 1 and left["code"].isna().all()
    assert await page.evaluate("window.eventsNamed('disconnected')") == [[None]]


async def test_roomlab_leaving_is_participant_disconnected_on_the_page(server, join, open_page):
    page = await open_page()
    await js_join(page, server.token("js"), name="leave")
    py = await join("py", room="leave")
    await page_eventually(page, "window.eventsNamed('participantConnected')", bool)
    await py.disconnect()
    gone = await page_eventually(page, "window.eventsNamed('participantDisconnected')", bool)
    assert gone == [["py"]] and await page.evaluate("window.room.participants.size") == 0


async def test_room_completed_over_rest_disconnects_the_page_with_53118(server, join, open_page):
    page = await open_page()
    joined = await js_join(page, server.token("js"), name="ending")
    py = await join("py", room="ending")
    py_errors: list = []
    py.on("disconnected", lambda room, error: py_errors.append(error))
    await asyncio.to_thread(lambda: server.twilio_client().video.v1.rooms(joined["sid"]).update(status="completed"))
    disconnected = await page_eventually(page, "window.eventsNamed('disconnected')", bool)
    assert disconnected[0][0]["code"] == 53118, page.console
    assert disconnected[0][0]["message"] == "Room completed"
    await eventually(lambda: py_errors, timeout=5)
    assert py_errors[0].code == 53118
    events = server.frame("events")
    left = events[(events["event"] == "participant-disconnected") & (events["identity"] == "js")]
    assert list(left["code"]) == [53118]


async def test_participant_removed_over_rest(server, open_page):
    page = await open_page()
    await js_join(page, server.token("js"), name="kick")
    client = server.twilio_client()
    await asyncio.to_thread(lambda: client.video.v1.rooms("kick").participants("js").update(status="disconnected"))
    disconnected = await page_eventually(page, "window.eventsNamed('disconnected')", bool)
    assert disconnected[0][0]["code"] == 53204, page.console
    assert await page.evaluate("window.room.state") == "disconnected"


async def test_duplicate_identity_and_full_room_are_refused_with_twilios_codes(server, open_page):
    first, second = await open_page(), await open_page()
    await js_join(first, server.token("twin"), name="pair")
    await js_join(second, server.token("twin"), name="pair")
    disconnected = await page_eventually(first, "window.eventsNamed('disconnected')", bool)
    assert disconnected[0][0]["code"] == 53205, first.console
    assert await second.evaluate("window.room.state") == "connected"

    client = server.twilio_client()
    await asyncio.to_thread(lambda: client.video.v1.rooms.create(unique_name="solo", max_participants=1))
    third, fourth = await open_page(), await open_page()
    assert "error" not in await js_join(third, server.token("one"), name="solo")
    refused = await js_join(fourth, server.token("two"), name="solo")
    assert refused["error"]["code"] == 53105, refused


async def test_rest_and_telemetry_show_the_sdk_participant(server, join, open_page):
    py = await join("py", room="seen")
    received: list = []
    page = await open_page()
    joined = await js_join(page, server.token("js"), name="seen", data=[{"name": "notes"}], media=True)
    published = await page_eventually(page, "window.publishedSids()", lambda sids: len(sids) == 3)
    notes = await eventually(lambda: subscribed_data_track(py, "js", "notes"), timeout=10)
    notes.on("message", received.append)
    await page.evaluate(f"window.sendAll('notes', {json.dumps([f'note {i}' for i in range(20)])})")
    await eventually(lambda: len(received) == 20, timeout=10)

    client = server.twilio_client()
    room = client.video.v1.rooms("seen")
    participants = await asyncio.to_thread(lambda: room.participants.list(status="connected"))
    js = next(p for p in participants if p.identity == "js")
    assert js.sid == joined["participant"] and js.status == "connected"
    tracks = await asyncio.to_thread(lambda: room.participants(js.sid).published_tracks.list())
    assert {(t.name, t.kind, t.sid) for t in tracks} == {
        ("notes", "data", published["notes"]),
        ("camera", "video", published["camera"]),
        ("microphone", "audio", published["microphone"]),
    }
    subscribed = await asyncio.to_thread(lambda: room.participants("py").subscribed_tracks.list())
    assert {t.sid for t in subscribed} == set(published.values())

    # events: the SDK client's join and its tracks, like any participant's
    events = server.frame("events")
    mine = events[events["identity"] == "js"]
    assert list(mine[mine["event"] == "participant-connected"]["participant"]) == [js.sid]
    assert set(mine[mine["event"] == "track-added"]["track"]) == set(published.values())

    # data_channel_stats: the server counted the 20 messages on the SDK's channel, and sent them on
    def counted():  # type: ignore[no-untyped-def]
        stats = server.frame("data_channel_stats")
        rows = stats[(stats["participant"] == "js") & (stats["messages_received"] >= 20)]
        return rows if len(rows) else None

    rows = await eventually(counted, timeout=5)
    assert rows is not None, server.frame("data_channel_stats")
    assert rows["messages_received"].max() == 20
    assert rows["bytes_received"].max() == sum(len(f"note {i}") for i in range(20))
    stats = server.frame("data_channel_stats")
    to_py = stats[(stats["participant"] == "py") & (stats["label"] == published["notes"])]
    assert to_py["messages_sent"].max() == 20

    # rtc_stats: the server samples the SDK client's camera and microphone as it receives them
    def sampled():  # type: ignore[no-untyped-def]
        rtc = server.frame("rtc_stats")
        rows = rtc[(rtc["participant"] == "js") & (rtc["direction"] == "outbound") & (rtc["packets"] > 0)]
        return rows if set(rows["kind"]) == {"audio", "video"} else None

    rtc = await eventually(sampled, timeout=5)
    assert rtc is not None and set(rtc["track"]) == {published["camera"], published["microphone"]}


async def test_an_sdk_without_ice_servers_asks_for_them_and_gets_none(server, join, open_page):
    """Without `iceServers` the SDK asks the server first (`ice`); it gets none (`iced`: []), so it
    contacts no STUN or TURN server, and media and data flow on 127.0.0.1 as before."""
    py = await join("py", room="asked")
    page = await open_page()
    joined = await js_join(page, server.token("js"), name="asked", data=[{"name": "hello"}], askIceServers=True)
    assert joined["name"] == "asked", page.console
    configuration = await page.evaluate("window.room._signaling._peerConnectionManager._configuration.iceServers")
    assert configuration == []
    hello = await eventually(lambda: subscribed_data_track(py, "js", "hello"), timeout=10)
    received: list = []
    hello.on("message", received.append)
    await page.evaluate("window.sendAll('hello', ['over loopback'])")
    assert await eventually(lambda: received, timeout=5) == ["over loopback"]


async def test_the_whiteboard_demo_draws_with_strokes_bots(chromium):
    """`roomlab whiteboard`, as a user runs it: its page (the SDK on a data track) shows the bots'
    strokes, and what is drawn on it with the mouse reaches a roomlab participant as Strokes points."""
    process = subprocess.Popen(
        [sys.executable, "-m", "roomlab", "whiteboard", "--bots", "2", "--port", "0", "--duration", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watcher = None
    page = None
    try:
        lines = [await asyncio.to_thread(process.stdout.readline) for _ in range(6)]  # type: ignore[union-attr]
        url = re.search(r"serving on (http://127\.0\.0\.1:\d+)", lines[0]).group(1)  # type: ignore[union-attr]
        credentials = dict(line.split() for line in lines[1:4])
        board_url = lines[5].strip()
        assert board_url.startswith(f"{url}/web/whiteboard.html?token=")
        page = await chromium.open(board_url)
        drawn = await page_eventually(
            page,
            "window.whiteboard ? window.whiteboard.points : {}",
            lambda points: points.get("bot-0", 0) >= 20 and points.get("bot-1", 0) >= 20,
            timeout=20,
        )
        assert drawn.get("bot-0", 0) >= 20 and drawn.get("bot-1", 0) >= 20, page.console

        grant = AccessToken(
            credentials["account_sid"], credentials["api_key"], credentials["api_secret"], identity="py"
        )
        grant.add_grant(VideoGrant(room="whiteboard"))
        watcher = await roomlab.connect(url, grant.to_jwt(), name="whiteboard")
        strokes = await eventually(lambda: subscribed_data_track(watcher, "you", "strokes"), timeout=10)
        received: list = []
        strokes.on("message", lambda data: received.append(json.loads(data)))

        box = await page.evaluate(
            "(({left, top, width, height}) => ({left, top, width, height}))"
            "(document.getElementById('board').getBoundingClientRect())"
        )
        path = [(box["left"] + box["width"] * (0.2 + i / 40), box["top"] + box["height"] / 2) for i in range(12)]
        mouse = chromium.send
        await mouse(
            "Input.dispatchMouseEvent",
            page.session,
            type="mousePressed",
            x=path[0][0],
            y=path[0][1],
            button="left",
            buttons=1,
            clickCount=1,
        )
        for x, y in path[1:]:
            await asyncio.sleep(0.03)
            await mouse("Input.dispatchMouseEvent", page.session, type="mouseMoved", x=x, y=y, button="left", buttons=1)
        await mouse(
            "Input.dispatchMouseEvent",
            page.session,
            type="mouseReleased",
            x=path[-1][0],
            y=path[-1][1],
            button="left",
            buttons=0,
            clickCount=1,
        )
        sent = await page_eventually(page, "window.whiteboard.sent", lambda n: n >= 10)
        await eventually(lambda: len(received) >= sent, timeout=5)
        assert [p["point"] for p in received] == list(range(sent)) and {p["stroke"] for p in received} == {1}
        assert all(190 <= p["x"] <= 510 and 340 <= p["y"] <= 360 for p in received), received
    finally:
        if watcher is not None:
            await watcher.disconnect()
        if page is not None:
            await page.close()
        os.kill(process.pid, signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 15) == 0


async def test_tracks_the_sdk_publishes_later_renegotiate_and_reach_roomlab(server, join, open_page):
    """The SDK's later offers: its first data track (SCTP arrives in a re-offer), then its camera,
    while the server offers for a track roomlab publishes at the same moment (glare), then an
    unpublish."""
    py = await join("py", room="later")
    page = await open_page()
    joined = await js_join(page, server.token("js"), name="later")
    assert joined["name"] == "later", page.console
    await asyncio.sleep(0.5)  # connected: its transport is up or coming up

    await page.evaluate(
        "window.room.localParticipant.publishTrack(window.makeDataTracks([{name: 'late-data', maxRetransmits: 2}])[0])"
        ".then(() => null)"
    )
    late = await eventually(lambda: subscribed_data_track(py, "js", "late-data"), timeout=10)
    assert late is not None and late.max_retransmits == 2, page.console
    received: list = []
    late.on("message", received.append)
    await page.evaluate("window.sendAll('late-data', ['first', 'second'])")
    assert await eventually(lambda: len(received) == 2, timeout=5) and received == ["first", "second"]

    # the page publishes its camera while roomlab publishes a pattern: the server's offer and the
    # page's cross in about a third of runs (the server drops the page's, which answers and offers again)
    await page.evaluate("window.makeMediaTracks().then(() => null)", timeout=15)
    camera = roomlab.LocalVideoTrack.pattern(width=160, height=120)
    publish_py = asyncio.ensure_future(py.local_participant.publish_track(camera))
    await page.evaluate("window.room.localParticipant.publishTrack(window.localTracks.camera).then(() => null)")
    await publish_py

    def remote_video():  # type: ignore[no-untyped-def]
        for participant in py.participants.values():
            for publication in participant.tracks.values():
                if publication.track_name == "camera" and publication.track is not None:
                    return publication.track
        return None

    video = await eventually(remote_video, timeout=10)
    assert video is not None, page.console
    frame = await asyncio.wait_for(video.recv(), 10)
    assert (frame.width, frame.height) == (320, 240)
    shown = await page_eventually(
        page, "window.videoProgress()", lambda p: any(v.get("shown", 0) >= 10 for v in p.values()), timeout=15
    )
    assert any(v.get("width") == 160 for v in shown.values()), (shown, page.console)

    # unpublishing on the page is track_unpublished for roomlab
    gone: list = []
    py.on("track_unpublished", lambda publication, participant: gone.append(publication.track_name))
    await page.evaluate("window.room.localParticipant.unpublishTrack(window.localTracks['late-data']) && null")
    assert await eventually(lambda: gone, timeout=5) == ["late-data"]


async def test_a_closed_tab_is_removed_at_once(server, join, open_page):
    py = await join("py", room="closing")
    page = await open_page()
    await js_join(page, server.token("js"), name="closing")
    await eventually(lambda: py.participants, timeout=5)
    gone: list = []
    py.on("participant_disconnected", lambda p: gone.append(p.identity))
    await page.close()  # no disconnect, no bye: the socket just ends
    assert await eventually(lambda: gone, timeout=5) == ["js"]
    events = server.frame("events")
    left = events[(events["event"] == "participant-disconnected") & (events["identity"] == "js")]
    assert list(left["code"]) == [53001]
