"""Chrome's call-statistics dumps as `rtc_stats` frames, so a real call and a simulated one share the analysis.

Two formats, both written by chrome://webrtc-internals (and gzipped by it unless told otherwise;
both readers accept plain or gzip files):

- the webrtc-internals dump (`read_webrtc_internals`): one JSON object; per peer connection,
  `stats` holds one series per `"<statsId>-<metric>"` with `startTime`, `endTime`, `statsType`
  and `values`, a JSON array *encoded as a string*. Series keep at most 1000 points each. Since
  Chrome M117 every stats object also has a `"<statsId>-timestamp"` series, which gives each point
  its time; older dumps lack it, and their points are taken to be one second apart, ending at
  `endTime` (webrtc-internals polls once a second by default).
- the RTCStats dump, format v3 (`read_rtcstats`; github.com/rtcstats/rtcstats): the line
  `RTCStatsDump`, a JSON metadata object with `fileFormat`, then one JSON array per event,
  `[method, peerConnectionId, value, ...extra, timeDeltaMs]`, where the deltas add up to epoch
  milliseconds. `getStats` events carry whole reports (webrtc-internals) or, from the rtcstats-js
  client, reports compressed by method name, property name, stats type and per-object deltas;
  the format requires importers to undo all of them, and `read_rtcstats` does.

One row per sample per RTP stream (`inbound-rtp` -> "inbound", `outbound-rtp` -> "outbound"):

- time: the stream's own stats `timestamp`.
- participant: the peer connection id (`"<renderer>-<local id>"`, e.g. `"8-1"`), or a name given
  with `participant=`.
- track: the `trackIdentifier` of the media track (inbound: its own; outbound: that of its
  `media-source`), so a sender's and a receiver's rows of one track share the name; else the
  `mid`, else the SSRC.
- track_name, publisher: None (a dump does not say which room participant published a track).
- bitrate_bps: 8 x the change of `bytesReceived`/`bytesSent` over the change of `timestamp`
  since the stream's previous sample (NaN on the first).
- packets: `packetsReceived`/`packetsSent`. packets_lost: inbound `packetsLost`; outbound the
  `packetsLost` of the matching `remote-inbound-rtp` (what the far end reported over RTCP).
- fraction_lost: outbound the remote-inbound `fractionLost`; inbound, lost / (lost + received)
  over the packets since the previous sample (NaN on the first sample and when none arrived).
- jitter_ms: inbound `jitter`, outbound the remote-inbound `jitter` (the far end's), in ms.
- rtt_ms: the remote-inbound `roundTripTime`, else the `currentRoundTripTime` of the transport's
  selected candidate pair, in ms.
- frames: video only, `framesDecoded` (inbound) or `framesEncoded` (outbound).
- layer: the simulcast `rid`, if any. source: "chrome".

Related stats (remote-inbound, media-source, transport, candidate pair) are taken as of the
stream's sample time: the latest sample of that object not later than it, since a
remote-inbound-rtp carries the time its RTCP report arrived, not the time of the poll.
"""

from __future__ import annotations

import bisect
import gzip
import json
import math
import zlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from os import PathLike
from typing import Any

import pandas as pd

from .recorder import Table

SOURCE = "chrome"
DIRECTIONS = {"inbound-rtp": "inbound", "outbound-rtp": "outbound"}
RTCSTATS_MAGIC = "RTCStatsDump"
RTCSTATS_FORMAT = 3
POLL_INTERVAL_MS = 1000.0  # webrtc-internals' default; times of dumps without -timestamp series assume it

