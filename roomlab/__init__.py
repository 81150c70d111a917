"""roomlab: a local real-time room server, simulated participants, and call telemetry as frames."""

__version__ = "0.1.0"

from .client import (  # noqa: E402
    LocalAudioTrack,
    LocalDataTrack,
    LocalVideoTrack,
    RemoteAudioTrack,
    RemoteDataTrack,
    RemoteParticipant,
    Room,
    connect,
)
from .errors import RoomError  # noqa: E402
from .server import Server, serve  # noqa: E402
from .telemetry.persist import Run, load, save  # noqa: E402
from .telemetry.recorder import Telemetry  # noqa: E402
from .telemetry.watch import Watch, watch  # noqa: E402

__all__ = [
    "LocalAudioTrack",
    "LocalDataTrack",
    "LocalVideoTrack",
    "RemoteAudioTrack",
    "RemoteDataTrack",
    "RemoteParticipant",
    "Room",
    "RoomError",
    "Run",
    "Server",
    "Telemetry",
    "Watch",
    "connect",
    "load",
    "save",
    "serve",
    "watch",
    "__version__",
]
