"""Telemetry as pandas frames: recorded from a real room, analysed, saved, loaded and watched."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

import roomlab
from roomlab.protocol import framing
from roomlab.sim import Camera
from roomlab.telemetry.analysis import bitrate, latency, loss
from roomlab.telemetry.recorder import Table, Telemetry, now_ns
from roomlab.telemetry.schema import TABLES

from .conftest import eventually


def remote_data_track(room: roomlab.Room, name: str):  # type: ignore[no-untyped-def]
    return next(
        (p.track for x in room.participants.values() for p in x.tracks.values() if p.track_name == name and p.track),
        None,
    )


async def test_messages_frame_has_one_row_per_received_message(join):
    alice, bob = await join("alice", room="frames"), await join("bob", room="frames")
    track = roomlab.LocalDataTrack("strokes")
    await alice.local_participant.publish_track(track)
    await eventually(lambda: remote_data_track(bob, "strokes"))
    payloads = ["a" * n for n in range(1, 51)]
    for payload in payloads:
        track.send(payload)
    alice.local_participant.publish_data(b"12345", topic="chat")
    await eventually(lambda: len(bob.frame("messages")) == 51)
    messages = bob.frame("messages")
    strokes = messages[messages["track"] == "strokes"]
    assert strokes["seq"].tolist() == list(range(1, 51))
    assert strokes["size"].tolist() == list(range(1, 51))
    assert (strokes["latency_ms"] >= 0).all() and (strokes["latency_ms"] < 1000).all()
    assert set(strokes["publisher"]) == {"alice"} and set(strokes["subscriber"]) == {"bob"}
    assert strokes["reliable"].all() and set(strokes["room"]) == {"frames"}
    assert (strokes["time"] >= strokes["sent_time"]).all()
    assert str(messages["time"].dtype) == "datetime64[ns, UTC]"
    chat = messages[messages["track"] == "_reliable"].iloc[0]
    assert (chat["topic"], chat["size"], chat["seq"]) == ("chat", 5, 1)
    assert loss(messages)["lost"].tolist() == [0, 0]
    # the publisher's own client did not record anything it sent as received
    assert alice.frame("messages").empty


async def test_loss_counts_exactly_the_withheld_messages(join):
    alice, bob = await join("alice", room="gaps"), await join("bob", room="gaps")
    track = roomlab.LocalDataTrack("withheld")
    await alice.local_participant.publish_track(track)
    await eventually(lambda: remote_data_track(bob, "withheld"))
    withheld = {17, 42, 43, 99}
    for seq in range(1, 121):
        if seq not in withheld:  # the publisher skips these numbers: to the subscriber, they are lost
            track._channel.send(framing.encode(f"m{seq}", seq))
    track._channel.send(framing.encode("dup", 50))  # and one number twice
    await eventually(lambda: len(bob.frame("messages")) == 117)
    report = loss(bob.frame("messages")).iloc[0]
    assert (report["sent"], report["received"], report["lost"], report["duplicated"]) == (120, 116, 4, 1)
    assert report["loss_rate"] == pytest.approx(4 / 120)
    assert report["reordered"] == 1  # the late duplicate 50 arrived after 120


async def test_rtc_stats_of_a_published_audio_track(server, join):
    alice = await join("alice", room="stats", tracks=[roomlab.LocalAudioTrack.tone(name="mic")])
    bob = await join("bob", room="stats")
    await eventually(lambda: len(bob.frame("rtc_stats")) >= 4 and len(alice.frame("rtc_stats")) >= 4, timeout=8)
    sent = alice.frame("rtc_stats")
    received = bob.frame("rtc_stats")
    on_server = server.frame("rtc_stats")
    for frame in (sent, received, on_server):  # every row names the track and its publisher, no join needed
        assert frame["track_name"].tolist() == ["mic"] * len(frame)
        assert frame["publisher"].tolist() == ["alice"] * len(frame)
    for frame, direction, who in ((sent, "outbound", "alice"), (received, "inbound", "bob")):
        stream = frame[(frame["kind"] == "audio") & (frame["direction"] == direction)]
        assert set(stream["participant"]) == {who}
        assert stream["packets"].is_monotonic_increasing and stream["packets"].iloc[-1] > stream["packets"].iloc[0]
        rates = stream["bitrate_bps"].dropna()
        assert len(rates) >= 1 and rates.between(8_000, 512_000).all(), rates.tolist()
        assert (stream["time"].diff().dropna() > pd.Timedelta(0.5, "s")).all()  # about once a second
    upstream = on_server[(on_server["participant"] == "alice") & (on_server["direction"] == "outbound")]
    downstream = on_server[(on_server["participant"] == "bob") & (on_server["direction"] == "inbound")]
    assert len(upstream) >= 2 and upstream["packets"].is_monotonic_increasing
    assert len(downstream) >= 2 and downstream["packets"].iloc[-1] > 0
    assert set(on_server["source"]) == {"server"}


async def test_events_in_order_with_their_sids(server, join):
    alice = await join("alice", room="story")
    track = roomlab.LocalDataTrack("notes")
    await alice.local_participant.publish_track(track)
    bob = await join("bob", room="story")
    await bob.disconnect()

    def story() -> pd.DataFrame | None:
        frame = server.frame("events")
        events = frame[frame["room"] == "story"]
        return events if "participant-disconnected" in set(events["event"]) else None

    events = await eventually(story)
    assert events["event"].tolist() == [
        "room-created",
        "participant-connected",
        "track-added",
        "participant-connected",
        "track-subscribed",
        "participant-disconnected",
    ]
    assert events["time"].is_monotonic_increasing
    assert events.iloc[1]["participant"] == alice.local_participant.sid and events.iloc[1]["identity"] == "alice"
    assert events.iloc[2]["track"] == track.sid
    # track events say which track: its kind, name and publisher (the subscriber is the row's identity)
    described = {"kind": "data", "name": "notes", "publisher": "alice"}
    assert json.loads(events.iloc[2]["detail"]) == json.loads(events.iloc[4]["detail"]) == described
    assert events.iloc[4]["identity"] == "bob"
    assert set(events["room_sid"]) == {alice.sid}
    assert pd.isna(events.iloc[-1]["code"])  # bob left by himself


async def test_data_channel_stats_count_what_crossed(server, join):
    alice, bob = await join("alice", room="dc"), await join("bob", room="dc")
    track = roomlab.LocalDataTrack("count-me")
    await alice.local_participant.publish_track(track)
    await eventually(lambda: remote_data_track(bob, "count-me"))
    for _ in range(25):
        track.send(b"x" * 100)
        await asyncio.sleep(0.002)  # one message each (sends in the same loop turn share one)
    await eventually(lambda: len(bob.frame("messages")) == 25)

    def last_row(frame: pd.DataFrame, participant: str) -> pd.Series | None:
        rows = frame[(frame["label"] == track.sid) & (frame["participant"] == participant)]
        return (
            rows.iloc[-1]
            if len(rows) and rows.iloc[-1]["messages_received"] + rows.iloc[-1]["messages_sent"] == 25
            else None
        )

    received = await eventually(lambda: last_row(bob.frame("data_channel_stats"), "bob"), timeout=5)
    assert (received["messages_received"], received["bytes_received"]) == (25, 25 * (100 + framing.HEADER.size))
    assert received["protocol"] == "roomlab-track" and received["state"] == "open"
    forwarded = await eventually(lambda: last_row(server.frame("data_channel_stats"), "bob"), timeout=5)
    assert forwarded["messages_sent"] == 25
    upstream = server.frame("data_channel_stats")
    upstream = upstream[(upstream["label"] == track.sid) & (upstream["participant"] == "alice")]
    assert upstream.iloc[-1]["messages_received"] == 25
    # each end of the track's channels names the track and its publisher; publish_data's channels carry everyone's
    ends_seen_by = ((server.frame("data_channel_stats"), {"alice", "bob"}), (bob.frame("data_channel_stats"), {"bob"}))
    for frame, ends in ends_seen_by:
        on_track = frame[frame["label"] == track.sid]
        assert set(on_track["participant"]) == ends
        assert on_track["track_name"].tolist() == ["count-me"] * len(on_track)
        assert on_track["publisher"].tolist() == ["alice"] * len(on_track)
        shared = frame[frame["label"].isin(["_reliable", "_lossy"])]
        assert len(shared) > 0 and shared["track_name"].tolist() == shared["label"].tolist()
        assert shared["publisher"].isna().all()


async def test_save_and_load_round_trip(tmp_path, server, join):
    alice = await join("alice", room="saved")
    bob = await join("bob", room="saved")
    alice.local_participant.publish_data("one")
    await eventually(lambda: len(bob.frame("messages")) == 1)
    for source in (bob, server):
        path = roomlab.save(source, tmp_path / type(source).__name__)
        run = roomlab.load(path)
        for name, frame in source.frames().items():
            pd.testing.assert_frame_equal(run.frame(name), frame)
        assert run.manifest["roomlab_version"] == roomlab.__version__
        assert set(run.manifest["tables"]) == set(TABLES)
    assert roomlab.load(tmp_path / "Room").manifest["rooms"] == ["saved"]
    with pytest.raises(FileNotFoundError, match="not a saved roomlab run"):
        roomlab.load(tmp_path)
    with pytest.raises(TypeError, match="save\\(\\) takes"):
        roomlab.save(42, tmp_path / "x")


async def test_watch_from_another_process_sees_the_same_events(tmp_path, server, join):
    out = tmp_path / "events.parquet"
    script = textwrap.dedent(
        f"""
        import sys, time
        import roomlab
        with roomlab.watch({server.url!r}, {server.api_key!r}, {server.api_secret!r}, tables=["events"]) as w:
            print("watching", flush=True)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and "participant-disconnected" not in set(w.frame("events")["event"]):
                time.sleep(0.05)
            time.sleep(0.3)
            w.frame("events").to_parquet({str(out)!r})
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert (await asyncio.to_thread(process.stdout.readline)).strip() == "watching"  # type: ignore[union-attr]
        alice = await join("alice", room="watched")
        bob = await join("bob", room="watched")
        await bob.disconnect()
        assert alice.state == "connected"
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    from roomlab.telemetry.recorder import read_parquet

    pd.testing.assert_frame_equal(read_parquet(out), server.frame("events"))