# RTCStats dump compression tables (rtcstats-shared compression.js): the keys this module reads.
# Keys not listed stay compressed, which is harmless since nothing here reads them.
COMPRESSED_METHODS = {"g": "getStats", 1: "getStats", "1": "getStats"}
COMPRESSED_TYPES = {
    1: "inbound-rtp",
    2: "outbound-rtp",
    3: "remote-inbound-rtp",
    4: "remote-outbound-rtp",
    5: "transport",
    6: "candidate-pair",
    7: "local-candidate",
    8: "remote-candidate",
    9: "data-channel",
    10: "peer-connection",
    11: "certificate",
    12: "media-source",
    13: "media-playout",
    14: "codec",
}
COMPRESSED_PROPERTIES = {
    "t": "timestamp",
    "5": "transportId",
    "10": "ssrc",
    "11": "kind",
    "14": "packetsReceived",
    "15": "packetsLost",
    "16": "jitter",
    "17": "trackIdentifier",
    "18": "mid",
    "19": "remoteId",
    "20": "framesDecoded",
    "41": "bytesReceived",
    "74": "localId",
    "75": "roundTripTime",
    "77": "fractionLost",
    "79": "packetsSent",
    "80": "bytesSent",
    "81": "mediaSourceId",
    "82": "rid",
    "91": "framesEncoded",
    "118": "state",
    "125": "selectedCandidatePairId",
    "150": "nominated",
    "152": "currentRoundTripTime",
}

StatsPath = str | PathLike[str]
Participant = str | Mapping[str, str] | None
# One stats object over time: (timestamp ms, the object's fields) in increasing time.
History = list[tuple[float, dict[str, Any]]]


def read_webrtc_internals(path: StatsPath, participant: Participant = None) -> pd.DataFrame:
    """A webrtc-internals dump (JSON, plain or gzip) as an `rtc_stats` frame, one row per RTP stream sample.

    `participant` names the local end of every peer connection (a string), or of each one (a
    mapping from peer connection id, e.g. `{"8-1": "alice"}`); by default the id itself.
    Raises ValueError naming the file when it is missing, unreadable or not such a dump.
    """
    text = _read_text(path)
    if text.startswith(RTCSTATS_MAGIC):
        raise ValueError(f"{path}: this is an RTCStats dump, not a webrtc-internals dump; use read_rtcstats")
    try:
        dump = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a webrtc-internals dump: invalid JSON ({err})") from None
    if not isinstance(dump, dict) or not isinstance(dump.get("PeerConnections"), dict):
        raise ValueError(f"{path}: not a webrtc-internals dump: no 'PeerConnections' object at the top level")
    connections: dict[str, dict[str, History]] = {}
    for pc_id, record in dump["PeerConnections"].items():
        stats = record.get("stats", {}) if isinstance(record, dict) else None
        if not isinstance(stats, dict):
            raise ValueError(f"{path}: peer connection {pc_id!r} has no 'stats' object")
        connections[pc_id] = _internals_histories(stats, f"{path}: peer connection {pc_id!r}")
    return _frame(connections, participant)


def read_rtcstats(path: StatsPath, participant: Participant = None) -> pd.DataFrame:
    """An RTCStats dump (format v3, JSON lines, plain or gzip) as an `rtc_stats` frame, one row per RTP stream sample.

    `participant` as for `read_webrtc_internals`. Compressed getStats events (rtcstats-js) are
    decompressed. Raises ValueError naming the file (and line) when it is missing, unreadable or
    not such a dump.
    """
    lines = _read_text(path).split("\n")
    if lines[0].rstrip("\r") != RTCSTATS_MAGIC:
        hint = "; it looks like a webrtc-internals dump, use read_webrtc_internals" if lines[0][:1] == "{" else ""
        raise ValueError(f"{path}: not an RTCStats dump: the first line is not {RTCSTATS_MAGIC!r}{hint}")
    metadata = _json_line(lines, 1, path)
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: line 2: the RTCStats metadata must be a JSON object")
    if metadata.get("fileFormat") != RTCSTATS_FORMAT:
        found = metadata.get("fileFormat")
        raise ValueError(f"{path}: RTCStats fileFormat {found!r} is not supported (only {RTCSTATS_FORMAT})")
    connections: dict[str, dict[str, History]] = {}
    reports: dict[str, dict[str, Any]] = {}
    time_ms = 0.0
    for index in range(2, len(lines)):
        if not lines[index].strip():
            continue
        event = _json_line(lines, index, path)
        if not isinstance(event, list):
            continue  # the format allows other lines; rtcstats' own importer skips them too
        if len(event) < 4 or not _is_number(event[-1]):
            raise ValueError(f"{path}: line {index + 1}: expected [method, peerConnectionId, value, ..., timeDeltaMs]")
        time_ms += float(event[-1])
        method, pc_id, value = event[0], event[1], event[2]
        if not isinstance(method, str | int) or COMPRESSED_METHODS.get(method, method) != "getStats":
            continue
        if not isinstance(pc_id, str):
            raise ValueError(f"{path}: line {index + 1}: getStats needs a peer connection id string")
        if not isinstance(value, dict):
            raise ValueError(f"{path}: line {index + 1}: getStats value must be an object of stats by id")
        report = _decompress_report(reports.get(pc_id, {}), value)
        reports[pc_id] = report
        _add_report(connections.setdefault(pc_id, {}), report, time_ms)
    return _frame(connections, participant)


