"""Telemetry frames for analysis: the helpers users need on every run, and readers that load a
real Chrome call into the same `rtc_stats` schema as a simulated one."""

from .telemetry.analysis import bitrate, latency, loss
from .telemetry.chrome import read_rtcstats, read_webrtc_internals

__all__ = ["bitrate", "latency", "loss", "read_rtcstats", "read_webrtc_internals"]