async def test_stopping_a_watched_server_is_prompt_and_ends_the_watch():
    """The server closes its feeds when it stops (it waited about 15 s for watchers to hang up)."""
    server = roomlab.serve()
    try:
        with roomlab.watch(server.url, server.api_key, server.api_secret, tables=["events"]) as w:
            room = await roomlab.connect(server.url, server.token("alice"), name="watched-stop")
            await room.disconnect()
            lifecycle = ["room-created", "participant-connected", "participant-disconnected", "room-ended"]
            assert await eventually(lambda: len(w.frame("events")) >= 4)
            started = time.monotonic()
            await asyncio.to_thread(server.stop)
            assert time.monotonic() - started < 3
            assert await eventually(lambda: not w.running)
            assert list(w.frame("events")["event"]) == lifecycle  # what arrived stays
    finally:
        server.stop()


def test_watch_refuses_bad_credentials(server):
    with pytest.raises(roomlab.RoomError) as refused:
        roomlab.watch(server.url, server.api_key, "wrong")
    assert refused.value.code == 20003


def test_recorder_spills_to_parquet_and_loses_nothing(tmp_path):
    table = Table("messages", spill_dir=tmp_path, max_rows=1000)
    start = now_ns()
    for i in range(2500):
        table.append(start + i, start, 0.1, "r", f"p{i % 3}", "s", "t", i, i % 50, i % 2 == 0, None if i % 4 else "x")
    assert len(list(tmp_path.glob("messages-*.parquet"))) == 2
    frame = table.frame()
    assert len(frame) == len(table) == 2500
    assert frame["seq"].tolist() == list(range(2500))
    assert frame["publisher"].tolist()[:4] == ["p0", "p1", "p2", "p0"]
    assert frame["topic"].isna().sum() == 1875 and (frame["topic"] == "x").sum() == 625
    assert frame.dtypes.astype(str).equals(Table("messages").frame().dtypes.astype(str))
    columns, cursor = table.rows_since(2498)
    assert cursor == 2500 and columns["seq"] == [2498, 2499]


