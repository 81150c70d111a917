"""roomlab: a local real-time room server, simulated participants, and call telemetry as frames."""

__version__ = "0.1.0"

from . import frames, plots  # noqa: E402
from .client import (  # noqa: E402
    LocalAudioTrack,
    LocalDataTrack,
    LocalVideoTrack,
    RemoteAudioTrack,
    RemoteDataTrack,
    RemoteParticipant,
    RemoteVideoTrack,
    Room,
    connect,
)
from .errors import RoomError  # noqa: E402
from .net.link import BurstLoss, DeliveryTrace, Link  # noqa: E402
from .server import Server, serve  # noqa: E402
from .sim.simulation import Simulation  # noqa: E402
from .telemetry.persist import Run, load, save  # noqa: E402
from .telemetry.recorder import Telemetry  # noqa: E402
from .telemetry.watch import Watch, watch  # noqa: E402

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
