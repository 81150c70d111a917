"""Widgets without a kernel: views over a real server, simulation, client and saved run refresh,
follow a running room, stop, and hand their controls' commands to the room (from any thread)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import roomlab
from roomlab import widgets
from roomlab.sim import Cursor, Strokes, Talker
from roomlab.telemetry.links import current, describe, links
from roomlab.widgets.data_monitor import data_model, lost_per_message
from roomlab.widgets.room_view import room_model

from .conftest import eventually

PNG = b"\x89PNG\r\n\x1a\n"


def times(*seconds: float) -> pd.Series:
    return pd.Series(pd.to_datetime([1_800_000_000 + s for s in seconds], unit="s", utc=True))


def events_table(rows: list[tuple]) -> pd.DataFrame:
    """An `events` frame from (seconds, event, identity, track, detail) rows, in room "r"."""
    frame = roomlab.Telemetry().frame("events")
    data = pd.DataFrame(rows, columns=["time", "event", "identity", "track", "detail"])
    data["time"] = times(*data["time"])
    data["room"] = "r"
    data["participant"] = "PA" + data["identity"]
    return pd.concat([frame, data], ignore_index=True)[frame.columns]


# pure pieces -------------------------------------------------------------------------------
def test_links_replay_the_joined_link_and_every_change():
    events = events_table(
        [
            (0, "bot-joined", "a", None, json.dumps({"up_kbps": 500, "down_kbps": 2000, "delay_ms": 40, "loss": 0.01})),
            (1, "bot-joined", "b", None, "{}"),
            (2, "link-changed", "a", None, json.dumps({"loss": 0.2})),
            (3, "link-changed", "a", None, json.dumps({"down_loss": 0.05, "up_kbps": None})),
            (4, "link-changed", "b", None, json.dumps({"burst_loss": {"p": 0.1, "r": 0.5}})),
        ]
    )
    history = links(events)
    assert list(history["identity"]) == ["a", "b", "a", "a", "b"]
    now = current(history)
    assert now.loc["a", "up_loss"] == 0.2 and now.loc["a", "down_loss"] == 0.05
    assert pd.isna(now.loc["a", "up_kbps"]) and now.loc["a", "down_kbps"] == 2000
    assert now.loc["a", "up_delay_ms"] == now.loc["a", "down_delay_ms"] == 40
    assert describe(now.loc["a"]) == "↑∞ ↓2000 kbit/s · delay 40 ms · loss ↑20 ↓5 %"
    assert describe(now.loc["b"]) == "burst_loss"
    assert describe(history.iloc[1]) == "unconstrained"
    assert links(events.iloc[0:0]).empty


def test_loss_per_interval_counts_the_gaps_before_each_arrival_per_subscriber():
    messages = roomlab.Telemetry().frame("messages")
    rows = pd.DataFrame(
        {
            "time": times(0.1, 0.2, 0.3, 0.4, 1.5, 0.15, 0.25, 0.35, 0.45),
            "publisher": ["p"] * 9,
            "subscriber": ["s1"] * 5 + ["s2"] * 4,
            "track": ["cursor"] * 9,
            "seq": [1, 2, 4, 5, 9, 1, 3, 2, 4],  # s1: 1 then 3 lost; s2: 1 lost, then found late
            "latency_ms": [10.0, 12.0, 14.0, 16.0, 100.0, 20.0, 22.0, 24.0, 26.0],
        }
    )
    messages = pd.concat([messages, rows], ignore_index=True)[messages.columns]
    lost = lost_per_message(messages)
    assert lost.tolist() == [0, 0, 1, 0, 3, 0, 1, 0, 0]
    model = data_model(messages, events_table([]), by="track")
    first, second = model.per_second.iloc[0], model.per_second.iloc[1]
    assert (first["label"], first["received"], first["lost"], first["rate"]) == ("p/cursor", 8, 2, 4.0)
    assert second["lost"] == 3 and second["loss_pct"] == 75.0
    summary = model.summary.set_index("label")
    assert summary.loc["p/cursor", "sent"] == 9 + 4 and summary.loc["p/cursor", "lost"] == 4
    by_subscriber = data_model(messages, events_table([]), by="subscriber").summary.set_index("label")
    assert by_subscriber.loc["s1", "lost"] == 4 and by_subscriber.loc["s2", "lost"] == 0


def test_room_model_replays_sessions_tracks_and_subscriptions():
    kind = json.dumps({"kind": "data", "name": "strokes", "publisher": "a"})
    events = events_table(
        [
            (0, "participant-connected", "a", None, None),
            (0.5, "track-added", "a", "MT1", kind),
            (1, "participant-connected", "b", None, None),
            (1.2, "track-subscribed", "b", "MT1", kind),
            (2, "link-changed", "b", None, json.dumps({"delay_ms": 100})),
            (3, "track-removed", "a", "MT1", kind),
            (3, "participant-disconnected", "a", None, None),
        ]
    )
    model = room_model(events, roomlab.Telemetry().frame("rtc_stats"), roomlab.Telemetry().frame("network_quality"))
    a, b = model.participants
    assert (a.identity, a.connected, sorted(a.tracks.values()), a.published) == (
        "a",
        False,
        [("data", "strokes")],
        set(),
    )
    assert (b.identity, b.connected, b.subscribed, b.link) == ("b", True, set(), "delay 100 ms")
    assert b.ever_subscribed == {"MT1"}


# a saved run -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short real simulation, saved: two drawing bots, one on a lossy, delayed link."""

    async def simulate() -> Path:
        with roomlab.serve() as server:
            sim = roomlab.Simulation(server, room="board", workers=0, seed=7)
            sim.add(identity="ann", data=[Strokes(rate_hz=30), Cursor(rate_hz=20)], link={"delay_ms": 10})
            sim.add(identity="ben", data=[Strokes(rate_hz=30)], link={"loss": 0.05, "up_kbps": 800})
            sim.at(2, "ben", delay_ms=80)
            await sim.run(4, progress=False)
            return roomlab.save(sim, tmp_path_factory.mktemp("runs") / "board")

    return asyncio.run(simulate())


