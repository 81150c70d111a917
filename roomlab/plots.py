"""Static matplotlib views of a run's frames, for reports and exported notebooks.

Each view draws on an `ax` (a new figure when none is given) and returns it; the numbers come
from `roomlab.frames`, so what a view shows a user can compute. `report()` puts the views of a run
on one page and saves it as a PNG: its panels are the list `REPORT_PANELS`, each drawn when the
run has the tables it needs, so a new view is one more `Panel`.

Colours name participants, the same in every panel (`participant_colours`); line styles name
media kinds (audio solid, video dashed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .telemetry import allocations as allocation_frames
from .telemetry import analysis, streams

if TYPE_CHECKING:
    import pandas as pd

#: Line style per media kind, in every panel.
KIND_STYLES = {"audio": "-", "video": "--"}
#: Percent at which the end-to-end loss colour scale saturates (at least; more when seen).
LOSS_SCALE_PCT = 25.0
#: Intervals with fewer packets than this are drawn pale: their loss fraction says little.
FEW_PACKETS = 10
#: Interval of the per-interval views.
FREQ = "1s"


def participant_colours(identities: Sequence[str]) -> dict[str, Any]:
    """A colour per identity (sorted, so a run gets the same colours every time it is drawn)."""
    from matplotlib import colormaps

    names = sorted({str(i) for i in identities if isinstance(i, str)})
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: palette(number % palette.N) for number, name in enumerate(names)}


def _axes(ax: Any) -> Any:
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(7, 3.5))
    return ax


def _elapsed(times: Any, start: pd.Timestamp) -> Any:
    import pandas as pd

    return (pd.Series(times) - start).dt.total_seconds().to_numpy()


def _start(frames: Mapping[str, pd.DataFrame]) -> pd.Timestamp | None:
    starts = [f["time"].min() for f in frames.values() if "time" in f.columns and len(f)]
    return min(starts) if starts else None


def _steps(x: Any, y: Any, freq: str) -> tuple[Any, Any]:
    """Values per interval as a steps-post line: one more point closes the last interval."""
    import numpy as np
    import pandas as pd

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if not len(x):
        return x, y
    return np.append(x, x[-1] + pd.Timedelta(freq).total_seconds()), np.append(y, y[-1])


def _empty(ax: Any, title: str, why: str) -> Any:
    ax.set_title(title)
    ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", va="center", color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def _describe(publisher: Any, track_name: Any, kind: Any) -> str:
    """'bot-0's microphone' (or its kind when the name is unknown)."""
    what = track_name if isinstance(track_name, str) and track_name else (kind if isinstance(kind, str) else "track")
    return f"{publisher}'s {what}"


def _notes(ax: Any, lines: list[str], limit: int = 6) -> None:
    """Say what a panel could not draw (missing streams) inside it, in red, at the top."""
    if not lines:
        return
    shown = lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])
    ax.text(
        0.01,
        0.98,
        "\n".join(shown),
        transform=ax.transAxes,
        va="top",
        ha="left",
        fontsize=7,
        color="crimson",
        bbox={"facecolor": "white", "edgecolor": "crimson", "alpha": 0.85},
    )


