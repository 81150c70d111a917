"""`RoomView`: who is in the room, what they publish and receive, on which link, at which level.

Everything comes from the `events` table (participants, tracks and subscriptions as the server
records them; bots' links from `bot-joined` and `link-changed`), `rtc_stats` for the kind of media
tracks whose events do not say it, and `network_quality` for levels when it has rows.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..telemetry.links import current, describe, links
from .drawing import LINK_COLOUR, clip, empty, participant_colours, seconds
from .view import View

#: Marker per track kind on the timeline.
KIND_MARKERS = {"audio": "o", "video": "s", "data": "^"}
#: Colours of network quality levels 0 (unreachable) to 5 (excellent).
LEVEL_COLOURS = ("#67000d", "#d73027", "#f46d43", "#e6a100", "#66bd63", "#1a9850")


@dataclass
class Participant:
    identity: str
    room: str
    sessions: list[list[Any]] = field(default_factory=list)
    """[joined, left or None] per connection."""
    tracks: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Published in the current (or last) session: track SID -> (kind, name)."""
    published: set[str] = field(default_factory=set)
    """Of those, the tracks still published."""
    track_times: list[tuple[Any, str]] = field(default_factory=list)
    """(time, kind) of every publication, for the timeline."""
    subscribed: set[str] = field(default_factory=set)
    """Tracks subscribed to now."""
    ever_subscribed: set[str] = field(default_factory=set)
    """Tracks subscribed to in the current (or last) session."""
    link: str = ""
    level: int | None = None
    bot_state: str | None = None

    @property
    def connected(self) -> bool:
        return bool(self.sessions) and self.sessions[-1][1] is None


@dataclass
class RoomModel:
    participants: list[Participant]
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    link_changes: pd.DataFrame
    links: pd.DataFrame
    levels: pd.DataFrame


def _detail(value: Any) -> dict[str, Any]:
    if isinstance(value, str) and value.startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def room_model(events: pd.DataFrame, rtc_stats: pd.DataFrame, network_quality: pd.DataFrame) -> RoomModel:
    """Replay the events into the room as it is now (and was: sessions and publications)."""
    kinds: dict[str, str] = {}
    if not rtc_stats.empty:
        kinds = dict(rtc_stats.drop_duplicates("track")[["track", "kind"]].astype(str).itertuples(index=False))
    people: dict[tuple[str, str], Participant] = {}

    def person(room: Any, identity: str) -> Participant:
        key = (str(room), identity)
        if key not in people:
            people[key] = Participant(identity, str(room))
        return people[key]

    ordered = events.sort_values("time", kind="stable")
    rows = ordered[["time", "room", "event", "identity", "track", "detail"]].itertuples(index=False)
    for time, room, event, identity, track, detail in rows:
        if not isinstance(identity, str):
            continue
        who = person(room, identity)
        if event == "participant-connected":
            who.sessions.append([time, None])
            who.tracks.clear()
            who.ever_subscribed.clear()
        elif event == "participant-disconnected":
            if who.sessions and who.sessions[-1][1] is None:
                who.sessions[-1][1] = time
            who.published.clear()
            who.subscribed.clear()
        elif event == "track-added" and isinstance(track, str):
            info = _detail(detail)
            kind = str(info.get("kind") or kinds.get(track, "data"))
            who.tracks[track] = (kind, str(info.get("name") or kind))
            who.published.add(track)
            who.track_times.append((time, kind))
        elif event == "track-removed" and isinstance(track, str):
            who.published.discard(track)
            for other in people.values():
                other.subscribed.discard(track)
        elif event == "track-subscribed" and isinstance(track, str):
            who.subscribed.add(track)
            who.ever_subscribed.add(track)
        elif event == "track-unsubscribed" and isinstance(track, str):
            who.subscribed.discard(track)
        elif event.startswith("bot-"):
            who.bot_state = event.removeprefix("bot-")
    for who in people.values():  # a bot known to the simulation only (not joined yet, or failed)
        if not who.sessions and who.bot_state is None:
            who.bot_state = "waiting"

    link_rows = links(events)
    if not link_rows.empty:
        for identity, row in current(link_rows).iterrows():
            for who in people.values():
                if who.identity == identity:
                    who.link = describe(row)
    levels = pd.DataFrame()
    if not network_quality.empty:
        levels = network_quality[["time", "participant", "level"]].dropna()
        latest = levels.groupby("participant", observed=True)["level"].last()
        for who in people.values():
            if who.identity in latest.index:
                who.level = int(latest[who.identity])
    start = events["time"].min() if not events.empty else None
    end = events["time"].max() if not events.empty else None
    participants = sorted(
        people.values(),
        key=lambda p: (p.sessions[0][0] if p.sessions else pd.Timestamp.max.tz_localize("UTC"), p.identity),
    )
    changes = events[events["event"] == "link-changed"] if not events.empty else events
    return RoomModel(participants, start, end, changes, link_rows, levels)


