"""Simulated participants: behaviours, pre-encoded media, bots, the worker farm, scenarios."""

from .behaviours import Behaviour, Camera, Chat, Cursor, Generator, Strokes, Talker
from .media import camera_track

__all__ = ["Behaviour", "Camera", "Chat", "Cursor", "Generator", "Strokes", "Talker", "camera_track"]
