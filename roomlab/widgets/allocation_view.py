"""`AllocationView`: how the server divides one subscriber's downlink among the video tracks it
receives (SPEC §11), live, from the `allocations` table (a row per track at every decision of the
allocator, with its reason): the allocations stacked under the video budget and the downlink
estimate, a lane per track with its layer and switch-offs with their reasons (the static figure
`plots.allocations`, so a report shows the same picture). For a simulated subscriber, controls
change its mode, `max_subscription_bitrate`, its own priority for each track and its link."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from .. import plots
from ..telemetry import allocations as allocation_frames
from ..telemetry.links import links
from .controls import AllocationControls, LinkControls
from .drawing import empty
from .source import RoomSource
from .view import View

#: Height of the figure without lanes, inches, and per lane (track).
FIGURE_HEIGHT = 4.2
LANE_HEIGHT = 0.32


@dataclass
class AllocationModel:
    subscriber: str
    rows: pd.DataFrame
    """The subscriber's decisions (`telemetry.allocations.decisions`)."""
    events: pd.DataFrame
    """The subscriber's link changes (for the marks)."""
    colours: dict[str, Any]
    subscribers: list[str] = field(default_factory=list)
    """Every subscriber with allocations (to say whom else one may look at)."""
    profile: dict[str, Any] | None = None
    """The subscriber's Bandwidth Profile as last recorded in `events` (None: not recorded)."""

    @property
    def latest(self) -> pd.DataFrame:
        """The last decision: a row per track."""
        if self.rows.empty:
            return self.rows
        return self.rows[self.rows["time"] == self.rows["time"].max()]


def _kbps(value: Any) -> str:
    return "" if pd.isna(value) else f"{value / 1000:.0f}"


