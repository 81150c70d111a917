"""Layered (simulcast) video: one publication whose layers travel as RTP streams of their own, of
which the server forwards one to each subscriber, switching at keyframes with one continuous stream
for the subscriber. Real server, real aiortc clients; layers chosen through the forwarder's API."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import pandas as pd
import pytest

import roomlab
from roomlab import frames
from roomlab.net.rtp import is_keyframe
from roomlab.protocol.layers import LayerSpec
from roomlab.server.media import MediaForwarder, OutgoingTrack
from roomlab.server.model import PublishedTrack
from roomlab.server.sfu import MediaTrackForwarder
from roomlab.server.simulcast import LayerSelector, RtpTimeline
from roomlab.sim import Camera, camera_track
from roomlab.sim.media import LAYERS, Playhead, camera_clip, keyframe_interval

from .conftest import eventually

#: One frame at 15 fps, in RTP ticks (90 kHz).
FRAME_TICKS = 6000
SIZES = {name: (width, height) for name, (width, height, _) in LAYERS.items()}


@pytest.fixture
def server():
    """A server whose layers only the tests choose (the forwarder's API): no allocator behind them."""
    with roomlab.serve(bandwidth_allocation=False) as running:
        yield running


def video_track(room: roomlab.Room) -> roomlab.RemoteVideoTrack | None:
    return next(
        (p.track for x in room.participants.values() for p in x.tracks.values() if p.kind == "video" and p.track),
        None,
    )


def named_track(room: roomlab.Room, name: str) -> roomlab.RemoteVideoTrack | None:
    return next(
        (p.track for x in room.participants.values() for p in x.tracks.values() if p.track_name == name and p.track),
        None,
    )


async def select(server: roomlab.Server, track_sid: str, subscriber: roomlab.Room, layer: str | None) -> None:
    """Ask the server's forwarder to give `subscriber` this layer (what the allocator will do)."""
    forwarder = server.sfu.forwarders[track_sid]
    await asyncio.to_thread(server.call, forwarder.select_layer, subscriber.local_participant.sid, layer)


class Frames:
    """Every decoded frame a subscriber's track delivers: (arrival, pts, width, height)."""

    def __init__(self, track: roomlab.RemoteVideoTrack) -> None:
        self.seen: list[tuple[float, int, int, int]] = []
        self._task = asyncio.ensure_future(self._collect(track))

    async def _collect(self, track: roomlab.RemoteVideoTrack) -> None:
        while True:
            frame = await track.recv()
            self.seen.append((time.monotonic(), frame.pts, frame.width, frame.height))

    def sizes_since(self, moment: float) -> set[tuple[int, int]]:
        return {(w, h) for at, _, w, h in self.seen if at > moment}

    def stop(self) -> None:
        self._task.cancel()


# --- on the wire and in the SDK -------------------------------------------------------------------


def test_layered_tracks_refuse_what_is_not_a_layer():
    source = roomlab.LocalVideoTrack.pattern().media
    with pytest.raises(ValueError, match="low, standard, high"):
        roomlab.LocalVideoTrack(layers={"medium": roomlab.VideoLayer(source, 320, 180, 500_000)})
    with pytest.raises(ValueError, match="not both"):
        roomlab.LocalVideoTrack(source, layers={"low": roomlab.VideoLayer(source, 160, 90, 150_000)})
    with pytest.raises(ValueError, match="a source of its own"):
        roomlab.LocalVideoTrack(
            layers={"low": roomlab.VideoLayer(source, 160, 90, 1), "high": roomlab.VideoLayer(source, 640, 360, 2)}
        )
    with pytest.raises(ValueError, match="VideoLayer"):
        roomlab.LocalVideoTrack(layers={"low": source})
    with pytest.raises(ValueError, match="width must be an integer from 1"):
        roomlab.LocalVideoTrack(layers={"low": roomlab.VideoLayer(source, 0, 90, 150_000)})
    with pytest.raises(ValueError, match="at least one layer"):
        roomlab.LocalVideoTrack(layers={})
    with pytest.raises(ValueError, match="a source"):
        roomlab.LocalVideoTrack()
    with pytest.raises(ValueError, match="exactly the fields"):
        LayerSpec.from_wire({"name": "low", "width": 160})
    with pytest.raises(ValueError, match="priority must be one of low, standard, high"):
        Camera(priority="urgent")
    with pytest.raises(ValueError, match="layers must be distinct names among low, standard, high"):
        Camera(layers=("low", "low"))
    # a plain track has no layers; a layered one lists them lowest first
    assert roomlab.LocalVideoTrack.pattern().layers == {}
    assert list(camera_track(("high", "low")).layers) == ["low", "high"]


def test_camera_layers_have_aligned_keyframes_every_half_second_and_their_bitrates():
    clips = {layer: camera_clip(layer) for layer in ("low", "standard", "high")}
    interval = keyframe_interval(15)
    assert interval == 8  # 0.53 s at 15 fps
    for layer, clip in clips.items():
        assert len(clip.packets) == len(clips["low"].packets) and len(clip.packets) % interval == 0
        flags = [is_keyframe("video/VP8", packet) for packet in clip.packets]
        assert [i for i, key in enumerate(flags) if key] == list(range(0, len(clip.packets), interval)), layer
    kbps = {layer: clip.bitrate_bps / 1000 for layer, clip in clips.items()}
    assert 130 < kbps["low"] < 210 and 440 < kbps["standard"] < 660 and 950 < kbps["high"] < 1450, kbps


def test_a_selector_switches_at_the_target_keyframe_and_keeps_time_rising():
    selector = LayerSelector("high", now=0.0)
    timeline = RtpTimeline()
    assert timeline.frame_step(90_000) == 3000  # 30 fps until the stream shows its own spacing
    assert timeline.unwrap(2**32 - FRAME_TICKS) == 2**32 - FRAME_TICKS
    assert timeline.unwrap(0) == 2**32  # past the 32-bit wrap the pts keeps rising
    assert timeline.frame_step(90_000) == FRAME_TICKS
    # a new subscriber starts at a keyframe of its layer; other layers never reach it
    assert [selector.accept(*frame, now=0.1) for frame in [("high", False), ("low", True), ("high", True)]] == [
        False,
        False,
        True,
    ]
    selector.select("low", now=1.0)
    # until low's keyframe the subscriber keeps getting high; then only low
    frames = [("high", False), ("low", False), ("high", False), ("low", True), ("high", False), ("low", False)]
    assert [selector.accept(*frame, now=1.2) for frame in frames] == [True, False, True, True, False, True]
    assert selector.selection().current == "low" and selector.selection().switch_s == pytest.approx(0.2)


def test_a_selector_restamps_each_layer_onto_one_timeline_one_frame_step_after_the_last():
    selector = LayerSelector("high", now=0.0)
    step, rate = FRAME_TICKS, 90_000
    high, low = 123_456_789, 4_000_000_000  # each layer's stream has a timeline of its own
    out = []
    for n in range(3):  # frames of high at 15 fps
        assert selector.accept("high", n == 0, now=n / 15)
        out.append(selector.restamp(high + n * step, step, rate, now=n / 15))
    selector.select("low", now=0.15)
    assert selector.accept("low", True, now=0.2)  # low's keyframe, 67 ms after high's last frame
    out.append(selector.restamp(low, step, rate, now=0.2))
    assert selector.accept("low", False, now=0.2 + 1 / 15)
    out.append(selector.restamp(low + step, step, rate, now=0.2 + 1 / 15))
    assert out == [high + n * step for n in range(5)]  # one frame step after the last, then low's own spacing
    # switched off for 2 s, then on again: the timeline keeps pace with the clock, on the frame grid
    selector.select(None, now=0.3)
    selector.select("high", now=2.0)
    assert selector.accept("high", True, now=0.2 + 1 / 15 + 2.0)
    resumed = selector.restamp(high + 40 * step, step, rate, now=0.2 + 1 / 15 + 2.0)
    assert resumed == out[-1] + 30 * step
    # the stream of the current layer starts anew (its publisher reconnected): wait for a keyframe, re-anchor
    selector.restart("high")
    assert selector.selection().current is None and not selector.accept("high", False, now=2.4)
    assert selector.accept("high", True, now=2.4 + 1 / 15)
    assert selector.restamp(777, step, rate, now=2.4 + 1 / 15) == resumed + 3 * step  # 0.2 s later
    assert selector.select(None, now=3.0) is True  # switched off at once
    assert not selector.accept("high", True, now=3.1) and selector.selection().current is None


async def test_a_subscription_starts_at_the_highest_layer_or_under_allocation_the_lowest(server):
    forwarder = MediaForwarder("MT1", "video", "forward", ("low", "standard", "high"))
    plain, careful = OutgoingTrack("video"), OutgoingTrack("video")
    forwarder.add(plain)
    forwarder.add(careful, start_lowest=True)
    assert (forwarder.selection(plain).target, forwarder.selection(careful).target) == ("high", "low")
    assert not server.sfu.start_lowest  # this server forwards without allocation: the highest first
    # a camera's layers start one RTP stream after the other: until its lowest arrives (or a bitrate
    # window has passed), a subscription not started yet waits for it rather than take what came first
    layers = [{"name": n, "width": w, "height": h, "bitrate_bps": b} for n, (w, h, b) in LAYERS.items()]
    track = PublishedTrack("MT2", "PA1", "RM1", "camera", "video", 0.0, 0.0, options={"layers": layers})
    camera = MediaTrackForwarder(track, "forward", now=0.0, start_lowest=True)
    assert camera.starting(now=0.0)
    camera.media.streams["high"].meter.add(10.0, 1200)
    assert camera.starting(now=10.5)
    assert not camera.starting(now=12.5)  # a window on: the layers that flow are what there is
    camera.media.streams["low"].meter.add(10.6, 1200)
    assert not camera.starting(now=10.7)


def test_a_keyframe_request_moves_every_layer_to_the_same_next_keyframe():
    playhead = Playhead(frames=32, keyframes=(0, 8, 16, 24))
    low = [playhead.index(n) for n in range(3)]  # the low layer has read frames 0-2
    playhead.jump_to_keyframe()  # a subscriber asks for a keyframe
    high = [playhead.index(n) for n in range(5)]  # the high layer, a little behind, reads 0-4
    low += [playhead.index(n) for n in range(3, 5)]
    # every layer sends the same clip frame for each frame number; the next one is a keyframe
    assert low == high == [0, 1, 2, 8, 9]
    playhead.jump_to_keyframe()
    assert playhead.index(5) == 16 and playhead.index(35) == 14  # past the clip's end it loops


def test_media_loss_sums_the_layers_of_a_layered_uplink():
    base = pd.Timestamp("2026-01-01", tz="UTC")
    rows = []
    for second in range(4):
        time_ = base + pd.Timedelta(second, "s")
        # the server receives three layers of one camera: 10, 20 and 70 packets a second, high loses 7 a second
        for layer, rate, lost in (("low", 10, 0), ("standard", 20, 0), ("high", 70, 7)):
            rows.append((time_, "server", "cam", "outbound", layer, rate * second, lost * second))
        # a subscriber receives one stream, 50 packets a second, whose layer changes; it loses none
        rows.append((time_, "client", "viewer", "inbound", "high" if second < 2 else "low", 50 * second, 0))
    stats = pd.DataFrame(
        rows, columns=["time", "source", "participant", "direction", "layer", "packets", "packets_lost"]
    )
    stats["track"] = "MT1"
    stats["time"] = stats["time"].astype("datetime64[ns, UTC]")  # as telemetry frames have it
    loss = frames.media_loss(stats)
    uplink = loss[loss["hop"] == "uplink"]
    assert uplink["packets_expected"].tolist() == [107.0, 107.0, 107.0]  # 10 + 20 + 77, one row per second
    assert uplink["loss_fraction"].tolist() == pytest.approx([7 / 107] * 3)
    downlink = loss[loss["hop"] == "downlink"]
    assert downlink["packets_expected"].tolist() == [50.0, 50.0, 50.0]  # across the change of layer


# --- through a real server --------------------------------------------------------------------------


async def test_a_camera_is_one_publication_with_a_layer(server, join):
    sim = roomlab.Simulation(server, room="simulcast", workers=0, seed=1)
    sim.add(identity="cam", video=Camera(priority="high"))
    run = asyncio.ensure_future(sim.run(30, progress=False))
    try:
        viewer = await join("viewer", room="simulcast")
        track = await eventually(lambda: video_track(viewer), timeout=10)
        assert isinstance(track, roomlab.RemoteVideoTrack)
        assert await eventually(lambda: track.layer, timeout=5) == "high"  # the highest layer, with no limit
        (publication,) = [p for x in viewer.participants.values() for p in x.tracks.values()]
        assert (publication.track_name, publication.kind, publication.publish_priority) == ("camera", "video", "high")
        assert [(layer.name, layer.width, layer.height) for layer in publication.layers] == [
            ("low", 160, 90),
            ("standard", 320, 180),
            ("high", 640, 360),
        ]
        # REST lists one video track for the camera
        client = server.twilio_client()
        listed = await asyncio.to_thread(
            lambda: client.video.v1.rooms("simulcast").participants("cam").published_tracks.list()
        )
        assert [(t.name, t.kind, t.sid) for t in listed] == [("camera", "video", publication.track_sid)]
        frame = await asyncio.wait_for(track.recv(), 5)
        assert (frame.width, frame.height) == (640, 360)
        # the server measures each layer it receives
        forwarder = server.sfu.forwarders[publication.track_sid]
        measured = {layer.name: layer.bitrate_bps for layer in await asyncio.to_thread(server.call, forwarder.layers)}
        assert list(measured) == ["low", "standard", "high"]
        assert measured["low"] < measured["standard"] < measured["high"]
        # rtc_stats: the viewer receives the high layer; the server receives three layers of one track
        inbound = "direction == 'inbound' and kind == 'video' and packets > 20"
        assert await eventually(lambda: len(viewer.frame("rtc_stats").query(inbound)) > 0, timeout=3)
        assert set(viewer.frame("rtc_stats").query(inbound)["layer"]) == {"high"}
        uplink = "participant == 'cam' and source == 'server' and packets > 20"
        assert await eventually(lambda: len(set(server.frame("rtc_stats").query(uplink)["layer"])) == 3, timeout=3)
        assert set(server.frame("rtc_stats").query(uplink)["track"]) == {publication.track_sid}
    finally:
        sim.stop()
        await run


async def test_the_server_switches_a_decoding_subscriber_between_layers(server, join, caplog):
    caplog.set_level(logging.WARNING, logger="aiortc")
    await join("cam", room="switch", tracks=[camera_track()], decode_media=False)
    viewer = await join("viewer", room="switch")
    track = await eventually(lambda: video_track(viewer), timeout=5)
    assert await eventually(lambda: track.layer, timeout=5) == "high"
    frames = Frames(track)
    changes: list[str | None] = []
    track.on("layer_changed", changes.append)
    room_changes: list[str | None] = []
    viewer.on("track_layer_changed", lambda t, publication, participant: room_changes.append(t.layer))
    switch_times = {}
    try:
        for layer in ("low", "standard", "high", "low"):
            asked = time.monotonic()
            before = track.frames_received
            await select(server, track.sid, viewer, layer)
            assert await eventually(lambda layer=layer: track.layer == layer, timeout=2)
            switch_times[layer] = time.monotonic() - asked
            # decoding goes on, at the new layer's size
            assert await eventually(lambda n=before: track.frames_received >= n + 5, timeout=3)
            assert await eventually(lambda at=asked, size=SIZES[layer]: size in frames.sizes_since(at), timeout=2)
            settled = time.monotonic()
            await asyncio.sleep(0.3)
            assert frames.sizes_since(settled) == {SIZES[layer]}
    finally:
        frames.stop()
    assert all(seconds < 1.0 for seconds in switch_times.values()), switch_times
    assert changes == ["low", "standard", "high", "low"] and room_changes == changes
    # one stream for the subscriber: times rising, every frame on the publisher's 15 fps grid (a new
    # layer's first frames go a tick after the old layer's of the same instant when they come later)
    pts = [p for _, p, _, _ in frames.seen]
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False))
    grid = Counter(p % FRAME_TICKS for p in pts).most_common(1)[0][0]
    assert max((p - grid) % FRAME_TICKS for p in pts) < 10
    assert [r.message for r in caplog.records if "decode" in r.message] == []
    # the subscriber's own telemetry shows the layers it received
    await asyncio.sleep(1.2)
    rows = viewer.frame("rtc_stats").query("direction == 'inbound' and kind == 'video'")
    sampled = rows.sort_values("time")["layer"].dropna().tolist()
    assert sampled[-1] == "low" and len(set(sampled)) >= 2 and set(sampled) <= set(LAYERS), sampled


