"""Reconnection (SPEC §5): a client whose signaling socket or media path breaks emits
`reconnecting` (53001 / 53405), resumes its session and emits `reconnected` with its participant
SID, tracks and subscriptions intact; others see `participant_reconnecting` / `_reconnected`; a
session that cannot be resumed within the window ends in `disconnected` with the code."""

from __future__ import annotations

import asyncio
import time

import av
import pytest
import requests

import roomlab

from .conftest import eventually
from .test_data_tracks import subscribed_data_track


class TcpProxy:
    """A TCP proxy on 127.0.0.1 in front of the server: `drop()` closes every connection through
    it (as a NAT or a load balancer would), `refuse` holds new ones off meanwhile."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.refuse = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    def drop(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, not a goodbye: neither end says it is leaving
        self._writers.clear()

    def close(self) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()


def record(room: roomlab.Room, *events: str) -> list:
    """What `room` emits of `events`, in order: (event, first argument's code or identity)."""
    seen: list = []
    for event in events:

        def handler(*args, event=event):  # type: ignore[no-untyped-def]
            first = args[0] if args else None
            seen.append((event, getattr(first, "code", None) or getattr(first, "identity", None)))

        room.on(event, handler)
    return seen


def messages_of(room: roomlab.Room) -> list:
    received: list = []
    room.on("track_message", lambda data, track, participant: received.append((participant.identity, data)))
    return received


async def test_a_dropped_signaling_socket_resumes_the_session_with_the_same_sids(server, join):
    proxy = TcpProxy(server.port)
    url = await proxy.start()
    try:
        alice = await roomlab.connect(url, server.token("alice"), name="proxied", tracks=[roomlab.LocalDataTrack("a")])
        bob = await join("bob", room="proxied", tracks=[roomlab.LocalDataTrack("b")])
        alice_track, bob_track = alice.local_participant.tracks, bob.local_participant.tracks
        sids = (alice.sid, alice.local_participant.sid, list(alice_track))
        alice_seen = record(alice, "reconnecting", "reconnected", "disconnected", "participant_disconnected")
        bob_seen = record(bob, "participant_reconnecting", "participant_reconnected", "participant_disconnected")
        to_alice, to_bob = messages_of(alice), messages_of(bob)
        await eventually(lambda: subscribed_data_track(bob, "alice", "a") and subscribed_data_track(alice, "bob", "b"))
        remote_a = subscribed_data_track(bob, "alice", "a")

        proxy.refuse = True
        proxy.drop()
        assert await eventually(lambda: alice.state == "reconnecting" and bob_seen)
        client = server.twilio_client()
        status = await asyncio.to_thread(lambda: client.video.v1.rooms("proxied").participants(sids[1]).fetch().status)
        assert status == "reconnecting"
        # the media path is untouched: data keeps flowing both ways while signaling is down
        next(iter(alice_track.values())).track.send("during the gap")
        next(iter(bob_track.values())).track.send("during the gap")
        assert await eventually(lambda: ("alice", "during the gap") in to_bob and ("bob", "during the gap") in to_alice)

        proxy.refuse = False
        assert await eventually(lambda: alice.state == "connected", timeout=10)
        assert alice_seen == [("reconnecting", 53001), ("reconnected", None)]
        assert await eventually(lambda: len(bob_seen) == 2)
        assert bob_seen == [("participant_reconnecting", "alice"), ("participant_reconnected", "alice")]
        assert (alice.sid, alice.local_participant.sid, list(alice.local_participant.tracks)) == sids
        assert subscribed_data_track(bob, "alice", "a") is remote_a  # the same subscription, not a new one
        next(iter(alice_track.values())).track.send("after")
        next(iter(bob_track.values())).track.send("after")
        assert await eventually(lambda: ("alice", "after") in to_bob and ("bob", "after") in to_alice)
        # signaling works again: a track published now reaches bob
        await alice.local_participant.publish_track(roomlab.LocalDataTrack("later"))
        assert await eventually(lambda: subscribed_data_track(bob, "alice", "later"))
        events = server.frame("events")
        mine = events[(events["participant"] == sids[1]) & events["event"].str.startswith("participant-")]
        assert list(mine["event"]) == ["participant-connected", "participant-reconnecting", "participant-reconnected"]
        assert mine["code"].iloc[1] == 53001
        await alice.disconnect()
    finally:
        proxy.close()


async def test_a_broken_media_path_reconnects_with_a_new_connection(server, join):
    alice = await join("alice", room="media-break", tracks=[roomlab.LocalDataTrack("a")])
    bob = await join("bob", room="media-break", tracks=[roomlab.LocalDataTrack("b")])
    alice_seen = record(alice, "reconnecting", "reconnected", "disconnected")
    bob_seen = record(bob, "participant_reconnecting", "participant_reconnected")
    to_alice, to_bob = messages_of(alice), messages_of(bob)
    await eventually(lambda: subscribed_data_track(bob, "alice", "a") and subscribed_data_track(alice, "bob", "b"))
    remote_b = subscribed_data_track(alice, "bob", "b")
    first_pc = alice.pc
    await first_pc.close()  # the media connection dies under the room
    assert await eventually(lambda: alice_seen == [("reconnecting", 53405), ("reconnected", None)], timeout=10)
    assert alice.pc is not first_pc and alice.pc.connectionState == "connected"
    assert await eventually(lambda: len(bob_seen) == 2)
    assert bob_seen == [("participant_reconnecting", "alice"), ("participant_reconnected", "alice")]
    assert subscribed_data_track(alice, "bob", "b") is remote_b
    alice.local_participant.tracks[next(iter(alice.local_participant.tracks))].track.send("on the new connection")
    bob.local_participant.tracks[next(iter(bob.local_participant.tracks))].track.send("to the new connection")
    alice.local_participant.publish_data("publish_data too")
    assert await eventually(
        lambda: ("alice", "on the new connection") in to_bob and ("bob", "to the new connection") in to_alice
    )


async def test_a_server_restarted_on_the_same_file_takes_its_participants_back(tmp_path):
    db = tmp_path / "rooms.db"
    first = roomlab.serve(db=db)
    port, credentials = first.port, (first.api_key, first.api_secret)
    second = None
    try:
        tone = roomlab.LocalAudioTrack.tone()
        a_data = roomlab.LocalDataTrack("a")
        alice = await roomlab.connect(first.url, first.token("alice"), name="durable", tracks=[a_data, tone])
        bob = await roomlab.connect(first.url, first.token("bob"), name="durable", tracks=[roomlab.LocalDataTrack("b")])
        await eventually(lambda: subscribed_data_track(bob, "alice", "a") and subscribed_data_track(alice, "bob", "b"))
        before = {
            room.local_participant.identity: (room.sid, room.local_participant.sid, list(room.local_participant.tracks))
            for room in (alice, bob)
        }
        remote_a = subscribed_data_track(bob, "alice", "a")
        heard = next(p.track for x in bob.participants.values() for p in x.tracks.values() if p.kind == "audio")
        alice_seen = record(alice, "reconnecting", "reconnected", "disconnected")
        bob_seen = record(bob, "reconnecting", "reconnected", "disconnected")
        to_alice, to_bob = messages_of(alice), messages_of(bob)

        await asyncio.to_thread(first.stop)
        assert await eventually(lambda: alice.state == bob.state == "reconnecting")
        listening = asyncio.ensure_future(heard.recv())  # a reader waiting across the restart
        await asyncio.sleep(0.2)
        assert not listening.done()
        a_track = next(iter(alice.local_participant.tracks.values())).track
        a_track.send("sent while the server was down")  # held, and sent on the new connection
        second = await asyncio.to_thread(lambda: roomlab.serve(db=db, port=port))
        assert await eventually(lambda: alice.state == bob.state == "connected", timeout=10)
        assert alice_seen == bob_seen == [("reconnecting", 53001), ("reconnected", None)]
        after = {
            room.local_participant.identity: (room.sid, room.local_participant.sid, list(room.local_participant.tracks))
            for room in (alice, bob)
        }
        assert after == before
        assert subscribed_data_track(bob, "alice", "a") is remote_a
        # alice's audio is published again and bob's track (the same object) carries it on
        frames = heard.frames_received
        assert await eventually(lambda: heard.frames_received >= frames + 25, timeout=5)
        assert isinstance(await asyncio.wait_for(listening, 5), av.AudioFrame)
        audio = [p for x in bob.participants.values() for p in x.tracks.values() if p.kind == "audio"]
        assert [p.track for p in audio] == [heard]
        a_track.send("after the restart")
        next(iter(bob.local_participant.tracks.values())).track.send("after the restart")
        assert await eventually(
            lambda: ("alice", "after the restart") in to_bob and ("bob", "after the restart") in to_alice
        )
        assert [m for m in to_bob if m[0] == "alice"] == [
            ("alice", "sent while the server was down"),
            ("alice", "after the restart"),
        ]
        # the restarted server lists them as connected, with their tracks under the same SIDs
        rest = requests.get(f"{second.url}/v1/Rooms/durable/Participants", auth=credentials).json()
        assert sorted((p["identity"], p["sid"], p["status"]) for p in rest["participants"]) == [
            ("alice", before["alice"][1], "connected"),
            ("bob", before["bob"][1], "connected"),
        ]
        published = requests.get(
            f"{second.url}/v1/Rooms/durable/Participants/alice/PublishedTracks", auth=credentials
        ).json()["published_tracks"]
        assert sorted(t["sid"] for t in published) == sorted(before["alice"][2])
        await alice.disconnect()
        await bob.disconnect()
    finally:
        first.stop()
        if second is not None:
            second.stop()


async def test_a_server_gone_longer_than_the_window_ends_the_session(tmp_path):
    window = 1.0
    server = roomlab.serve(db=tmp_path / "rooms.db", reconnect_window=window)
    try:
        alice = await roomlab.connect(server.url, server.token("alice"), name="gone")
        seen = record(alice, "reconnecting", "reconnected", "disconnected")
        errors: list = []
        alice.on("disconnected", lambda room, error: errors.append(error))
        await asyncio.to_thread(server.stop)
        stopped = time.monotonic()
        assert await eventually(lambda: errors, timeout=window + 5)
        assert time.monotonic() - stopped < window + 2
        assert seen == [("reconnecting", 53001), ("disconnected", None)]
        assert isinstance(errors[0], roomlab.RoomError) and errors[0].code == 53000
        assert "reconnection attempts exhausted" in errors[0].message
        assert alice.state == "disconnected"
    finally:
        server.stop()


async def test_a_session_that_has_ended_is_refused_with_53204(tmp_path):
    """A client that comes back once its session has ended (here the restarted server keeps
    sessions for no time at all) is told so: `disconnected` with 53204."""
    db = tmp_path / "rooms.db"
    first = roomlab.serve(db=db)
    port = first.port
    second = None
    try:
        alice = await roomlab.connect(first.url, first.token("alice"), name="late")
        errors: list = []
        alice.on("disconnected", lambda room, error: errors.append(error))
        await asyncio.to_thread(first.stop)
        second = await asyncio.to_thread(lambda: roomlab.serve(db=db, port=port, reconnect_window=0))
        assert await eventually(lambda: errors, timeout=10)
        assert errors[0].code == 53204 and alice.state == "disconnected"
        events = second.frame("events")
        assert list(events["event"]) == ["participant-disconnected", "room-ended"] and events["code"].iloc[0] == 53001
    finally:
        first.stop()
        if second is not None:
            second.stop()


@pytest.mark.parametrize("window", [-1, "30", True])
def test_reconnect_window_must_be_seconds(window):
    with pytest.raises(ValueError, match="reconnect_window must be a number of seconds"):
        roomlab.serve(reconnect_window=window)
