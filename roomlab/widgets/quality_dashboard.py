"""`QualityDashboard`: network quality levels per participant over time, with the reason of every
drop, and the inputs that explain them: loss per direction, round-trip time and jitter, and the
downlink video budget against what the subscribed video requires. From the `network_quality`
table (one row per participant each second, computed by the server); the panels are the static
figures of `roomlab.plots` (`quality`, `quality_inputs`), so a report shows the same pictures."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from .. import plots
from ..telemetry.links import links
from .drawing import empty, mark_link_changes
from .view import View

#: The input panels, in order (`plots.quality_inputs(what=...)`).
INPUTS = ("loss", "latency", "bandwidth")


@dataclass
class QualityModel:
    levels: pd.DataFrame
    start: pd.Timestamp | None
    link_changes: pd.DataFrame


def _percent(value: Any) -> str:
    return "" if pd.isna(value) else f"{value * 100:.1f}"


def _number(value: Any, digits: int = 0) -> str:
    return "" if pd.isna(value) else f"{value:.{digits}f}"


class QualityDashboard(View):
    """Network quality levels (0-5) per participant over time with their reasons, and per
    participant the loss in each direction, round-trip time and jitter, and the downlink video
    bandwidth available against required; link changes marked. For a simulation, controls change
    a participant's link while it runs."""

    css_class: ClassVar[str] = "roomlab-quality-dashboard"
    title: ClassVar[str] = "network quality"
    tables: ClassVar[tuple[str, ...]] = ("network_quality", "events")

    def _controls(self) -> list[Any]:
        return self._link_controls()

    def _read(self) -> QualityModel:
        levels = self.source.frame("network_quality")
        events = self.source.frame("events")
        changes = links(events).query("event == 'link-changed'")
        starts = [f["time"].min() for f in (levels, events) if not f.empty]
        return QualityModel(levels, min(starts) if starts else None, changes)

    def _draw(self, figure: Any, model: QualityModel) -> None:
        figure.set_size_inches(12, 7.6)
        grid = figure.add_gridspec(2, 2, left=0.09, right=0.86, top=0.95, bottom=0.07, hspace=0.35, wspace=0.22)
        level_ax = figure.add_subplot(grid[0, 0])
        input_axes = [figure.add_subplot(grid[0, 1]), figure.add_subplot(grid[1, 0]), figure.add_subplot(grid[1, 1])]
        if model.levels.empty or model.start is None:
            empty(level_ax, "no network quality levels yet")
            for ax in input_axes:
                ax.axis("off")
            return
        names = model.levels["participant"].astype(str).unique()
        colours = plots.participant_colours(names)
        plots.quality(model.levels, model.start, level_ax, colours)
        for what, ax in zip(INPUTS, input_axes, strict=True):
            plots.quality_inputs(model.levels, what, model.start, ax, colours)
        for ax in (level_ax, *input_axes):
            ax.title.set_fontsize(9)
            ax.tick_params(labelsize=7)
            ax.xaxis.label.set_fontsize(8)
            ax.yaxis.label.set_fontsize(8)
            if ax.has_data():
                mark_link_changes(ax, model.link_changes, model.start, label=ax is level_ax)
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=colours[name], linewidth=2, label=name) for name in sorted(colours)]
        figure.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.87, 0.95), fontsize=8, frameon=False)

    def _describe(self, model: QualityModel) -> tuple[str, str]:
        levels = model.levels
        if levels.empty:
            return "no network quality levels yet", ""
        latest = levels.sort_values("time").groupby("participant", observed=True).tail(1)
        lowest = levels.groupby("participant", observed=True)["level"].min()
        summary = ", ".join(f"{row.participant} {row.level}" for row in latest.itertuples(index=False))
        head = (
            "<tr><th>participant</th><th>level</th><th>lowest</th><th>reason</th><th>MOS</th>"
            "<th>send lost %</th><th>recv lost %</th><th>RTT ms</th><th>jitter ms</th>"
            "<th>recv video available kbit/s</th><th>required kbit/s</th></tr>"
        )
        rows = []
        for row in latest.sort_values("participant").itertuples(index=False):
            cells = [
                str(row.participant),
                _number(row.level),
                _number(lowest.get(row.participant)),
                "" if pd.isna(row.reason) else str(row.reason),
                _number(row.mos, 2),
                _percent(row.send_fraction_lost),
                _percent(row.recv_fraction_lost),
                _number(row.rtt_ms),
                _number(row.jitter_ms, 1),
                _number(row.recv_available_bps / 1000),
                _number(row.recv_required_bps / 1000),
            ]
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        return f"levels now: {summary}", f'<table class="roomlab-table">{head}{"".join(rows)}</table>'
