"""Events for SDK objects: `on(name, fn)`, sync or async handlers; a failing handler is logged and
never breaks the SDK that emitted the event."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Literal

log = logging.getLogger(__name__)

RoomEvent = Literal[
    "participant_connected",
    "participant_disconnected",
    "participant_reconnecting",
    "participant_reconnected",
    "dominant_speaker_changed",
    "track_published",
    "track_unpublished",
    "track_subscribed",
    "track_unsubscribed",
    "track_enabled",
    "track_disabled",
    "track_message",
    "track_warning",
    "track_warnings_cleared",
    "track_layer_changed",
    "track_switched_off",
    "track_switched_on",
    "track_publish_priority_changed",
    "data_received",
    "disconnected",
    "reconnecting",
    "reconnected",
    "error",
]
RemoteParticipantEvent = Literal[
    "track_published",
    "track_unpublished",
    "track_subscribed",
    "track_unsubscribed",
    "track_enabled",
    "track_disabled",
    "track_switched_off",
    "track_switched_on",
    "track_publish_priority_changed",
    "track_message",
    "network_quality_level_changed",
    "metadata_changed",
    "data_received",
    "reconnecting",
    "reconnected",
    "disconnected",
]
RemoteDataTrackEvent = Literal["message", "switched_off", "switched_on"]
RemoteVideoTrackEvent = Literal["layer_changed", "switched_off", "switched_on"]

Handler = Callable[..., Any]


class EventEmitter:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._tasks: set[asyncio.Task[Any]] = set()

    def on(self, event: str, fn: Handler | None = None) -> Any:
        """Call `fn` on every `event`; usable as a decorator (`@room.on("track_message")`)."""
        if fn is None:
            return lambda f: self.on(event, f)
        self._handlers[event].append(fn)
        return fn

    def once(self, event: str, fn: Handler) -> Handler:
        def wrapper(*args: Any) -> Any:
            self.off(event, wrapper)
            return fn(*args)

        self._handlers[event].append(wrapper)
        return fn

    def off(self, event: str, fn: Handler) -> None:
        handlers = self._handlers.get(event, [])
        if fn in handlers:
            handlers.remove(fn)

    def emit(self, event: str, *args: Any) -> None:
        for fn in list(self._handlers.get(event, ())):
            try:
                result = fn(*args)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._finished)
            except Exception:
                log.exception("handler for %r failed", event)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("async handler failed", exc_info=task.exception())
