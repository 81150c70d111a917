"""Simulated participants on emulated links: real server, real bots, seeded links."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
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


@pytest.mark.parametrize("workers", [0, 1])
async def test_a_bot_given_no_link_has_one_to_change_while_running_and_a_link_object_is_taken(server, workers):
    sim = roomlab.Simulation(server, room=f"no-link-{workers}", workers=workers, seed=5)
    sim.add(identity="pub", data=[Cursor(rate_hz=50)])
    sim.add(identity="sub")  # no link: unconstrained until changed
    sim.add(identity="far", link=roomlab.Link(delay_ms=60))
    sim.at(2.5, "sub", delay_ms=150)
    await sim.run(5, progress=False)
    events = sim.frame("events")
    changed_at = events.loc[events["event"] == "link-changed", "time"].iloc[0]
    messages = sim.frame("messages")
    sub = between(messages, "pub", "sub", "cursor")
    before = sub[sub["time"] < changed_at]["latency_ms"]
    after = sub[sub["time"] > changed_at + pd.Timedelta(0.3, "s")]["latency_ms"]
    assert len(before) > 40 and len(after) > 40
    assert before.median() < 15 and 145 <= after.median() <= 170
    far = between(messages, "pub", "far", "cursor")["latency_ms"]
    assert len(far) > 100 and 58 <= far.median() <= 75
    assert sim.link("sub").parameters()["delay_ms"] == 150.0


@pytest.mark.parametrize("workers", [0, 1])
async def test_bots_that_leave_together_each_leave_the_server_cleanly(server, workers):
    # a busy room whose participants all leave at the end: the server tells everyone about every
    # departure while the others are saying goodbye; each goodbye must still reach it (before, a
    # socket dropped without its closing handshake lost 5 goodbyes of 6: 'reconnecting', 53001)
    room = f"leave-together-{workers}"
    sim = roomlab.Simulation(server, room=room, workers=workers, seed=8)
    sim.add(6, identity="bot-{i}", audio=True, data=[Cursor(rate_hz=30), Chat(mean_interval_s=0.5)])
    await sim.run(3, progress=False)
    events = server.telemetry.frame("events")
    events = events[events["room"] == room]
    left = events[events["event"] == "participant-disconnected"]
    assert sorted(left["identity"]) == [f"bot-{i}" for i in range(6)]
    assert left["code"].isna().all(), left[["identity", "code"]]
    assert not (events["event"] == "participant-reconnecting").any()


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
    with pytest.raises(ValueError, match="no bot named"):
        sim.at(1, "nobody", loss=0.1)
    with pytest.raises(ValueError, match="unknown link parameter 'colour'"):
        sim.at(1, "only", colour="red")  # refused when scheduled, not during the run
    with pytest.raises(ValueError, match="loss must be in"):
        sim.link("only").update(loss=2)
    with pytest.raises(ValueError, match="link must be a roomlab.Link or a dict"):
        sim.add(identity="other", link="fast")
    assert sim.identities == ["only"]  # nothing half-added


def test_identities_count_per_pattern_and_every_bot_has_a_link_to_change(server):
    sim = roomlab.Simulation(server, room="numbers", workers=0, seed=1)
    assert sim.add(2, identity="sub-{i}") == ["sub-0", "sub-1"]
    assert sim.add(1, identity="bot-{i}") == ["bot-0"]  # another pattern starts at 0 again
    assert sim.add(1, identity="sub-{i}") == ["sub-2"]
    template = roomlab.Link(up_kbps=500, delay_ms=40, loss=0.01)
    assert sim.add(2, identity="far-{i}", link=template) == ["far-0", "far-1"]
    sim.add(identity="sub-3")
    before = list(sim.identities)
    with pytest.raises(ValueError, match="'sub-3' is already"):
        sim.add(2, identity="sub-{i}")
    assert sim.identities == before  # all or nothing
    # a Link is a template copied per bot, each with a seed of its own from the simulation's
    far0, far1 = sim.link("far-0").parameters(), sim.link("far-1").parameters()
    assert {k: v for k, v in far0.items() if k != "seed"} == {"up_kbps": 500.0, "delay_ms": 40.0, "loss": 0.01}
    assert far0["seed"] != far1["seed"] and template.seed is None and template.parameters()["delay_ms"] == 40.0
    sim.link("far-0").update(delay_ms=80)  # before the run: the bot starts on it
    assert sim.link("far-0").parameters()["delay_ms"] == 80.0 and sim.link("far-1").parameters()["delay_ms"] == 40.0
    assert set(sim.link("sub-0").parameters()) == {"seed"}  # no link given: unconstrained


def test_link_parameters_make_the_same_link():
    link = roomlab.Link(up_kbps=300, down_kbps=900, delay_ms=20, up_loss=0.1, trace=[(5, {"loss": 0.3})], seed=4)
    link.update(down_jitter_ms=3)
    parameters = link.parameters()
    assert parameters == {  # defaults left out; what differs between the directions per direction
        "up_kbps": 300.0,
        "down_kbps": 900.0,
        "delay_ms": 20.0,
        "down_jitter_ms": 3.0,
        "up_loss": 0.1,
        "trace": [(5.0, {"loss": 0.3})],
        "seed": 4,
    }
    copy = roomlab.Link(**parameters)
    assert copy.parameters() == parameters and repr(copy) == repr(link)
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


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].joinpath("scenarios").glob("*.yaml")), ids=str)
def test_every_scenario_shipped_builds_its_participants_and_link_changes(server, path):
    scenario = Scenario.load(path)
    sim = scenario.build(server)
    expected = sum(group.get("count", 1) for group in scenario.participants)
    assert len(sim.identities) == expected and sim.status == "ready"
    identities = set(sim.identities)
    assert scenario.schedule and {change["identity"] for change in scenario.schedule} <= identities


def simulate(scenario: Path, out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "roomlab", "simulate", str(scenario), "--out", str(out), "--quiet", *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


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
      - chat: {mean_interval_s: 0.5}
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
    result = simulate(scenario, out)
    assert result.returncode == 0, result.stderr
    run = roomlab.load(out)
    assert run.manifest["rooms"] == ["small"]
    messages = run.frame("messages")
    assert set(messages["publisher"]) == {"bot-0", "bot-1"}
    assert set(messages["subscriber"]) == {"bot-0", "bot-1", "guest-0"}
    events = run.frame("events")
    assert events[events["event"] == "link-changed"]["identity"].tolist() == ["bot-1"]
    assert (run.frame("rtc_stats")["kind"] == "audio").any()
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bots"] == {"bot-0": "left", "bot-1": "left", "guest-0": "left"}
    assert summary["interrupted"] is False
    # data: every subscriber and track it received, with loss and latency in named units
    data = {(row["subscriber"], row["track"]) for row in summary["data"]}
    assert data == {(s, t) for s in ("bot-0", "bot-1", "guest-0") for t in ("cursor", "chat")}
    for row in summary["data"]:
        assert 0 <= row["loss_fraction"] <= 1 and 15 <= row["latency_p50_ms"] <= row["latency_p99_ms"]
    # media, per hop: guest-0's own link is clean, yet it loses what bot-1's uplink lost
    streams = {(row["publisher"], row["subscriber"]): row for row in summary["media"]["streams"]}
    assert set(streams) == {("bot-0", "bot-1"), ("bot-0", "guest-0"), ("bot-1", "bot-0"), ("bot-1", "guest-0")}
    heard = streams[("bot-1", "guest-0")]
    assert heard["status"] == "delivered" and heard["downlink_loss_fraction"] == 0.0
    assert heard["uplink_loss_fraction"] >= 0.08 and heard["end_to_end_loss_fraction"] == heard["uplink_loss_fraction"]
    uplink = {row["publisher"]: row["loss_fraction"] for row in summary["media"]["uplink"]}
    assert uplink["bot-1"] >= 0.08 and uplink["bot-0"] <= 0.06
    assert (out / "scenario.yaml").read_text() == scenario.read_text()
    assert "report:" in result.stdout and Path(out / "report.png").exists()
    bad = simulate(tmp_path / "none.yaml", out)
    assert bad.returncode == 2 and "no such scenario file" in bad.stderr


TWO_BOTS = """
room: small
duration: {duration}
seed: 3
workers: 1
participants:
  - count: 2
    identity: "bot-{{i}}"
    audio: {{talker: {{mean_talk_s: 100, mean_silence_s: 0.01}}}}
    data:
      - cursor: {{rate_hz: 20}}
