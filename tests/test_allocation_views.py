"""Bandwidth allocation as users see it: `plots.allocations`, the report's allocation panel and
`widgets.AllocationView`, on the `allocations` rows of a real server (camera bots on real aiortc
connections, a subscriber behind an emulated downlink), read back from the figures and widgets;
the view's controls change the running room from a thread of their own, and the next rows show it."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import roomlab
from roomlab import plots, widgets
from roomlab.sim import Camera
from roomlab.telemetry import allocations as allocation_frames

from .conftest import eventually

PNG = b"\x89PNG\r\n\x1a\n"
PRESENTATION = {"video": {"mode": "presentation"}}
#: Seconds the saved run lasts, and when the viewer's downlink narrows to `NARROW_KBPS`.
RUN_S, NARROW_AT_S, NARROW_KBPS = 15, 7, 250


def cameras(sim: roomlab.Simulation) -> None:
    """Three cameras of three priorities (layers of about 170, 550 and 1200 kbit/s each)."""
    sim.add(identity="cam-hi", video=Camera(priority="high"))
    sim.add(identity="cam-std", video=Camera())
    sim.add(identity="cam-low", video=Camera(priority="low"))


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run: a viewer on a 700 kbit/s downlink switches to presentation mode once in the room,
    then its downlink narrows to 250 kbit/s, which cannot carry even every lowest layer."""

    async def simulate() -> Path:
        with roomlab.serve() as server:
            sim = roomlab.Simulation(server, room="alloc", workers=0, seed=3)
            cameras(sim)
            sim.add(identity="viewer", link={"down_kbps": 700})
            sim.at(NARROW_AT_S, "viewer", down_kbps=NARROW_KBPS)
            run = asyncio.ensure_future(sim.run(RUN_S, progress=False))
            assert await eventually(lambda: sim.states.get("viewer") == "joined", timeout=10)
            await asyncio.sleep(2)  # a few decisions in grid mode first
            sim.set_bandwidth_profile("viewer", PRESENTATION)
            await run
            return roomlab.save(sim, tmp_path_factory.mktemp("runs") / "alloc")

    return asyncio.run(simulate())


@pytest.fixture(scope="module")
def run(saved_run: Path) -> roomlab.Run:
    return roomlab.load(saved_run)


def viewer_rows(run: roomlab.Run) -> pd.DataFrame:
    return allocation_frames.decisions(run.frame("allocations"), "viewer")


# what the run's rows say -------------------------------------------------------------------
def test_the_rows_of_the_run_have_what_the_views_need(run):
    rows = viewer_rows(run)
    assert set(rows["publisher"]) == {"cam-hi", "cam-std", "cam-low"}
    assert set(rows.groupby("publisher")["priority"].first().items()) == {
        ("cam-hi", "high"),
        ("cam-std", "standard"),
        ("cam-low", "low"),
    }
    assert list(dict.fromkeys(rows["mode"])) == ["grid", "presentation"]  # the change made while it ran
    events = run.frame("events")
    (narrowed_at,) = events.query("event == 'link-changed' and identity == 'viewer'")["time"]
    narrowed = rows[rows["time"] > narrowed_at]
    off = narrowed[narrowed["switched_off"].astype(bool)]
    assert not off.empty and set(off["reason"]) == {"bandwidth"}
    assert "cam-low" in set(off["publisher"])  # the lowest priority goes first


def test_periods_tile_each_tracks_time_and_keep_the_reasons(run):
    rows = viewer_rows(run)
    periods = allocation_frames.periods(run.frame("allocations"), "viewer")
    assert set(periods["track"]) == set(rows["track"])
    ends = allocation_frames.decision_ends(rows)
    for track, own in periods.groupby("track"):
        own = own.sort_values("start")
        assert (own["start"].iloc[1:].to_numpy() == own["end"].iloc[:-1].to_numpy()).all()  # no gap, no overlap
        mine = rows[rows["track"] == track]
        assert own["start"].iloc[0] == mine["time"].min() and own["end"].iloc[-1] == ends[mine.index].max()
        states = [(r.layer, r.switched_off, r.reason if r.switched_off else None, r.priority) for r in own.itertuples()]
        assert all(a != b for a, b in zip(states, states[1:], strict=False))  # a new period is a change
    off = periods[periods["switched_off"]]
    assert set(off["reason"]) >= {"bandwidth"} and off["layer"].isna().all()
    with pytest.raises(ValueError, match="cam-hi, cam-low, cam-std, viewer"):
        allocation_frames.periods(run.frame("allocations"))  # several subscribers: say which