def _read_text(path: StatsPath) -> str:
    """The file's text, gunzipped when it is gzip (both webrtc-internals downloads are, by default)."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as err:
        raise ValueError(f"{path}: cannot read the file: {err.strerror or err}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: gzip data that cannot be decompressed: {err}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file (invalid UTF-8 at byte {err.start})") from None


def _json_line(lines: list[str], index: int, path: StatsPath) -> Any:
    if index >= len(lines):
        raise ValueError(f"{path}: line {index + 1} is missing")
    try:
        return json.loads(lines[index])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {index + 1}: invalid JSON ({err})") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _internals_histories(stats: Mapping[str, Any], where: str) -> dict[str, History]:
    """Rebuild each stats object's samples from its per-metric series."""
    series_by_id: dict[str, dict[str, Any]] = {}
    for key, series in stats.items():
        if key.endswith("]"):
            continue  # "[bytesSent_in_bits/s]" and friends: rates webrtc-internals derived itself
        stats_id, dash, metric = key.rpartition("-")  # metric names never contain '-', ids may
        if not dash or not isinstance(series, dict):
            raise ValueError(f"{where}: stats key {key!r} is not '<statsId>-<metric>' with a series object")
        if series:  # a series with no points is written as {}
            series_by_id.setdefault(stats_id, {})[metric] = series
    histories: dict[str, History] = {}
    for stats_id, metrics in series_by_id.items():
        timestamps = (
            _series_values(metrics["timestamp"], f"{where}: {stats_id}-timestamp") if "timestamp" in metrics else None
        )
        samples: dict[float, dict[str, Any]] = {}
        for metric, series in metrics.items():
            values = _series_values(series, f"{where}: {stats_id}-{metric}")
            for time_ms, value in zip(_point_times(series, len(values), timestamps, where), values, strict=True):
                sample = samples.setdefault(time_ms, {"id": stats_id, "type": series.get("statsType")})
                sample[metric] = value
        histories[stats_id] = _increasing(sorted(samples.items(), key=lambda item: item[0]))
    return histories


def _series_values(series: Mapping[str, Any], where: str) -> list[Any]:
    """A series' points: Chrome writes them as a JSON string; a list (a dump re-saved by a tool) is taken as is."""
    if "values" not in series:
        raise ValueError(f"{where}: series has no 'values'")
    values = series["values"]
    if isinstance(values, str):
        try:
            values = json.loads(values)
        except json.JSONDecodeError:
            raise ValueError(f"{where}: 'values' is not a JSON array string") from None
    if not isinstance(values, list):
        raise ValueError(f"{where}: 'values' is not a JSON array string")
    return values


def _point_times(series: Mapping[str, Any], count: int, timestamps: list[Any] | None, where: str) -> list[float]:
    """Times of a series' points: the object's timestamps ending at the series' endTime, else 1 s steps."""
    end = _epoch_ms(series.get("endTime"), where)
    if timestamps and all(_is_number(t) for t in timestamps):
        # the last point nearest endTime: an object not updated between polls repeats its timestamp
        last = min(reversed(range(len(timestamps))), key=lambda i: abs(timestamps[i] - end))
        if last + 1 >= count:
            return [float(t) for t in timestamps[last + 1 - count : last + 1]]
    return [end - (count - 1 - i) * POLL_INTERVAL_MS for i in range(count)]


