"""One subscriber's bandwidth allocation, read back from the `allocations` table (SPEC §11): the
decisions as a grid of time by track (what `plots.allocations` stacks), and each track's periods
at one layer or switched off, with their reasons (what the plot's lanes show and a user asks: how
long was this track off, and why).

A decision is one pass of the allocator for one subscriber: one row per subscribed video track,
all with the same `time`. It holds until the subscriber's next decision."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: Seconds the last decision is taken to hold when the table says no more (the allocator decides
#: about once a second).
LAST_DECISION_S = 1.0
#: Priorities from the highest: the order tracks are listed and stacked in.
PRIORITY_ORDER = ("high", "standard", "low")
#: What makes a new period of a track: its layer, being switched off and why, its priority.
PERIOD_KEYS = ("layer", "switched_off", "off_reason", "priority")
PERIOD_COLUMNS = (
    "subscriber",
    "publisher",
    "track",
    "track_name",
    "priority",
    "layer",
    "switched_off",
    "reason",
    "start",
    "end",
    "seconds",
    "allocated_bps",
    "mode",
)


def subscribers(allocations: pd.DataFrame) -> list[str]:
    """The subscribers with decisions in the table, sorted."""
    if allocations.empty:
        return []
    return sorted(allocations["subscriber"].dropna().astype(str).unique())


def decisions(allocations: pd.DataFrame, subscriber: str | None = None) -> pd.DataFrame:
    """The rows of one subscriber (None: the only one in the table), in time order, with plain
    string columns. An unknown subscriber, or None when there are several, is a ValueError naming
    those in the table."""
    known = subscribers(allocations)
    if subscriber is None:
        if len(known) > 1:
            raise ValueError(f"the table has several subscribers; choose one with subscriber=: {', '.join(known)}")
        subscriber = known[0] if known else None
    elif subscriber not in known:
        raise ValueError(f"no allocations for subscriber {subscriber!r}; subscribers: {', '.join(known) or 'none'}")
    if subscriber is None:
        return allocations.iloc[0:0].copy()
    rows = allocations[allocations["subscriber"].astype(str) == subscriber].sort_values("time", kind="stable")
    rows = rows.reset_index(drop=True)
    for column in ("subscriber", "publisher", "track", "track_name", "priority", "layer", "reason", "mode"):
        if column in rows.columns:
            rows[column] = rows[column].astype("object").where(rows[column].notna(), None)
    return rows


def decision_ends(rows: pd.DataFrame) -> pd.Series:
    """When each row's decision stops holding: the subscriber's next decision (the last one holds
    for the median step between decisions, at most `LAST_DECISION_S`)."""
    import numpy as np
    import pandas as pd

    times = np.sort(rows["time"].unique())
    if not len(times):
        return pd.Series(dtype="datetime64[ns, UTC]")
    steps = np.diff(times)
    last = pd.Timedelta(seconds=LAST_DECISION_S)
    if len(steps):
        last = min(last, pd.Timedelta(np.median(steps)))
    following = pd.Series(list(times[1:]) + [times[-1] + last], index=times)
    return pd.Series(following.reindex(rows["time"]).to_numpy(), index=rows.index)


def periods(allocations: pd.DataFrame, subscriber: str | None = None) -> pd.DataFrame:
    """Per track of `subscriber`, each period at one layer (or switched off) and one priority, in
    time order: `start`, `end` (the decision after its last), `seconds`, `layer` (None when off),
    `switched_off`, `reason` (why it was switched off; on, the reason of the period's first
    decision), `allocated_bps` (the mean over its decisions), `mode` (at its start). A track that
    was not subscribed at a decision starts a new period when it is again."""
    import pandas as pd

    rows = decisions(allocations, subscriber)
    if rows.empty:
        return pd.DataFrame({name: pd.Series(dtype="object") for name in PERIOD_COLUMNS})
    rows["end"] = decision_ends(rows)
    rows["off_reason"] = rows["reason"].where(rows["switched_off"].fillna(False).astype(bool), None)
    order = {time: number for number, time in enumerate(sorted(rows["time"].unique()))}
    rows["decision"] = rows["time"].map(order)
    found = []
    for _track, own in rows.groupby("track", sort=False):
        own = own.sort_values("time")
        state = own[list(PERIOD_KEYS)].map(str)
        new = state.ne(state.shift()).any(axis=1) | (own["decision"].diff() != 1)
        for _, period in own.groupby(new.cumsum(), sort=False):
            first = period.iloc[0]
            found.append(
                {
                    "subscriber": first["subscriber"],
                    "publisher": first["publisher"],
                    "track": first["track"],
                    "track_name": first.get("track_name"),
                    "priority": first["priority"],
                    "layer": first["layer"],
                    "switched_off": bool(first["switched_off"]),
                    "reason": first["reason"],
                    "start": first["time"],
                    "end": period["end"].iloc[-1],
                    "allocated_bps": float(period["allocated_bps"].mean()),
                    "mode": first["mode"],
                }
            )
    result = pd.DataFrame(found).sort_values(["start", "track"], ignore_index=True)
    result["seconds"] = (result["end"] - result["start"]).dt.total_seconds()
    return result[list(PERIOD_COLUMNS)]


def latest_per_track(rows: pd.DataFrame) -> pd.DataFrame:
    """Each track's last row of `rows` (one subscriber's decisions), highest priority first, then by
    publisher: the order in which the plot stacks them and the view lists them."""
    latest = rows.drop_duplicates("track", keep="last")
    rank = latest["priority"].map({p: i for i, p in enumerate(PRIORITY_ORDER)}).fillna(len(PRIORITY_ORDER))
    return latest.assign(rank=rank).sort_values(["rank", "publisher", "track"], kind="stable").drop(columns="rank")


def stacked(rows: pd.DataFrame, tracks: list[str]) -> pd.DataFrame:
    """Bit/s allocated at each decision (rows, by time) per track (columns, in `tracks` order); 0
    where a track was not subscribed at that decision."""
    table = rows.pivot_table(index="time", columns="track", values="allocated_bps", aggfunc="last")
    return table.reindex(columns=tracks).fillna(0.0)


#: The event a bandwidth profile set for a participant is recorded as (`detail`: the whole profile, JSON).
PROFILE_EVENT = "bandwidth-profile-changed"


def profiles(events: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Each identity's Bandwidth Profile as last recorded in `events` (Twilio's options in snake
    case, as `connect(bandwidth_profile=...)` takes them); identities without one are left out."""
    import json

    if events.empty:
        return {}
    rows = events[events["event"] == PROFILE_EVENT].sort_values("time", kind="stable")
    found: dict[str, dict[str, Any]] = {}
    for identity, detail in rows[["identity", "detail"]].itertuples(index=False):
        try:
            found[str(identity)] = json.loads(detail)
        except (TypeError, ValueError):
            continue
    return found


def label(publisher: Any, track_name: Any) -> str:
    """'cam-1's camera' (or the publisher alone when the track's name is unknown)."""
    return f"{publisher}'s {track_name}" if isinstance(track_name, str) and track_name else str(publisher)