"""


def test_roomlab_simulate_never_mixes_a_run_into_other_files_and_replaces_a_run_only_with_force(tmp_path):
    scenario = tmp_path / "two.yaml"
    scenario.write_text(TWO_BOTS.format(duration=2))
    # a scenario that fails validation creates nothing
    broken = tmp_path / "broken.yaml"
    broken.write_text(TWO_BOTS.format(duration=2).replace("cursor:", "dance:"))
    result = simulate(broken, tmp_path / "never")
    assert result.returncode == 2 and "unknown behaviour 'dance'" in result.stderr
    assert not (tmp_path / "never").exists()
    # a folder of something else is refused, even with --force, and left as it was
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    for options in ((), ("--force",)):
        result = simulate(scenario, other, *options)
        assert result.returncode == 2 and "is not empty and holds no roomlab run" in result.stderr
        assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    # an earlier run is refused without --force, replaced with it (its files only)
    earlier = tmp_path / "earlier"
    roomlab.save(roomlab.Telemetry(), earlier)
    (earlier / "summary.json").write_text('{"old": true}')
    (earlier / "notes.txt").write_text("mine")
    saved = json.loads((earlier / "manifest.json").read_text())["saved"]
    result = simulate(scenario, earlier)
    assert result.returncode == 2 and "holds an earlier run" in result.stderr and "--force" in result.stderr
    assert json.loads((earlier / "summary.json").read_text()) == {"old": True}
    result = simulate(scenario, earlier, "--force")
    assert result.returncode == 0, result.stderr
    assert json.loads((earlier / "manifest.json").read_text())["saved"] != saved
    assert json.loads((earlier / "summary.json").read_text())["bots"] == {"bot-0": "left", "bot-1": "left"}
    assert (earlier / "notes.txt").read_text() == "mine"
    assert len(roomlab.load(earlier).frame("messages")) > 20


def read_into(stream, chunks: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Read `stream` to its end a character at a time (a progress bar writes no newlines)."""
    for character in iter(lambda: stream.read(1), ""):
        chunks.append(character)