# the static figure -------------------------------------------------------------------------
def test_the_plot_stacks_each_tracks_allocation_under_the_budget_with_lanes_and_reasons(run):
    rows = viewer_rows(run)
    colours = plots.participant_colours(["cam-hi", "cam-low", "cam-std", "viewer"])
    ax = plots.allocations(run.frame("allocations"), subscriber="viewer", colours=colours, events=run.frame("events"))
    assert ax.get_xlabel() == "seconds" and ax.get_ylabel() == "allocated (kbit/s)"
    assert "viewer" in ax.get_title() and "mode grid" in ax.get_title()

    # the stack: its top is the sum allocated at each decision, each band in its publisher's colour
    sums = rows.groupby("time")["allocated_bps"].sum() / 1000
    tops = [p.vertices[:, 1].max() for c in ax.collections if c.get_paths() for p in c.get_paths()]
    assert max(tops) == pytest.approx(sums.max(), rel=1e-6)
    band_colours = {tuple(np.round(c.get_facecolor()[0][:3], 3)) for c in ax.collections if len(c.get_facecolor())}
    for name in ("cam-hi", "cam-std", "cam-low"):
        assert tuple(np.round(colours[name][:3], 3)) in band_colours

    # the budget line: the available video bandwidth of every decision, in kbit/s
    budget = next(line for line in ax.get_lines() if line.get_color() == "black" and line.get_linewidth() > 1.5)
    per_decision = rows.drop_duplicates("time").set_index("time")["available_bps"] / 1000
    assert np.allclose(np.asarray(budget.get_ydata(), float)[:-1], per_decision.to_numpy())

    # the lanes: a track per lane, named with its priority in its publisher's colour; its layers and why it was off
    labels = {t.get_text(): t.get_color() for t in ax.get_yticklabels()}
    for name, priority in (("cam-hi", "high"), ("cam-std", "standard"), ("cam-low", "low")):
        assert labels[f"{name}'s camera ({priority})"] == colours[name]
    texts = [t.get_text() for t in ax.texts]
    assert "off: bandwidth" in texts and "low" in texts
    assert "mode → presentation" in texts  # the change of mode, marked across
    assert "viewer link" in texts  # the viewer's link change (its own only)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"cam-hi's camera", "available to video (budget)", "downlink estimate (all media)"} <= set(legend)


def test_the_plot_names_the_subscribers_it_can_draw(run):
    with pytest.raises(ValueError, match="choose one with subscriber=: cam-hi, cam-low, cam-std, viewer"):
        plots.allocations(run.frame("allocations"))
    with pytest.raises(ValueError, match="no allocations for subscriber 'nobody'"):
        plots.allocations(run.frame("allocations"), subscriber="nobody")
    ax = plots.allocations(run.frame("allocations").iloc[0:0])
    assert [t.get_text() for t in ax.texts] == ["no allocations yet"]


def test_the_report_has_an_allocation_panel_per_constrained_subscriber(run, tmp_path):
    path = plots.report(run.frames(), tmp_path / "report.png")
    print(f"\nreport: {path}")
    assert path.read_bytes().startswith(PNG)
    (panel,) = [p for p in plots.REPORT_PANELS if p.tables == ("allocations",)]
    figure = plots.report_figure(run.frames(), panels=[panel])
    titles = [ax.get_title() for ax in figure.axes]
    shown = {t.removeprefix("video allocated to ").split()[0] for t in titles}
    assert len(titles) == 4 and shown == {"viewer", "cam-hi", "cam-std", "cam-low"}  # every subscriber of 4 at most
    without = plots.report_figure({k: v for k, v in run.frames().items() if k != "allocations"}, panels=[panel])
    assert not without.axes


