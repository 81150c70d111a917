"""The room server: REST control plane, rooms, store, callbacks and auth."""

from .server import Server, serve

__all__ = ["Server", "serve"]
