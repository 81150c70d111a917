"""roomlab: a local real-time room server, simulated participants, and call telemetry as frames."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .client import (  # noqa: E402
    LocalAudioTrack,
    LocalDataTrack,
    LocalVideoTrack,
    RemoteAudioTrack,
    RemoteDataTrack,
    RemoteParticipant,
    RemoteVideoTrack,
    Room,
    VideoLayer,
    connect,
)
from .errors import RoomError  # noqa: E402
from .net.link import BurstLoss, DeliveryTrace, Link  # noqa: E402
from .server import Server, serve  # noqa: E402
from .sim.simulation import Simulation  # noqa: E402
from .telemetry.recorder import Telemetry  # noqa: E402

if TYPE_CHECKING:
    from . import frames, plots
    from .telemetry.persist import Run, load, save
    from .telemetry.watch import Watch, watch

#: Names loaded on first use: they bring pandas (and matplotlib), which every process that
#: imports roomlab (each bot worker) would otherwise pay for at start.
_LAZY = {
    "frames": (".frames", None),
    "plots": (".plots", None),
    "Run": (".telemetry.persist", "Run"),
    "load": (".telemetry.persist", "load"),
    "save": (".telemetry.persist", "save"),
    "Watch": (".telemetry.watch", "Watch"),
    "watch": (".telemetry.watch", "watch"),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'roomlab' has no attribute {name!r}") from None
    module = importlib.import_module(module_name, __name__)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BurstLoss",
    "DeliveryTrace",
    "Link",
    "LocalAudioTrack",
    "LocalDataTrack",
    "LocalVideoTrack",
    "RemoteAudioTrack",
    "RemoteDataTrack",
    "RemoteParticipant",
    "RemoteVideoTrack",
    "Room",
    "RoomError",
    "Run",
    "Server",
    "Simulation",
    "Telemetry",
    "VideoLayer",
    "Watch",
    "connect",
    "frames",
    "plots",
    "load",
    "save",
    "serve",
    "watch",
    "__version__",
]
