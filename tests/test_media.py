"""Audio and video published by one client reach another through the server."""

from __future__ import annotations

import asyncio
import fractions
from pathlib import Path

import av
import numpy as np
import pytest

import roomlab
from roomlab.net.rtp import is_keyframe
from roomlab.sim import Camera, Talker
from roomlab.sim.media import camera_clip

from .conftest import eventually


def subscribed(room: roomlab.Room, kind: str):  # type: ignore[no-untyped-def]
    return next(
        (p.track for x in room.participants.values() for p in x.tracks.values() if p.kind == kind and p.track),
        None,
    )


async def inbound_packets(room: roomlab.Room, kind: str) -> int:
    stats = await room.get_stats()
    return sum(s.packetsReceived for s in stats.values() if s.type == "inbound-rtp" and s.kind == kind)


async def test_audio_tone_reaches_a_subscriber_and_is_counted_in_packets(join):
    alice = await join("alice", room="call", tracks=[roomlab.LocalAudioTrack.tone(440)])
    bob = await join("bob", room="call")
    audio = await eventually(lambda: subscribed(bob, "audio"))
    assert isinstance(audio, roomlab.RemoteAudioTrack)
    assert audio.participant.identity == "alice"
    first = await eventually_packets(bob, "audio", 25)
    await asyncio.sleep(0.5)
    later = await inbound_packets(bob, "audio")
    assert later >= first + 15  # 50 packets a second of 20 ms Opus
    frame = await asyncio.wait_for(audio.recv(), 5)
    samples = frame.to_ndarray().astype(float).ravel()
    assert frame.sample_rate == 48_000 and np.abs(samples).max() > 1000  # a tone, not silence
    assert alice.local_participant.tracks  # the publication is listed


async def eventually_packets(room: roomlab.Room, kind: str, at_least: int) -> int:
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        count = await inbound_packets(room, kind)
        if count >= at_least or asyncio.get_running_loop().time() > deadline:
            return count
        await asyncio.sleep(0.05)


async def test_video_pattern_frames_decode_at_the_subscriber(join):
    await join("alice", room="screen", tracks=[roomlab.LocalVideoTrack.pattern(320, 180, fps=15)])
    bob = await join("bob", room="screen")
    video = await eventually(lambda: subscribed(bob, "video"))
    frame = await asyncio.wait_for(video.recv(), 10)
    assert (frame.width, frame.height) == (320, 180)
    await eventually(lambda: video.frames_received >= 5, timeout=10)
    assert video.frames_received >= 5


