"""The streams a room should have carried, from its `events` table: every published track, every
subscription, and whether each subscribed audio or video track delivered any media.

A report that draws only the streams it has rows for hides the one that never arrived; these
functions list what was expected, so that a missing stream is shown as missing.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

TRACK_COLUMNS = ["publisher", "track", "track_name", "kind"]
#: A subscription shorter than this that received nothing is "too brief" to call its media missing.
MISSING_AFTER_S = 3.0
#: What `media_delivery` says of each subscribed media stream.
DELIVERY_STATUSES = ("delivered", "missing upstream", "missing downstream", "not recorded", "too brief")


def _described(events: pd.DataFrame, names: tuple[str, ...]) -> pd.DataFrame:
    """Rows of `events` named `names`, with the track's kind, name and publisher read from `detail`."""
    rows = events[events["event"].isin(names)]
    details = [_detail(value) for value in rows["detail"]] if "detail" in rows.columns else [{}] * len(rows)
    return pd.DataFrame(
        {
            "time": rows["time"].array,
            "event": rows["event"].astype("str").to_numpy(),
            "identity": rows["identity"].astype("str").where(rows["identity"].notna()).to_numpy(),
            "track": rows["track"].astype("str").to_numpy(),
            "kind": [d.get("kind") for d in details],
            "track_name": [d.get("name") for d in details],
            "publisher": [d.get("publisher") for d in details],
        }
    )


def _detail(value: Any) -> dict[str, Any]:
    if not isinstance(value, str) or not value.startswith("{"):
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _either(value: Any, fallback: Any) -> Any:
    return fallback if value is None or (isinstance(value, float) and value != value) else value