def _tracks(who: Participant) -> str:
    """What it publishes (connected), or published in its last session."""
    shown = who.published if who.connected else set(who.tracks)
    names = sorted(who.tracks[sid][1] for sid in shown)
    return ", ".join(names) if names else "-"


def _subscriptions(who: Participant) -> str:
    return str(len(who.subscribed if who.connected else who.ever_subscribed))


def _state(who: Participant) -> str:
    if who.connected:
        return "connected"
    if who.bot_state in ("failed", "lost", "waiting"):
        return who.bot_state
    return "left" if who.sessions else (who.bot_state or "-")


class RoomView(View):
    """Participants, their tracks and subscriptions, link settings and network quality levels.

    `RoomView(source)` with a Server, Simulation, connected Room or a saved run; for a simulation
    (or a client joined with `link=`), controls change a participant's link while it runs."""

    css_class: ClassVar[str] = "roomlab-room-view"
    title: ClassVar[str] = "room"
    tables: ClassVar[tuple[str, ...]] = ("events", "network_quality")

    def _controls(self) -> list[Any]:
        return self._link_controls()

    def _read(self) -> RoomModel:
        return room_model(
            self.source.frame("events"), self.source.frame("rtc_stats"), self.source.frame("network_quality")
        )

    def _draw(self, figure: Any, model: RoomModel) -> None:
        people = model.participants
        rows = max(1, len(people))
        figure.set_size_inches(12, 1.1 + 0.36 * rows)
        table, timeline = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1]})
        figure.subplots_adjust(
            left=0.01, right=0.98, top=1 - 0.55 / (1.1 + 0.36 * rows), bottom=0.5 / (1.1 + 0.36 * rows), wspace=0.02
        )
        if not people:
            empty(table, "nobody has joined yet")
            table.axis("off")
            empty(timeline, "")
            return
        colours = participant_colours(p.identity for p in people)
        show_room = len({p.room for p in people}) > 1
        self._draw_table(table, people, colours, show_room, model)
        self._draw_timeline(timeline, people, colours, model)

    def _draw_table(
        self, ax: Any, people: list[Participant], colours: dict[str, Any], show_room: bool, model: RoomModel
    ) -> None:
        ax.set_xlim(0, 1)
        ax.set_ylim(len(people) - 0.5, -1.2)
        ax.axis("off")
        columns = [(0.0, "participant"), (0.16, "state"), (0.26, "publishes"), (0.50, "subs"), (0.55, "link")]
        has_levels = not model.levels.empty
        if has_levels:
            columns.append((0.95, "level"))
        for x, name in columns:
            ax.text(x, -1, name, fontsize=8, fontweight="bold", va="center")
        for y, who in enumerate(people):
            name = f"{who.identity} ({who.room})" if show_room else who.identity
            ax.text(0.0, y, clip(name, 18), fontsize=8, va="center", color=colours[who.identity], fontweight="bold")
            state = _state(who)
            ax.text(0.16, y, state, fontsize=8, va="center", color="0.2" if state == "connected" else "0.5")
            ax.text(0.26, y, clip(_tracks(who), 30), fontsize=8, va="center")
            ax.text(0.50, y, _subscriptions(who), fontsize=8, va="center")
            ax.text(
                0.55,
                y,
                clip(who.link or "-", 50),
                fontsize=7.5,
                va="center",
                color=LINK_COLOUR if who.link and who.link != "unconstrained" else "0.3",
            )
            if has_levels and who.level is not None:
                ax.text(
                    0.95, y, f"{who.level}", fontsize=9, va="center", fontweight="bold", color=LEVEL_COLOURS[who.level]
                )

    def _draw_timeline(self, ax: Any, people: list[Participant], colours: dict[str, Any], model: RoomModel) -> None:
        assert model.start is not None and model.end is not None
        start, end = model.start, model.end
        span = max(1.0, float(seconds(end, start)))
        for y, who in enumerate(people):
            colour = colours[who.identity]
            for joined, left in who.sessions:
                x0 = float(seconds(joined, start))
                x1 = float(seconds(left, start)) if left is not None else span
                ax.broken_barh([(x0, max(x1 - x0, span / 400))], (y - 0.28, 0.56), color=colour, alpha=0.35)
            for time, kind in who.track_times:
                ax.plot(
                    float(seconds(time, start)),
                    y,
                    KIND_MARKERS.get(kind, "^"),
                    color=colour,
                    markersize=5,
                    markeredgecolor="black",
                    markeredgewidth=0.5,
                )
            if not model.levels.empty:
                own = model.levels[model.levels["participant"] == who.identity]
                if not own.empty:
                    x = seconds(own["time"], start)
                    ax.scatter(
                        x,
                        np.full(len(x), y + 0.36),
                        c=[LEVEL_COLOURS[int(v)] for v in own["level"]],
                        s=6,
                        marker="s",
                        linewidths=0,
                    )
        changes = model.link_changes
        rows = changes[["time", "identity", "detail"]].itertuples(index=False)
        for number, (time, identity, detail) in enumerate(rows):
            y = next((i for i, who in enumerate(people) if who.identity == identity), None)
            if y is None:
                continue
            x = float(seconds(time, start))
            ax.plot([x, x], [y - 0.42, y + 0.42], color=LINK_COLOUR, linewidth=1.5)
            late = x > span * 0.6  # label on the side with room for it
            above = number % 2 == 0  # successive changes alternate above and below the lane
            ax.annotate(
                clip(_change_text(detail), 28),
                (x, y - 0.3 if above else y + 0.3),
                fontsize=6.5,
                color=LINK_COLOUR,
                xytext=(-2 if late else 2, 0),
                textcoords="offset points",
                va="bottom" if above else "top",
                ha="right" if late else "left",
            )
        ax.set_ylim(len(people) - 0.5, -1.2)
        ax.set_yticks([])
        ax.set_xlim(0, span * 1.02)
        ax.set_xlabel("seconds", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title("presence ▬  published ● audio ■ video ▲ data  │ link change", fontsize=8, loc="left")
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)

    def _describe(self, model: RoomModel) -> tuple[str, str]:
        people = model.participants
        connected = sum(1 for p in people if p.connected)
        tracks = sum(len(p.published) for p in people)
        summary = f"{connected} connected of {len(people)} participants, {tracks} tracks published"
        has_levels = not model.levels.empty
        head = "<tr><th>participant</th><th>room</th><th>state</th><th>publishes</th><th>subscribed</th><th>link</th>"
        head += "<th>level</th></tr>" if has_levels else "</tr>"
        body = []
        for who in people:
            cells = [who.identity, who.room, _state(who), _tracks(who), _subscriptions(who), who.link or "-"]
            if has_levels:
                cells.append("" if who.level is None else str(who.level))
            body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        return summary, f'<table class="roomlab-table">{head}{"".join(body)}</table>'


def _change_text(detail: Any) -> str:
    parameters = _detail(detail)
    parts = []
    for key, value in parameters.items():
        if key.endswith("loss") and isinstance(value, int | float):
            parts.append(f"{key} {value * 100:g}%")
        elif key.endswith("kbps"):
            parts.append(f"{key.removesuffix('_kbps')} {'∞' if value is None else f'{value:g}'} kbit/s")
        elif key.endswith("_ms") and isinstance(value, int | float):
            parts.append(f"{key.removesuffix('_ms')} {value:g} ms")
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts)