def test_table_dtypes_and_argument_errors():
    telemetry = Telemetry()
    frame = telemetry.frame("rtc_stats")
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    assert str(frame["packets"].dtype) == "Int64" and str(frame["bitrate_bps"].dtype) == "float64"
    assert isinstance(frame["participant"].dtype, pd.CategoricalDtype)
    with pytest.raises(ValueError, match="unknown table 'nope'"):
        telemetry.frame("nope")
    with pytest.raises(ValueError, match="has 11 columns, got 2"):
        telemetry.record("messages", 1, 2)


def test_latency_and_bitrate_helpers():
    base = pd.Timestamp("2026-01-01", tz="UTC")
    messages = pd.DataFrame(
        {
            "time": [base + pd.Timedelta(i, "ms") for i in range(100)],
            "publisher": ["a"] * 100,
            "subscriber": ["b"] * 50 + ["c"] * 50,
            "track": ["t"] * 100,
            "seq": list(range(1, 51)) * 2,
            "latency_ms": np.r_[np.arange(1, 51, dtype=float), np.full(50, 7.0)],
        }
    )
    report = latency(messages)
    assert report["subscriber"].tolist() == ["b", "c"]
    assert report.loc[0, "p50"] == pytest.approx(25.5) and report.loc[0, "max"] == 50
    assert report.loc[1, "p99"] == 7.0 and report.loc[1, "count"] == 50
    stats = pd.DataFrame(
        {
            "time": [base + pd.Timedelta(s * 500, "ms") for s in range(6)],
            "participant": ["a"] * 6,
            "track": ["MT1"] * 6,
            "direction": ["outbound"] * 6,
            "bitrate_bps": [100.0, 300.0, 1000.0, 1000.0, np.nan, 50.0],
        }
    )
    resampled = bitrate(stats)
    assert resampled["bitrate_bps"].tolist() == [200.0, 1000.0, 50.0]
    with pytest.raises(ValueError, match="cannot group by"):
        latency(messages, by=["nope"])