async def test_a_publisher_that_reconnects_continues_the_subscribers_timeline(server, join):
    cam = await join("cam", room="again", tracks=[camera_track()], decode_media=False)
    viewer = await join("viewer", room="again")
    track = await eventually(lambda: video_track(viewer), timeout=5)
    frames = Frames(track)
    try:
        assert await eventually(lambda: len(frames.seen) >= 10, timeout=5)
        old_pc = cam.pc
        await old_pc.close()  # the camera's media path breaks: a new connection, new RTP streams of each layer
        assert await eventually(lambda: cam.pc is not old_pc and cam.state == "connected", timeout=10)
        broke = time.monotonic()
        assert await eventually(lambda: len([f for f in frames.seen if f[0] > broke]) >= 10, timeout=10)
    finally:
        frames.stop()
    # the viewer's one stream: times rising on the 15 fps grid across the new streams, keeping pace with the clock
    pts = [p for _, p, _, _ in frames.seen]
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False))
    grid = Counter(p % FRAME_TICKS for p in pts).most_common(1)[0][0]
    assert max((p - grid) % FRAME_TICKS for p in pts) < 10
    elapsed = frames.seen[-1][0] - frames.seen[0][0]
    assert (pts[-1] - pts[0]) / 90_000 == pytest.approx(elapsed, abs=0.3), elapsed  # the break's time is skipped


