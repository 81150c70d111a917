"""Live Jupyter views over a room's telemetry (SPEC §12).

Each view takes a *source*: a `Server`, a `Simulation`, a connected `Room`, or a saved run
(`roomlab.load(path)`, static). Displayed in a notebook it updates about once a second without
blocking the kernel; `refresh()` updates it now, `stop()` stops it (so does the room stopping), and
its display bundle carries a PNG of the last picture for exported notebooks.

    from roomlab import widgets
    widgets.RoomView(sim)          # participants, tracks, subscriptions, links, levels
    widgets.DataMonitor(sim)       # per data track: message rate, latency percentiles, loss
    widgets.QualityDashboard(sim)  # network quality levels and their inputs per participant
    widgets.AllocationView(sim, subscriber="viewer")  # its downlink divided among the video it receives
"""

from .allocation_view import AllocationView
from .data_monitor import DataMonitor
from .quality_dashboard import QualityDashboard
from .room_view import RoomView
from .source import Source, source_of
from .view import View

__all__ = ["AllocationView", "DataMonitor", "QualityDashboard", "RoomView", "Source", "View", "source_of"]