class AllocationView(View):
    """The video allocated to `subscriber` per track over time, stacked under its video budget and
    downlink estimate, each track's layer and switch-offs with their reasons; with controls that
    change the running room (a simulation): the subscriber's mode, `max_subscription_bitrate`, its
    priority for each track it receives, and its link."""

    css_class: ClassVar[str] = "roomlab-allocation-view"
    title: ClassVar[str] = "bandwidth allocation"
    tables: ClassVar[tuple[str, ...]] = ("allocations", "events")

    def __init__(self, source: Any, subscriber: str, *, room: str | None = None, period: float = 1.0) -> None:
        if not isinstance(subscriber, str) or not subscriber:
            raise ValueError(f"subscriber must be the identity of a participant, got {subscriber!r}")
        self.subscriber = subscriber
        super().__init__(source, room=room, period=period)
        if not self.source.live:
            known = allocation_frames.subscribers(self.source.frame("allocations"))
            if subscriber not in known:
                raise ValueError(f"no allocations for subscriber {subscriber!r} in this run; subscribers: {known}")

    def _controls(self) -> list[Any]:
        controls: list[Any] = []
        if self.source.live and self.subscriber in self.source.profiles():
            self.allocation_controls = AllocationControls(self, self.subscriber)
            controls.append(self.allocation_controls)
        if self.source.live and self.subscriber in self.source.links():
            self.link_controls = LinkControls(self, [self.subscriber])
            controls.append(self.link_controls)
        return controls

    def _read(self) -> AllocationModel:
        table = self.source.frame("allocations")
        events = self.source.frame("events")
        subscribers = allocation_frames.subscribers(table)
        rows = (
            allocation_frames.decisions(table, self.subscriber) if self.subscriber in subscribers else table.iloc[0:0]
        )
        identities = set(subscribers) | set(table["publisher"].dropna().astype(str)) if len(table) else set()
        if len(events):
            identities |= set(events["identity"].dropna().astype(str))
        changes = links(events)
        changes = changes[(changes["event"] == "link-changed") & (changes["identity"] == self.subscriber)]
        return AllocationModel(
            self.subscriber,
            rows,
            changes,
            plots.participant_colours(sorted(identities)),
            subscribers,
            allocation_frames.profiles(events).get(self.subscriber),
        )

    def _draw(self, figure: Any, model: AllocationModel) -> None:
        tracks = model.rows["track"].nunique() if len(model.rows) else 0
        figure.set_size_inches(12, FIGURE_HEIGHT + LANE_HEIGHT * tracks)
        ax = figure.add_axes((0.16, 0.11, 0.6, 0.8))
        if model.rows.empty:
            empty(ax, self._waiting(model))
            return
        plots.allocations(model.rows, model.subscriber, ax=ax, colours=model.colours, events=model.events)
        ax.title.set_fontsize(9)
        ax.tick_params(labelsize=7)
        ax.xaxis.label.set_fontsize(8)
        ax.yaxis.label.set_fontsize(8)

    def _waiting(self, model: AllocationModel) -> str:
        others = f" (subscribers so far: {', '.join(model.subscribers)})" if model.subscribers else ""
        if isinstance(self.source, RoomSource):
            return "a client records no allocations: view its Server or Simulation"
        return f"no allocations for {model.subscriber} yet{others}"

    def _describe(self, model: AllocationModel) -> tuple[str, str]:
        latest = model.latest
        if latest.empty:
            return self._waiting(model), ""
        first = latest.iloc[0]
        on = latest[~latest["switched_off"].fillna(False).astype(bool)]
        states = []
        latest = allocation_frames.latest_per_track(latest)
        for row in latest.itertuples(index=False):
            states.append(f"{row.publisher} {'off (' + str(row.reason) + ')' if row.switched_off else row.layer}")
        summary = (
            f"{model.subscriber} in {first['mode']} mode: {', '.join(states)}; "
            f"{on['allocated_bps'].sum() / 1000:.0f} of {first['available_bps'] / 1000:.0f} kbit/s allocated"
        )
        if bool(first["probing"]) and not pd.isna(first["probe_goal_bps"]):
            summary += f" (probing up to {first['probe_goal_bps'] / 1000:.0f})"
        periods = allocation_frames.periods(model.rows, model.subscriber)
        off_seconds = periods[periods["switched_off"]].groupby("track")["seconds"].sum()
        total_seconds = periods.groupby("track")["seconds"].sum()
        head = (
            "<tr><th>track</th><th>priority</th><th>layer</th><th>desired</th><th>reason</th>"
            "<th>allocated kbit/s</th><th>off % of the time</th></tr>"
        )
        body = []
        for row in latest.itertuples(index=False):
            off_pct = 100 * off_seconds.get(row.track, 0.0) / max(total_seconds.get(row.track, 0.0), 1e-9)
            cells = [
                allocation_frames.label(row.publisher, row.track_name),
                str(row.priority),
                "off" if row.switched_off else str(row.layer),
                "" if row.desired_layer is None or pd.isna(row.desired_layer) else str(row.desired_layer),
                str(row.reason),
                _kbps(row.allocated_bps),
                f"{off_pct:.0f}",
            ]
            body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        budget = (
            f"<p>budget {_kbps(first['available_bps'])} kbit/s (downlink estimate {_kbps(first['estimate_bps'])}"
            f" kbit/s{', limited by ' + str(first['limited_by']) if isinstance(first['limited_by'], str) else ''})"
            f", wanted {_kbps(first['wanted_bps'])} kbit/s</p>"
        )
        return summary, f'<table class="roomlab-table">{head}{"".join(body)}</table>{budget}'

    def _shown(self, model: AllocationModel) -> None:
        controls = getattr(self, "allocation_controls", None)
        if controls is not None and model is not None:
            latest = model.latest
            tracks = [
                (str(row.track), allocation_frames.label(row.publisher, row.track_name), str(row.priority))
                for row in allocation_frames.latest_per_track(latest).itertuples(index=False)
            ]
            mode = str(latest["mode"].iloc[0]) if len(latest) else None
            controls.fill(mode, model.profile, tracks)
        link = getattr(self, "link_controls", None)
        if link is not None and link._shown is None:
            link.fill()  # the subscriber's link, once it has joined
