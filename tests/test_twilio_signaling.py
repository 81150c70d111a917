"""The SDK's signaling endpoint under bad input, spoken to over a raw WebSocket (TCMP and RSP as
twilio-video.js sends them), with a real aiortc peer connection making the offers: every refusal
carries Twilio's code, and nothing a client sends reaches another's session."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

import roomlab
from roomlab.errors import RoomError
from roomlab.net.ice import rtc_configuration
from roomlab.policy.allocation import BandwidthProfile
from roomlab.policy.quality import MediaMeasurement, ParticipantMeasurement, network_quality_stats, score
from roomlab.server.twilio import media_signaling, rsp
from roomlab.server.twilio.media_signaling import RenderHint, network_quality_message, parse_render_hint, sdk_levels

from .conftest import eventually
from .tcp_proxy import TcpProxy
from .test_data_tracks import subscribed_data_track

#: An audio m-line without ICE credentials or a DTLS fingerprint: no peer connection can apply it.
BROKEN_SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"


async def data_offer() -> tuple[RTCPeerConnection, str]:
    """A real offer with one data channel, as the SDK's first offer would carry."""
    pc = RTCPeerConnection(rtc_configuration())
    pc.createDataChannel("c0ffee00-0000-4000-8000-000000000000")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def connect_body(token: str, sdp: str, name: str | None = "raw") -> dict[str, Any]:
    return {
        "type": "connect",
        "version": 2,
        "name": name,
        "token": token,
        "participant": {"revision": 1, "tracks": []},
        "peer_connections": [{"id": "pc-1", "description": {"type": "offer", "revision": 1, "sdp": sdp}}],
        "subscribe": {"rules": [{"type": "include", "all": True}], "revision": 1},
        "format": "unified",
    }


@asynccontextmanager
async def tcmp(server: roomlab.Server) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.twilio_ws_url) as ws:
        yield ws


async def next_message(ws: aiohttp.ClientWebSocketResponse, skip: tuple[str, ...] = ("heartbeat",)) -> dict:
    while True:
        frame = await ws.receive(timeout=10)
        assert frame.type == aiohttp.WSMsgType.TEXT, frame
        message = json.loads(frame.data)
        if message["type"] not in skip:
            return message


async def hello(ws: aiohttp.ClientWebSocketResponse, body: dict | None) -> dict:
    """Say hello with `body`; return the first `msg` body after `welcome`."""
    await ws.send_str(json.dumps({"type": "hello", "id": "h1", "timeout": 5000, "version": 2, "body": body}))
    welcome = await next_message(ws)
    assert welcome == {"type": "welcome", "negotiatedTimeout": 5000}
    message = await next_message(ws)
    assert message["type"] == "msg", message
    return message["body"]


async def test_refusals_carry_twilios_codes_and_leave_nobody_behind(server):
    pc, sdp = await data_offer()
    try:
        async with tcmp(server) as ws:
            refused = await hello(ws, connect_body("not.a.token", sdp))
            assert refused["type"] == "error" and refused["code"] == 20102, refused
        async with tcmp(server) as ws:
            refused = await hello(ws, connect_body(server.token("x", room="elsewhere"), sdp, name="raw"))
            assert refused["code"] == 20106
        async with tcmp(server) as ws:
            refused = await hello(ws, connect_body(server.token("x"), BROKEN_SDP, name="raw"))
            assert refused.get("code") == 53403 and "remote media description" in refused["message"], refused
        async with tcmp(server) as ws:
            refused = await hello(ws, {"type": "connect", "version": 1, "token": server.token("x")})
            assert refused["code"] == 53004 and "version" in refused["message"]
        async with tcmp(server) as ws:
            await ws.send_str(json.dumps({"type": "hello", "id": "h1", "version": 1}))
            bad = await next_message(ws)
            assert bad["type"] == "bad" and "version 2" in bad["reason"]
    finally:
        await pc.close()
    # nobody stayed in the room the bad SDP made (an ad-hoc room ends with its last participant)
    listed = await asyncio.to_thread(lambda: server.twilio_client().video.v1.rooms.list(unique_name="raw"))
    assert all(room.status == "completed" for room in listed)
    events = server.frame("events")
    joined = events[events["event"] == "participant-connected"]
    left = events[events["event"] == "participant-disconnected"]
    assert len(joined) == len(left) == 1 and list(left["code"]) == [53403]


