"""What a view looks at: a *source* of telemetry frames, live or saved, and the loop its room runs on.

A view never holds a room's state: it asks its source for tables (`frame(name)`), redraws when
their row counts change (`versions(names)`), stops once the source is `finished()`, and hands the
commands of its controls to the room with `submit(fn, ...)`, which runs `fn` on the room's own
event loop whatever thread the control's callback runs on (JupyterLab >= 4.4 runs widget
callbacks on subshell threads).

    source_of(server)              # a Server: every room it serves (or room="name")
    source_of(simulation)          # a Simulation: its room, the bots' tables with the server's
    source_of(room)                # a connected client Room: what this client sees
    source_of(roomlab.load(path))  # a saved run (static), or a dict of frames
    source_of(roomlab.watch(...))  # a server in another process, live
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from ..net.link import Link
from ..policy.allocation import BandwidthProfile, check_priority
from ..telemetry.links import link_detail
from ..telemetry.recorder import Telemetry, empty_frame, now_ns
from ..telemetry.schema import TABLES

#: Tables keyed by a participant's identity instead of a room (filtered by the room's identities).
IDENTITY_COLUMNS = {
    "rtc_stats": "participant",
    "data_channel_stats": "participant",
    "network_quality": "participant",
    "allocations": "subscriber",
}


class Source(ABC):
    """Frames for a view. Subclasses say where they come from and whether they still change."""

    #: whether the frames may still change (a saved run does not)
    live = False
    #: what the view's status line calls it
    label = "run"

    def __init__(self, room: str | None = None) -> None:
        self.room = room
        try:
            #: where commands run when the room lives on the caller's loop (a notebook's kernel loop)
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None

    @abstractmethod
    def _frame(self, name: str) -> pd.DataFrame:
        """The whole table `name` as this source has it."""

    @abstractmethod
    def _rows(self, name: str) -> int:
        """How many rows table `name` has (cheap: views poll it to know when to redraw)."""

    def frame(self, name: str) -> pd.DataFrame:
        """The table `name`, limited to this source's room when it has one."""
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}; tables: {', '.join(TABLES)}")
        frame = self._frame(name)
        if self.room is None or frame.empty:
            return frame
        if "room" in frame.columns:
            return frame[frame["room"] == self.room].reset_index(drop=True)
        column = IDENTITY_COLUMNS.get(name)
        if column is not None and column in frame.columns:
            events = self._frame("events")
            identities = events.loc[events["room"] == self.room, "identity"].dropna().unique()
            return frame[frame[column].isin(identities)].reset_index(drop=True)
        return frame

    def versions(self, names: Sequence[str]) -> tuple[int, ...]:
        """Row counts of the tables `names`: a view redraws only when one of them changed."""
        return tuple(self._rows(name) for name in names)

    def finished(self) -> bool:
        """True once nothing will change any more (the server stopped, the run ended, the client left)."""
        return not self.live

    # commands -------------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run `fn(*args, **kwargs)` on the room's event loop, soon; safe from any thread."""
        loop = self._command_loop()
        if loop is None or loop.is_closed():
            raise RuntimeError(f"this {self.label} takes no commands: it is not running")

        def run() -> None:
            fn(*args, **kwargs)

        if _running_in(loop):
            run()
        else:
            loop.call_soon_threadsafe(run)

    def _command_loop(self) -> asyncio.AbstractEventLoop | None:
        return self.loop

    def links(self) -> list[str]:
        """Identities whose emulated link this source can change (`change_link`)."""
        return []

    def change_link(self, identity: str, **changes: Any) -> None:
        """Change `identity`'s emulated link (the same parameters as `roomlab.Link.update`)."""
        raise ValueError(f"this {self.label} has no link to change for {identity!r}")

    def profiles(self) -> list[str]:
        """Identities whose Bandwidth Profile and track priorities this source can change."""
        return []

    def set_bandwidth_profile(self, identity: str, bandwidth_profile: Any) -> None:
        """Set `identity`'s Bandwidth Profile (Twilio's options in snake case; they replace its current ones)."""
        raise ValueError(f"this {self.label} cannot change the bandwidth profile of {identity!r}")

    def set_track_priority(self, identity: str, track: str, priority: str | None) -> None:
        """Set `identity`'s own priority for the video track `track` (a SID) it receives (None: the publisher's)."""
        raise ValueError(f"this {self.label} cannot change the track priorities of {identity!r}")


