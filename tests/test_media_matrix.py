"""Every audio and video publisher reaches every subscriber, measured from each subscriber's own
`rtc_stats`: bots in a worker and in this process, plain clients, joining together and one after
another. And a published track that delivers no media is never silent about it."""

from __future__ import annotations

import asyncio
import fractions
from dataclasses import dataclass

import pandas as pd
import requests
from aiortc import MediaStreamTrack
from twilio.base.exceptions import TwilioException

import roomlab
from roomlab.client.media_track import ToneSource
from roomlab.sim import Camera, Talker

from .conftest import eventually

ALWAYS_TALKING = Talker(mean_talk_s=1000, mean_silence_s=0.001)


@dataclass(frozen=True)
class Published:
    identity: str
    sid: str
    kind: str
    name: str


async def published_media(server: roomlab.Server, room: str) -> list[Published]:
    """The audio and video tracks published in `room` now, as the REST API lists them."""

    def listing() -> list[Published]:
        client = server.twilio_client()
        found = []
        for participant in client.video.v1.rooms(room).participants.list(status="connected"):
            tracks = client.video.v1.rooms(room).participants(participant.sid).published_tracks.list()
            found += [Published(participant.identity, t.sid, t.kind, t.name) for t in tracks if t.kind != "data"]
        return found

    return await asyncio.to_thread(listing)


def missing_pairs(
    stats: pd.DataFrame, published: list[Published], subscribers: list[str], least: dict[str, int]
) -> list[str]:
    """Every (publisher's track, subscriber) pair whose subscriber received fewer than `least[kind]`
    packets of it, according to the subscriber's own inbound rows."""
    inbound = stats[(stats["source"] == "client") & (stats["direction"] == "inbound")]
    received = inbound.groupby(["participant", "track"], observed=True)["packets"].max()
    missing = []
    for track in published:
        for subscriber in subscribers:
            if subscriber == track.identity:
                continue
            packets = int(received.get((subscriber, track.sid), 0))
            if packets < least[track.kind]:
                missing.append(f"{subscriber} got {packets} packets of {track.identity}'s {track.kind} {track.name!r}")
    return missing


async def until_published(server: roomlab.Server, room: str, count: int, timeout: float = 30) -> list[Published]:
    """The room's media tracks once `count` are published (bots start slower on a loaded machine)."""
    deadline = asyncio.get_running_loop().time() + timeout
    published: list[Published] = []
    while asyncio.get_running_loop().time() < deadline:
        try:
            published = await published_media(server, room)
        except TwilioException:  # the room does not exist before its first participant joins
            published = []
        if len(published) >= count:
            break
        await asyncio.sleep(0.3)
    return published


async def run_and_list(sim: roomlab.Simulation, server: roomlab.Server, tracks: int, media_seconds: float):
    """Run `sim` until `tracks` media tracks are published, then `media_seconds` more, then stop it."""
    run = asyncio.ensure_future(sim.run(120, progress=False))
    published = await until_published(server, sim.room, tracks)
    await asyncio.sleep(media_seconds)
    sim.stop()
    await run
    return published


async def test_four_talkers_in_a_worker_all_hear_each_other(server):
    sim = roomlab.Simulation(server, room="talkers", workers=1, seed=1)
    sim.add(4, identity="bot-{i}", audio=ALWAYS_TALKING)
    published = await run_and_list(sim, server, tracks=4, media_seconds=3)
    assert sorted(p.identity for p in published) == ["bot-0", "bot-1", "bot-2", "bot-3"]
    assert missing_pairs(sim.frame("rtc_stats"), published, sim.identities, {"audio": 80}) == []
    # and the server received every publisher's audio
    uplinks = server.frame("rtc_stats").query("source == 'server' and direction == 'outbound'")
    assert set(uplinks[uplinks["packets"] > 80]["track"]) == {p.sid for p in published}


async def test_three_cameras_and_two_viewers_all_see_every_camera(server):
    sim = roomlab.Simulation(server, room="cameras", workers=0, seed=2)
    sim.add(3, identity="cam-{i}", video=Camera())
    sim.add(2, identity="viewer-{i}")
    published = await run_and_list(sim, server, tracks=3, media_seconds=3)
    # one layered publication per camera
    assert sorted((p.identity, p.kind, p.name) for p in published) == [
        (f"cam-{i}", "video", "camera") for i in range(3)
    ]
    stats = sim.frame("rtc_stats")
    assert missing_pairs(stats, published, sim.identities, {"video": 30}) == []
    # every subscriber, from its own rows, receives one layer of each camera (which one: its allocation)
    inbound = stats[(stats["source"] == "client") & (stats["direction"] == "inbound") & (stats["kind"] == "video")]
    last = inbound.sort_values("time").groupby(["participant", "track"], observed=True)["layer"].last()
    assert len(last) == 3 * 4 and set(last) <= {"low", "standard", "high"}, last
    # and the server receives the three layers of every camera
    uplinks = server.frame("rtc_stats").query("source == 'server' and direction == 'outbound' and packets > 20")
    received = uplinks.groupby("track", observed=True)["layer"].unique()
    assert {sid: sorted(layers) for sid, layers in received.items()} == {
        p.sid: ["high", "low", "standard"] for p in published
    }


