"""`roomlab.Simulation`: a room filled with simulated participants, run in worker processes.

    sim = roomlab.Simulation(server, room="standup", workers=2)
    sim.add(10, identity="bot-{i}", audio=True, data=[Cursor(rate_hz=30), Chat()], link={"loss": 0.02})
    await sim.run(60)                     # a progress bar; the notebook stays responsive
    sim.frame("messages")                 # what the bots received, with the server's tables

Bots run apart from the server (which may be in this process) and from the notebook: each worker
process runs its share on an event loop of its own and streams telemetry back, so `frame()` works
while the run goes on. A worker that dies mid-run is reported as its bots' disconnects; the run
goes on and ends on time. `workers=0` runs the bots in this process instead (quick experiments).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Listener
from typing import TYPE_CHECKING, Any

from ..net.link import Link
from ..policy.allocation import BandwidthProfile, check_priority
from ..policy.quality import NetworkQualityConfiguration
from ..telemetry.allocations import PROFILE_EVENT
from ..telemetry.links import link_detail
from ..telemetry.recorder import Telemetry, concat_frames, now_ns
from .behaviours import Behaviour, Camera, Talker, behaviour_from_spec
from .bot import Bot, BotSpec, settle

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: Seconds a run waits past its duration for bots to leave and workers to report.
GRACE = 10.0
#: Seconds a worker process may take to start and connect back.
WORKER_START_TIMEOUT = 30.0


def default_workers() -> int:
    """One worker per core but one (the server and the notebook keep a core)."""
    return max(1, (os.cpu_count() or 2) - 1)


def _behaviours(audio: Any, video: Any, data: Any) -> list[Behaviour]:
    """Fresh behaviours for one bot (a behaviour given as an instance is copied for each bot)."""
    found: list[Behaviour] = []
    if audio:
        found.append(
            copy.deepcopy(audio)
            if isinstance(audio, Behaviour)
            else Talker(**(audio if isinstance(audio, dict) else {}))
        )
    if video:
        found.append(
            copy.deepcopy(video)
            if isinstance(video, Behaviour)
            else Camera(**(video if isinstance(video, dict) else {}))
        )
    entries = data if isinstance(data, list | tuple) else ([] if data is None else [data])
    for entry in entries:
        if isinstance(entry, Behaviour):
            found.append(copy.deepcopy(entry))
        elif isinstance(entry, dict) and len(entry) == 1:
            ((kind, options),) = entry.items()
            found.append(behaviour_from_spec(kind, options))
        else:
            raise ValueError(f"data entries must be behaviours or {{kind: options}}, got {entry!r}")
    return found


def _link_parameters(link: Any) -> dict[str, Any] | None:
    """A bot's link as Link keyword arguments (checked now, built in the bot's process): from a
    `roomlab.Link` (each bot gets a copy of it) or a dict of its parameters."""
    if link is None:
        return None
    if isinstance(link, Link):
        return link.parameters()
    if not isinstance(link, dict):
        raise ValueError(f"link must be a roomlab.Link or a dict of its parameters, got {type(link).__name__}")
    Link(**link)  # a bad parameter fails here, not in a worker
    return dict(link)


@dataclass
class _Worker:
    process: Any
    conn: Any
    identities: list[str]
    alive: bool = True
    done: bool = False


class LinkControl:
    """One bot's link, changed before or while the simulation runs (`sim.link("bot-1").update(loss=0.2)`).

    Every bot has one: a bot added without a link starts on an unconstrained one."""

    def __init__(self, simulation: Simulation, identity: str) -> None:
        self._simulation = simulation
        self.identity = identity

    def update(self, **changes: Any) -> None:
        """Change the link now (Link.update's parameters); a bad one is a ValueError here."""
        self._simulation._update_link(self.identity, changes)

    def parameters(self) -> dict[str, Any]:
        """The link's parameters as the simulation last set them (`roomlab.Link(**...)` makes one like it)."""
        return self._simulation._links[self.identity].parameters()

    def __repr__(self) -> str:
        return f"<LinkControl {self.identity} {self.parameters()}>"


class Simulation:
    def __init__(self, server: Any, room: str = "simulation", workers: int | None = None, seed: int | None = None):
        if workers is not None and workers < 0:
            raise ValueError(f"workers must be 0 (run in this process) or more, got {workers}")
        self.server = server
        self.room = room
        self.workers = default_workers() if workers is None else workers
        self.seed = seed
        self.telemetry = Telemetry()
        self.lateness: dict[str, float] = {}
        self.states: dict[str, str] = {}
        self._specs: list[BotSpec] = []
        #: how many bots each identity pattern has numbered so far (`{i}` counts per pattern)
        self._numbered: dict[str, int] = {}
        #: each bot's link as the simulation set it: checks changes before they reach the bot's process
        self._links: dict[str, Link] = {}
        self._schedule: list[tuple[float, str, dict[str, Any]]] = []
        self._worker_of: dict[str, _Worker] = {}
        self._local_bots: dict[str, Bot] = {}
        self._workers: list[_Worker] = []
        self._started_wall: float | None = None
        self._running = False
        self._stop_requested = False
        #: seconds into the run when stop() was called (None: not stopped early)
        self.stopped_at: float | None = None
        self._lock = threading.Lock()

    # building the room -----------------------------------------------------------------------
    def add(
        self,
        n: int = 1,
        identity: str = "bot-{i}",
        audio: Any = False,
        video: Any = False,
        data: Any = None,
        link: Any = None,
        join_at: float = 0.0,
        leave_at: float | None = None,
        subscribe: bool = True,
        network_quality: Any = False,
        dominant_speaker: bool = False,
        bandwidth_profile: Any = None,
    ) -> list[str]:
        """Add `n` bots. `identity` is formatted with `i`, counting the bots added with that
        pattern from 0 (`add(2, identity="sub-{i}")` gives sub-0, sub-1; a later one, sub-2).
        `audio`/`video`: True for defaults, a dict of Talker/Camera options, or a behaviour.
        `data`: a behaviour, a list of them, or `{kind: options}` entries as in scenario files.
        `link`: a `roomlab.Link` or a dict of its parameters (each bot gets a Link of its own);
        None starts the bot on an unconstrained link, which `link(identity)` changes like any
        other. `join_at`/`leave_at`: seconds. `subscribe=False` makes publish-only bots.
        `network_quality`, `dominant_speaker` and `bandwidth_profile` (Twilio's Bandwidth Profile
        options in snake case, `{"video": {"mode": ..., ...}}`) are passed to each bot's `connect()`
        (the server records every level in `network_quality` and every allocation in `allocations`
        whatever they ask)."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        NetworkQualityConfiguration.from_option(network_quality)  # a bad option fails here, not in a worker
        profile = BandwidthProfile.from_options(bandwidth_profile).options() if bandwidth_profile is not None else None
        if not isinstance(dominant_speaker, bool):
            raise ValueError(f"dominant_speaker must be True or False, got {dominant_speaker!r}")
        if join_at < 0 or (leave_at is not None and leave_at <= join_at):
            raise ValueError("join_at must be 0 or more, and leave_at after join_at")
        template = _link_parameters(link)
        first = self._numbered.get(identity, 0)
        names = [identity.format(i=first + number) for number in range(n)]
        taken = {spec.identity for spec in self._specs}
        for name in names:
            if name in taken:
                raise ValueError(f"identity {name!r} is already in the simulation; use a pattern with {{i}}")
            taken.add(name)
        for name in names:
            index = len(self._specs)
            behaviours = _behaviours(audio, video, data)
            for number, behaviour in enumerate(behaviours):
                if hasattr(behaviour, "seed") and behaviour.seed is None and self.seed is not None:
                    behaviour.seed = self.seed * 100_003 + index * 101 + number
            seed = None if self.seed is None else self.seed * 7919 + index
            parameters = None if template is None else dict(template)
            if parameters is not None and parameters.get("seed") is None and seed is not None:
                parameters["seed"] = seed
            token = self.server.token(name, room=self.room, ttl=86_400)
            self._specs.append(
                BotSpec(
                    name,
                    token,
                    behaviours,
                    parameters,
                    join_at,
                    leave_at,
                    subscribe,
                    seed,
                    copy.deepcopy(network_quality),
                    dominant_speaker,
                    copy.deepcopy(profile),
                )
            )
            self._links[name] = Link(**(parameters or {"seed": seed}))
        self._numbered[identity] = first + n
        return names

    @property
    def identities(self) -> list[str]:
        return [spec.identity for spec in self._specs]

    @property
    def status(self) -> str:
        """ "ready" (not run yet), "running", or "ended" (a run finished)."""
        if self._running:
            return "running"
        return "ready" if self._started_wall is None else "ended"

    def at(self, seconds: float, identity: str, **changes: Any) -> None:
        """Change `identity`'s link `seconds` after the start of the run (any bot's, given one or not)."""
        spec = self._spec(identity)
        if seconds < 0:
            raise ValueError(f"seconds must be 0 or more, got {seconds}")
        Link(**(spec.link or {})).update(**changes)  # a bad change fails now, not during the run
        self._schedule.append((seconds, identity, changes))

    def link(self, identity: str) -> LinkControl:
        """The link of bot `identity`, to change with `.update(...)` before or while running."""
        self._spec(identity)
        return LinkControl(self, identity)

    def _update_link(self, identity: str, changes: dict[str, Any]) -> None:
        self._links[identity].update(**changes)  # all or nothing: a ValueError changes nothing
        if self._running:
            self._change_link(identity, changes)
        else:  # before the run: the bot starts on the changed link
            self._spec(identity).link = self._links[identity].parameters()

    def set_bandwidth_profile(self, identity: str, bandwidth_profile: Any) -> None:
        """Change bot `identity`'s Bandwidth Profile while the simulation runs, as the bot's own
        `room.local_participant.set_bandwidth_profile(...)` would: the options replace its current
        ones (keys left out take Twilio's defaults). Checked here (a ValueError names the allowed
        values); recorded as a `bandwidth-profile-changed` event with the whole profile (so is the
        profile a bot joins with)."""
        self._spec(identity)
        options = BandwidthProfile.from_options(bandwidth_profile or {}).options()
        self._running_bot(identity)
        self._record_profile(identity, options)
        self._command_bot(identity, "set_bandwidth_profile", options)

    def set_track_priority(self, identity: str, track: str, priority: str | None) -> None:
        """Bot `identity`'s own priority for the video track `track` (its SID) that it receives, over
        the publisher's (None: the publisher's again), as `RemoteVideoTrack.set_priority` would."""
        self._spec(identity)
        if priority is not None:
            check_priority(priority)
        self._running_bot(identity)
        self._command_bot(identity, "set_track_priority", track, priority)

    def _running_bot(self, identity: str) -> None:
        if not self._running:
            raise RuntimeError(f"the simulation is not running: bot {identity!r} is not in the room")

    def _command_bot(self, identity: str, command: str, *args: Any) -> None:
        """Have bot `identity` run `command` (a `BOT_COMMANDS` method of its Bot), wherever it runs."""
        bot = self._local_bots.get(identity)
        if bot is not None:
            getattr(bot, command)(*args)
            return
        worker = self._worker_of.get(identity)
        if worker is not None and worker.alive:
            try:
                worker.conn.send({"cmd": "bot", "identity": identity, "command": command, "args": list(args)})
            except (OSError, ValueError):
                pass

    def _spec(self, identity: str) -> BotSpec:
        for spec in self._specs:
            if spec.identity == identity:
                return spec
        raise ValueError(f"no bot named {identity!r} in this simulation")

    # running --------------------------------------------------------------------------------
    async def run(self, duration: float, progress: bool = True) -> None:
        """Run for `duration` seconds (bots join and leave on their schedules), then stop."""
        if not self._specs:
            raise ValueError("add bots before running the simulation")
        if duration <= 0:
            raise ValueError(f"duration must be above 0 seconds, got {duration}")
        if self._running:
            raise RuntimeError("this simulation is already running")
        self._running = True
        self._stop_requested = False
        self.stopped_at = None
        # workers need about 1.5 s to start and import; the bots' clock starts once they all can
        self._started_wall = time.time() + (0.2 if not self.workers else 1.5 + 0.3 * min(self.workers, 8))
        loop = asyncio.get_running_loop()
        try:
            if self.workers:
                runner = asyncio.ensure_future(self._run_workers(duration))
            else:
                runner = asyncio.ensure_future(self._run_here(duration))
            timers = [
                loop.call_at(
                    loop.time() + (self._started_wall - time.time()) + at, self._update_link, identity, changes
                )
                for at, identity, changes in self._schedule
            ]
            await self._progress(runner, duration, progress)
            for timer in timers:
                timer.cancel()
            await runner
        finally:
            self._running = False

    async def _progress(self, runner: asyncio.Future[None], duration: float, show: bool) -> None:
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=round(duration), desc=f"room {self.room}", unit="s", leave=True)
        try:
            while not runner.done():
                await asyncio.wait({runner}, timeout=0.5)
                if bar is not None and self._started_wall is not None:
                    elapsed = min(duration, max(0.0, time.time() - self._started_wall))
                    bar.n = round(elapsed)
                    joined = sum(1 for s in self.states.values() if s == "joined")
                    bar.set_postfix(bots=joined, refresh=False)
                    bar.refresh()
        finally:
            if bar is not None:
                bar.close()

    async def _run_here(self, duration: float) -> None:
        url = self.server.url
        loop = asyncio.get_running_loop()
        started = loop.time() + (self._started_wall - time.time())  # type: ignore[operator]
        self._local_bots = {spec.identity: Bot(spec, url, self.room) for spec in self._specs}
        if self._stop_requested:  # stopped while starting
            for bot in self._local_bots.values():
                bot.stop()
        runs = [asyncio.ensure_future(bot.run(started, duration)) for bot in self._local_bots.values()]
        cursors: dict[tuple[str, str], int] = {}
        joined = [0]

        def collect() -> None:
            joined[0] = settle(list(self._local_bots.values()), joined[0])
            for bot in self._local_bots.values():
                self._set_state(bot.identity, bot.state, bot.error)
                if bot.room is None:
                    continue
                for name, table in bot.room.telemetry.tables.items():
                    columns, cursors[(bot.identity, name)] = table.rows_since(cursors.get((bot.identity, name), 0))
                    if columns:
                        self._append(name, columns)

        while not all(run.done() for run in runs):
            await asyncio.wait(runs, timeout=0.5)
            collect()
        collect()
        self.lateness = {bot.identity: bot.lateness for bot in self._local_bots.values()}

    async def _run_workers(self, duration: float) -> None:
        shares: list[list[BotSpec]] = [[] for _ in range(min(self.workers, len(self._specs)))]
        for spec, share in zip(self._specs, itertools.cycle(shares), strict=False):
            share.append(spec)
        self._workers = []
        key = secrets.token_bytes(16)
        loop = asyncio.get_running_loop()
        for share in shares:
            with Listener(family="AF_UNIX", authkey=key) as listener:
                process = subprocess.Popen(
                    [sys.executable, "-m", "roomlab.sim.worker", listener.address, key.hex()], stdin=subprocess.DEVNULL
                )
                parent = await asyncio.wait_for(loop.run_in_executor(None, listener.accept), WORKER_START_TIMEOUT)
            worker = _Worker(process, parent, [s.identity for s in share])
            self._workers.append(worker)
            for spec in share:
                self._worker_of[spec.identity] = worker
            parent.send(
                {
                    "url": self.server.url,
                    "room": self.room,
                    "bots": share,
                    "duration": duration,
                    "started_at": self._started_wall,
                }
            )
            if self._stop_requested:  # stopped while the workers were starting
                parent.send({"cmd": "stop"})
        readers = [loop.run_in_executor(None, self._read_worker, worker) for worker in self._workers]
        deadline = self._started_wall + duration + GRACE  # type: ignore[operator]
        try:
            await asyncio.wait_for(asyncio.gather(*readers), max(1.0, deadline - time.time()))
        except TimeoutError:
            log.warning("simulation %s: workers still running %.0f s after the end; stopping them", self.room, GRACE)
        finally:
            for worker in self._workers:
                if worker.process.poll() is None:
                    worker.process.terminate()
                try:
                    worker.process.wait(5)
                except subprocess.TimeoutExpired:
                    worker.process.kill()
                    worker.process.wait()
                worker.conn.close()

    def _read_worker(self, worker: _Worker) -> None:
        """Runs in a thread per worker until the worker is done or gone."""
        while True:
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                break
            kind = message.get("type")
            if kind == "telemetry":
                self._append(message["table"], message["columns"])
            elif kind == "bot":
                self._set_state(message["identity"], message["state"], message.get("error"))
            elif kind == "done":
                self.lateness.update(message["lateness"])
                worker.done = True
                break
        worker.alive = False
        if not worker.done:
            try:
                code = worker.process.wait(2)
            except subprocess.TimeoutExpired:
                code = None
            for identity in worker.identities:
                if self.states.get(identity) not in ("left", "failed"):
                    self._set_state(identity, "lost", f"worker process exited (exit code {code})")
                    self._remove(identity)

    def _remove(self, identity: str) -> None:
        """A lost bot will not resume its session: the server need not keep it reconnecting."""
        from ..errors import RoomError
        from ..server.rooms import SIGNALING_BROKE

        try:
            self.server.call(self.server.rooms.disconnect, self.room, identity, code=SIGNALING_BROKE)
        except (RoomError, RuntimeError):  # never joined, already gone, or the server has stopped
            pass

    # what happens ---------------------------------------------------------------------------
    def _append(self, table: str, columns: dict[str, list[Any]]) -> None:
        target = self.telemetry.tables[table]
        data = [columns[c.name] for c in target.columns]
        for row in zip(*data, strict=True):
            target.append(*row)

    def _set_state(self, identity: str, state: str, error: str | None = None) -> None:
        with self._lock:
            if self.states.get(identity) == state:
                return
            self.states[identity] = state
        event = {"joined": "bot-joined", "left": "bot-left", "failed": "bot-failed", "lost": "bot-lost"}.get(state)
        detail = error
        if state == "joined":  # the link it joined with, so that a run's tables say what each link was
            detail = link_detail(self._links[identity].parameters())
        if event is not None:
            self.telemetry.record("events", now_ns(), self.room, None, event, None, identity, None, None, detail)
        profile = self._spec(identity).bandwidth_profile
        if state == "joined" and profile is not None:  # the profile it joined with, as its later changes are
            self._record_profile(identity, profile)

    def _record_profile(self, identity: str, options: dict[str, Any]) -> None:
        detail = json.dumps(options, sort_keys=True)
        self.telemetry.record("events", now_ns(), self.room, None, PROFILE_EVENT, None, identity, None, None, detail)

    def _change_link(self, identity: str, changes: dict[str, Any]) -> None:
        detail = link_detail(changes)
        self.telemetry.record("events", now_ns(), self.room, None, "link-changed", None, identity, None, None, detail)
        bot = self._local_bots.get(identity)
        if bot is not None:
            bot.change_link(changes)
            return
        worker = self._worker_of.get(identity)
        if worker is not None and worker.alive:
            try:
                worker.conn.send({"cmd": "link", "identity": identity, "changes": changes})
            except (OSError, ValueError):
                pass

    def stop(self) -> None:
        """End the run now: bots leave, their telemetry comes in, `run()` returns."""
        if self._running and self.stopped_at is None and self._started_wall is not None:
            self.stopped_at = max(0.0, time.time() - self._started_wall)
        self._stop_requested = True
        for bot in self._local_bots.values():
            bot.stop()
        for worker in self._workers:
            if worker.alive:
                try:
                    worker.conn.send({"cmd": "stop"})
                except (OSError, ValueError):
                    pass

    # frames ---------------------------------------------------------------------------------
    def frame(self, name: str) -> pd.DataFrame:
        """A table of the run: what the bots recorded, with the server's rows for this room."""
        own = self.telemetry.frame(name)
        server = getattr(self.server, "telemetry", None)
        if server is None or name == "messages":
            return own
        theirs = server.frame(name)
        if "room" in theirs.columns:
            theirs = theirs[theirs["room"] == self.room]
        elif "participant" in theirs.columns:
            theirs = theirs[theirs["participant"].isin(self.identities)]
        return concat_frames([theirs, own], name)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {name: self.frame(name) for name in self.telemetry.tables}

    def __repr__(self) -> str:
        return f"<roomlab.Simulation room={self.room!r} bots={len(self._specs)} workers={self.workers}>"
