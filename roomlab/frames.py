"""Telemetry frames for analysis: the helpers users need on every run, and readers that load a
real Chrome call into the same `rtc_stats` schema as a simulated one."""

from .telemetry.allocations import periods as allocation_periods
from .telemetry.analysis import HOPS, bitrate, end_to_end_loss, latency, loss, media_loss
from .telemetry.chrome import read_rtcstats, read_webrtc_internals
from .telemetry.links import links
from .telemetry.streams import DELIVERY_STATUSES, media_delivery, subscriptions, tracks

__all__ = [
    "DELIVERY_STATUSES",
    "HOPS",
    "allocation_periods",
    "bitrate",
    "end_to_end_loss",
    "latency",
    "links",
    "loss",
    "media_delivery",
    "media_loss",
    "read_rtcstats",
    "read_webrtc_internals",
    "subscriptions",
    "tracks",
]