async def test_media_from_a_file(tmp_path: Path, join):
    path = tmp_path / "beep.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=48_000, layout="mono")
        for i in range(25):
            t = (np.arange(960) + i * 960) / 48_000
            data = (8000 * np.sin(2 * np.pi * 660 * t)).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48_000, i * 960, fractions.Fraction(1, 48_000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    track = roomlab.LocalAudioTrack.from_file(path)
    await join("alice", room="file", tracks=[track])
    bob = await join("bob", room="file")
    assert await eventually_packets(bob, "audio", 10) >= 10


def test_media_argument_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        roomlab.LocalAudioTrack.from_file(tmp_path / "missing.wav")
    (tmp_path / "text.txt").write_text("not media")
    with pytest.raises(ValueError, match="cannot open"):
        roomlab.LocalVideoTrack.from_file(tmp_path / "text.txt")
    with pytest.raises(ValueError, match="frequency"):
        roomlab.LocalAudioTrack.tone(0)
    with pytest.raises(ValueError, match="even"):
        roomlab.LocalVideoTrack.pattern(321, 180)
    with pytest.raises(ValueError, match="fps"):
        roomlab.LocalVideoTrack.pattern(fps=500)


async def test_media_subscription_follows_rules_and_unpublish(server, join):
    tone = roomlab.LocalAudioTrack.tone(330)
    alice = await join("alice", room="switch", tracks=[tone])
    bob = await join("bob", room="switch")
    first = await eventually(lambda: subscribed(bob, "audio"))
    events: list = []
    bob.on("track_unsubscribed", lambda track, pub, p: events.append(("off", track.kind)))
    bob.on("track_subscribed", lambda track, pub, p: events.append(("on", track.kind)))
    rules = server.twilio_client().video.v1.rooms("switch").participants("bob").subscribe_rules
    await asyncio.to_thread(lambda: rules.update(rules=[{"type": "exclude", "all": True}]))
    await eventually(lambda: events == [("off", "audio")])
    assert subscribed(bob, "audio") is None
    await asyncio.to_thread(lambda: rules.update(rules=[{"type": "include", "kind": "audio"}]))
    again = await eventually(lambda: subscribed(bob, "audio"))
    assert again is not first and events == [("off", "audio"), ("on", "audio")]
    frame = await asyncio.wait_for(again.recv(), 5)  # media flows again on the reused transceiver
    assert frame.sample_rate == 48_000
    await alice.local_participant.unpublish_track(tone)
    await eventually(lambda: len(events) == 3)
    assert events[-1] == ("off", "audio")
    assert next(iter(bob.participants.values())).tracks == {}


async def test_server_stop_disconnects_clients(rooms_to_close):
    server = roomlab.serve()
    room = await roomlab.connect(server.url, server.token("alice"), name="short-lived")
    rooms_to_close.append(room)
    reasons: list = []
    room.on("disconnected", lambda r, error: reasons.append(error))
    await asyncio.to_thread(server.stop)
    await eventually(lambda: reasons)
    assert reasons[0] is not None and reasons[0].code == 53000
    assert room.state == "disconnected"


def decoder_threads() -> int:
    import threading

    return sum(1 for t in threading.enumerate() if t.name.endswith("-decoder") and t.is_alive())


@pytest.mark.parametrize("media_path", ["forward", "transcode"])
async def test_forwarded_media_is_not_decoded_on_the_server(media_path, rooms_to_close):
    with roomlab.serve(media_path=media_path) as server:
        before = decoder_threads()
        alice = await roomlab.connect(
            server.url,
            server.token("alice"),
            name="fwd",
            tracks=[roomlab.LocalAudioTrack.tone(), roomlab.LocalVideoTrack.pattern()],
        )
        bob = await roomlab.connect(server.url, server.token("bob"), name="fwd")
        rooms_to_close.extend([alice, bob])
        video = await eventually(lambda: subscribed(bob, "video"))
        audio = await eventually(lambda: subscribed(bob, "audio"))
        frame = await asyncio.wait_for(video.recv(), 10)  # decodable at the subscriber
        assert (frame.width, frame.height) == (320, 180)
        assert (await asyncio.wait_for(audio.recv(), 5)).sample_rate == 48_000
        session = server.sfu.sessions[alice.local_participant.sid]
        publishing = [s.transceiver.receiver for s in session.slots if s.role == "publish"]
        server_decoders = [r._RTCRtpReceiver__decoder_thread for r in publishing]
        alive = [t for t in server_decoders if t is not None and t.is_alive()]
        # bob decodes his two tracks; the server decodes nothing when it forwards
        if media_path == "forward":
            assert alive == [] and decoder_threads() - before == 2
        else:
            assert len(alive) == 2 and decoder_threads() - before == 4
        forwarded = [f.media.frames_forwarded for f in server.sfu.forwarders.values()]
        assert all(n > 0 for n in forwarded)
        await alice.disconnect()
        await bob.disconnect()


async def test_subscriber_keyframe_request_reaches_the_publisher(join):
    alice = await join("alice", room="pli", tracks=[roomlab.LocalVideoTrack.pattern()])
    bob = await join("bob", room="pli")
    video = await eventually(lambda: subscribed(bob, "video"))
    await asyncio.wait_for(video.recv(), 10)
    sender = next(t.sender for t in alice.pc.getTransceivers() if t.sender.track is not None)
    requests: list[float] = []
    original = sender._send_keyframe
    sender._send_keyframe = lambda: (requests.append(asyncio.get_running_loop().time()), original())
    await asyncio.sleep(0.6)  # past the forwarder's once-per-0.5 s limit since bob subscribed
    receiver = next(t.receiver for t in bob.pc.getTransceivers() if t.kind == "video")
    ssrc = receiver.getSynchronizationSources()[0].source
    await receiver._send_rtcp_pli(ssrc)  # bob reports a lost picture
    assert await eventually(lambda: requests, timeout=3)
    assert len(requests) == 1


async def test_clients_can_receive_media_without_decoding_it(join):
    await join("alice", room="nodecode", tracks=[roomlab.LocalAudioTrack.tone(), roomlab.LocalVideoTrack.pattern()])
    await eventually(lambda: decoder_threads() == 0, timeout=2)  # earlier tests' decoders wind down
    before = decoder_threads()
    bob = await join("bob", room="nodecode", decode_media=False)
    video = await eventually(lambda: subscribed(bob, "video"))
    audio = await eventually(lambda: subscribed(bob, "audio"))
    encoded = await asyncio.wait_for(video.recv(), 10)
    assert isinstance(encoded, bytes) and len(encoded) > 10  # a VP8 frame, as it arrived
    assert isinstance(await asyncio.wait_for(audio.recv(), 5), bytes)
    await eventually(lambda: audio.frames_received >= 10)
    assert decoder_threads() == before  # bob decodes nothing
    assert await inbound_packets(bob, "audio") >= 10


def test_keyframes_are_told_from_other_frames():
    clip = camera_clip("low")
    flags = [is_keyframe("video/VP8", packet) for packet in clip.packets]
    assert [i for i, key in enumerate(flags) if key] == list(clip.keyframes) and len(clip.keyframes) >= 2
    # what a receiver re-assembles when it starts listening within a key frame: the frame's tail, from
    # one of its RTP packets on; a tail taken for a key frame is what a subscriber would fail to decode
    high = camera_clip("high")
    tails = [high.packets[i][cut:] for i in high.keyframes for cut in range(1100, len(high.packets[i]), 1100)]
    assert len(tails) > 50 and sum(not tail[0] & 0x01 for tail in tails) > 10  # tails that look like one
    assert not any(is_keyframe("video/VP8", tail) for tail in tails)
    idr, non_idr = b"\x00\x00\x00\x01\x67\x42" + b"\x00\x00\x00\x01\x65\x88", b"\x00\x00\x00\x01\x41\x9a"
    assert is_keyframe("video/H264", idr) and not is_keyframe("video/H264", non_idr)


async def test_a_subscriber_joining_mid_stream_starts_decoding_at_a_keyframe(server, join, caplog):
    sim = roomlab.Simulation(server, room="midstream", workers=0, seed=1)
    sim.add(identity="camera", video=Camera(layers=("low",)))
    run = asyncio.ensure_future(sim.run(4, progress=False))
    await asyncio.sleep(1.7)  # between two of the clip's keyframes (one a second)
    viewer = await join("viewer", room="midstream")
    track = await eventually(lambda: subscribed(viewer, "video"))
    assert await eventually(lambda: track.frames_received >= 10, timeout=3)
    await run
    assert [r.message for r in caplog.records if "failed to decode" in r.message] == []


async def test_audio_through_a_lossy_uplink_loses_what_the_link_loses_and_no_more(server, join):
    talker = Talker(mean_talk_s=1000, mean_silence_s=0.001)
    tracks = talker.tracks()
    talker._talking = True  # speaking from the first packet
    link = roomlab.Link(up_loss=0.10, seed=11)
    speaker = await join("speaker", room="lossy-audio", tracks=tracks, decode_media=False, link=link)
    listener = await join("listener", room="lossy-audio", decode_media=False)
    track = await eventually(lambda: subscribed(listener, "audio"))
    await asyncio.sleep(5)
    sent = sum(s.packetsSent for s in (await speaker.get_stats()).values() if s.type == "outbound-rtp")
    received = await inbound_packets(listener, "audio")
    assert sent >= 200 and track.frames_received > 0
    # the link drops about 10 % of the speaker's packets; the server must not turn a gap into more loss
    assert 0.85 <= received / sent <= 0.95, (received, sent)