async def test_a_switch_waits_at_most_for_the_next_aligned_keyframe(server, join):
    camera = camera_track()
    camera.on_sender = None  # a publisher that cannot make a keyframe on request: only the clips' own ones
    await join("cam", room="gop", tracks=[camera], decode_media=False)
    viewer = await join("viewer", room="gop", decode_media=False)
    track = await eventually(lambda: video_track(viewer), timeout=5)
    assert await eventually(lambda: track.layer, timeout=5) == "high"
    forwarder = server.sfu.forwarders[track.sid]
    for layer in ("low", "standard", "low", "high"):
        await select(server, track.sid, viewer, layer)
        assert await eventually(lambda layer=layer: track.layer == layer, timeout=2)
        selection = (await asyncio.to_thread(server.call, forwarder.receiving))[viewer.local_participant.sid]
        assert selection.current == selection.target == layer
        # keyframes every 8 frames (0.53 s) in every layer bound the wait, with room for a loaded machine
        assert 0 <= selection.switch_s < 0.9, (layer, selection)


async def test_a_subscriber_switched_off_gets_nothing_until_switched_on(server, join):
    await join("cam", room="off", tracks=[camera_track(("low", "standard"))], decode_media=False)
    viewer = await join("viewer", room="off", decode_media=False)
    track = await eventually(lambda: video_track(viewer), timeout=5)
    assert await eventually(lambda: track.layer, timeout=5) == "standard"
    assert await eventually(lambda: track.frames_received >= 5, timeout=3)
    await select(server, track.sid, viewer, None)
    assert await eventually(lambda: track.layer is None, timeout=2)
    await asyncio.sleep(0.3)  # what was on its way has arrived
    stopped = track.frames_received
    await asyncio.sleep(0.6)
    assert track.frames_received == stopped
    await select(server, track.sid, viewer, "low")
    assert await eventually(lambda: track.layer == "low", timeout=2)
    assert await eventually(lambda: track.frames_received >= stopped + 5, timeout=3)
    # the same slot carries it: still one video transceiver that receives
    receiving = [t for t in viewer.pc.getTransceivers() if t.kind == "video" and t.currentDirection == "recvonly"]
    assert len(receiving) == 1