def _epoch_ms(value: Any, where: str) -> float:
    """webrtc-internals writes series times as JSON Dates (ISO 8601); older dumps as epoch ms."""
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000.0
        except ValueError:
            pass
    raise ValueError(f"{where}: series time {value!r} is neither ISO 8601 nor epoch milliseconds")


def _decompress_report(base: Mapping[str, Any], delta: Mapping[str, Any]) -> dict[str, Any]:
    """Undo rtcstats getStats compression: names from the tables, then fields and objects missing from `base`."""
    report: dict[str, Any] = {}
    timestamp = None
    for stats_id, stats in delta.items():
        if stats_id == "t" and _is_number(stats):
            timestamp = stats  # timestamps collapsed to one top-level value
        elif stats is None:
            report[stats_id] = None  # removed since the previous report
        elif isinstance(stats, dict):
            fields = {COMPRESSED_PROPERTIES.get(name, name): value for name, value in stats.items()}
            if isinstance(fields.get("type"), int):
                fields["type"] = COMPRESSED_TYPES.get(fields["type"], fields["type"])
            report[stats_id] = fields
    for stats_id, previous in base.items():
        if stats_id in report and report[stats_id] is None:
            continue
        own_timestamp = stats_id in report and "timestamp" in report[stats_id]
        merged = dict(previous)
        for name, value in report.get(stats_id, {}).items():
            old = merged.get(name)
            merged[name] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
        if timestamp is not None and not own_timestamp:
            merged["timestamp"] = timestamp
        report[stats_id] = merged
    full = {stats_id: stats for stats_id, stats in report.items() if stats is not None}
    if timestamp is not None:
        for stats in full.values():
            stats.setdefault("timestamp", timestamp)
    return full


def _add_report(histories: dict[str, History], report: Mapping[str, Any], time_ms: float) -> None:
    """Append each object of one getStats report to its history, skipping samples not newer than the last."""
    for stats_id, stats in report.items():
        if not isinstance(stats, dict):
            continue
        stamp = stats.get("timestamp")
        time = float(stamp) if _is_number(stamp) else time_ms
        history = histories.setdefault(stats_id, [])
        if not history or time > history[-1][0]:
            history.append((time, stats))


def _increasing(samples: Iterable[tuple[float, dict[str, Any]]]) -> History:
    history: History = []
    for time, stats in samples:
        if not history or time > history[-1][0]:
            history.append((time, stats))
    return history


def _as_of(history: History | None, time: float) -> dict[str, Any]:
    """The latest sample of an object at or before `time` ({} when there is none)."""
    if not history:
        return {}
    index = bisect.bisect_right(history, time, key=lambda sample: sample[0])
    return history[index - 1][1] if index else {}


def _number(stats: Mapping[str, Any], name: str) -> float | None:
    value = stats.get(name)
    return float(value) if _is_number(value) and math.isfinite(value) else None


def _count(stats: Mapping[str, Any], name: str) -> int | None:
    value = _number(stats, name)
    return None if value is None else int(value)


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _frame(connections: Mapping[str, dict[str, History]], participant: Participant) -> pd.DataFrame:
    rows: list[tuple[Any, ...]] = []
    for pc_id, histories in connections.items():
        name = _participant_name(pc_id, participant)
        for stats_id, history in histories.items():
            if history and history[-1][1].get("type") in DIRECTIONS:
                rows.extend(_stream_rows(name, stats_id, history, histories))
    rows.sort(key=lambda row: row[0])
    table = Table("rtc_stats")
    for row in rows:
        table.append(*row)
    return table.frame()


def _participant_name(pc_id: str, participant: Participant) -> str:
    if participant is None:
        return pc_id
    if isinstance(participant, str):
        return participant
    return participant.get(pc_id, pc_id)