async def test_a_connected_client_survives_bad_messages_and_a_flood_ends_only_its_session(server, join):
    py = await join("py", room="raw")
    pc, sdp = await data_offer()
    try:
        async with tcmp(server) as ws:
            connected = await hello(ws, connect_body(server.token("raw-client"), sdp))
            assert connected["type"] == "connected" and connected["participant"]["identity"] == "raw-client"
            assert connected["options"] == {"session_timeout": 30}  # the reconnect window
            assert connected["peer_connections"][0]["description"]["type"] == "answer"
            assert [p["identity"] for p in connected["participants"]] == ["py"]
            session = connected["session"]
            # malformed TCMP is answered `bad`; a malformed RSP message is dropped; the session goes on
            await ws.send_str("{not json")
            assert (await next_message(ws))["type"] == "bad"
            await ws.send_str(json.dumps({"type": "msg", "body": {"type": "update", "version": 2, "participant": 7}}))
            await ws.send_str(json.dumps({"type": "msg", "body": {"type": "nonsense", "version": 2}}))
            py_gone: list = []
            py.on("participant_disconnected", lambda p: py_gone.append(p.identity))
            await asyncio.sleep(0.2)
            assert py_gone == [] and len(py.participants) == 1
            # a track published in an update gets its SID, in order, at a growing revision
            update = {"type": "update", "version": 2, "session": session}
            track = {"id": "t-1", "kind": "audio", "name": "mic", "enabled": True, "priority": "standard"}
            await ws.send_str(
                json.dumps({"type": "msg", "body": {**update, "participant": {"revision": 2, "tracks": [track]}}})
            )
            published = await next_message(ws)
            assert published["body"]["published"]["tracks"] == [
                {"id": "t-1", "sid": published["body"]["published"]["tracks"][0]["sid"], "state": "ready"}
            ]
            assert published["body"]["published"]["revision"] > connected["published"]["revision"]
            # a duplicate name is refused with Twilio's code, the first publication stays
            twin = {**track, "id": "t-2"}
            await ws.send_str(
                json.dumps({"type": "msg", "body": {**update, "participant": {"revision": 3, "tracks": [track, twin]}}})
            )
            refused = await next_message(ws)
            entries = {t["id"]: t for t in refused["body"]["published"]["tracks"]}
            assert entries["t-1"]["state"] == "ready" and entries["t-2"]["state"] == "failed"
            assert entries["t-2"]["error"]["code"] == 53304
            # a flood ends this session with 53004, and only this one
            for _ in range(300):
                await ws.send_str(json.dumps({"type": "heartbeat"}))
            await eventually(lambda: py_gone, timeout=5)
            assert py_gone == ["raw-client"]
    finally:
        await pc.close()
    events = server.frame("events")
    left = events[(events["event"] == "participant-disconnected") & (events["identity"] == "raw-client")]
    assert list(left["code"]) == [53004]
    assert py.state == "connected"


async def test_a_data_channel_that_opens_before_its_track_is_listed_is_published_when_it_is(server, join):
    """The SDK's data channel and its track list travel apart (SCTP and the signaling socket): a
    channel the server cannot place yet waits for the update that lists its track."""
    py = await join("py", room="raw")
    pc = RTCPeerConnection(rtc_configuration())
    channel = pc.createDataChannel("early-channel", ordered=True, maxRetransmits=4)
    await pc.setLocalDescription(await pc.createOffer())
    try:
        async with tcmp(server) as ws:
            connected = await hello(ws, connect_body(server.token("raw-client"), pc.localDescription.sdp))
            answer = connected["peer_connections"][0]["description"]
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            await eventually(lambda: channel.readyState == "open", timeout=10)
            await asyncio.sleep(0.2)  # the server has the channel, and no track to put it in
            assert server.call(lambda: [t.name for t in server.rooms.find_live("raw").tracks.values()]) == []
            track = {"id": "early-channel", "kind": "data", "name": "late-listed", "enabled": True}
            update = {"type": "update", "version": 2, "session": connected["session"]}
            await ws.send_str(
                json.dumps({"type": "msg", "body": {**update, "participant": {"revision": 2, "tracks": [track]}}})
            )
            published = await next_message(ws)
            assert published["body"]["published"]["tracks"][0]["state"] == "ready"
            remote = await eventually(lambda: subscribed_data_track(py, "raw-client", "late-listed"), timeout=10)
            assert remote is not None and remote.max_retransmits == 4
            received: list = []
            remote.on("message", received.append)
            for message in ("one", b"\x00two", "three"):
                channel.send(message)
            await eventually(lambda: len(received) == 3, timeout=5)
            assert received == ["one", b"\x00two", "three"]
            rows = py.frame("messages")
            assert list(rows[rows["track"] == "late-listed"]["seq"]) == [1, 2, 3]
    finally:
        await pc.close()


