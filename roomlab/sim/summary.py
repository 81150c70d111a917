"""`summary.json` of a simulation run: per subscriber and track, what arrived and how late; per
media stream, the loss of each hop and of both. Units are in the names (`_ms`, `_fraction`).

Everything here is computed with `roomlab.frames` from the run's frames, so a user can redo any
number from the Parquet files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..telemetry import analysis, streams


def _number(value: Any, digits: int) -> float | None:
    """JSON has no NaN: unknown is null."""
    if value is None or pd.isna(value):
        return None
    number = float(value)
    return round(number, digits) if math.isfinite(number) else None


def _fraction(lost: float, expected: float) -> float | None:
    return _number(min(max(lost / expected, 0.0), 1.0), 4) if expected > 0 else None


def data_summary(messages: pd.DataFrame) -> list[dict[str, Any]]:
    """Per subscriber and data track (all its publishers together): messages sent, received and
    lost (from the publishers' sequence numbers), `loss_fraction`, and one-way latency."""
    if messages.empty:
        return []
    per_publisher = analysis.loss(messages)
    totals = per_publisher.groupby(["subscriber", "track"], observed=True)[["sent", "received", "lost"]].sum()
    latency = analysis.latency(messages, by=("subscriber", "track"), percentiles=(50, 90, 99)).set_index(
        ["subscriber", "track"]
    )
    rows = []
    for (subscriber, track), counts in totals.iterrows():
        late = latency.loc[(subscriber, track)]
        rows.append(
            {
                "subscriber": str(subscriber),
                "track": str(track),
                "messages_sent": int(counts["sent"]),
                "messages_received": int(counts["received"]),
                "messages_lost": int(counts["lost"]),
                "loss_fraction": _fraction(counts["lost"], counts["sent"]),
                "latency_mean_ms": _number(late["mean"], 2),
                "latency_p50_ms": _number(late["p50"], 2),
                "latency_p90_ms": _number(late["p90"], 2),
                "latency_p99_ms": _number(late["p99"], 2),
                "latency_max_ms": _number(late["max"], 2),
            }
        )
    return rows


def media_summary(rtc_stats: pd.DataFrame, events: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """`uplink`: per published audio/video track, packets the server expected and the fraction
    lost on the way to it. `streams`: per subscription (every one that should exist, from
    `events`), its delivery status and the fraction lost on the uplink (over the same intervals),
    on the subscriber's downlink, and end to end (both combined)."""
    hops = analysis.media_loss(rtc_stats, freq="1s")
    uplink = hops[hops["hop"] == "uplink"]
    downlink = hops[hops["hop"] == "downlink"]
    published = streams.tracks(events) if not events.empty else pd.DataFrame(columns=streams.TRACK_COLUMNS)
    up_rows = []
    for row in published[published["kind"].isin(["audio", "video"])].itertuples(index=False):
        intervals = uplink[uplink["track"] == row.track]
        expected, lost = float(intervals["packets_expected"].sum()), float(intervals["packets_lost"].sum())
        up_rows.append(
            {
                "publisher": row.publisher,
                "track": row.track,
                "track_name": row.track_name,
                "kind": row.kind,
                "packets_expected": _number(expected, 1),
                "loss_fraction": _fraction(lost, expected),
            }
        )
    stream_rows = []
    delivery = streams.media_delivery(rtc_stats, events) if not events.empty else pd.DataFrame()
    for row in delivery.itertuples(index=False):
        down = downlink[(downlink["track"] == row.track) & (downlink["subscriber"] == row.subscriber)]
        up = uplink[(uplink["track"] == row.track) & uplink["time"].isin(down["time"])]
        up_fraction = _fraction(float(up["packets_lost"].sum()), float(up["packets_expected"].sum()))
        down_fraction = _fraction(float(down["packets_lost"].sum()), float(down["packets_expected"].sum()))
        both = None
        if up_fraction is not None and down_fraction is not None:
            both = _number(1 - (1 - up_fraction) * (1 - down_fraction), 4)
        stream_rows.append(
            {
                "publisher": row.publisher,
                "track_name": row.track_name,
                "kind": row.kind,
                "subscriber": row.subscriber,
                "track": row.track,
                "status": row.status,
                "packets_received": None if pd.isna(row.packets_received) else int(row.packets_received),
                "uplink_loss_fraction": up_fraction,
                "downlink_loss_fraction": down_fraction,
                "end_to_end_loss_fraction": both,
            }
        )
    return {"uplink": up_rows, "streams": stream_rows}


def run_summary(
    frames: Mapping[str, pd.DataFrame],
    room: str,
    duration: float,
    states: Mapping[str, str],
    lateness: Mapping[str, float],
    interrupted: bool = False,
) -> dict[str, Any]:
    """The whole `summary.json` of a run."""
    empty = pd.DataFrame()
    return {
        "room": room,
        "duration": duration,
        "interrupted": interrupted,
        "bots": dict(states),
        "timer_lateness_ms": {k: round(v * 1000, 2) for k, v in lateness.items()},
        "data": data_summary(frames.get("messages", empty)),
        "media": media_summary(frames.get("rtc_stats", empty), frames.get("events", empty)),
    }
