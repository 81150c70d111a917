"""The questions users ask of every run, as functions from frames to frames (they chain)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

MESSAGE_KEYS = ("publisher", "subscriber", "track")


def _groups(frame: pd.DataFrame, by: Sequence[str]) -> pd.core.groupby.DataFrameGroupBy:
    missing = [name for name in by if name not in frame.columns]
    if missing:
        raise ValueError(f"cannot group by {missing}: the frame has columns {list(frame.columns)}")
    return frame.groupby(list(by), observed=True, sort=True, dropna=False)  # a missing key (no layer) is a group too


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
    messages: pd.DataFrame,
    by: Sequence[str] = MESSAGE_KEYS,
    percentiles: Sequence[float] = (50, 90, 99),
    freq: str | None = None,
) -> pd.DataFrame:
    """One-way latency in ms per group: count, mean, the given percentiles (`p50`, ...), max.

    With `freq` (e.g. "1s"), per group and per interval of that length instead (by the time the
    messages were received): a `time` column first, the start of each interval that has messages.
    """
    names = [f"p{p:g}" for p in percentiles]
    columns = [*by, "count", "mean", *names, "max"]
    if freq is not None:
        step = pd.Timedelta(freq)
        if step <= pd.Timedelta(0):
            raise ValueError(f"freq must be a positive interval such as '1s', got {freq!r}")
        columns = ["time", *columns]
    if messages.empty:
        return pd.DataFrame(columns=columns)
    keys: list[Any] = list(by)
    if freq is not None:
        _groups(messages, by)  # names the missing column, if any
        messages = messages.assign(_bin=messages["time"].dt.floor(freq))
        keys = ["_bin", *by]
    rows = []
    for key, group in _groups(messages, keys):
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
    rtc_stats: pd.DataFrame,
    freq: str = "1s",
    by: Sequence[str] = ("participant", "track", "direction", "layer", "source"),
) -> pd.DataFrame:
    """`bitrate_bps` per stream resampled on a regular grid of `freq` (mean per bin), tidy.

    A received stream's bitrate comes from the sender's RTCP reports; a sample taken before a new
    report arrived has none of its own (NaN), and the next report's bitrate is the mean over an
    interval that covers it, so such a sample takes that value. Samples after a stream's last
    report stay NaN. The stream's `kind`, `track_name` and `publisher` ride along when present.
    A layered track's publisher sends one stream per `layer`; a subscriber's stream is split where
    its layer changes.
    """
    keys = [name for name in by if name in rtc_stats.columns]
    extra = [name for name in ("kind", "track_name", "publisher") if name in rtc_stats.columns and name not in keys]
    if rtc_stats.empty:
        return pd.DataFrame(columns=["time", *keys, *extra, "bitrate_bps"])
    parts = []
    for key, group in _groups(rtc_stats, keys):
        covered = group.sort_values("time", kind="stable").set_index("time")["bitrate_bps"].astype(float).bfill()
        series = covered.resample(freq).mean()
        part = series.rename("bitrate_bps").reset_index()
        for name, value in zip(keys, key if isinstance(key, tuple) else (key,), strict=True):
            part[name] = value
        for name in extra:
            known = group[name].dropna()
            part[name] = known.iloc[0] if len(known) else None
        parts.append(part)
    result = pd.concat(parts, ignore_index=True)
    return result[["time", *keys, *extra, "bitrate_bps"]]


#: The two hops of a forwarded media stream, each measured from its receiver's side.
HOPS = ("uplink", "downlink")
MEDIA_LOSS_COLUMNS = [
    "time",
    "hop",
    "publisher",
    "subscriber",
    "track",
    "track_name",
    "kind",
    "packets_expected",
    "packets_lost",
    "loss_fraction",
]


def media_loss(rtc_stats: pd.DataFrame, freq: str = "1s", origin: Any = None) -> pd.DataFrame:
    """Media packets lost per interval of `freq` and per hop, one row per stream and interval.

    The server forwards each publisher's media with sequence numbers of its own for every
    subscriber, so a loss is seen only by the receiver of the hop where it happened:

    - `uplink` (publisher to server): the server's rows of the publisher's track (`source`
      server, `direction` outbound: what the server received); `subscriber` is empty.
    - `downlink` (server to subscriber): the subscriber's own `inbound` rows (client or chrome).

    From the cumulative `packets` (received) and `packets_lost` of consecutive samples of a
    stream: `packets_expected` (received + lost) and `packets_lost` in each interval,
    `loss_fraction` their ratio (clipped to [0, 1]: a late packet counted lost earlier makes a
    small negative count; NaN when nothing was expected). What a sample measured since the
    previous one counts in the interval where it was measured; a stretch between two samples
    that spans an interval in which no sample was taken is shared with it in proportion to time
    (so there are no gaps while a stream is sampled, and counts can be fractional). Intervals
    are (start, start + freq], `time` is their start, aligned on `origin` (default: the epoch,
    so that all streams and runs share them).
    """
    if rtc_stats.empty:
        return _typed_loss(pd.DataFrame(columns=MEDIA_LOSS_COLUMNS))
    step = pd.Timedelta(freq).value
    if step <= 0:
        raise ValueError(f"freq must be a positive interval such as '1s', got {freq!r}")
    offset = 0 if origin is None else int(pd.Timestamp(origin).value)
    source, direction = rtc_stats["source"].astype("str"), rtc_stats["direction"].astype("str")
    hops = {
        "uplink": rtc_stats[(source == "server") & (direction == "outbound")],
        "downlink": rtc_stats[(source != "server") & (direction == "inbound")],
    }
    parts = []
    for hop, rows in hops.items():
        rows = rows.dropna(subset=["packets", "packets_lost"])
        if rows.empty:
            continue
        # a layered track's publisher sends one stream per layer (a subscriber's one stream changes layer)
        keys = ["participant", "track", *(["layer"] if hop == "uplink" and "layer" in rows.columns else [])]
        for key, stream in rows.groupby(keys, observed=True, sort=True, dropna=False):
            participant, track = key[0], key[1]
            binned = _interval_counts(stream.sort_values("time", kind="stable"), step, offset)
            if binned is None:
                continue
            publisher = _first(stream, "publisher")
            if hop == "uplink":
                binned["publisher"], binned["subscriber"] = publisher or str(participant), None
            else:
                binned["publisher"], binned["subscriber"] = publisher, str(participant)
            binned["hop"], binned["track"] = hop, str(track)
            binned["track_name"], binned["kind"] = _first(stream, "track_name"), _first(stream, "kind")
            parts.append(binned)
    if not parts:
        return _typed_loss(pd.DataFrame(columns=MEDIA_LOSS_COLUMNS))
    return _typed_loss(_sum_layers(pd.concat(parts, ignore_index=True)[MEDIA_LOSS_COLUMNS]))


def _sum_layers(loss: pd.DataFrame) -> pd.DataFrame:
    """One uplink row per track and interval: the layers of a layered track summed."""
    keys = ["time", "hop", "publisher", "subscriber", "track", "track_name", "kind"]
    if not loss.duplicated(keys).any():
        return loss
    summed = loss.groupby(keys, sort=False, dropna=False, as_index=False)[["packets_expected", "packets_lost"]].sum()
    expected = summed["packets_expected"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.clip(summed["packets_lost"].to_numpy(dtype=float) / expected, 0.0, 1.0)
    summed["loss_fraction"] = np.where(expected > 0, ratio, np.nan)
    return summed[MEDIA_LOSS_COLUMNS]


def _first(stream: pd.DataFrame, column: str) -> str | None:
    if column not in stream.columns:
        return None
    known = stream[column].dropna()
    return str(known.iloc[0]) if len(known) else None


def _interval_counts(stream: pd.DataFrame, step: int, offset: int) -> pd.DataFrame | None:
    """Expected and lost packets of one stream per interval (offset + k*step, offset + (k+1)*step]."""
    times = stream["time"].array.asi8 - offset
    received = stream["packets"].to_numpy(dtype=float)
    lost = stream["packets_lost"].to_numpy(dtype=float)
    if len(times) < 2:
        return None
    bins = -(-times // step) - 1  # right-closed: a sample on an edge ends the interval before it
    first_bin, last_bin = bins[0] + 1 if bins[1] > bins[0] else bins[0], bins[-1]
    expected = np.zeros(last_bin - first_bin + 1)
    missing = np.zeros_like(expected)
    new_expected, new_lost = np.diff(received + lost), np.diff(lost)
    for number in range(len(new_expected)):
        begin, end = bins[number], bins[number + 1]
        if end <= begin + 1:  # the common case: what the sample measured counts where it was taken
            expected[end - first_bin] += new_expected[number]
            missing[end - first_bin] += new_lost[number]
            continue
        # the stretch crosses intervals with no sample of their own: shared in proportion to time
        covered = np.arange(begin + 1, end + 1)
        starts = np.maximum(covered * step, (begin + 1) * step)
        ends = np.minimum((covered + 1) * step, times[number + 1])
        weights = (ends - starts) / (times[number + 1] - (begin + 1) * step)
        expected[covered - first_bin] += new_expected[number] * weights
        missing[covered - first_bin] += new_lost[number] * weights
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(expected > 0, np.clip(missing / expected, 0.0, 1.0), np.nan)
    return pd.DataFrame(
        {
            "time": pd.to_datetime(np.arange(first_bin, last_bin + 1, dtype=np.int64) * step + offset, utc=True),
            "packets_expected": expected,
            "packets_lost": missing,
            "loss_fraction": fraction,
        }
    )


def _typed_loss(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype(
        {
            "hop": "str",
            "publisher": "str",
            "subscriber": "str",
            "track": "str",
            "track_name": "str",
            "kind": "str",
            "packets_expected": "float64",
            "packets_lost": "float64",
            "loss_fraction": "float64",
        }
    )
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame.reset_index(drop=True)


def end_to_end_loss(media_loss: pd.DataFrame) -> pd.DataFrame:
    """Each subscriber's loss of each publisher's media per interval, both hops combined.

    Takes the frame of `media_loss()` and pairs every downlink interval with the uplink interval
    of the same track and time: a packet reaches the subscriber only if it crosses both hops, so
    `loss_fraction` = 1 - (1 - `uplink_loss`) x (1 - `downlink_loss`). NaN where either hop has
    no measure for that interval. Columns: `time`, `publisher`, `subscriber`, `track`,
    `track_name`, `kind`, `uplink_loss`, `downlink_loss`, `loss_fraction`, and
    `packets_expected`: the fewer of the two hops' expected packets in that interval (a fraction
    of 3 packets says less than one of 50: silence sends few).
    """
    missing = {"time", "hop", "track", "loss_fraction"} - set(media_loss.columns)
    if missing:
        raise ValueError(f"end_to_end_loss takes the frame of media_loss(); this one lacks {sorted(missing)}")
    keys = ["time", "publisher", "subscriber", "track", "track_name", "kind"]
    hop = media_loss["hop"].astype("str")
    down = media_loss[hop == "downlink"][[*keys, "loss_fraction", "packets_expected"]]
    down = down.rename(columns={"loss_fraction": "downlink_loss", "packets_expected": "down_expected"})
    up = media_loss[hop == "uplink"][["time", "track", "publisher", "track_name", "kind", "loss_fraction"]]
    up = up.assign(up_expected=media_loss.loc[hop == "uplink", "packets_expected"])
    up = up.rename(columns={"loss_fraction": "uplink_loss", "publisher": "up_publisher"})
    up = up.rename(columns={"track_name": "up_track_name", "kind": "up_kind"})
    combined = down.merge(up, on=["time", "track"], how="left")
    # the server's rows name the track as well as the subscriber's do; either may be all there is
    for column in ("publisher", "track_name", "kind"):
        combined[column] = combined[column].where(combined[column].notna(), combined[f"up_{column}"])
    combined["loss_fraction"] = 1.0 - (1.0 - combined["uplink_loss"]) * (1.0 - combined["downlink_loss"])
    combined["packets_expected"] = combined[["up_expected", "down_expected"]].min(axis=1, skipna=False)
    columns = [*keys, "uplink_loss", "downlink_loss", "loss_fraction", "packets_expected"]
    return combined[columns].sort_values(["publisher", "track", "subscriber", "time"], ignore_index=True)
