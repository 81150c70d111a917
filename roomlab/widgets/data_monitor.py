"""`DataMonitor`: per data track, the messages delivered each second, one-way latency
percentiles and loss, with link changes marked; from the `messages` table (what subscribers
received: the publisher's sequence number and send time ride along with every message)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, ClassVar

import ipywidgets as widgets
import pandas as pd
from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

from ..telemetry.analysis import loss as loss_table
from ..telemetry.links import links
from .drawing import empty, mark_link_changes, participant_colours, seconds
from .view import View

#: How the monitor groups messages: per data track (its publisher and name) or per subscriber.
GROUPINGS = {"track": ("publisher", "track"), "subscriber": ("subscriber",)}
#: Seconds over which the table's current message rate is averaged.
RATE_WINDOW_S = 5.0
TRACK_STYLES = ("-", "--", ":", "-.")
#: The loss axis shows at least 0-5 % (no loss is a flat line at the bottom, not noise blown up).
LOSS_AXIS_MIN_PCT = 5.0
#: Latency axis ticks (log scale), in ms.
LATENCY_TICKS_MS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000, 2000, 5000, 10000)
LINK_KEYS = ("publisher", "subscriber", "track")


@dataclass
class DataModel:
    by: str
    per_second: pd.DataFrame
    """Per group and second: label, colour key, received, lost, rate, loss_pct, p50, p99."""
    summary: pd.DataFrame
    start: pd.Timestamp | None
    link_changes: pd.DataFrame


def lost_per_message(messages: pd.DataFrame) -> pd.Series:
    """Messages missing just before each arrival (a gap in its publisher's sequence numbers on that
    track to that subscriber), so that loss can be counted per interval."""
    ordered = messages.sort_values("time", kind="stable")
    keys = [ordered[k] for k in LINK_KEYS]
    seq = ordered["seq"].astype("float64")
    highest = seq.groupby(keys, observed=True, sort=False).cummax()
    before = highest.groupby(keys, observed=True, sort=False).shift()
    return (seq - before - 1).clip(lower=0).fillna(0).reindex(messages.index)


def data_model(messages: pd.DataFrame, events: pd.DataFrame, by: str = "track", freq: str = "1s") -> DataModel:
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    keys = list(GROUPINGS[by])
    link_rows = links(events)
    changes = link_rows[link_rows["event"] == "link-changed"]
    starts = [f["time"].min() for f in (messages, events) if not f.empty]
    start = min(starts) if starts else None
    if messages.empty:
        return DataModel(by, pd.DataFrame(), pd.DataFrame(), start, changes)
    frame = messages[["time", "publisher", "subscriber", "track", "latency_ms"]].copy()
    for key in LINK_KEYS:
        frame[key] = frame[key].astype(str)
    frame["lost"] = lost_per_message(messages)
    frame["label"] = _labels(frame, keys)
    frame["bin"] = frame["time"].dt.floor(freq)
    grouped = frame.groupby(["label", "bin"], sort=True)
    latency = grouped["latency_ms"]
    per_second = pd.DataFrame(
        {
            "received": grouped.size(),
            "lost": grouped["lost"].sum(),
            "subscribers": grouped["subscriber"].nunique(),
            "p50": latency.median(),
            "p99": latency.quantile(0.99),
            "colour": grouped["publisher" if by == "track" else "subscriber"].first(),
            "track": grouped["track"].first(),
        }
    ).reset_index()
    per_second["rate"] = per_second["received"] / (per_second["subscribers"] if by == "track" else 1)
    per_second["loss_pct"] = 100 * per_second["lost"] / (per_second["lost"] + per_second["received"])

    losses = loss_table(messages)
    for key in LINK_KEYS:
        losses[key] = losses[key].astype(str)
    losses["label"] = _labels(losses, keys)
    counts = losses.groupby("label")[["sent", "received", "lost"]].sum()
    lat = frame.groupby("label")["latency_ms"]
    summary = pd.DataFrame(
        {
            "p50_ms": lat.median(),
            "p90_ms": lat.quantile(0.9),
            "p99_ms": lat.quantile(0.99),
        }
    ).join(counts)
    summary["loss_pct"] = 100 * summary["lost"] / summary["sent"]
    recent = frame[frame["time"] > frame["time"].max() - pd.Timedelta(seconds=RATE_WINDOW_S)]
    per_subscriber = recent.groupby(["label", "subscriber"]).size().groupby("label").mean()
    summary["rate_per_s"] = (per_subscriber / RATE_WINDOW_S).reindex(summary.index).fillna(0.0)
    if by == "subscriber":
        summary["rate_per_s"] = (recent.groupby("label").size() / RATE_WINDOW_S).reindex(summary.index).fillna(0.0)
    return DataModel(by, per_second, summary.reset_index(), start, changes)


def latency_ticks(low: float, high: float, most: int = 6) -> list[float]:
    """Round latencies for a log axis from `low` to `high` ms: those inside, and one on each side."""
    if not (low > 0 and high >= low):
        return []
    inside = [t for t in LATENCY_TICKS_MS if low <= t <= high]
    below = [t for t in LATENCY_TICKS_MS if t < low][-1:]
    above = [t for t in LATENCY_TICKS_MS if t > high][:1]
    while len(inside) > most:
        inside = inside[::2]
    return [*below, *inside, *above] if len(inside) < 2 else inside


def _labels(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """ "publisher/track" (or the one key's value) per row."""
    label = frame[keys[0]].astype(str)
    for key in keys[1:]:
        label = label + "/" + frame[key].astype(str)
    return label


class DataMonitor(View):
    """Per data track (or per subscriber): messages delivered per second, latency p50 and p99,
    and loss over time, with a table of the totals; link changes marked.

    `DataMonitor(source, by="track")`; `by="subscriber"` groups what each subscriber receives."""

    css_class: ClassVar[str] = "roomlab-data-monitor"
    title: ClassVar[str] = "data tracks"
    tables: ClassVar[tuple[str, ...]] = ("messages", "events")

    def __init__(self, source: Any, *, by: str = "track", room: str | None = None, period: float = 1.0) -> None:
        if by not in GROUPINGS:
            raise ValueError(f"by must be one of {', '.join(GROUPINGS)}, got {by!r}")
        self.by = by
        super().__init__(source, room=room, period=period)

    def _controls(self) -> list[Any]:
        grouping = widgets.ToggleButtons(
            options=list(GROUPINGS), value=self.by, description="per", style={"description_width": "initial"}
        )
        grouping.style.button_width = "90px"
        grouping.add_class("roomlab-data-grouping")
        grouping.observe(self._regroup, "value")
        self.grouping = grouping
        return [grouping, *self._link_controls()]

    def _regroup(self, change: Any) -> None:
        self.by = change["new"]  # a view setting, read by the next update
        if self.live:
            self._poke(force=True)
        else:
            self._call_in_loop(self.refresh)

    def _read(self) -> DataModel:
        return data_model(self.source.frame("messages"), self.source.frame("events"), self.by)

    def _draw(self, figure: Any, model: DataModel) -> None:
        figure.set_size_inches(10, 6.2)
        axes = figure.subplots(3, 1, sharex=True)
        figure.subplots_adjust(left=0.08, right=0.78, top=0.95, bottom=0.08, hspace=0.18)
        rate_ax, latency_ax, loss_ax = axes
        rate_ax.set_title(f"data messages per {model.by}", fontsize=9, loc="left")
        if model.per_second.empty or model.start is None:
            empty(rate_ax, "no data messages yet")
            latency_ax.set_yticks([])
            loss_ax.set_yticks([])
            return
        data = model.per_second
        colours = participant_colours(data["colour"].unique())
        styles = {name: TRACK_STYLES[n % len(TRACK_STYLES)] for n, name in enumerate(sorted(data["track"].unique()))}
        for label, group in data.groupby("label", sort=True):
            x = seconds(group["bin"], model.start) + 0.5
            colour = colours.get(str(group["colour"].iloc[0]), "0.3")
            style = styles[group["track"].iloc[0]] if model.by == "track" else "-"
            rate_ax.plot(x, group["rate"], style, color=colour, linewidth=1.2, label=label)
            latency_ax.plot(x, group["p50"], style, color=colour, linewidth=1.2)
            latency_ax.plot(x, group["p99"], style, color=colour, linewidth=0.7, alpha=0.5)
            loss_ax.plot(x, group["loss_pct"], style, color=colour, linewidth=1.2)
        rate_ax.set_ylabel("delivered\n(msg/s per sub.)" if model.by == "track" else "received\n(msg/s)", fontsize=8)
        latency_ax.set_ylabel("latency (ms)\np50 bold, p99 pale", fontsize=8)
        latency_ax.set_yscale("log")
        ticks = latency_ticks(float(data["p50"].min()), float(data["p99"].max()))
        if ticks:
            latency_ax.set_ylim(
                min(ticks[0], float(data["p50"].min())) * 0.85, max(ticks[-1], float(data["p99"].max())) * 1.15
            )
            latency_ax.yaxis.set_major_locator(FixedLocator(ticks))
        latency_ax.yaxis.set_major_formatter(ScalarFormatter())
        latency_ax.yaxis.set_minor_formatter(NullFormatter())
        loss_ax.set_ylabel("lost (%)", fontsize=8)
        loss_ax.set_ylim(0, max(LOSS_AXIS_MIN_PCT, float(data["loss_pct"].max()) * 1.1))
        rate_ax.set_ylim(bottom=0)
        loss_ax.set_xlabel("seconds", fontsize=8)
        for ax in axes:
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.25)
            mark_link_changes(ax, model.link_changes, model.start, label=ax is rate_ax)
        rate_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)

    def _describe(self, model: DataModel) -> tuple[str, str]:
        summary = model.summary
        if summary.empty:
            return "no data messages yet", ""
        received = int(summary["received"].sum())
        lost = int(summary["lost"].sum())
        text = f"{len(summary)} {model.by}s, {received} messages received, {lost} lost"
        head = (
            f"<tr><th>{model.by}</th><th>msg/s now</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th>"
            "<th>sent</th><th>received</th><th>lost</th><th>lost %</th></tr>"
        )
        rows = []
        for row in summary.itertuples(index=False):
            cells = [
                html.escape(str(row.label)),
                f"{row.rate_per_s:.1f}",
                f"{row.p50_ms:.1f}",
                f"{row.p90_ms:.1f}",
                f"{row.p99_ms:.1f}",
                str(int(row.sent)),
                str(int(row.received)),
                str(int(row.lost)),
                f"{row.loss_pct:.2f}",
            ]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        return text, f'<table class="roomlab-table">{head}{"".join(rows)}</table>'