async def test_layers_are_chosen_per_subscriber_and_checked(server, join):
    await join("cam", room="pairs", tracks=[camera_track()], decode_media=False)
    plain = roomlab.LocalVideoTrack.pattern(160, 90)
    screen = await join("screen", room="pairs", tracks=[plain])
    ann = await join("ann", room="pairs", decode_media=False)
    bob = await join("bob", room="pairs", decode_media=False)
    tracks = {viewer: await eventually(lambda v=viewer: named_track(v, "camera"), timeout=5) for viewer in (ann, bob)}
    camera_sid = tracks[ann].sid
    await select(server, camera_sid, ann, "low")
    assert await eventually(lambda: tracks[ann].layer == "low", timeout=2)
    await asyncio.sleep(0.3)
    assert tracks[bob].layer == "high"  # bob's choice is his own
    forwarder = server.sfu.forwarders[camera_sid]
    receiving = await asyncio.to_thread(server.call, forwarder.receiving)
    assert {sid: (s.current, s.target) for sid, s in receiving.items()} == {
        ann.local_participant.sid: ("low", "low"),
        bob.local_participant.sid: ("high", "high"),
        screen.local_participant.sid: ("high", "high"),
    }
    with pytest.raises(ValueError, match="low, standard, high or None"):
        await select(server, camera_sid, ann, "medium")
    with pytest.raises(ValueError, match="not subscribed"):
        await asyncio.to_thread(server.call, forwarder.select_layer, "PA" + "0" * 32, "low")
    pattern_sid = next(sid for sid, f in server.sfu.forwarders.items() if f.track.name == plain.name)
    with pytest.raises(ValueError, match="layer must be one of single or None"):
        await select(server, pattern_sid, ann, "low")
    # a track without layers is one layer: one stream, no layer for the subscriber, and it can be switched off
    pattern = await eventually(lambda: named_track(bob, plain.name), timeout=5)
    assert pattern.layer is None and await eventually(lambda: pattern.frames_received >= 5, timeout=5)
    pattern_layers = await asyncio.to_thread(server.call, server.sfu.forwarders[pattern_sid].layers)
    assert [(layer.name, layer.width, layer.height) for layer in pattern_layers] == [("single", 160, 90)]
    await select(server, pattern_sid, bob, None)
    await asyncio.sleep(0.3)  # what was on its way has arrived
    stopped = pattern.frames_received
    await asyncio.sleep(0.6)
    assert pattern.frames_received == stopped and pattern.layer is None
    await select(server, pattern_sid, bob, "single")
    assert await eventually(lambda: pattern.frames_received >= stopped + 5, timeout=5)