def test_ctrl_c_stops_roomlab_simulate_saves_the_partial_run_and_exits_130(tmp_path):
    scenario = tmp_path / "long.yaml"
    scenario.write_text(TWO_BOTS.format(duration=60))
    for attempt in range(3):  # the segfault this replaces came once in three runs
        out = tmp_path / f"run-{attempt}"
        command = [sys.executable, "-m", "roomlab", "simulate", str(scenario), "--out", str(out)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        errors: list[str] = []
        reader = threading.Thread(target=read_into, args=(process.stderr, errors))
        reader.start()
        deadline = time.monotonic() + 60
        while "bots=2" not in "".join(errors) and time.monotonic() < deadline:  # the progress bar: both joined
            time.sleep(0.1)
        time.sleep(1.0)
        sent = time.monotonic()
        os.kill(process.pid, signal.SIGINT)
        if attempt == 2:  # a second Ctrl-C: quit at once, without saving
            time.sleep(0.2)
            os.kill(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            raise
        reader.join(5)
        took, stderr = time.monotonic() - sent, "".join(errors)
        assert process.returncode == 130, (process.returncode, stderr)
        assert "Traceback" not in stderr and "Task was destroyed" not in stderr, stderr
        last = stderr.strip().splitlines()[-1]  # after the progress bar: one line
        if attempt == 2:
            assert last == "roomlab simulate: interrupted again; nothing saved"
            assert not out.exists()
            continue
        saved = f"the partial run is saved in {out}"
        assert re.fullmatch(rf"roomlab simulate: interrupted at \d+(\.\d)? s of 60 s; {re.escape(saved)}", last), last
        summary = json.loads((out / "summary.json").read_text())
        assert summary["interrupted"] is True and 1 <= summary["interrupted_at_s"] <= 10
        assert summary["bots"] == {"bot-0": "left", "bot-1": "left"}  # they left: not lost, not killed
        run = roomlab.load(out)
        assert set(run.frame("messages")["subscriber"]) == {"bot-0", "bot-1"}
        assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
        assert took < 15, took  # stopped, not run to the end