def mark_link_changes(ax: Any, events: pd.DataFrame, start: pd.Timestamp) -> None:
    """Vertical lines where a link changed, labelled with whose."""
    if events.empty:
        return
    changes = events[events["event"] == "link-changed"]
    for _, change in changes.iterrows():
        x = (change["time"] - start).total_seconds()
        ax.axvline(x, color="crimson", linestyle=":", linewidth=1.2)
        ax.annotate(
            f"{change['identity']} link",
            (x, 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
            color="crimson",
        )


# the views ----------------------------------------------------------------------------------
def latency(messages: pd.DataFrame, start: pd.Timestamp | None = None, ax: Any = None, freq: str = FREQ) -> Any:
    """Data-message latency per data track over time: the p50 line, a p10-p90 band and the p99
    dotted, over every publisher and subscriber of the track, in intervals of `freq`."""
    import pandas as pd

    ax = _axes(ax)
    title = "data-track latency: p50, p10-p90 band, p99 dotted"
    if messages.empty:
        return _empty(ax, title, "no data messages")
    from matplotlib import colormaps

    start = messages["time"].min() if start is None else start
    bands = analysis.latency(messages, by=("track",), percentiles=(10, 50, 90, 99), freq=freq)
    palette = colormaps["Dark2"]
    width = pd.Timedelta(freq).total_seconds()
    for number, (track, band) in enumerate(bands.groupby("track", observed=True, sort=True)):
        colour = palette(number % palette.N)
        # one box per interval with messages: an interval without any stays empty, not bridged
        x = _elapsed(band["time"], start)
        ax.bar(x, band["p90"] - band["p10"], width, bottom=band["p10"], align="edge", color=colour, alpha=0.2)
        ax.hlines(band["p50"], x, x + width, color=colour, linewidth=1.8, label=str(track))
        ax.hlines(band["p99"], x, x + width, color=colour, linewidth=0.9, linestyles=":")
    ax.set_ylim(0, max(1.0, float(bands["p99"].max())) * 1.08)
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds")
    ax.set_ylabel("one-way latency (ms)")
    ax.set_title(title)
    ax.legend(title="data track", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return ax


def loss(messages: pd.DataFrame, ax: Any = None, events: pd.DataFrame | None = None) -> Any:
    """Data-message loss per subscriber (rows) and data track (columns), each cell written out
    (zero too), from the publishers' sequence numbers; with `events`, a subscription that
    received no message at all is marked in its cell."""
    import numpy as np
    import pandas as pd

    ax = _axes(ax)
    title = "data-track loss per subscriber and track (all publishers)"
    expected = pd.DataFrame(columns=["subscriber", "track_name"])
    if events is not None and not events.empty:
        subscribed = streams.subscriptions(events)
        expected = subscribed[subscribed["kind"] == "data"][["subscriber", "track_name"]].drop_duplicates()
    if messages.empty and expected.empty:
        return _empty(ax, title, "no data messages")
    totals = pd.DataFrame(columns=["subscriber", "track", "lost", "sent"])
    if not messages.empty:
        per_publisher = analysis.loss(messages)  # sequence numbers count per publisher
        totals = per_publisher.groupby(["subscriber", "track"], observed=True)[["lost", "sent"]].sum().reset_index()
        totals = totals.astype({"subscriber": "str", "track": "str"})
    subscribers = sorted(set(totals["subscriber"]) | set(expected["subscriber"].astype("str")))
    track_names = sorted(set(totals["track"]) | set(expected["track_name"].dropna().astype("str")))
    percent = np.full((len(subscribers), len(track_names)), np.nan)
    for row in totals.itertuples(index=False):
        percent[subscribers.index(row.subscriber), track_names.index(row.track)] = 100 * row.lost / max(row.sent, 1)
    wanted = {(str(s), str(t)) for s, t in zip(expected["subscriber"], expected["track_name"], strict=True)}
    scale = max(5.0, float(np.nanmax(percent)) if np.isfinite(percent).any() else 0.0)
    ax.imshow(percent, cmap="Reds", vmin=0, vmax=scale, aspect="auto")
    for i, subscriber in enumerate(subscribers):
        for j, track in enumerate(track_names):
            value = percent[i, j]
            if np.isfinite(value):
                text, colour = f"{value:.1f} %", "white" if value > scale * 0.6 else "black"
            elif (subscriber, track) in wanted:
                text, colour = "no messages", "crimson"
            else:
                text, colour = "-", "0.6"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(track_names)), track_names, fontsize=8)
    ax.set_yticks(range(len(subscribers)), subscribers, fontsize=8)
    ax.set_title(title)
    return ax


def bitrate(
    rtc_stats: pd.DataFrame,
    start: pd.Timestamp | None = None,
    ax: Any = None,
    direction: str = "outbound",
    source: str = "server",
    colours: Mapping[str, Any] | None = None,
    freq: str = FREQ,
) -> Any:
    """Bitrate per media track over time, by default what each publisher sends as the server
    receives it (`frames.bitrate`: a sample before the next RTCP report takes that report's rate)."""
    ax = _axes(ax)
    title = f"media bitrate per track ({direction}, seen by the {source})"
    chosen = (
        rtc_stats[(rtc_stats["direction"] == direction) & (rtc_stats["source"] == source)]
        if len(rtc_stats)
        else rtc_stats
    )
    if chosen.empty:
        return _empty(ax, title, "no media")
    start = chosen["time"].min() if start is None else start
    colours = colours or participant_colours(chosen["participant"].astype("str").unique())
    rates = analysis.bitrate(chosen, freq=freq)
    for (participant, _track, _layer), series in rates.groupby(
        ["participant", "track", "layer"], observed=True, sort=True, dropna=False
    ):
        kind = series["kind"].iloc[0] if "kind" in series.columns else None
        ax.plot(
            *_steps(_elapsed(series["time"], start), series["bitrate_bps"] / 1000, freq),
            color=colours.get(str(participant), "0.3"),
            linestyle=KIND_STYLES.get(str(kind), "-"),
            linewidth=1.2,
            drawstyle="steps-post",
        )
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds")
    ax.set_ylabel("kbit/s")
    ax.set_title(title)
    return ax