async def test_the_transcode_path_decodes_the_highest_layer_only(rooms_to_close):
    with roomlab.serve(media_path="transcode") as server:
        camera = await roomlab.connect(server.url, server.token("cam"), name="t", tracks=[camera_track()])
        viewer = await roomlab.connect(server.url, server.token("viewer"), name="t")
        rooms_to_close.extend([camera, viewer])
        track = await eventually(lambda: video_track(viewer), timeout=5)
        frame = await asyncio.wait_for(track.recv(), 10)
        assert (frame.width, frame.height) == (640, 360) and track.layer is None  # no switching on this path
        assert await eventually(lambda: track.frames_received >= 10, timeout=5)
        forwarder = server.sfu.forwarders[track.sid]
        assert await asyncio.to_thread(server.call, forwarder.layers) == []  # nothing to choose from here
        with pytest.raises(ValueError, match="no layers to select on the transcode path"):
            await select(server, track.sid, viewer, "low")
        await viewer.disconnect()
        await camera.disconnect()


async def test_the_server_refuses_bad_layers_in_a_publication(join):
    room = await join("alice", room="bad-layers")
    for layers, reason in (
        ([{"name": "ultra", "width": 1, "height": 1, "bitrate_bps": 1}], "low, standard, high"),
        ("high", "a list"),
        ([], "at least one layer"),
    ):
        with pytest.raises(roomlab.RoomError, match=reason) as refused:
            await room._request(
                {"type": "publish", "name": f"cam-{reason}", "kind": "video", "options": {"layers": layers}}
            )
        assert refused.value.code == 53300
    with pytest.raises(roomlab.RoomError, match="unknown option"):
        await room._request({"type": "publish", "name": "mic", "kind": "audio", "options": {"layers": []}})