def sync_body(token: str, session: str) -> dict[str, Any]:
    """What the SDK's hello carries on the socket it opens after the last one dropped."""
    return {
        "type": "sync",
        "version": 2,
        "name": "raw",
        "token": token,
        "session": session,
        "participant": {"revision": 1, "tracks": []},
        "peer_connections": [],
    }


async def test_a_dropped_socket_resumes_its_session_only_with_its_key_identity_and_window(clocked_server, clock):
    server = clocked_server
    proxy = await TcpProxy(server.port).start()
    pc, sdp = await data_offer()
    py = await roomlab.connect(server.url, server.token("py"), name="raw")
    heard: list = []
    py.on("participant_reconnecting", lambda p: heard.append(("reconnecting", p.identity)))
    py.on("participant_reconnected", lambda p: heard.append(("reconnected", p.identity)))
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"ws://127.0.0.1:{proxy.port}/twilio/signaling")
            connected = await hello(ws, connect_body(server.token("raw-client"), sdp))
            sid, key = connected["participant"]["sid"], connected["session"]
            answer = connected["peer_connections"][0]
            proxy.drop()  # no close frame: the connection dropped, the participant may come back
            assert await eventually(lambda: heard == [("reconnecting", "raw-client")], timeout=5), heard
            rest = server.twilio_client().video.v1.rooms("raw").participants(sid)
            assert (await asyncio.to_thread(rest.fetch)).status == "reconnecting"

            for token, session in (
                (server.token("raw-client"), "0" * len(key)),  # a key that is not its own
                (server.token("mallory"), key),  # its key, another identity
            ):
                async with tcmp(server) as other:
                    refused = await hello(other, sync_body(token, session))
                    assert refused["type"] == "error" and refused["code"] == 53204, refused

            # its key and identity: the same participant, the whole state, the last answer again
            async with tcmp(server) as back:
                synced = await hello(back, sync_body(server.token("raw-client"), key))
                assert synced["type"] == "synced" and synced["participant"] == connected["participant"]
                assert [(p["identity"], p["state"]) for p in synced["participants"]] == [("py", "connected")]
                assert synced["participants"][0]["revision"] > connected["participants"][0]["revision"]
                assert synced["peer_connections"] == [answer]
                assert await eventually(lambda: heard[-1] == ("reconnected", "raw-client"), timeout=5)
                assert (await asyncio.to_thread(rest.fetch)).status == "connected"
                # it drops again, and stays away past the window: the session has ended
                back._response.connection.transport.abort()  # type: ignore[union-attr]
                await eventually(lambda: heard[-1] == ("reconnecting", "raw-client"), timeout=5)
                clock.advance(server.reconnect_window + 1)
                gone = await eventually(
                    lambda: server.call(lambda: not server.rooms.is_connected(sid)),
                    timeout=5,  # type: ignore[union-attr]
                )
                assert gone
            async with tcmp(server) as late:
                refused = await hello(late, sync_body(server.token("raw-client"), key))
                assert refused["code"] == 53204
            await ws.close()
    finally:
        await pc.close()
        await py.disconnect()
        await proxy.close()
    events = server.frame("events")
    mine = events[events["identity"] == "raw-client"]
    assert list(mine[mine["event"] == "participant-reconnecting"]["code"]) == [53001, 53001]
    assert list(mine[mine["event"] == "participant-disconnected"]["code"]) == [53001]


# --- translations at the edge: the SDK's words for what the server decides ------------------------------