def media_loss(
    rtc_stats: pd.DataFrame,
    start: pd.Timestamp | None = None,
    ax: Any = None,
    hop: str = "uplink",
    colours: Mapping[str, Any] | None = None,
    events: pd.DataFrame | None = None,
    freq: str = FREQ,
) -> Any:
    """Media packets lost per interval on one hop (`frames.media_loss`): `uplink`, one line per
    publisher's track as the server receives it; `downlink`, one line per subscriber, all it
    receives pooled. With `events`, a published track the server got nothing of is named.
    Intervals of fewer than `FEW_PACKETS` packets are drawn thin and pale."""
    import numpy as np

    if hop not in analysis.HOPS:
        raise ValueError(f"hop must be one of {', '.join(analysis.HOPS)}, got {hop!r}")
    ax = _axes(ax)
    who = "publisher's track, at the server" if hop == "uplink" else "subscriber, all it receives"
    title = f"{hop} media loss per {who}"
    if start is None and len(rtc_stats):
        start = rtc_stats["time"].min()
    lost = analysis.media_loss(rtc_stats, freq=freq, origin=start)
    lost = lost[lost["hop"] == hop]
    missing = []
    if hop == "uplink" and events is not None and not events.empty:
        published = streams.tracks(events)
        published = published[published["kind"].isin(["audio", "video"])]
        measured = set(lost.loc[lost["packets_expected"] > 0, "track"])
        for row in published.itertuples(index=False):
            if row.track not in measured:
                missing.append(f"no media from {_describe(row.publisher, row.track_name, row.kind)} at the server")
    if lost.empty:
        _empty(ax, title, "no media")
        _notes(ax, missing)
        return ax
    key = "publisher" if hop == "uplink" else "subscriber"
    colours = colours or participant_colours(lost[key].dropna().unique())
    if hop == "uplink":
        groups = lost.groupby(["publisher", "track"], observed=True, sort=True)
        lines = [(p, series["kind"].iloc[0], series) for (p, _t), series in groups]
    else:
        pooled = lost.groupby(["subscriber", "time"], observed=True)[["packets_expected", "packets_lost"]].sum()
        pooled = pooled.reset_index()
        expected = pooled["packets_expected"]
        pooled["loss_fraction"] = (pooled["packets_lost"] / expected).where(expected > 0).clip(0, 1)
        lines = [(s, None, series) for s, series in pooled.groupby("subscriber", observed=True, sort=True)]
    for name, kind, series in lines:
        x, y = _steps(_elapsed(series["time"], start), series["loss_fraction"] * 100, freq)
        few = np.append(series["packets_expected"].to_numpy() < FEW_PACKETS, False)
        colour, style = colours.get(str(name), "0.3"), KIND_STYLES.get(str(kind), "-")
        # an interval of a few packets (silence) draws thin and pale: 1 of 3 lost is not 33 % loss
        ax.plot(x, np.where(few, np.nan, y), color=colour, linestyle=style, linewidth=1.3, drawstyle="steps-post")
        ax.plot(x, np.where(few, y, np.nan), color=colour, linestyle=style, linewidth=0.7, alpha=0.4,
                drawstyle="steps-post")  # fmt: skip
    highest = max((float(series["loss_fraction"].max()) for _, _, series in lines), default=0.0)
    ax.set_ylim(bottom=0, top=max(5.0, (highest if highest == highest else 0.0) * 100 + 3))
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds")
    ax.set_ylabel(f"lost per {freq} (%)")
    ax.set_title(title)
    _notes(ax, missing)
    return ax


