"""roomlab: a local real-time room server, simulated participants, and call telemetry as frames."""

__version__ = "0.1.0"

from .errors import RoomError  # noqa: E402
from .server import Server, serve  # noqa: E402

__all__ = ["RoomError", "Server", "serve", "__version__"]
