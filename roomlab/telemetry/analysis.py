"""The questions users ask of every run, as functions from frames to frames (they chain)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

MESSAGE_KEYS = ("publisher", "subscriber", "track")


def _groups(frame: pd.DataFrame, by: Sequence[str]) -> pd.core.groupby.DataFrameGroupBy:
    missing = [name for name in by if name not in frame.columns]
    if missing:
        raise ValueError(f"cannot group by {missing}: the frame has columns {list(frame.columns)}")
    return frame.groupby(list(by), observed=True, sort=True)


def loss(messages: pd.DataFrame, by: Sequence[str] = MESSAGE_KEYS) -> pd.DataFrame:
    """Per publisher, subscriber and track, from the publisher's sequence numbers (SPEC §6):

    `sent` (the span of sequence numbers seen, first to last), `received` (distinct numbers),
    `lost` (gaps), `duplicated` (arrivals of a number already seen), `reordered` (arrivals after
    a higher number), `loss_rate` (lost / sent). Messages lost after the last one received
    cannot be seen from the subscriber's side and are not counted.
    """
    rows = []
    columns = [*by, "sent", "received", "lost", "duplicated", "reordered", "loss_rate"]
    if messages.empty:
        return pd.DataFrame(columns=columns)
    for key, group in _groups(messages, by):
        seq = group.sort_values("time", kind="stable")["seq"].to_numpy(dtype=np.int64)
        distinct = np.unique(seq)
        sent = int(distinct[-1] - distinct[0] + 1)
        received = len(distinct)
        running_max = np.maximum.accumulate(seq)
        reordered = int(np.sum(seq[1:] < running_max[:-1]))
        rows.append(
            (
                *(key if isinstance(key, tuple) else (key,)),
                sent,
                received,
                sent - received,
                len(seq) - received,
                reordered,
                (sent - received) / sent,
            )
        )
    result = pd.DataFrame(rows, columns=columns)
    return result.astype(
        {
            "sent": "int64",
            "received": "int64",
            "lost": "int64",
            "duplicated": "int64",
            "reordered": "int64",
            "loss_rate": "float64",
        }
    )


def latency(
    messages: pd.DataFrame, by: Sequence[str] = MESSAGE_KEYS, percentiles: Sequence[float] = (50, 90, 99)
) -> pd.DataFrame:
    """One-way latency in ms per group: count, mean, the given percentiles (`p50`, ...), max."""
    columns = [*by, "count", "mean", *[f"p{p:g}" for p in percentiles], "max"]
    if messages.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, group in _groups(messages, by):
        values = group["latency_ms"].to_numpy(dtype=float)
        values = values[~np.isnan(values)]
        stats = np.percentile(values, percentiles).tolist() if len(values) else [np.nan] * len(percentiles)
        rows.append(
            (
                *(key if isinstance(key, tuple) else (key,)),
                len(values),
                values.mean() if len(values) else np.nan,
                *stats,
                values.max() if len(values) else np.nan,
            )
        )
    return pd.DataFrame(rows, columns=columns)


def bitrate(
    rtc_stats: pd.DataFrame, freq: str = "1s", by: Sequence[str] = ("participant", "track", "direction", "source")
) -> pd.DataFrame:
    """`bitrate_bps` per stream resampled on a regular grid of `freq` (mean per bin), tidy."""
    keys = [name for name in by if name in rtc_stats.columns]
    if rtc_stats.empty:
        return pd.DataFrame(columns=["time", *keys, "bitrate_bps"])
    parts = []
    for key, group in _groups(rtc_stats, keys):
        series = group.set_index("time")["bitrate_bps"].astype(float).resample(freq).mean()
        part = series.rename("bitrate_bps").reset_index()
        for name, value in zip(keys, key if isinstance(key, tuple) else (key,), strict=True):
            part[name] = value
        parts.append(part)
    result = pd.concat(parts, ignore_index=True)
    return result[["time", *keys, "bitrate_bps"]]