def _running_in(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class TelemetrySource(Source):
    """Tables recorded in this process (a `Telemetry`), live while `alive()` says so."""

    label = "telemetry"

    def __init__(self, telemetry: Telemetry, alive: Callable[[], bool], room: str | None = None) -> None:
        super().__init__(room)
        self.telemetry = telemetry
        self._alive = alive
        self.live = alive()

    def _frame(self, name: str) -> pd.DataFrame:
        return self.telemetry.frame(name)

    def _rows(self, name: str) -> int:
        return len(self.telemetry.tables[name])

    def finished(self) -> bool:
        return not self._alive()


class ServerSource(TelemetrySource):
    """A `roomlab.Server` in this process: what it sees in every room (or in `room`)."""

    label = "server"

    def __init__(self, server: Any, room: str | None = None) -> None:
        super().__init__(server.telemetry, lambda: not server._stopped.is_set() and server._loop is not None, room)
        self.server = server

    def _command_loop(self) -> asyncio.AbstractEventLoop | None:
        return self.server._loop  # the server's thread, where its rooms live


class SimulationSource(Source):
    """A `roomlab.Simulation`: its room, what its bots record with the server's rows for that room.

    Live until its run ends (or its server stops); a view made before `run()` waits for it. Link
    changes go to `sim.link(identity).update(...)` on the loop the simulation runs on."""

    live = True
    label = "simulation"

    def __init__(self, simulation: Any) -> None:
        super().__init__(None)
        self.simulation = simulation
        self.label = f"simulation of room {simulation.room!r}"

    def _frame(self, name: str) -> pd.DataFrame:
        return self.simulation.frame(name)

    def _rows(self, name: str) -> int:
        rows = len(self.simulation.telemetry.tables[name])
        server = getattr(self.simulation.server, "telemetry", None)
        return rows + (len(server.tables[name]) if server is not None else 0)

    def finished(self) -> bool:
        server = self.simulation.server
        stopped = getattr(server, "_stopped", None)
        return self.simulation.status == "ended" or (stopped is not None and stopped.is_set())

    def links(self) -> list[str]:
        return list(self.simulation.identities)

    def change_link(self, identity: str, **changes: Any) -> None:
        control = self.simulation.link(identity)  # a bad identity or change fails here, in the caller's thread
        Link(**control.parameters()).update(**changes)
        self.submit(control.update, **changes)

    def profiles(self) -> list[str]:
        return list(self.simulation.identities)

    def set_bandwidth_profile(self, identity: str, bandwidth_profile: Any) -> None:
        self._check_bot(identity)
        BandwidthProfile.from_options(bandwidth_profile)  # a bad value fails here, in the caller's thread
        self._check_running(identity)
        self.submit(self.simulation.set_bandwidth_profile, identity, bandwidth_profile)

    def set_track_priority(self, identity: str, track: str, priority: str | None) -> None:
        self._check_bot(identity)
        if priority is not None:
            check_priority(priority)
        self._check_running(identity)
        self.submit(self.simulation.set_track_priority, identity, track, priority)

    def _check_bot(self, identity: str) -> None:
        if identity not in self.simulation.identities:
            raise ValueError(f"no bot named {identity!r} in this simulation; bots: {', '.join(self.profiles())}")

    def _check_running(self, identity: str) -> None:
        if self.simulation.status != "running":
            raise RuntimeError(
                f"the simulation is {self.simulation.status}, not running: bot {identity!r} is not in the room"
            )


class RoomSource(Source):
    """A connected client `Room`: the tables it records (what this client receives), and an
    `events` table of what it sees happen in the room, recorded here from the room's events."""

    live = True

    def __init__(self, room: Any) -> None:
        super().__init__(None)
        self.client = room
        self.label = f"room {room.name!r} as {room.local_participant.identity if room.local_participant else '?'}"
        self.events = Telemetry().tables["events"]
        self._observe()

    def _record(self, event: str, participant: Any = None, publication: Any = None, detail: str | None = None) -> None:
        track = publication.track_sid if publication is not None else None
        if publication is not None and detail is None:
            detail = json.dumps({"kind": publication.kind, "name": publication.track_name})
        self.events.append(
            now_ns(),
            self.client.name,
            self.client.sid,
            event,
            participant.sid if participant is not None else None,
            participant.identity if participant is not None else None,
            track,
            None,
            detail,
        )

    def _observe(self) -> None:
        room = self.client
        local = room.local_participant
        if local is not None:
            self._record("participant-connected", local, detail="this client")
            for publication in list(local.tracks.values()):
                self._record("track-added", local, publication)
        for participant in list(room.participants.values()):
            self._record("participant-connected", participant)
            for publication in list(participant.tracks.values()):
                self._record("track-added", participant, publication)
                if publication.is_subscribed:
                    self._record("track-subscribed", local, publication)

        if room.link is not None:  # the client's link as the view began (it changes only through change_link)
            self._record("link-changed", local, detail=link_detail(room.link.parameters()))
        room.on("participant_connected", lambda p: self._record("participant-connected", p))
        room.on("participant_disconnected", lambda p: self._record("participant-disconnected", p))
        room.on("track_published", lambda pub, p: self._record("track-added", p, pub))
        room.on("track_unpublished", lambda pub, p: self._record("track-removed", p, pub))
        room.on("track_subscribed", lambda track, pub, p: self._record("track-subscribed", local, pub))
        room.on("track_unsubscribed", lambda track, pub, p: self._record("track-unsubscribed", local, pub))
        room.on("disconnected", lambda r, error: self._record("participant-disconnected", local))

    def _frame(self, name: str) -> pd.DataFrame:
        if name == "events":
            return self.events.frame()
        return self.client.frame(name)

    def _rows(self, name: str) -> int:
        if name == "events":
            return len(self.events)
        return len(self.client.telemetry.tables[name])

    def finished(self) -> bool:
        return self.client.state == "disconnected"

    def links(self) -> list[str]:
        local = self.client.local_participant
        return [local.identity] if local is not None and self.client.link is not None else []

    def change_link(self, identity: str, **changes: Any) -> None:
        if identity not in self.links():
            raise ValueError(f"this client has no link to change for {identity!r}; it has {self.links() or 'none'}")
        Link(**self.client.link.parameters()).update(**changes)  # a bad change fails here, in the caller's thread

        def change() -> None:
            self.client.link.update(**changes)
            self._record("link-changed", self.client.local_participant, detail=link_detail(changes))

        self.submit(change)


class FramesSource(Source):
    """Frames that do not change: a saved run (`roomlab.load`) or a dict of DataFrames."""

    label = "saved run"

    def __init__(self, frames: Mapping[str, pd.DataFrame], room: str | None = None) -> None:
        super().__init__(room)
        self._frames = dict(frames)

    def _frame(self, name: str) -> pd.DataFrame:
        frame = self._frames.get(name)
        return empty_frame(name) if frame is None else frame

    def _rows(self, name: str) -> int:
        frame = self._frames.get(name)
        return 0 if frame is None else len(frame)


class WatchSource(TelemetrySource):
    """A `roomlab.watch()` of a server in another process: live while it follows the server."""

    label = "watched server"

    def __init__(self, watch: Any, room: str | None = None) -> None:
        super().__init__(watch.telemetry, lambda: watch.running, room)


def source_of(obj: Any, room: str | None = None) -> Source:
    """The source for `obj`: a Server, Simulation, connected Room, Run, Watch, dict of frames, or a Source."""
    from ..client.room import Room
    from ..server.server import Server
    from ..sim.simulation import Simulation
    from ..telemetry.persist import Run
    from ..telemetry.watch import Watch

    if isinstance(obj, Source):
        return obj
    if isinstance(obj, Server):
        return ServerSource(obj, room)
    if isinstance(obj, Simulation):
        if room is not None and room != obj.room:
            raise ValueError(f"this simulation's room is {obj.room!r}, not {room!r}")
        return SimulationSource(obj)
    if isinstance(obj, Room):
        if obj.local_participant is None:
            raise ValueError("the room is not connected yet: await roomlab.connect(...) first")
        return RoomSource(obj)
    if isinstance(obj, Watch):
        return WatchSource(obj, room)
    if isinstance(obj, Run):
        return FramesSource(obj.frames(), room)
    if isinstance(obj, Mapping):
        return FramesSource(obj, room)
    raise TypeError(
        "a view's source is a Server, Simulation, connected Room, Run (roomlab.load), Watch or a dict of "
        f"DataFrames, got {type(obj).__name__}"
    )