def end_to_end_loss(
    rtc_stats: pd.DataFrame,
    events: pd.DataFrame,
    start: pd.Timestamp | None = None,
    ax: Any = None,
    colours: Mapping[str, Any] | None = None,
    freq: str = FREQ,
) -> Any:
    """Every subscriber's loss of every publisher's media per interval, both hops combined
    (`frames.end_to_end_loss`): one row per stream that should exist (each subscription to an
    audio or video track, from `events`), a stream that delivered nothing marked as missing."""
    import numpy as np
    import pandas as pd

    ax = _axes(ax)
    title = (
        f"end-to-end media loss per {freq} (uplink and downlink combined), every subscribed stream;"
        f" pale: under {FEW_PACKETS} packets, grey: none in that interval"
    )
    expected = streams.media_delivery(rtc_stats, events)
    if expected.empty:
        return _empty(ax, title, "no audio or video subscriptions in events")
    if start is None:
        start = min(rtc_stats["time"].min(), events["time"].min()) if len(rtc_stats) else events["time"].min()
    combined = analysis.end_to_end_loss(analysis.media_loss(rtc_stats, freq=freq, origin=start))
    expected = expected.sort_values(["publisher", "track_name", "track", "subscriber"], ignore_index=True)
    end = max(events["time"].max(), combined["time"].max() if len(combined) else events["time"].max())
    bins = pd.date_range(start, end + pd.Timedelta(freq), freq=freq)  # on the same origin as media_loss
    grid = np.full((len(expected), len(bins)), np.nan)
    counts = np.zeros_like(grid)
    positions = {(r.track, r.subscriber): i for i, r in enumerate(expected.itertuples(index=False))}
    column = {time: j for j, time in enumerate(bins)}
    for row in combined.itertuples(index=False):
        i, j = positions.get((row.track, row.subscriber)), column.get(row.time)
        if i is not None and j is not None:
            grid[i, j] = row.loss_fraction * 100
            counts[i, j] = row.packets_expected
    scale = max(LOSS_SCALE_PCT, float(np.nanpercentile(grid, 99)) if np.isfinite(grid).any() else 0.0)
    cmap = _loss_colours()
    x0 = (bins[0] - start).total_seconds()
    step = pd.Timedelta(freq).total_seconds()
    image = ax.imshow(
        grid,
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        vmin=0,
        vmax=scale,
        extent=(x0, x0 + step * len(bins), len(expected) - 0.5, -0.5),
        alpha=np.where(np.isfinite(grid) & (counts < FEW_PACKETS), 0.35, 1.0),  # few packets: pale
    )
    colours = colours or participant_colours(expected["publisher"])
    labels = []
    for i, row in enumerate(expected.itertuples(index=False)):
        labels.append(f"{_describe(row.publisher, row.track_name, row.kind)} → {row.subscriber}")
        if row.status != "delivered":
            reason = {
                "missing upstream": "the server received none",
                "missing downstream": "the server had it",
                "not recorded": "subscriber not recorded",
                "too brief": "subscribed under 3 s",
            }[row.status]
            what = "no media" if row.status != "not recorded" else "no telemetry"
            ax.axhspan(i - 0.5, i + 0.5, facecolor="none", edgecolor="crimson", hatch="///", linewidth=0)
            ax.text(
                x0 + step,
                i,
                f"{what} from {_describe(row.publisher, row.track_name, row.kind)} at {row.subscriber} ({reason})",
                va="center",
                fontsize=7,
                color="crimson",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
            )
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for tick, row in zip(ax.get_yticklabels(), expected.itertuples(index=False), strict=True):
        tick.set_color(colours.get(str(row.publisher), "black"))
    boundaries = np.flatnonzero(expected["track"].to_numpy()[1:] != expected["track"].to_numpy()[:-1])
    for boundary in boundaries:
        ax.axhline(boundary + 0.5, color="0.5", linewidth=0.6)
    ax.set_xlabel("seconds")
    ax.set_title(title)
    bar = ax.figure.colorbar(image, ax=ax, pad=0.01, fraction=0.03)
    bar.set_label("lost (%)")
    return ax


def _loss_colours() -> Any:
    """White at 0 % through red; intervals without packets grey."""
    from matplotlib import colormaps

    return colormaps["Reds"].with_extremes(bad="0.88")


#: Twilio's names of the network quality levels, for the level axis.
LEVEL_NAMES = {0: "0 broken", 1: "1 bad", 2: "2 below avg", 3: "3 average", 4: "4 good", 5: "5 excellent"}
#: Line style per direction of a network quality input.
DIRECTION_STYLES = {"send": "-", "recv": ":"}
#: What `quality_inputs` can draw: columns of `network_quality` (with the style of each), scale, axis label.
QUALITY_INPUTS: dict[str, tuple[tuple[tuple[str, str, str], ...], float, str]] = {
    "loss": (
        (("send_fraction_lost", "-", "send (uplink)"), ("recv_fraction_lost", ":", "recv (downlink)")),
        100.0,
        "lost (%)",
    ),
    "latency": ((("rtt_ms", "-", "round-trip time"), ("jitter_ms", ":", "jitter")), 1.0, "ms"),
    "bandwidth": (
        (("recv_available_bps", "-", "available (estimate)"), ("recv_required_bps", ":", "required")),
        1e-3,
        "downlink video (kbit/s)",
    ),
}
#: At most this many level drops are labelled with their reason in `quality` (the rest would overlap).
REASON_LABELS = 12