def test_views_of_a_saved_run_draw_once_and_carry_their_png(saved_run):
    run = roomlab.load(saved_run)
    room = widgets.RoomView(run)
    data = widgets.DataMonitor(run)
    for view in (room, data):
        assert not view.live and view.updates == 1
        assert view.png.startswith(PNG) and view.image.value == view.png
        bundle = view._repr_mimebundle_()
        assert base64.b64decode(bundle["image/png"]) == view.png
        assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == view.model_id
        assert "saved run" in view.status.value
        assert f"roomlab-{'room-view' if view is room else 'data-monitor'}" in view._dom_classes
    assert "ann" in room.details.value and "strokes" in room.details.value
    assert "delay 80 ms" in room.details.value and "loss 5 %" in room.details.value  # ben's link after the change
    assert not hasattr(room, "link_controls")  # a saved run takes no commands
    messages = run.frame("messages")
    tracks = {f"{p}/{t}" for p, t in messages[["publisher", "track"]].astype(str).itertuples(index=False)}
    assert tracks and all(f"<td>{track}</td>" in data.details.value for track in tracks)
    assert f"{len(messages)} messages received" in data.status.value
    before = data.png
    data.grouping.value = "subscriber"  # a view setting: redraws at once
    assert data.png != before and not any(track in data.details.value for track in tracks)
    assert all(f"<td>{s}</td>" in data.details.value for s in messages["subscriber"].unique())
    data.stop()
    assert data.updates == 2


def test_a_view_refuses_what_it_cannot_show(saved_run):
    with pytest.raises(ValueError, match="period"):
        widgets.RoomView(roomlab.load(saved_run), period=0.01)
    with pytest.raises(ValueError, match="track, subscriber"):
        widgets.DataMonitor(roomlab.load(saved_run), by="room")
    with pytest.raises(TypeError, match="Server, Simulation"):
        widgets.RoomView(42)


# live sources ------------------------------------------------------------------------------
@pytest.fixture
def views() -> Iterator[list[widgets.View]]:
    made: list[widgets.View] = []
    yield made
    for view in made:
        view.stop()