def _empty(columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({name: pd.Series(dtype="str") for name in columns})
    for name in ("added", "removed", "subscribed", "unsubscribed"):
        if name in frame.columns:
            frame[name] = pd.Series(dtype="datetime64[ns, UTC]")
    return frame


def tracks(events: pd.DataFrame) -> pd.DataFrame:
    """One row per published track: `publisher`, `track` (SID), `track_name`, `kind`, `added`,
    `removed` (NaT while published). Kind and name come from the events' `detail` (None in runs
    recorded before roomlab wrote them there)."""
    columns = [*TRACK_COLUMNS, "added", "removed"]
    if events.empty:
        return _empty(columns)
    rows = _described(events, ("track-added", "track-removed"))
    added = rows[rows["event"] == "track-added"].drop_duplicates("track", keep="first")
    removed = rows[rows["event"] == "track-removed"].drop_duplicates("track", keep="last").set_index("track")["time"]
    result = pd.DataFrame(
        {
            "publisher": added["publisher"].fillna(added["identity"]).to_numpy(),
            "track": added["track"].to_numpy(),
            "track_name": added["track_name"].to_numpy(),
            "kind": added["kind"].to_numpy(),
            "added": added["time"].array,
        }
    )
    result["removed"] = pd.to_datetime([removed.get(track, pd.NaT) for track in result["track"]], utc=True)
    return result.astype({name: "str" for name in TRACK_COLUMNS}).reset_index(drop=True)


def subscriptions(events: pd.DataFrame) -> pd.DataFrame:
    """One row per subscription of a participant to a track: `publisher`, `track`, `track_name`,
    `kind`, `subscriber`, `subscribed`, `unsubscribed` (NaT when it lasted to the end of the
    events): the first of its `track-unsubscribed`, the track's `track-removed` and the
    subscriber's `participant-disconnected`. A track subscribed again is a second row."""
    columns = [*TRACK_COLUMNS, "subscriber", "subscribed", "unsubscribed"]
    if events.empty:
        return _empty(columns)
    published = tracks(events).set_index("track")
    # a subscription also ends when its track is removed or its subscriber leaves
    rows = _described(events, ("track-subscribed", "track-unsubscribed", "track-removed", "participant-disconnected"))
    open_since: dict[tuple[str, str], int] = {}
    found: list[dict[str, Any]] = []
    for row in rows.itertuples(index=False):
        key = (row.identity, row.track)
        if row.event in ("track-removed", "participant-disconnected"):
            position = 1 if row.event == "track-removed" else 0
            value = row.track if row.event == "track-removed" else row.identity
            for k in [k for k in open_since if k[position] == value]:
                found[open_since.pop(k)]["unsubscribed"] = row.time
        elif row.event == "track-subscribed":
            if key in open_since:
                continue
            known = published.loc[row.track] if row.track in published.index else {}
            open_since[key] = len(found)
            found.append(
                {
                    "publisher": _either(row.publisher, known.get("publisher")),
                    "track": row.track,
                    "track_name": _either(row.track_name, known.get("track_name")),
                    "kind": _either(row.kind, known.get("kind")),
                    "subscriber": row.identity,
                    "subscribed": row.time,
                    "unsubscribed": pd.NaT,
                }
            )
        elif key in open_since:
            found[open_since.pop(key)]["unsubscribed"] = row.time
    if not found:
        return _empty(columns)
    result = pd.DataFrame(found, columns=columns)
    result["subscribed"] = pd.to_datetime(result["subscribed"], utc=True)
    result["unsubscribed"] = pd.to_datetime(result["unsubscribed"], utc=True)
    return result.astype({name: "str" for name in [*TRACK_COLUMNS, "subscriber"]})


def media_delivery(rtc_stats: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Every subscription to an audio or video track, and whether its media arrived.

    Columns: those of `subscriptions`, `packets_at_server` (packets the server received of the
    track, from its own `rtc_stats` rows), `packets_received` (packets the subscriber received,
    from the subscriber's own rows; NA when the subscriber recorded no `rtc_stats` at all), and
    `status`: `delivered`; `missing upstream` (the server received nothing from the publisher);
    `missing downstream` (the server had media, the subscriber got none); `not recorded` (no
    telemetry from that subscriber); `too brief` (subscribed under `MISSING_AFTER_S` seconds,
    nothing received).
    """
    wanted = subscriptions(events)
    if not rtc_stats.empty and wanted["kind"].isna().any():  # runs whose events do not say a track's kind
        kinds = rtc_stats.dropna(subset=["kind"]).drop_duplicates("track").set_index("track")["kind"].astype("str")
        wanted["kind"] = wanted["kind"].fillna(wanted["track"].map(kinds))
    wanted = wanted[wanted["kind"].isin(["audio", "video"])].reset_index(drop=True)
    columns = [*wanted.columns, "packets_at_server", "packets_received", "status"]
    if wanted.empty:
        result = _empty(columns)
        return result.astype({"packets_at_server": "Int64", "packets_received": "Int64"})
    stats = rtc_stats if not rtc_stats.empty else pd.DataFrame(columns=["source", "direction", "participant", "track"])
    at_server = _last_packets(stats[(stats["source"] == "server") & (stats["direction"] == "outbound")], ["track"])
    at_clients = stats[(stats["source"] != "server") & (stats["direction"] == "inbound")]
    received = _last_packets(at_clients, ["participant", "track"])
    recorded = set(stats.loc[stats["source"] != "server", "participant"].astype("str"))
    end = _end_of(events)
    server_packets = wanted["track"].map(at_server).astype("Int64")
    subscriber_packets = pd.Series(
        [received.get((s, t)) for s, t in zip(wanted["subscriber"], wanted["track"], strict=True)], dtype="Int64"
    )
    subscriber_packets = subscriber_packets.where(~wanted["subscriber"].isin(recorded) | subscriber_packets.notna(), 0)
    lasted = (wanted["unsubscribed"].fillna(end) - wanted["subscribed"]).dt.total_seconds()
    status = np.select(
        [
            subscriber_packets.fillna(0).to_numpy() > 0,
            ~wanted["subscriber"].isin(recorded).to_numpy(),
            lasted.to_numpy() < MISSING_AFTER_S,
            server_packets.fillna(0).to_numpy() == 0,
        ],
        ["delivered", "not recorded", "too brief", "missing upstream"],
        default="missing downstream",
    )
    result = wanted.assign(
        packets_at_server=server_packets.to_numpy(), packets_received=subscriber_packets.to_numpy(), status=status
    )
    result["status"] = result["status"].astype("str")
    return result[columns]


def _last_packets(rows: pd.DataFrame, keys: list[str]) -> dict[Any, int]:
    """The largest cumulative `packets` per stream (keys as a tuple, or the value for one key)."""
    if rows.empty:
        return {}
    known = rows.dropna(subset=["packets"])
    grouped = known.groupby([known[k].astype("str") for k in keys], observed=True)["packets"].max()
    return {key: int(value) for key, value in grouped.items()}


def _end_of(events: pd.DataFrame) -> pd.Timestamp:
    return events["time"].max() if len(events) else pd.Timestamp.now(tz="UTC")
