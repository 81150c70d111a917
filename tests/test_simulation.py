"""Simulated participants on emulated links: real server, real bots, seeded links."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import roomlab
from roomlab.sim import Chat, Cursor, Talker
from roomlab.sim.scenario import Scenario, ScenarioError

ALWAYS_TALKING = Talker(mean_talk_s=1000, mean_silence_s=0.001)  # speaks all the time


def between(frame: pd.DataFrame, publisher: str, subscriber: str, track: str) -> pd.DataFrame:
    return frame[(frame["publisher"] == publisher) & (frame["subscriber"] == subscriber) & (frame["track"] == track)]


async def test_unreliable_cursor_loses_what_the_link_loses_and_reliable_chat_loses_nothing(server):
    sim = roomlab.Simulation(server, room="lossy", workers=0, seed=3)
    sim.add(identity="pub", data=[Cursor(rate_hz=100), Chat(mean_interval_s=0.2, burst=4)], link={"loss": 0.10})
    sim.add(identity="sub")
    await sim.run(10, progress=False)
    messages = sim.frame("messages")
    cursor = roomlab.frames.loss(between(messages, "pub", "sub", "cursor")).iloc[0]
    assert cursor["sent"] >= 800
    assert 0.07 <= cursor["loss_rate"] <= 0.13, cursor.to_dict()  # 10% ± 3 points
    chat = between(messages, "pub", "sub", "chat")
    report = roomlab.frames.loss(chat).iloc[0]
    assert report["sent"] >= 50 and report["lost"] == 0 and report["duplicated"] == 0
    assert chat["seq"].tolist() == sorted(chat["seq"].tolist())  # and in order


async def test_delay_on_one_subscriber_link_shows_in_its_latency_only(server):
    sim = roomlab.Simulation(server, room="delay", workers=0, seed=4)
    sim.add(identity="pub", data=[Cursor(rate_hz=50)])
    sim.add(identity="far", link={"delay_ms": 100})
    sim.add(identity="near")
    await sim.run(4, progress=False)
    latency = roomlab.frames.latency(sim.frame("messages")).set_index("subscriber")
    assert 99 <= latency.loc["far", "p50"] <= 115, latency
    assert latency.loc["near", "p50"] < 15, latency


async def test_link_update_during_a_run_shows_after_the_change_only(server):
    sim = roomlab.Simulation(server, room="change", workers=0, seed=5)
    sim.add(identity="pub", data=[Cursor(rate_hz=50)])
    sim.add(identity="sub", link={"delay_ms": 0})
    sim.at(2.5, "sub", delay_ms=150)
    await sim.run(5, progress=False)
    events = sim.frame("events")
    change = events[events["event"] == "link-changed"]
    assert change["identity"].tolist() == ["sub"] and json.loads(change["detail"].iloc[0]) == {"delay_ms": 150}
    changed_at = change["time"].iloc[0]
    messages = between(sim.frame("messages"), "pub", "sub", "cursor")
    before = messages[messages["time"] < changed_at]["latency_ms"]
    after = messages[messages["time"] > changed_at + pd.Timedelta(0.3, "s")]["latency_ms"]
    assert len(before) > 40 and len(after) > 40
    assert before.median() < 15 and before.max() < 100
    assert 145 <= after.median() <= 165


async def test_audio_through_lossy_links_shows_the_loss_in_rtc_stats(server):
    sim = roomlab.Simulation(server, room="audio-loss", workers=0, seed=6)
    sim.add(identity="speaker", audio=ALWAYS_TALKING, link={"up_loss": 0.2})
    sim.add(identity="listener", link={"down_loss": 0.2})
    await sim.run(6, progress=False)
    await asyncio.sleep(1.2)  # one more sample on the server
    stats = sim.frame("rtc_stats")

    def lost_fraction(participant: str, direction: str, source: str) -> float:
        rows = stats[
            (stats["participant"] == participant) & (stats["direction"] == direction) & (stats["source"] == source)
        ].dropna(subset=["packets_lost"])
        last = rows.iloc[-1]
        received = (
            last["packets"] if direction == "inbound" or source == "server" else last["packets"] - last["packets_lost"]
        )
        return last["packets_lost"] / (received + last["packets_lost"])

    # the speaker's upstream: seen by the server as it receives, and reported back to the speaker
    assert 0.12 <= lost_fraction("speaker", "outbound", "server") <= 0.28
    assert 0.12 <= lost_fraction("speaker", "outbound", "client") <= 0.28
    # the listener's downstream, as the listener receives it (the server sends its own sequence)
    assert 0.12 <= lost_fraction("listener", "inbound", "client") <= 0.28


async def test_worker_killed_mid_run_is_reported_and_the_run_still_ends(server, tmp_path):
    sim = roomlab.Simulation(server, room="farm", workers=2, seed=7)
    sim.add(4, identity="bot-{i}", data=[Cursor(rate_hz=20)])
    run = asyncio.ensure_future(sim.run(7, progress=False))
    await asyncio.sleep(4.5)
    doomed = sim._workers[0]
    assert sorted(sim.identities) == sorted(doomed.identities + sim._workers[1].identities)
    os.kill(doomed.process.pid, signal.SIGKILL)
    await asyncio.wait_for(run, 40)
    assert {sim.states[i] for i in doomed.identities} == {"lost"}
    assert {sim.states[i] for i in sim._workers[1].identities} == {"left"}
    events = sim.frame("events")
    lost = events[events["event"] == "bot-lost"]
    assert sorted(lost["identity"]) == sorted(doomed.identities)
    assert "exit code -9" in lost["detail"].iloc[0]
    gone = events[(events["event"] == "participant-disconnected") & events["identity"].isin(doomed.identities)]
    assert sorted(gone["identity"]) == sorted(doomed.identities)  # the server removed them
    # what the killed worker had sent before it died is kept, and the run saves
    messages = sim.frame("messages")
    assert set(messages["subscriber"]) >= set(doomed.identities)
    saved = roomlab.load(roomlab.save(sim, tmp_path / "farm"))
    pd.testing.assert_frame_equal(saved.frame("messages"), messages)


def test_argument_errors(server):
    sim = roomlab.Simulation(server, room="args", workers=0)
    with pytest.raises(ValueError, match="loss must be in"):
        sim.add(link={"loss": 2})
    with pytest.raises(ValueError, match="unknown behaviour 'dance'"):
        sim.add(data=[{"dance": {}}])
    sim.add(identity="only")
    with pytest.raises(ValueError, match="already in the simulation"):
        sim.add(identity="only")
    with pytest.raises(ValueError, match="has no link"):
        sim.link("only")
    with pytest.raises(ValueError, match="no bot named"):
        sim.at(1, "nobody", loss=0.1)
    with pytest.raises(ValueError, match="rate_hz"):
        Cursor(rate_hz=0)


def test_scenario_validation(tmp_path):
    with pytest.raises(ScenarioError, match="duration must be"):
        Scenario.parse({"participants": [{"count": 1}]})
    with pytest.raises(ScenarioError, match="unknown key"):
        Scenario.parse({"duration": 5, "participants": [{"count": 1, "colour": "red"}]})
    with pytest.raises(ScenarioError, match="schedule\\[0\\] needs"):
        Scenario.parse({"duration": 5, "participants": [{"count": 1}], "schedule": [{"at": 1}]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("room: [unclosed")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        Scenario.load(bad)


def test_roomlab_simulate_writes_frames_and_a_report(tmp_path):
    scenario = tmp_path / "small.yaml"
    scenario.write_text(
        """
