"""Network Quality API end to end (SPEC §9): real server, real aiortc clients, emulated links; levels
as the SDK reports them and as the server records them in `network_quality`."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pandas as pd
import pytest

import roomlab
from roomlab.policy.quality import NetworkQualityStats
from roomlab.protocol import signaling
from roomlab.sim import Camera
from roomlab.sim.scenario import Scenario, ScenarioError

from .conftest import eventually

PARTIALS = ["audio_send", "audio_recv", "video_send", "video_recv"]


def rows_of(server: roomlab.Server, identity: str) -> pd.DataFrame:
    frame = server.frame("network_quality")
    return frame[frame["participant"] == identity]


def assert_rows_explain_their_levels(rows: pd.DataFrame) -> None:
    """Every row's level is at most each partial level present, and the inputs of every partial
    that flows are there (after the first sample of a stream, which has no interval yet)."""
    assert len(rows) > 1
    for _, row in rows.iloc[1:].iterrows():
        present = [row[p] for p in PARTIALS if not pd.isna(row[p])]
        if present and row["level"] > 0:
            assert row["level"] <= min(present)
        if not pd.isna(row["audio_send"]) or not pd.isna(row["video_send"]):
            assert not pd.isna(row["send_fraction_lost"]) and not pd.isna(row["send_packets"])
        if not pd.isna(row["audio_recv"]) or not pd.isna(row["video_recv"]):
            assert not pd.isna(row["recv_actual_bps"]) and not pd.isna(row["recv_packets"])


async def test_without_media_the_level_is_5_and_remote_none_sees_none(join, server):
    alice = await join("alice", room="quiet", network_quality=True)
    bob = await join("bob", room="quiet", network_quality={"local": "minimal", "remote": "none"})
    level = await eventually(lambda: alice.local_participant.network_quality_level, timeout=10)
    assert level == 5
    assert alice.local_participant.network_quality_stats == NetworkQualityStats(5, None, None)
    await eventually(lambda: bob.local_participant.network_quality_level, timeout=10)
    await asyncio.sleep(1.2)  # another round of levels: still nothing about the others at remote none
    assert bob.participants[alice.local_participant.sid].network_quality_level is None
    assert bob.participants[alice.local_participant.sid].network_quality_stats is None
    rows = rows_of(server, "alice")
    assert set(rows["level"]) == {5} and set(rows["reason"]) == {"no media"}
    assert rows[PARTIALS].isna().all().all()


async def test_a_publisher_behind_25_percent_uplink_loss_falls_and_recovers_while_a_clean_one_stays(join, server):
    link = roomlab.Link(seed=7)
    lossy = await join(
        "lossy", room="loss", tracks=[roomlab.LocalAudioTrack.tone(440)], network_quality=True, link=link
    )
    clean = await join("clean", room="loss", tracks=[roomlab.LocalAudioTrack.tone(660)], network_quality=True)
    changes: list[tuple[str, int]] = []
    lossy.on("network_quality_level_changed", lambda p, level, stats: changes.append((p.identity, level)))
    assert await eventually(lambda: lossy.local_participant.network_quality_level == 5, timeout=10)
    clean_levels: list[int | None] = []
    clean.local_participant.on("network_quality_level_changed", lambda level, stats: clean_levels.append(level))

    link.update(up_loss=0.25)
    started = time.monotonic()
    fell = await eventually(lambda: (lossy.local_participant.network_quality_level or 5) <= 2, timeout=12)
    fall_s = time.monotonic() - started
    assert fell, f"still at {lossy.local_participant.network_quality_level} after 12 s of 25 % uplink loss"
    await asyncio.sleep(2)
    link.update(up_loss=0.0)
    started = time.monotonic()
    recovered = await eventually(lambda: (lossy.local_participant.network_quality_level or 0) >= 4, timeout=20)
    recover_s = time.monotonic() - started
    assert recovered, f"still at {lossy.local_participant.network_quality_level} 20 s after the loss ended"
    print(f"25 % uplink loss: level <= 2 after {fall_s:.1f} s, >= 4 again {recover_s:.1f} s after it ended")

    assert clean.local_participant.network_quality_level in (4, 5)
    assert all(level in (4, 5) for level in clean_levels)
    assert ("lossy", lossy.local_participant.network_quality_level) in changes  # the room re-emits
    rows = rows_of(server, "lossy")
    assert_rows_explain_their_levels(rows)
    bad = rows[rows["level"] <= 2]
    assert len(bad) and set(bad["reason"]) == {"audio_send: loss"}
    assert bad["send_fraction_lost"].max() >= 0.15 and bad["audio_send"].max() <= 2
    assert (rows_of(server, "clean")["level"] >= 4).all()


async def test_a_participant_whose_media_path_goes_silent_is_at_0_until_it_comes_back(join, server):
    link = roomlab.Link(seed=3)
    await join("cut", room="cut", tracks=[roomlab.LocalAudioTrack.tone(440)], network_quality=True, link=link)
    await join("peer", room="cut", tracks=[roomlab.LocalAudioTrack.tone(660)])

    def level() -> int | None:
        rows = rows_of(server, "cut")
        return int(rows["level"].iloc[-1]) if len(rows) else None

    assert await eventually(lambda: level() == 5, timeout=10)
    link.update(loss=1.0)  # RTP and RTCP lost both ways; ICE consent checks still pass
    assert await eventually(lambda: level() == 0, timeout=10)
    rows = rows_of(server, "cut")
    assert rows["reason"].iloc[-1] == "unreachable" and rows["audio_send"].iloc[-1] == 0
    link.update(loss=0.0)
    assert await eventually(lambda: (level() or 0) >= 4, timeout=15)


async def test_150_ms_of_delay_lowers_the_latency_level(join, server):
    far = await join(
        "far",
        room="delay",
        tracks=[roomlab.LocalAudioTrack.tone(440)],
        network_quality={"local": "detailed"},
        link=roomlab.Link(delay_ms=150),
    )
    await join("near", room="delay", tracks=[roomlab.LocalAudioTrack.tone(660)], network_quality=True)

    def latency_level() -> int | None:
        stats = far.local_participant.network_quality_stats
        recv = stats.audio.recv_stats if stats is not None and stats.audio is not None else None
        return recv.latency.level if recv is not None and recv.latency.rtt is not None else None

    assert await eventually(lambda: (latency_level() or 5) <= 3, timeout=12)
    stats = far.local_participant.network_quality_stats
    assert stats.audio.recv_stats.latency.rtt >= 0.28  # seconds: 150 ms each way
    rows = await eventually(lambda: rows_of(server, "near").dropna(subset=["rtt_ms"]), timeout=5)
    assert rows["latency_level"].iloc[-1] == 5 and rows["rtt_ms"].iloc[-1] < 100
    far_rows = rows_of(server, "far").dropna(subset=["rtt_ms"])
    assert far_rows["latency_level"].iloc[-1] <= 3 and far_rows["rtt_ms"].iloc[-1] >= 280
    assert_rows_explain_their_levels(far_rows)


async def test_a_subscriber_whose_downlink_is_narrower_than_its_video_gets_a_low_video_recv_level():
    # without bandwidth allocation, which would fit the video into the downlink (SPEC §11)
    with roomlab.serve(bandwidth_allocation=False) as server:
        sim = roomlab.Simulation(server, room="narrow", workers=0, seed=2)
        sim.add(identity="camera", video=True, subscribe=False)
        sim.add(identity="narrow", link={"down_kbps": 600}, network_quality=True)
        sim.add(identity="wide", network_quality=True)
        await sim.run(12, progress=False)
    narrow = rows_of(server, "narrow").dropna(subset=["video_recv"])
    wide = rows_of(server, "wide").dropna(subset=["video_recv"])
    assert narrow["video_recv"].iloc[-4:].max() <= 2
    assert wide["video_recv"].iloc[-4:].min() >= 4
    last = narrow.iloc[-1]
    assert last["recv_fraction_lost"] > 0.3 and last["reason"] == "video_recv: loss"
    assert last["recv_available_bps"] > 0 and last["recv_required_bps"] > 600e3  # the inputs of its bandwidth level
    assert wide["recv_fraction_lost"].iloc[-4:].max() < 0.05
    assert_rows_explain_their_levels(narrow)


async def test_a_subscriber_whose_video_is_switched_off_for_bandwidth_is_told_so_by_its_video_recv_level():
    # with bandwidth allocation: the camera's only layer does not fit, so it is switched off and no
    # video flows to the narrow subscriber, which must not read as a good network
    with roomlab.serve() as server:
        sim = roomlab.Simulation(server, room="starved", workers=0, seed=3)
        sim.add(identity="camera", video=Camera(layers=("low",)), subscribe=False)
        sim.add(identity="narrow", link={"down_kbps": 90}, network_quality=True)
        sim.add(identity="wide", network_quality=True)
        await sim.run(14, progress=False)
        allocations = server.frame("allocations")
    off = allocations[(allocations["subscriber"] == "narrow") & allocations["switched_off"]]
    mine = allocations[allocations["subscriber"] == "narrow"][
        ["time", "layer", "reason", "estimate_bps", "estimate_reason"]
    ]
    assert "bandwidth" in set(off["reason"]), mine.to_string()
    decisions = allocations[allocations["subscriber"] == "narrow"].set_index("time").sort_index()
    narrow = rows_of(server, "narrow")

    def off_for_bandwidth_since(at: pd.Timestamp, seconds: float = 2.5) -> bool:
        """Whether every decision of the last `seconds` before `at` kept the camera off for bandwidth."""
        recent = decisions[(decisions.index > at - pd.Timedelta(seconds=seconds)) & (decisions.index <= at)]
        return len(recent) >= 2 and bool((recent["switched_off"] & (recent["reason"] == "bandwidth")).all())

    starved = narrow[[off_for_bandwidth_since(at) for at in narrow["time"]]]
    assert len(starved) >= 2, decisions[["layer", "reason", "estimate_bps"]]
    # no video arrives, and the level says so: video_recv is scored, at 2 or below
    assert starved["video_recv"].notna().all(), narrow[["level", "video_recv", "reason", "recv_actual_bps"]]
    shown = starved[["time", "level", "video_recv", "reason", "recv_available_bps", "recv_required_bps"]]
    assert (starved["video_recv"] <= 2).all() and (starved["level"] <= 2).all(), shown
    # the bandwidth judgement, or what the seconds before the switch-off cost while it is damped
    assert all(reason.startswith("video_recv: ") for reason in starved["reason"]), shown
    assert narrow["level"].iloc[-1] <= 2, narrow[["time", "level", "reason"]]
    wide = rows_of(server, "wide").dropna(subset=["video_recv"])
    assert wide["video_recv"].iloc[-4:].min() >= 4 and wide["recv_actual_bps"].iloc[-1] > 100e3
    # a subscriber's first sample is a second's like the others (it once counted what was sent before
    # the server first saw the connection up, over a millisecond: 70 Mbit/s of a 170 kbit/s layer, which
    # the downlink estimate took for an overload of its prior)
    for who in ("narrow", "wide"):
        sent = rows_of(server, who)["recv_actual_bps"].dropna()
        assert len(sent) >= 10 and sent.max() < 400e3, sent.head()


async def test_verbosities_shape_the_stats_and_change_live(join):
    alice = await join(
        "alice",
        room="verbose",
        tracks=[roomlab.LocalAudioTrack.tone(440)],
        network_quality={"local": "detailed", "remote": 2},
    )
    bob = await join("bob", room="verbose", tracks=[roomlab.LocalAudioTrack.tone(660)], network_quality=True)
    alice_sid = alice.local_participant.sid

    def detailed() -> NetworkQualityStats | None:
        stats = alice.local_participant.network_quality_stats
        if stats is None or stats.audio is None or stats.audio.recv_stats is None or stats.audio.send_stats is None:
            return None
        measured = stats.audio.recv_stats.latency.rtt is not None and stats.audio.send_stats.bandwidth.actual
        return stats if measured else None

    stats = await eventually(detailed, timeout=12)
    assert stats is not None and stats.level == alice.local_participant.network_quality_level
    assert stats.audio.send in (4, 5) and stats.video.send is None and stats.video.send_stats is None
    send = stats.audio.send_stats
    assert 0.0 <= send.fraction_lost.fraction_lost <= 0.05 and send.fraction_lost.level in (4, 5)
    assert 50e3 < send.bandwidth.actual < 500e3  # bit/s: a 20 ms Opus tone
    recv = stats.audio.recv_stats
    assert 0.0 < recv.latency.rtt < 0.2 and recv.latency.jitter < 0.05  # seconds
    # bob at minimal: a level, no per-media stats; nothing of alice at remote none
    bob_stats = bob.local_participant.network_quality_stats
    assert bob_stats is not None and (bob_stats.audio, bob_stats.video) == (None, None)
    assert bob.participants[alice_sid].network_quality_level is None
    # alice at remote moderate: bob's per-media levels without their inputs
    moderate = await eventually(lambda: alice.participants[bob.local_participant.sid].network_quality_stats)
    assert moderate.audio.send in (4, 5) and moderate.audio.send_stats is None

    bob.local_participant.set_network_quality_configuration(remote="detailed")
    seen = await eventually(lambda: bob.participants[alice_sid].network_quality_stats, timeout=5)
    assert seen is not None and seen.audio.send_stats is not None
    assert bob.participants[alice_sid].network_quality_level == seen.level
    bob.local_participant.set_network_quality_configuration(remote="none")
    assert bob.participants[alice_sid].network_quality_level is None


async def test_unknown_verbosities_are_value_errors_naming_the_allowed_ones(join, server):
    with pytest.raises(ValueError, match="'none'.*'minimal'.*'moderate'.*'detailed'"):
        await roomlab.connect(server.url, server.token("x"), name="v", network_quality={"local": "high"})
    with pytest.raises(ValueError, match="0 or 'none'"):
        await roomlab.connect(server.url, server.token("x"), name="v", network_quality={"remote": 4})
    with pytest.raises(ValueError, match="allowed: local, remote"):
        await roomlab.connect(server.url, server.token("x"), name="v", network_quality={"global": 1})
    room = await join("alice", room="v")
    with pytest.raises(ValueError, match="'detailed'"):
        room.local_participant.set_network_quality_configuration(local="max")


async def test_scenario_files_pass_network_quality_and_dominant_speaker_to_the_bots(server):
    scenario = Scenario.parse(
        {
            "room": "yaml",
            "duration": 4,
            "workers": 0,
            "participants": [
                {
                    "count": 2,
                    "identity": "bot-{i}",
                    "audio": True,
                    "network_quality": {"local": "detailed", "remote": "moderate"},
                    "dominant_speaker": True,
                }
            ],
        }
    )
    sim = scenario.build(server)
    await sim.run(scenario.duration, progress=False)
    assert sim.states == {"bot-0": "left", "bot-1": "left"}
    rows = sim.frame("network_quality")
    assert set(rows["participant"]) == {"bot-0", "bot-1"} and (rows["room"] == "yaml").all()
    with pytest.raises(ScenarioError, match="participants\\[0\\].*'detailed'"):
        Scenario.parse({"duration": 1, "participants": [{"network_quality": {"local": "max"}}]}).build(server)


async def test_bad_in_room_options_over_signaling_get_a_clear_error(server):
    http = aiohttp.ClientSession()
    try:
        for options, says in (
            ({"network_quality": {"local": "max"}}, "'detailed'"),
            ({"network_quality": 7}, "True, False, None or a dict"),
            ({"dominant_speaker": "yes"}, "dominant_speaker must be true or false"),
            ({"volume": 11}, "allowed: network_quality, dominant_speaker"),
        ):
            ws = await http.ws_connect(server.url.replace("http", "ws") + signaling.PATH)
            connect = {"type": "connect", "version": 1, "token": server.token("raw"), "room": "raw", "options": options}
            await ws.send_str(json.dumps(connect))
            reply = json.loads((await ws.receive(timeout=5)).data)
            assert (reply["type"], reply["code"]) == ("error", 53004) and says in reply["message"]
            await ws.close()
        ws = await http.ws_connect(server.url.replace("http", "ws") + signaling.PATH)
        await ws.send_str(json.dumps({"type": "connect", "version": 1, "token": server.token("raw"), "room": "raw"}))
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "connected"
        await ws.send_str(json.dumps({"type": "set_network_quality", "local": "loud", "remote": 0}))
        while (reply := json.loads((await ws.receive(timeout=5)).data))["type"] != "error":
            pass
        assert reply["code"] == 53004 and "'minimal'" in reply["message"]
        await ws.close()
    finally:
        await http.close()