def test_network_quality_in_the_sdks_shape_at_each_verbosity():
    video = MediaMeasurement(fraction_lost=0.01, rtt_s=0.09, jitter_s=0.004, actual_bps=9e5, available_bps=1.2e6)
    levels = score(ParticipantMeasurement(audio_send=MediaMeasurement(fraction_lost=0.0), video_recv=video))
    assert sdk_levels(network_quality_stats(levels, "minimal")) == levels.level  # a number, as Twilio sends
    moderate = sdk_levels(network_quality_stats(levels, "moderate"))
    assert moderate == {
        "level": levels.level,
        "audio": {"send": levels.audio_send, "recv": None, "sendStats": None, "recvStats": None},
        "video": {"send": None, "recv": levels.video_recv, "sendStats": None, "recvStats": None},
    }
    recv = sdk_levels(network_quality_stats(levels, "detailed"))["video"]["recvStats"]  # type: ignore[index]
    partial = levels.partials["video_recv"]
    assert recv == {
        "bandwidth": {"actual": 9e5, "available": 1.2e6, "level": partial.bandwidth},
        "latency": {"jitter": 0.004, "rtt": 0.09, "level": partial.latency},
        "fractionLost": {"fractionLost": 0.01, "level": partial.fraction_lost},
    }
    local = network_quality_stats(levels, "minimal")
    remote = network_quality_stats(levels, "moderate")
    message = network_quality_message(local, {"PA1": remote, "PA2": local})  # type: ignore[arg-type,dict-item]
    assert message["type"] == "network_quality" and message["local"] == levels.level
    assert message["remotes"] == [{"sid": "PA1", **moderate}, {"sid": "PA2", "level": levels.level}]
    assert "remotes" not in network_quality_message(local, {})  # type: ignore[arg-type]


def test_the_sdks_bandwidth_profile_in_roomlabs_terms_or_refused_naming_what_is_allowed():
    sdk_payload = {  # what createBandwidthProfilePayload sends
        "video": {
            "mode": "presentation",
            "max_subscription_bandwidth": 2_000_000,
            "max_tracks": 4,
            "render_dimensions": {"low": {"width": 320, "height": 180}, "high": {"height": 1080, "width": 1920}},
            "active_speaker_priority": "high",
            "track_switch_off": "disabled",
        }
    }
    profile = rsp.bandwidth_profile(sdk_payload)
    assert profile == BandwidthProfile.from_options(
        {
            "video": {
                "mode": "presentation",
                "max_subscription_bitrate": 2_000_000,
                "max_tracks": 4,
                "render_dimensions": {"low": (320, 180), "high": (1920, 1080)},
                "dominant_speaker_priority": "high",
                "track_switch_off_mode": "disabled",
            }
        }
    )
    assert rsp.bandwidth_profile({}) == BandwidthProfile()
    for bad, named in (
        ({"video": {"mode": "theatre"}}, "grid, collaboration, presentation"),
        ({"video": {"track_switch_off": "sometimes"}}, "predicted, detected, disabled"),
        ({"video": {"maxTracks": 2}}, "mode, max_subscription_bandwidth"),
        ({"audio": {}}, "['video']"),
        ({"video": {"render_dimensions": {"huge": {"width": 1, "height": 1}}}}, "low, standard, high"),
    ):
        with pytest.raises(RoomError, match="53004") as refused:
            rsp.bandwidth_profile(bad)
        assert named in refused.value.message, refused.value.message


def test_render_hints_merge_what_each_message_changes_and_the_channels_opened():
    first = parse_render_hint({"track": "MT1", "enabled": True}, None)
    assert first == ("MT1", RenderHint(enabled=True, render_dimensions=None))
    sized = parse_render_hint({"track": "MT1", "render_dimensions": {"width": 640, "height": 360}}, first[1])
    assert sized == ("MT1", RenderHint(enabled=True, render_dimensions=(640, 360)))
    off = parse_render_hint({"track": "MT1", "enabled": False}, sized[1])  # type: ignore[index]
    assert off == ("MT1", RenderHint(enabled=False, render_dimensions=(640, 360)))
    for bad in ({"enabled": True}, {"track": "MT1", "enabled": "yes"}, {"track": "MT1", "render_dimensions": 7}):
        assert parse_render_hint(bad, None) is None
    # the channels opened: those asked for over a data channel, of the features this server has
    data_channel = {"transports": [{"type": "data-channel"}]}
    asked = {
        "active_speaker": data_channel,
        "publisher_hints": data_channel,
        "network_quality": {"transports": [{"type": "websocket"}]},
        "render_hints": data_channel,
    }
    assert media_signaling.requested(asked) == ("active_speaker", "render_hints")
