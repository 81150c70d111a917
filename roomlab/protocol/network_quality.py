"""Network quality on roomlab's signaling: Twilio's stats objects as JSON and back.

A `network_quality` message carries, per participant SID, what its receiver may know at its
verbosity: `null` (none), `{"level"}` (minimal), with `audio` and `video` as `{"send", "recv"}`
(moderate), and with their `send_stats` / `recv_stats` (detailed), each `{"bandwidth": {"actual",
"available", "level"}, "latency": {"jitter", "rtt", "level"}, "fraction_lost": {"fraction_lost",
"level"}}` in bit/s and seconds: the dataclasses of `roomlab.policy.quality`, field for field.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..policy.quality import (
    NetworkQualityBandwidthStats,
    NetworkQualityFractionLostStats,
    NetworkQualityLatencyStats,
    NetworkQualityMediaStats,
    NetworkQualitySendOrRecvStats,
    NetworkQualityStats,
)


def stats_to_wire(stats: NetworkQualityStats | None) -> dict[str, Any] | None:
    return None if stats is None else dataclasses.asdict(stats)


def _send_or_recv(data: dict[str, Any] | None) -> NetworkQualitySendOrRecvStats | None:
    if data is None:
        return None
    return NetworkQualitySendOrRecvStats(
        bandwidth=NetworkQualityBandwidthStats(**data["bandwidth"]),
        latency=NetworkQualityLatencyStats(**data["latency"]),
        fraction_lost=NetworkQualityFractionLostStats(**data["fraction_lost"]),
    )


def _media(data: dict[str, Any] | None) -> NetworkQualityMediaStats | None:
    if data is None:
        return None
    return NetworkQualityMediaStats(
        data["send"], data["recv"], _send_or_recv(data.get("send_stats")), _send_or_recv(data.get("recv_stats"))
    )


def stats_from_wire(data: dict[str, Any] | None) -> NetworkQualityStats | None:
    """The stats a `network_quality` message carries for one participant (KeyError/TypeError if
    it is not in that shape)."""
    if data is None:
        return None
    return NetworkQualityStats(data["level"], _media(data.get("audio")), _media(data.get("video")))
