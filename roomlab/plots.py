"""Static matplotlib views of a run's frames, for reports and exported notebooks.

Each function draws on an `ax` (a new figure when none is given) and returns it; `report()` puts
the views of a simulation run on one page and saves it as a PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from .telemetry.analysis import loss as loss_table


def _axes(ax: Any) -> Any:
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    return ax


def _elapsed(times: pd.Series, start: pd.Timestamp) -> pd.Series:
    return (times - start).dt.total_seconds()


def _start(frames: dict[str, pd.DataFrame]) -> pd.Timestamp | None:
    starts = [f["time"].min() for f in frames.values() if "time" in f.columns and len(f)]
    return min(starts) if starts else None


def mark_link_changes(ax: Any, events: pd.DataFrame, start: pd.Timestamp) -> None:
    """Vertical lines where a link changed, labelled with whose."""
    if events.empty:
        return
    changes = events[events["event"] == "link-changed"]
    for _, change in changes.iterrows():
        x = (change["time"] - start).total_seconds()
        ax.axvline(x, color="crimson", linestyle="--", linewidth=1)
        ax.annotate(
            str(change["identity"]),
            (x, 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
            color="crimson",
        )


def latency(messages: pd.DataFrame, start: pd.Timestamp | None = None, ax: Any = None, window: str = "1s") -> Any:
    """Data-message latency over time: the median per subscriber in each `window`."""
    ax = _axes(ax)
    if messages.empty:
        ax.set_title("data latency (no messages)")
        return ax
    start = messages["time"].min() if start is None else start
    for subscriber, group in messages.groupby("subscriber", observed=True):
        series = group.set_index("time")["latency_ms"].resample(window).median().dropna()
        ax.plot(_elapsed(series.index.to_series(), start), series.to_numpy(), label=str(subscriber), linewidth=1)
    ax.set_xlabel("seconds")
    ax.set_ylabel("latency p50 (ms)")
    ax.set_title("data-track latency per subscriber")
    if messages["subscriber"].nunique() <= 12:
        ax.legend(fontsize=7, ncol=2)
    return ax


def loss(messages: pd.DataFrame, ax: Any = None) -> Any:
    """Data-message loss per subscriber and track (from the publishers' sequence numbers)."""
    ax = _axes(ax)
    if messages.empty:
        ax.set_title("data loss (no messages)")
        return ax
    per_publisher = loss_table(messages)  # sequence numbers count per publisher
    totals = per_publisher.groupby(["subscriber", "track"], observed=True)[["lost", "sent"]].sum()
    rates = (totals["lost"] / totals["sent"] * 100).rename("lost_pct").reset_index()
    pivot = rates.pivot_table(index="subscriber", columns="track", values="lost_pct", observed=True)
    pivot.plot.bar(ax=ax, width=0.8)
    ax.set_ylabel("lost (%)")
    ax.set_xlabel("")
    ax.set_title("data loss per subscriber and track")
    ax.legend(fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    return ax


def bitrate(
    rtc_stats: pd.DataFrame,
    start: pd.Timestamp | None = None,
    ax: Any = None,
    direction: str = "outbound",
    source: str = "server",
) -> Any:
    """Bitrate per media stream over time (by default what each publisher sends, seen by the server)."""
    ax = _axes(ax)
    streams = rtc_stats[(rtc_stats["direction"] == direction) & (rtc_stats["source"] == source)]
    if streams.empty:
        ax.set_title("bitrate (no media)")
        return ax
    start = streams["time"].min() if start is None else start
    for (participant, kind), group in streams.groupby(["participant", "kind"], observed=True):
        ax.plot(_elapsed(group["time"], start), group["bitrate_bps"] / 1000, label=f"{participant} {kind}", linewidth=1)
    ax.set_xlabel("seconds")
    ax.set_ylabel("kbit/s")
    ax.set_title(f"{direction} bitrate per stream ({source})")
    if streams["participant"].nunique() <= 8:
        ax.legend(fontsize=7, ncol=2)
    return ax


def media_loss(rtc_stats: pd.DataFrame, start: pd.Timestamp | None = None, ax: Any = None) -> Any:
    """Fraction of media packets lost per received stream over time (as the receivers report)."""
    ax = _axes(ax)
    streams = rtc_stats[(rtc_stats["direction"] == "inbound") & (rtc_stats["source"] == "client")]
    if streams.empty:
        ax.set_title("media loss (no media)")
        return ax
    start = streams["time"].min() if start is None else start
    for participant, group in streams.groupby("participant", observed=True):
        per_second = group.set_index("time")["fraction_lost"].astype(float).resample("1s").mean().dropna()
        x = _elapsed(per_second.index.to_series(), start)
        ax.plot(x, per_second.to_numpy() * 100, label=str(participant), linewidth=1)
    ax.set_xlabel("seconds")
    ax.set_ylabel("lost (%)")
    ax.set_title("media loss per receiver")
    if streams["participant"].nunique() <= 12:
        ax.legend(fontsize=7, ncol=2)
    return ax


def report(frames: dict[str, pd.DataFrame], path: str | Path, title: str = "roomlab run") -> Path:
    """One page: data latency and loss per subscriber, bitrate and loss per stream, link changes
    marked; saved as a PNG at `path`."""
    start = _start(frames)
    figure, axes = plt.subplots(2, 2, figsize=(14, 8.5))
    messages = frames.get("messages", pd.DataFrame())
    rtc = frames.get("rtc_stats", pd.DataFrame())
    events = frames.get("events", pd.DataFrame())
    latency(messages, start, axes[0][0])
    loss(messages, axes[0][1])
    bitrate(rtc, start, axes[1][0])
    media_loss(rtc, start, axes[1][1])
    if start is not None:
        for ax in (axes[0][0], axes[1][0], axes[1][1]):
            mark_link_changes(ax, events, start)
    figure.suptitle(title)
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target