def test_bound_appender_writes_the_same_rows_across_spills(tmp_path):
    plain, bound_table = Table("messages"), Table("messages", spill_dir=tmp_path, max_rows=700)
    bound = bound_table.bind(room="r", publisher="alice", subscriber="bob", track="cursor", reliable=False, topic=None)
    start = now_ns()
    for i in range(2000):
        plain.append(start + i, start, 0.25, "r", "alice", "bob", "cursor", i, i % 64, False, None)
        bound(start + i, start, 0.25, i, i % 64)
    assert len(list(tmp_path.glob("*.parquet"))) == 2  # the bound appender survived two spills
    pd.testing.assert_frame_equal(bound_table.frame(), plain.frame(), check_categorical=False)
    with pytest.raises(ValueError, match="no column"):
        plain.bind(colour="red")


async def test_inbound_rtc_stats_follow_the_media_stream_and_count_loss_per_interval(server):
    # video through a lossy uplink: the server's receiver gets retransmissions on a second SSRC,
    # and its rows must still describe the camera's own stream; loss is per interval, so a step
    # in the link's loss shows as a step
    sim = roomlab.Simulation(server, room="rtx", workers=0, seed=8)
    sim.add(identity="camera", video=Camera(layers=("low",)), link=roomlab.Link(up_loss=0.0, seed=3))
    sim.add(identity="viewer")
    sim.at(4, "camera", up_loss=0.3)
    await sim.run(9, progress=False)
    rows = server.frame("rtc_stats").query("source == 'server' and participant == 'camera' and kind == 'video'")
    rows = rows.sort_values("time")
    packets = rows["packets"].astype(int).tolist()
    assert packets == sorted(packets) and packets[-1] >= 100  # never the few packets of the RTX stream
    start = rows["time"].iloc[0]
    seconds = (rows["time"] - start).dt.total_seconds()
    before = rows[seconds < 3.5]["fraction_lost"].dropna()
    after = rows[seconds > 5.5]["fraction_lost"].dropna()
    assert len(before) >= 2 and len(after) >= 2
    assert before.max() <= 0.05 and after.min() >= 0.15, (before.tolist(), after.tolist())