async def test_views_follow_a_running_simulation_and_its_link_control_changes_the_room(server, views):
    sim = roomlab.Simulation(server, room="live", workers=0, seed=11)
    sim.add(identity="ann", data=[Cursor(rate_hz=30)], link={"delay_ms": 5})
    sim.add(identity="ben", data=[Strokes(rate_hz=30)])
    room = widgets.RoomView(sim, period=0.2)
    data = widgets.DataMonitor(sim, period=0.2)
    views += [room, data]
    assert room.live and data.live and sim.status == "ready"
    run = asyncio.ensure_future(sim.run(4, progress=False))
    try:
        pictures: set[bytes] = set()

        def changed_twice() -> bool:
            pictures.add(data.png)
            return len(pictures) >= 3 and "ann/cursor" in data.details.value

        assert await eventually(changed_twice, timeout=10), data.status.value
        assert "connected" in room.details.value and sim.status == "running"

        # the control's callback on a thread of its own, as a subshell runs it
        controls = room.link_controls
        assert list(controls.identity.options) == ["ann", "ben"]
        clicked = threading.Thread(target=lambda: _apply(controls, "ann", loss_pct=20, delay_ms=60), name="subshell")
        clicked.start()
        clicked.join()
        assert room.commands[-1].thread == "subshell" and "ann" in room.commands[-1].what
        changed = await eventually(lambda: _link_changes(sim, "ann"), timeout=5)
        assert changed == [{"delay_ms": 60.0, "down_kbps": None, "loss": 0.2, "up_kbps": None}]
        assert sim.link("ann").parameters()["loss"] == 0.2  # the room's link, not only the table
        assert await eventually(lambda: "delay 60 ms · loss 20 %" in room.details.value, timeout=5)
        assert "sent: link of ann" in room.feedback.value

    finally:
        await run  # (a failure above leaves no run behind)
    assert await eventually(lambda: not room.live and not data.live, timeout=5)  # the run ended: they stop
    assert "stopped" in room.status.value
    updates = data.updates
    await asyncio.sleep(0.5)
    assert data.updates == updates


def _apply(controls, identity: str, loss_pct: float, delay_ms: int) -> None:  # type: ignore[no-untyped-def]
    controls.identity.value = identity
    controls.loss_pct.value = loss_pct
    controls.delay_ms.value = delay_ms
    controls.apply.click()


def _link_changes(sim: roomlab.Simulation, identity: str) -> list[dict]:
    events = sim.frame("events")
    rows = events[(events["event"] == "link-changed") & (events["identity"] == identity)]
    return [json.loads(detail) for detail in rows["detail"]]


async def test_link_commands_are_checked_in_the_callers_thread_and_bad_ones_change_nothing(server, views):
    sim = roomlab.Simulation(server, room="refused", workers=0)
    sim.add(identity="ann", data=[Cursor(rate_hz=5)])
    room = widgets.RoomView(sim, period=0.2)
    views.append(room)
    with pytest.raises(ValueError, match="no bot named 'nobody'"):
        room.source.change_link("nobody", loss=0.1)
    with pytest.raises(ValueError, match="loss"):
        room.source.change_link("ann", loss=2.0)
    assert sim.link("ann").parameters().get("loss") is None


async def test_views_of_a_client_show_what_it_sees_and_stop_when_it_leaves(join, views):
    cursor = roomlab.LocalDataTrack("cursor")
    alice = await join("alice", room="pair", tracks=[cursor])
    bob = await join("bob", room="pair", link=roomlab.Link(delay_ms=20))
    room = widgets.RoomView(bob, period=0.2)
    data = widgets.DataMonitor(bob, period=0.2)
    views += [room, data]
    assert "alice" in room.details.value and "cursor" in room.details.value
    assert list(room.link_controls.identity.options) == ["bob"]  # the client's own link only
    for i in range(20):
        cursor.send(f"point {i}")
    assert await eventually(lambda: "<td>20</td>" in data.details.value, timeout=5), data.details.value
    assert "alice/cursor" in data.details.value
    assert room.link_controls.delay_ms.value == 20  # the client's link, as the view recorded it
    room.link_controls.loss_pct.value = 5
    room.link_controls.apply.click()  # sends what changed: the loss
    assert await eventually(lambda: bob.link.parameters().get("loss") == 0.05)
    assert bob.link.parameters()["delay_ms"] == 20
    assert await eventually(lambda: "<td>delay 20 ms · loss 5 %</td>" in room.details.value, timeout=5)
    room.link_controls.apply.click()
    assert "nothing changed" in room.feedback.value and len(room.commands) == 1
    await alice.disconnect()
    assert await eventually(lambda: "left" in room.details.value, timeout=5)
    await bob.disconnect()
    assert await eventually(lambda: not room.live and not data.live, timeout=5)