room: small
duration: 5
seed: 2
workers: 1
participants:
  - count: 2
    identity: "bot-{i}"
    audio: {talker: {mean_talk_s: 100, mean_silence_s: 0.01}}
    data:
      - cursor: {rate_hz: 20}
      - chat: {}
    link: {delay_ms: 20, loss: 0.02}
  - count: 1
    identity: "guest-{i}"
schedule:
  - at: 2
    identity: "bot-1"
    link: {loss: 0.3}
"""
    )
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "roomlab", "simulate", str(scenario), "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    run = roomlab.load(out)
    assert run.manifest["rooms"] == ["small"]
    messages = run.frame("messages")
    assert set(messages["publisher"]) == {"bot-0", "bot-1"}
    assert set(messages["subscriber"]) == {"bot-0", "bot-1", "guest-2"}
    events = run.frame("events")
    assert events[events["event"] == "link-changed"]["identity"].tolist() == ["bot-1"]
    assert (run.frame("rtc_stats")["kind"] == "audio").any()
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert json.loads((out / "summary.json").read_text())["bots"] == {
        "bot-0": "left",
        "bot-1": "left",
        "guest-2": "left",
    }
    assert (out / "scenario.yaml").read_text() == scenario.read_text()
    assert "report:" in result.stdout and Path(out / "report.png").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "roomlab", "simulate", str(tmp_path / "none.yaml"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "no such scenario file" in bad.stderr