async def test_late_joiners_and_plain_clients_hear_and_see_everyone(server):
    sim = roomlab.Simulation(server, room="mixed", workers=0, seed=3)
    sim.add(identity="early", audio=ALWAYS_TALKING, video=Camera(layers=("low",)))
    sim.add(identity="late", audio=ALWAYS_TALKING, join_at=1.0)
    sim.add(identity="later", audio=ALWAYS_TALKING, video=Camera(layers=("low",)), join_at=2.0)
    tone = roomlab.LocalAudioTrack.tone()
    speaker = await roomlab.connect(server.url, server.token("plain-speaker"), name="mixed", tracks=[tone])
    listener = None
    try:
        run = asyncio.ensure_future(sim.run(120, progress=False))
        await until_published(server, "mixed", 6)  # the plain speaker's tone and the bots' five tracks
        pattern = roomlab.LocalVideoTrack.pattern(width=160, height=90)
        listener = await roomlab.connect(server.url, server.token("plain-camera"), name="mixed", tracks=[pattern])
        published = await until_published(server, "mixed", 7)
        await asyncio.sleep(3)
        sim.stop()
        await run
    finally:
        stats = pd.concat([sim.frame("rtc_stats"), speaker.frame("rtc_stats")])
        if listener is not None:
            stats = pd.concat([stats, listener.frame("rtc_stats")])
            await listener.disconnect()
        await speaker.disconnect()
    publishers = {p.identity for p in published}
    assert publishers == {"early", "late", "later", "plain-speaker", "plain-camera"}
    subscribers = [*sim.identities, "plain-speaker", "plain-camera"]
    missing = missing_pairs(stats, published, subscribers, {"audio": 40, "video": 15})
    assert missing == []


class GatedTone(MediaStreamTrack):
    """A tone that sends nothing until its gate opens: a microphone that delivers no media."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self._tone = ToneSource()

    async def recv(self):  # type: ignore[no-untyped-def]
        await self.gate.wait()
        frame = await self._tone.recv()
        frame.time_base = fractions.Fraction(1, 48_000)
        return frame


async def test_a_track_that_delivers_no_media_is_an_event_and_a_warning(server, join):
    source = GatedTone()
    warnings: list[tuple[str, str]] = []
    room = await join("mute", room="stall")
    room.on("track_warning", lambda name, publication, participant: warnings.append((name, publication.track_name)))
    room.on("track_warnings_cleared", lambda publication, participant: warnings.append(("cleared", "")))
    publication = await room.local_participant.publish_track(roomlab.LocalAudioTrack(source, "microphone"))

    def rows(event: str) -> pd.DataFrame:
        events = server.frame("events")
        return events[(events["event"] == event) & (events["track"] == publication.track_sid)]

    stalled = await eventually(lambda: len(rows("track-stalled")), timeout=6)
    assert stalled == 1
    assert rows("track-stalled")["identity"].tolist() == ["mute"]
    assert rows("track-stalled")["detail"].tolist() == ["no media for 3 s"]
    assert await eventually(lambda: warnings == [("media-stalled", "microphone")])
    source.gate.set()
    assert await eventually(lambda: len(rows("track-resumed")), timeout=4) == 1
    assert await eventually(lambda: warnings[-1] == ("cleared", ""))
    assert len(rows("track-stalled")) == 1  # flowing media raises nothing more
    # the REST history of the room has both, with their detail
    auth = (server.api_key, server.api_secret)
    listed = await asyncio.to_thread(lambda: requests.get(f"{server.url}/v1/Rooms/stall/Events", auth=auth).json())
    names = [(e["event"], e["detail"]) for e in listed["events"] if e["track_sid"] == publication.track_sid]
    assert ("track-stalled", "no media for 3 s") in names and ("track-resumed", "media flows again") in names


async def test_media_negotiated_while_the_connection_is_still_coming_up_flows(server, rooms_to_close):
    # slow's handshakes take several round trips of 150 ms: fast publishes while slow's DTLS is still connecting
    joining = asyncio.ensure_future(
        roomlab.connect(server.url, server.token("slow"), name="handshake", link=roomlab.Link(delay_ms=150))
    )
    await eventually(lambda: len(server.frame("events").query("event == 'participant-connected'")) == 1)
    fast = await roomlab.connect(
        server.url, server.token("fast"), name="handshake", tracks=[roomlab.LocalAudioTrack.tone()]
    )
    rooms_to_close.append(fast)
    slow = await joining
    rooms_to_close.append(slow)

    async def packets() -> int:
        stats = await slow.get_stats()
        return sum(s.packetsReceived for s in stats.values() if s.type == "inbound-rtp" and s.kind == "audio")

    deadline = asyncio.get_running_loop().time() + 5
    while await packets() < 50 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    assert await packets() >= 50