# the view over a saved run -----------------------------------------------------------------
def test_the_view_of_a_saved_run_draws_once_with_its_table_and_png(run):
    view = widgets.AllocationView(run, subscriber="viewer")
    assert not view.live and view.updates == 1
    assert view.png.startswith(PNG) and view.image.value == view.png
    assert base64.b64decode(view._repr_mimebundle_()["image/png"]) == view.png
    assert "roomlab-allocation-view" in view._dom_classes and "saved run" in view.status.value
    assert "viewer in presentation mode" in view.status.value
    latest = viewer_rows(run).query("time == time.max()")
    for row in latest.itertuples():
        layer = "off" if row.switched_off else row.layer
        assert f"<td>{row.publisher}&#x27;s camera</td><td>{row.priority}</td><td>{layer}</td>" in view.details.value
    assert not hasattr(view, "allocation_controls") and not hasattr(view, "link_controls")  # no commands
    with pytest.raises(ValueError, match="subscribers: \\['cam-hi', 'cam-low', 'cam-std', 'viewer'\\]"):
        widgets.AllocationView(run, subscriber="nobody")


# the view over a running simulation --------------------------------------------------------
@pytest.fixture
def views() -> Iterator[list[widgets.View]]:
    made: list[widgets.View] = []
    yield made
    for view in made:
        view.stop()


def on_a_thread(action) -> None:  # type: ignore[no-untyped-def]
    """Run a control's change on a thread of its own, as a kernel subshell does."""
    thread = threading.Thread(target=action, name="subshell")
    thread.start()
    thread.join()


def latest_rows(sim: roomlab.Simulation, after: pd.Timestamp) -> pd.DataFrame:
    """The viewer's last decision made after `after` (empty until there is one)."""
    rows = sim.frame("allocations")
    rows = rows[(rows["subscriber"] == "viewer") & (rows["time"] > after)]
    return rows[rows["time"] == rows["time"].max()] if len(rows) else rows