def quality(
    network_quality: pd.DataFrame,
    start: pd.Timestamp | None = None,
    ax: Any = None,
    colours: Mapping[str, Any] | None = None,
) -> Any:
    """Network quality level (0-5) per participant over time, as the server computed it each
    second; every drop is labelled with its reason (`audio_send: loss`, ...), the partial and the
    part that set it. Lines are offset a little so that equal levels stay visible."""
    import numpy as np

    ax = _axes(ax)
    title = "network quality level per participant (reason at each drop)"
    if network_quality.empty:
        return _empty(ax, title, "no network quality levels")
    start = network_quality["time"].min() if start is None else start
    colours = colours or participant_colours(network_quality["participant"].astype("str").unique())
    groups = list(network_quality.groupby("participant", observed=True, sort=True))
    labelled = 0
    for number, (participant, rows) in enumerate(groups):
        rows = rows.sort_values("time")
        offset = (number - (len(groups) - 1) / 2) * min(0.06, 0.3 / max(len(groups), 1))
        x = _elapsed(rows["time"], start)
        levels = rows["level"].to_numpy(dtype=float)
        colour = colours.get(str(participant), "0.3")
        ax.plot(*_steps(x, levels + offset, "1s"), color=colour, linewidth=1.5, drawstyle="steps-post")
        drops = np.flatnonzero(np.diff(levels, prepend=5.0) < 0)
        for index in drops:
            if labelled >= REASON_LABELS:
                break
            ax.annotate(
                f"{participant}: {rows['reason'].iloc[index]}",
                (x[index], levels[index] + offset),
                xytext=(3, -9),
                textcoords="offset points",
                fontsize=6,
                color=colour,
            )
            labelled += 1
    ax.set_ylim(-0.3, 5.4)
    ax.set_yticks(list(LEVEL_NAMES), list(LEVEL_NAMES.values()), fontsize=7)
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds")
    ax.set_ylabel("level")
    ax.set_title(title)
    return ax


def quality_inputs(
    network_quality: pd.DataFrame,
    what: str = "loss",
    start: pd.Timestamp | None = None,
    ax: Any = None,
    colours: Mapping[str, Any] | None = None,
) -> Any:
    """The inputs that explain the levels, per participant over time: `loss` (uplink and downlink
    loss, %), `latency` (round-trip time and jitter, ms) or `bandwidth` (the downlink video budget
    against what the subscribed video requires, kbit/s)."""
    from matplotlib.lines import Line2D

    if what not in QUALITY_INPUTS:
        raise ValueError(f"what must be one of {', '.join(QUALITY_INPUTS)}, got {what!r}")
    columns, scale, unit = QUALITY_INPUTS[what]
    ax = _axes(ax)
    title = f"network quality inputs: {what} per participant"
    measured = network_quality.dropna(subset=[c for c, _, _ in columns], how="all") if len(network_quality) else None
    if measured is None or measured.empty:
        return _empty(ax, title, "no video received" if what == "bandwidth" else f"no {what} measured")
    start = network_quality["time"].min() if start is None else start
    colours = colours or participant_colours(network_quality["participant"].astype("str").unique())
    for participant, rows in measured.groupby("participant", observed=True, sort=True):
        rows = rows.sort_values("time")
        x = _elapsed(rows["time"], start)
        for column, style, _ in columns:
            y = rows[column].to_numpy(dtype=float) * scale
            ax.plot(*_steps(x, y, "1s"), color=colours.get(str(participant), "0.3"), linestyle=style,
                    linewidth=1.3, drawstyle="steps-post")  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds")
    ax.set_ylabel(unit)
    ax.set_title(title)
    handles = [Line2D([], [], color="0.3", linestyle=style, label=label) for _, style, label in columns]
    ax.legend(handles=handles, fontsize=7, loc="upper right")
    return ax


#: How opaque a track's band is at each layer in `allocations` (the lanes show the same).
LAYER_ALPHAS = {"low": 0.3, "standard": 0.55, "single": 0.55, "high": 0.85}
#: Short layer names for the lanes of `allocations`.
LAYER_SHORT = {"low": "low", "standard": "std", "high": "high", "single": "on"}
#: The lines drawn over the stack: column of `allocations`, style, label.
ALLOCATION_LINES = (
    ("available_bps", {"color": "black", "linewidth": 1.6}, "available to video (budget)"),
    ("estimate_bps", {"color": "0.45", "linewidth": 1.1, "linestyle": "--"}, "downlink estimate (all media)"),
    ("probe_goal_bps", {"color": "tab:olive", "linewidth": 1.1, "linestyle": ":"}, "probe goal (while probing)"),
)
#: Colour of mode changes in `allocations`.
MODE_COLOUR = "darkviolet"
#: Height of one lane under the stack, as a fraction of the stack's height.
LANE_FRACTION = 0.09
#: Width of a character of the lanes' labels, as a fraction of the time axis (labels never overlap).
LANE_CHAR = 0.0065