def _stream_rows(
    participant: str, stats_id: str, history: History, histories: Mapping[str, History]
) -> list[tuple[Any, ...]]:
    """The rows of one RTP stream: one per sample, with deltas from the previous sample."""
    remote_inbound = [
        other_id
        for other_id, other in histories.items()
        if other and other[-1][1].get("type") == "remote-inbound-rtp" and other[-1][1].get("localId") == stats_id
    ]
    rows = []
    previous: tuple[float, dict[str, Any]] | None = None
    for time, stats in history:
        direction = DIRECTIONS.get(stats.get("type", ""))
        if direction is None:
            continue
        inbound = direction == "inbound"
        kind = stats.get("kind", stats.get("mediaType"))
        remote_id = stats.get("remoteId") if not inbound else None
        if not isinstance(remote_id, str) or remote_id not in histories:
            remote_id = remote_inbound[0] if remote_inbound and not inbound else None
        remote = _as_of(histories.get(remote_id), time) if remote_id else {}
        bytes_name, packets_name = ("bytesReceived", "packetsReceived") if inbound else ("bytesSent", "packetsSent")
        rtt = _number(remote, "roundTripTime")
        if rtt is None:
            rtt = _number(_selected_pair(stats, time, histories), "currentRoundTripTime")
        rows.append(
            (
                int(round(time * 1e6)),
                participant,
                _track(stats, time, histories),
                None,  # a dump names no track or publisher the way a room does
                None,
                kind if isinstance(kind, str) else None,
                direction,
                _bitrate(previous, time, stats, bytes_name),
                _count(stats, packets_name),
                _count(stats, "packetsLost") if inbound else _count(remote, "packetsLost"),
                _inbound_fraction_lost(previous, stats) if inbound else _number(remote, "fractionLost"),
                _scaled(_number(stats if inbound else remote, "jitter"), 1000.0),
                _scaled(rtt, 1000.0),
                _count(stats, "framesDecoded" if inbound else "framesEncoded") if kind == "video" else None,
                stats.get("rid") if isinstance(stats.get("rid"), str) else None,
                SOURCE,
            )
        )
        previous = (time, stats)
    return rows


def _track(stats: Mapping[str, Any], time: float, histories: Mapping[str, History]) -> str | None:
    identifier = stats.get("trackIdentifier")
    if identifier is None and isinstance(stats.get("mediaSourceId"), str):
        identifier = _as_of(histories.get(stats["mediaSourceId"]), time).get("trackIdentifier")
    for candidate in (identifier, stats.get("mid"), stats.get("ssrc")):
        if candidate is not None and candidate != "":
            return str(candidate)
    return None


def _selected_pair(stats: Mapping[str, Any], time: float, histories: Mapping[str, History]) -> dict[str, Any]:
    """The candidate pair the stream's transport uses, else a nominated, succeeded one."""
    transport = _as_of(histories.get(stats.get("transportId", "")), time)
    pair_id = transport.get("selectedCandidatePairId")
    if isinstance(pair_id, str) and pair_id in histories:
        return _as_of(histories[pair_id], time)
    for other in histories.values():
        pair = _as_of(other, time)
        if pair.get("type") == "candidate-pair" and pair.get("nominated") and pair.get("state") == "succeeded":
            return pair
    return {}


def _bitrate(
    previous: tuple[float, dict[str, Any]] | None, time: float, stats: Mapping[str, Any], name: str
) -> float | None:
    if previous is None:
        return None
    before, now = _number(previous[1], name), _number(stats, name)
    seconds = (time - previous[0]) / 1000.0
    if before is None or now is None or seconds <= 0:
        return None
    return (now - before) * 8.0 / seconds


def _inbound_fraction_lost(previous: tuple[float, dict[str, Any]] | None, stats: Mapping[str, Any]) -> float | None:
    """Lost / expected over the interval, as RTCP's fraction lost would say (clipped at 0 for duplicates)."""
    if previous is None:
        return None
    lost, received = _number(stats, "packetsLost"), _number(stats, "packetsReceived")
    lost_before, received_before = _number(previous[1], "packetsLost"), _number(previous[1], "packetsReceived")
    if lost is None or received is None or lost_before is None or received_before is None:
        return None
    new_lost = max(lost - lost_before, 0.0)
    expected = new_lost + (received - received_before)
    return new_lost / expected if expected > 0 else None