async def test_the_view_follows_a_running_room_and_its_controls_change_the_next_rows(server, views):
    sim = roomlab.Simulation(server, room="live-alloc", workers=0, seed=5)
    cameras(sim)
    sim.add(identity="viewer", link={"down_kbps": 1500}, bandwidth_profile={"video": {"max_tracks": 3}})
    view = widgets.AllocationView(sim, subscriber="viewer", period=0.2)
    views.append(view)
    assert view.live and "no allocations for viewer yet" in view.status.value
    run = asyncio.ensure_future(sim.run(25, progress=False))
    try:
        pictures: set[bytes] = set()

        def three_tracks_drawn() -> bool:
            pictures.add(view.png)
            return len(pictures) >= 3 and len(view.allocation_controls.priority_fields) == 3

        assert await eventually(three_tracks_drawn, timeout=15), view.status.value
        controls = view.allocation_controls
        assert controls.mode.value == "grid" and "viewer in grid mode" in view.status.value
        assert controls.max_kbps.value == 0  # no limit, in the profile it joined with

        # the mode, chosen on a thread of its own: the next decisions are in that mode
        now = pd.Timestamp.now(tz="UTC")
        on_a_thread(lambda: setattr(controls.mode, "value", "presentation"))
        assert view.commands[-1].thread == "subshell" and view.commands[-1].what == "mode of viewer: presentation"
        assert await eventually(lambda: set(latest_rows(sim, now)["mode"]) == {"presentation"}, timeout=5)
        rows = latest_rows(sim, now)
        assert await eventually(lambda: "viewer in presentation mode" in view.status.value, timeout=5)
        recorded = sim.frame("events").query("event == 'bandwidth-profile-changed'")
        joined, changed = (json.loads(detail)["video"] for detail in recorded["detail"])
        assert (joined["mode"], joined["max_tracks"]) == ("grid", 3)  # the profile it joined with
        assert (changed["mode"], changed["max_tracks"]) == ("presentation", 3)  # the mode, the rest kept

        # the viewer's own priority for cam-hi's track: the next rows carry it
        cam_hi = rows.loc[rows["publisher"] == "cam-hi", "track"].iloc[0]
        assert controls.priority_fields[cam_hi].value == "high"  # as the rows say
        now = pd.Timestamp.now(tz="UTC")
        on_a_thread(lambda: setattr(controls.priority_fields[cam_hi], "value", "low"))
        assert view.commands[-1].what == "viewer's priority for cam-hi's camera: low"
        changed = await eventually(
            lambda: "low" in set(latest_rows(sim, now).query("publisher == 'cam-hi'")["priority"]), timeout=5
        )
        assert changed, latest_rows(sim, now)
        assert await eventually(lambda: controls.priority_fields[cam_hi].value == "low", timeout=5)

        # max_subscription_bitrate: the next decisions allocate no more than the cap in all
        now = pd.Timestamp.now(tz="UTC")
        on_a_thread(lambda: setattr(controls.max_kbps, "value", 250))
        assert view.commands[-1].what == "max_subscription_bitrate of viewer: 250 kbit/s"
        assert await eventually(lambda: latest_rows(sim, now)["available_bps"].max() <= 250_000, timeout=5)
        capped = latest_rows(sim, now)["time"].iloc[0]
        await asyncio.sleep(2.5)  # two regular passes more
        rows = sim.frame("allocations")
        rows = rows[(rows["subscriber"] == "viewer") & (rows["time"] >= capped)]
        sums = rows.groupby("time")["allocated_bps"].sum()
        columns = ["time", "publisher", "layer", "reason", "allocated_bps", "available_bps", "limited_by"]
        history = sim.frame("allocations").query("subscriber == 'viewer'")
        shown = rows[columns].to_string() + "\n" + history[["time", "estimate_bps", "estimate_reason"]].to_string()
        assert len(sums) >= 3 and (sums <= 250_000).all(), shown
        # the cap is what video gets, unless the downlink estimate leaves video less (a congestion cut)
        assert (rows["available_bps"] <= 250_000).all(), shown
        assert (rows.query("limited_by == 'max_subscription_bitrate'")["available_bps"] == 250_000).all(), shown
        assert (rows.query("limited_by == 'estimate'")["available_bps"] < 250_000).all(), shown
        assert set(rows["limited_by"].dropna()) <= {"max_subscription_bitrate", "estimate"}, shown
        mode_kept = json.loads(sim.frame("events").query("event == 'bandwidth-profile-changed'")["detail"].iloc[-1])
        assert mode_kept["video"]["mode"] == "presentation"  # the other options of the profile are kept
        assert await eventually(lambda: "max_subscription_bitrate" in view.details.value, timeout=5)

        # and the viewer's link, through the same view
        assert list(view.link_controls.identity.options) == ["viewer"]
        assert await eventually(lambda: view.link_controls.down_kbps.value == 1500, timeout=5)
        view.link_controls.delay_ms.value = 40
        on_a_thread(view.link_controls.apply.click)
        assert await eventually(lambda: sim.link("viewer").parameters().get("delay_ms") == 40, timeout=5)
    finally:
        sim.stop()
        await run
    assert await eventually(lambda: not view.live, timeout=5)  # the run ended: the view stops
    assert [c.thread for c in view.commands] == ["subshell"] * 4


async def test_commands_are_checked_in_the_callers_thread(server, views):
    sim = roomlab.Simulation(server, room="checked", workers=0)
    cameras(sim)
    sim.add(identity="viewer")
    view = widgets.AllocationView(sim, subscriber="viewer", period=0.2)
    views.append(view)
    with pytest.raises(RuntimeError, match="not running"):
        view.source.set_bandwidth_profile("viewer", PRESENTATION)
    with pytest.raises(ValueError, match="mode must be one of grid, collaboration, presentation"):
        view.source.set_bandwidth_profile("viewer", {"video": {"mode": "stage"}})
    with pytest.raises(ValueError, match="priority must be one of low, standard, high"):
        view.source.set_track_priority("viewer", "MT1", "urgent")
    with pytest.raises(ValueError, match="no bot named 'nobody'"):
        view.source.set_bandwidth_profile("nobody", PRESENTATION)
    on_a_thread(lambda: setattr(view.allocation_controls.mode, "value", "collaboration"))
    assert await eventually(lambda: "not done: the simulation is ready, not running" in view.feedback.value)
    assert view.commands[-1].what == "mode of viewer: collaboration"  # handed over, and refused
    with pytest.raises(ValueError, match="subscriber must be the identity"):
        widgets.AllocationView(sim, subscriber=None)  # type: ignore[arg-type]