async def test_a_server_view_shows_one_room_and_stops_with_the_server(views):
    server = roomlab.serve()
    try:
        a = await roomlab.connect(server.url, server.token("a"), name="one")
        b = await roomlab.connect(server.url, server.token("b"), name="two")
        one = widgets.RoomView(server, room="one", period=0.2)
        both = widgets.RoomView(server, period=0.2)
        views += [one, both]
        assert "<td>a</td>" in one.details.value and "<td>b</td>" not in one.details.value
        assert "<td>a</td>" in both.details.value and "<td>b</td>" in both.details.value
        await a.disconnect()
        await b.disconnect()
        assert await eventually(lambda: "left" in one.details.value, timeout=5)
    finally:
        server.stop()
    assert await eventually(lambda: not one.live and not both.live, timeout=5)


ALWAYS_TALKING = Talker(mean_talk_s=1000, mean_silence_s=0.001)


def _level(details: str, identity: str) -> int | None:
    """The level the dashboard's table gives `identity` now."""
    found = re.search(rf"<td>{identity}</td><td>(\d)</td>", details)
    return int(found.group(1)) if found else None


async def test_quality_dashboard_follows_the_levels_and_a_lossy_link_set_by_its_control_lowers_one(server, views):
    sim = roomlab.Simulation(server, room="quality", workers=0, seed=13)
    sim.add(identity="ann", audio=ALWAYS_TALKING)
    sim.add(identity="ben", audio=ALWAYS_TALKING)
    dashboard = widgets.QualityDashboard(sim, period=0.2)
    views.append(dashboard)
    assert "no network quality levels yet" in dashboard.status.value
    run = asyncio.ensure_future(sim.run(9, progress=False))
    try:
        assert await eventually(lambda: _level(dashboard.details.value, "ben") == 5, timeout=10), (
            dashboard.details.value
        )
        before = dashboard.png
        controls = dashboard.link_controls
        clicked = threading.Thread(target=lambda: _apply(controls, "ben", loss_pct=25, delay_ms=0), name="subshell")
        clicked.start()
        clicked.join()
        dropped = await eventually(lambda: (_level(dashboard.details.value, "ben") or 5) <= 2, timeout=8)
        assert dropped, dashboard.details.value
        ben = re.search(r"<td>ben</td><td>\d</td><td>\d</td><td>([^<]*)</td>", dashboard.details.value)
        assert ben and ben.group(1).startswith("audio_") and "loss" in ben.group(1)  # why, in the table
        assert _level(dashboard.details.value, "ann") >= 3  # ann's own link is clean
        assert dashboard.png != before
    finally:
        sim.stop()
        await run
    assert await eventually(lambda: not dashboard.live, timeout=5)
    levels = sim.frame("network_quality")
    assert levels.loc[levels["participant"] == "ben", "level"].min() <= 2  # the table the view drew


async def test_a_view_of_a_watch_follows_the_server_it_watches_and_stops_with_the_watch(server, join, views):
    watch = roomlab.watch(server.url, server.api_key, server.api_secret)
    try:
        room = widgets.RoomView(watch, room="watched", period=0.2)
        views.append(room)
        assert room.live and "watched server" in room.status.value
        await join("zoe", room="watched")
        assert await eventually(lambda: "<td>zoe</td><td>watched</td><td>connected" in room.details.value, timeout=5)
    finally:
        watch.stop()
    assert await eventually(lambda: not room.live, timeout=5)