def allocations(
    allocations: pd.DataFrame,
    subscriber: str | None = None,
    start: pd.Timestamp | None = None,
    ax: Any = None,
    colours: Mapping[str, Any] | None = None,
    events: pd.DataFrame | None = None,
) -> Any:
    """How the server divided `subscriber`'s downlink among the video tracks it receives: the
    bit/s allocated to each track stacked over time (the track's colour is its publisher's, darker
    for a higher layer), under the video budget and the downlink estimate. Below the stack, a lane
    per track: its layer, and where it was switched off, why (`off: bandwidth`, ...); priority
    changes are written in the lane, mode changes marked across. With `events`, the subscriber's
    link changes are marked too. `subscriber` may be left out when the table has one."""
    import numpy as np
    from matplotlib.patches import Patch

    ax = _axes(ax)
    rows = allocation_frames.decisions(allocations, subscriber)
    who = subscriber or (str(rows["subscriber"].iloc[0]) if len(rows) else "")
    title = f"video allocated to {who or 'a subscriber'} per track (stacked), and the bandwidth it had"
    if rows.empty:
        return _empty(ax, title, "no allocations yet")
    start = rows["time"].min() if start is None else start
    latest = allocation_frames.latest_per_track(rows)
    tracks = list(latest["track"])
    colours = colours or participant_colours(list(latest["publisher"].astype(str)))
    info = latest.set_index("track")
    colour_of = {track: colours.get(str(info.loc[track, "publisher"]), "0.4") for track in tracks}
    allocated = allocation_frames.stacked(rows, tracks) / 1000
    times = allocated.index
    edges = np.append(_elapsed(times, start), _elapsed([allocation_frames.decision_ends(rows).max()], start))
    periods = allocation_frames.periods(rows, who)
    seen_publishers: dict[str, int] = {}
    hatches: dict[str, str | None] = {}
    for track, publisher in zip(latest["track"], latest["publisher"].astype(str), strict=True):
        number = seen_publishers.get(publisher, 0)
        seen_publishers[publisher] = number + 1
        hatches[track] = (None, "//", "..", "xx")[number % 4]  # a publisher's second track is hatched

    # the stack: a band per track, its opacity the layer of each decision
    layers = rows.pivot_table(index="time", columns="track", values="layer", aggfunc="last").reindex(
        index=times, columns=tracks
    )
    bottom = np.zeros(len(times))
    for track in tracks:
        values = allocated[track].to_numpy(dtype=float)
        top = bottom + values
        colour = colour_of[track]
        layer_of = layers[track].to_numpy(dtype=object)
        start_index = 0
        for index in range(1, len(times) + 1):
            if index < len(times) and layer_of[index] == layer_of[start_index]:
                continue
            span = slice(start_index, index + 1)
            ax.fill_between(
                edges[span],
                np.append(bottom[start_index:index], bottom[index - 1]),
                np.append(top[start_index:index], top[index - 1]),
                step="post",
                facecolor=colour,
                alpha=LAYER_ALPHAS.get(str(layer_of[start_index]), 0.55),
                hatch=hatches[track],
                edgecolor="white" if hatches[track] else "none",
                linewidth=0,
            )
            start_index = index
        bottom = top
    per_decision = rows.drop_duplicates("time", keep="last").set_index("time").reindex(times)
    for column, style, _ in ALLOCATION_LINES:
        if column in per_decision.columns and per_decision[column].notna().any():
            values = per_decision[column].to_numpy(dtype=float) / 1000
            ax.plot(edges, np.append(values, values[-1]), drawstyle="steps-post", **style)
    height = max(float(bottom.max()), float(np.nanmax(per_decision["available_bps"].to_numpy(dtype=float))) / 1000)
    height = max(height, 1.0) * 1.15

    # the lanes: one per track under the stack, its layer or why it was off
    lane = height * LANE_FRACTION
    span_s = max(float(edges[-1]), 1.0)
    labels = []
    for number, track in enumerate(tracks):
        centre = -(number + 0.7) * lane
        colour = colour_of[track]
        name = allocation_frames.label(info.loc[track, "publisher"], info.loc[track, "track_name"])
        labels.append((centre, f"{name} ({info.loc[track, 'priority']})"))
        own = periods[periods["track"] == track]
        previous_priority = None
        free_from = -1.0  # where the lane has room for the next label
        for period in own.itertuples(index=False):
            x0 = float(_elapsed([period.start], start)[0])
            width = float(_elapsed([period.end], start)[0]) - x0
            if period.switched_off:
                ax.broken_barh([(x0, width)], (centre - lane * 0.4, lane * 0.8), facecolor="white",
                               edgecolor="0.5", hatch="////", linewidth=0.4)  # fmt: skip
                text, text_colour = f"off: {period.reason}", "crimson"
            else:
                ax.broken_barh([(x0, width)], (centre - lane * 0.4, lane * 0.8), facecolor=colour,
                               alpha=LAYER_ALPHAS.get(str(period.layer), 0.55), linewidth=0)  # fmt: skip
                text, text_colour = LAYER_SHORT.get(str(period.layer), str(period.layer)), "black"
            if previous_priority is not None and period.priority != previous_priority:
                text = f"{period.priority} · {text}"
                ax.plot([x0, x0], [centre - lane * 0.45, centre + lane * 0.45], color="black", linewidth=1.2)
            previous_priority = period.priority
            at = max(x0, free_from)
            if at < x0 + width:  # in the period, after the last label
                free_from = at + span_s * LANE_CHAR * (len(text) + 1)
                ax.text(at + span_s * 0.004, centre, text, fontsize=6.5, va="center", ha="left", color=text_colour,
                        clip_on=True)  # fmt: skip
    bottom_edge = -(len(tracks) + 0.3) * lane
    ax.axhline(0, color="0.3", linewidth=0.8)

    # mode changes across the whole panel, link changes of this subscriber
    modes = per_decision["mode"].astype(object)
    changed = modes.ne(modes.shift()) & modes.shift().notna()
    for time, mode in modes[changed].items():
        x = float(_elapsed([time], start)[0])
        ax.axvline(x, color=MODE_COLOUR, linewidth=1.2, linestyle="-.")
        ax.annotate(f"mode → {mode}", (x, 1), xycoords=("data", "axes fraction"), rotation=90, va="top",
                    ha="right", fontsize=7, color=MODE_COLOUR)  # fmt: skip
    if events is not None and len(events):
        own_changes = events[(events["event"] == "link-changed") & (events["identity"].astype(str) == who)]
        mark_link_changes(ax, own_changes, start)

    positive = [t for t in ax.get_yticks() if 0 <= t <= height]
    ax.set_ylim(bottom_edge, height)
    ax.set_yticks(positive + [c for c, _ in labels], [f"{t:g}" for t in positive] + [text for _, text in labels])
    for tick, track in zip(ax.get_yticklabels()[len(positive) :], tracks, strict=True):
        tick.set_fontsize(7)
        tick.set_color(colour_of[track])
    ax.set_xlim(0, max(span_s, float(edges[-1])))
    ax.set_xlabel("seconds")
    ax.set_ylabel("allocated (kbit/s)")
    ax.set_title(f"{title} · mode {' → '.join(dict.fromkeys(modes.dropna().astype(str))) or '?'}")
    handles = [
        Patch(facecolor=colours.get(str(p), "0.4"), hatch=hatches[t], label=allocation_frames.label(p, n))
        for t, p, n in zip(latest["track"], latest["publisher"], latest["track_name"], strict=True)
    ]
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], label=label, **style) for _, style, label in ALLOCATION_LINES]
    handles += [Patch(facecolor="0.3", alpha=a, label=f"layer {name}") for name, a in LAYER_ALPHAS.items()
                if name != "single"]  # fmt: skip
    handles.append(Patch(facecolor="white", edgecolor="0.5", hatch="////", label="switched off (reason)"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return ax


# the report ---------------------------------------------------------------------------------
@dataclass
class Page:
    """What every panel of a report shares: the run's frames, its start, its colours."""

    frames: Mapping[str, pd.DataFrame]
    start: pd.Timestamp | None
    colours: Mapping[str, Any]

    def frame(self, name: str) -> pd.DataFrame:
        import pandas as pd

        return self.frames.get(name, pd.DataFrame())


@dataclass(frozen=True)
class Panel:
    """One view of the report: drawn when every table in `tables` has rows."""

    draw: Callable[[Page, Any], Any]
    tables: tuple[str, ...]
    wide: bool = False
    """Take a whole row (otherwise two panels share one)."""
    height: float | Callable[[Page], float] = 1.0
    """Relative height of its row, or a function of the page that gives it."""
    link_changes: bool = True
    """Mark the link changes of the run on it (time axes)."""
    each: Callable[[Page], Sequence[str]] | None = None
    """Draw it once per item of the page (such as each subscriber), as `draw(page, ax, item)`."""


def _subscriptions_height(page: Page) -> float:
    """Room for one readable row per subscribed stream."""
    subscribed = streams.media_delivery(page.frame("rtc_stats"), page.frame("events"))
    return max(1.0, 0.3 + len(subscribed) * 0.06)


#: At most this many subscribers get an allocation panel in the report: those whose video was
#: held below its desired layers or switched off the most.
REPORT_SUBSCRIBERS = 4


def _pressed_subscribers(page: Page) -> list[str]:
    """The subscribers with allocations, those that lost the most video first (`REPORT_SUBSCRIBERS`)."""
    rows = page.frame("allocations")
    short = rows["switched_off"].fillna(False).astype(bool) | (
        rows["layer"].astype(str) != rows["desired_layer"].astype(str)
    )
    pressure = short.groupby(rows["subscriber"].astype(str)).mean()
    return list(pressure.sort_values(ascending=False, kind="stable").index[:REPORT_SUBSCRIBERS])


REPORT_PANELS: list[Panel] = [
    Panel(lambda page, ax: latency(page.frame("messages"), page.start, ax), ("messages",)),
    Panel(lambda page, ax: loss(page.frame("messages"), ax, page.frame("events")), ("messages",), link_changes=False),
    Panel(
        lambda page, ax: media_loss(
            page.frame("rtc_stats"), page.start, ax, "uplink", page.colours, page.frame("events")
        ),
        ("rtc_stats",),
    ),
    Panel(
        lambda page, ax: media_loss(page.frame("rtc_stats"), page.start, ax, "downlink", page.colours), ("rtc_stats",)
    ),
    Panel(
        lambda page, ax: bitrate(page.frame("rtc_stats"), page.start, ax, colours=page.colours),
        ("rtc_stats",),
        wide=True,
    ),
    Panel(
        lambda page, ax: end_to_end_loss(page.frame("rtc_stats"), page.frame("events"), page.start, ax, page.colours),
        ("rtc_stats", "events"),
        wide=True,
        height=_subscriptions_height,
    ),
    Panel(lambda page, ax: quality(page.frame("network_quality"), page.start, ax, page.colours), ("network_quality",)),
    Panel(
        lambda page, ax: quality_inputs(page.frame("network_quality"), "loss", page.start, ax, page.colours),
        ("network_quality",),
    ),
    Panel(
        lambda page, ax: quality_inputs(page.frame("network_quality"), "latency", page.start, ax, page.colours),
        ("network_quality",),
    ),
    Panel(
        lambda page, ax: quality_inputs(page.frame("network_quality"), "bandwidth", page.start, ax, page.colours),
        ("network_quality",),
    ),
    Panel(
        lambda page, ax, subscriber: allocations(
            page.frame("allocations"), subscriber, page.start, ax, page.colours, page.frame("events")
        ),
        ("allocations",),
        wide=True,
        link_changes=False,  # the subscriber's own, drawn by the panel
        each=_pressed_subscribers,
    ),
]
"""The report's panels, in order. Append a `Panel` to add a view (`each=`: one per subscriber, ...)."""


def _expand(panel: Panel, page: Page) -> list[Panel]:
    """A panel drawn once per item of the page becomes a panel per item."""
    if panel.each is None:
        return [panel]
    return [
        replace(panel, draw=lambda page, ax, draw=panel.draw, item=item: draw(page, ax, item), each=None)
        for item in panel.each(page)
    ]


def report_figure(
    frames: Mapping[str, pd.DataFrame], title: str = "roomlab run", panels: Sequence[Panel] | None = None
) -> Any:
    """The report as a matplotlib Figure (what `report()` saves)."""
    from matplotlib.figure import Figure

    start = _start(frames)
    identities: set[str] = set()
    for name, column in (
        ("rtc_stats", "participant"),
        ("messages", "subscriber"),
        ("messages", "publisher"),
        ("network_quality", "participant"),
        ("allocations", "subscriber"),
        ("allocations", "publisher"),
    ):
        if name in frames and column in frames[name].columns:
            identities.update(frames[name][column].dropna().astype("str"))
    if "events" in frames and len(frames["events"]):
        events = frames["events"]
        identities.update(events.loc[events["event"] == "participant-connected", "identity"].dropna().astype("str"))
    page = Page(frames, start, participant_colours(sorted(identities)))
    chosen = [p for p in (REPORT_PANELS if panels is None else panels) if all(len(page.frame(t)) for t in p.tables)]
    drawn = [one for panel in chosen for one in _expand(panel, page)]
    rows: list[list[Panel]] = []
    for panel in drawn:
        if panel.wide or not rows or len(rows[-1]) == 2 or rows[-1][0].wide:
            rows.append([panel])
        else:
            rows[-1].append(panel)
    heights = [max(p.height(page) if callable(p.height) else p.height for p in row) for row in rows] or [1.0]
    figure = Figure(figsize=(17, 3.6 * sum(heights) + 0.8), layout="constrained")
    grid = figure.add_gridspec(max(len(rows), 1), 2, height_ratios=heights)
    for number, row in enumerate(rows):
        for position, panel in enumerate(row):
            ax = figure.add_subplot(grid[number, :] if panel.wide or len(row) == 1 else grid[number, position])
            panel.draw(page, ax)
            if panel.link_changes and start is not None and "events" in frames:
                mark_link_changes(ax, frames["events"], start)
    _legend(figure, page)
    figure.suptitle(title, fontsize=13)
    return figure


def _legend(figure: Any, page: Page) -> None:
    """One legend for the page, outside the panels: a colour per participant, a style per kind."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colour, linewidth=2, label=name) for name, colour in page.colours.items()]
    handles += [Line2D([], [], color="0.2", linestyle=style, label=kind) for kind, style in KIND_STYLES.items()]
    handles.append(Line2D([], [], color="crimson", linestyle=":", label="link change"))
    if handles:
        figure.legend(handles=handles, loc="outside right upper", fontsize=8, title="participants", title_fontsize=8)


def report(frames: Mapping[str, pd.DataFrame], path: str | Path, title: str = "roomlab run") -> Path:
    """One page of the run's views (`REPORT_PANELS`), saved as a PNG at `path`."""
    figure = report_figure(frames, title)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=90)
    return target
