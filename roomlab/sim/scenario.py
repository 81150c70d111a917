"""Declared scenarios: a YAML file of participants, behaviours, links and link changes, run end to
end into a directory of Parquet frames and a PNG report (`roomlab simulate SCENARIO --out DIR`).

    room: standup            # room name
    duration: 60             # seconds
    seed: 1
    workers: 1               # worker processes (default: cores - 1)
    participants:
      - count: 4
        identity: "bot-{i}"
        audio: true          # or {talker: {...}}
        video: false         # or {camera: {...}}
        data:                # one entry per data track
          - cursor: {rate_hz: 30, ordered: false, max_retransmits: 0}
          - chat: {}
        link: {up_kbps: 500, down_kbps: 2000, delay_ms: 40, jitter_ms: 5, loss: 0.01}
        join_at: 0           # seconds (optional)
        leave_at: null       # seconds (optional)
        network_quality: {local: minimal, remote: none}   # or true (optional)
        dominant_speaker: true                            # (optional)
        bandwidth_profile: {video: {mode: presentation, max_subscription_bitrate: 800000}}  # (optional)
    schedule:                # link changes while running
      - at: 20
        identity: "bot-1"
        link: {loss: 0.2}
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import plots
from ..telemetry.persist import save
from . import run_directory
from .simulation import Simulation
from .summary import run_summary

PARTICIPANT_KEYS = {
    "count",
    "identity",
    "audio",
    "video",
    "data",
    "link",
    "join_at",
    "leave_at",
    "network_quality",
    "dominant_speaker",
    "bandwidth_profile",
}
SCENARIO_KEYS = {"room", "duration", "seed", "workers", "participants", "schedule"}


class ScenarioError(ValueError):
    """A scenario file that cannot be run, with where and why."""


@dataclass
class Scenario:
    room: str
    duration: float
    participants: list[dict[str, Any]]
    schedule: list[dict[str, Any]] = field(default_factory=list)
    seed: int | None = None
    workers: int | None = None
    source: str = ""

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        file = Path(path)
        try:
            data = yaml.safe_load(file.read_text())
        except FileNotFoundError:
            raise ScenarioError(f"{file}: no such scenario file") from None
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{file}: not valid YAML: {exc}") from None
        return cls.parse(data, str(file))

    @classmethod
    def parse(cls, data: Any, where: str = "scenario") -> Scenario:
        if not isinstance(data, dict):
            raise ScenarioError(f"{where}: a scenario is a mapping with room, duration and participants")
        unknown = set(data) - SCENARIO_KEYS
        if unknown:
            raise ScenarioError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(SCENARIO_KEYS)}")
        duration = data.get("duration")
        if not isinstance(duration, int | float) or isinstance(duration, bool) or duration <= 0:
            raise ScenarioError(f"{where}: duration must be a number of seconds above 0, got {duration!r}")
        participants = data.get("participants")
        if not isinstance(participants, list) or not participants:
            raise ScenarioError(f"{where}: participants must be a non-empty list")
        for number, group in enumerate(participants):
            if not isinstance(group, dict) or set(group) - PARTICIPANT_KEYS:
                extra = sorted(set(group) - PARTICIPANT_KEYS) if isinstance(group, dict) else group
                known = sorted(PARTICIPANT_KEYS)
                raise ScenarioError(f"{where}: participants[{number}]: unknown key(s) {extra}; known: {known}")
        schedule = data.get("schedule") or []
        for number, change in enumerate(schedule):
            if not isinstance(change, dict) or {"at", "identity", "link"} - set(change):
                raise ScenarioError(f"{where}: schedule[{number}] needs at, identity and link")
        return cls(
            room=str(data.get("room") or "simulation"),
            duration=float(duration),
            participants=participants,
            schedule=schedule,
            seed=data.get("seed"),
            workers=data.get("workers"),
            source=where,
        )

    def build(self, server: Any) -> Simulation:
        simulation = Simulation(server, room=self.room, workers=self.workers, seed=self.seed)
        for number, group in enumerate(self.participants):
            try:
                simulation.add(
                    n=int(group.get("count", 1)),
                    identity=str(group.get("identity", f"group{number}-{{i}}")),
                    audio=_unwrap(group.get("audio", False), "talker"),
                    video=_unwrap(group.get("video", False), "camera"),
                    data=group.get("data"),
                    link=group.get("link"),
                    join_at=float(group.get("join_at") or 0.0),
                    leave_at=group.get("leave_at"),
                    network_quality=group.get("network_quality", False),
                    dominant_speaker=group.get("dominant_speaker", False),
                    bandwidth_profile=group.get("bandwidth_profile"),
                )
            except (ValueError, TypeError) as exc:
                raise ScenarioError(f"{self.source}: participants[{number}]: {exc}") from None
        for number, change in enumerate(self.schedule):
            try:
                simulation.at(float(change["at"]), str(change["identity"]), **change["link"])
            except ValueError as exc:
                raise ScenarioError(f"{self.source}: schedule[{number}]: {exc}") from None
        return simulation


def _unwrap(value: Any, key: str) -> Any:
    """`{talker: {...}}` -> the options; true/false/None as they are."""
    if isinstance(value, dict) and set(value) == {key}:
        return value[key] or True  # an empty option mapping means the defaults
    return value


async def run_scenario(
    path: str | Path,
    out: str | Path,
    progress: bool = True,
    force: bool = False,
    interrupt: asyncio.Event | None = None,
) -> Path:
    """Run a scenario file against a server of its own; write frames, the report, `summary.json`
    and a copy of the scenario to `out`. Returns `out`.

    Everything is checked before anything is created: the scenario (ScenarioError) and `out`
    (RunDirectoryError: see `run_directory`; `force` replaces an earlier run there). Setting
    `interrupt` ends the run early: the bots leave, and what ran is saved, marked as interrupted
    in `summary.json`.
    """
    from ..server import serve

    scenario = Scenario.load(path)
    directory = run_directory.check(out, force)
    with serve() as server:
        simulation = scenario.build(server)
        watcher = asyncio.ensure_future(_stop_when(interrupt, simulation)) if interrupt is not None else None
        try:
            await simulation.run(scenario.duration, progress=progress)
        finally:
            if watcher is not None:
                watcher.cancel()
        await asyncio.sleep(1.2)  # one more telemetry sample of the server after everyone left
        frames = simulation.frames()
    interrupted = interrupt is not None and interrupt.is_set()
    directory.mkdir(parents=True, exist_ok=True)
    run_directory.clear(directory)
    save(frames, directory)
    shutil.copyfile(path, directory / "scenario.yaml")
    summary = run_summary(frames, scenario.room, scenario.duration, simulation.states, simulation.lateness, interrupted)
    if interrupted:
        summary["interrupted_at_s"] = round(simulation.stopped_at or 0.0, 1)
    (directory / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    title = f"{scenario.room}: {Path(path).name}"
    if interrupted:
        title += f" (interrupted at {summary['interrupted_at_s']:g} s of {scenario.duration:g} s)"
    plots.report(frames, directory / "report.png", title=title)
    return directory


async def _stop_when(interrupt: asyncio.Event, simulation: Simulation) -> None:
    await interrupt.wait()
    simulation.stop()
