"""The live telemetry feed: `GET /v1/Telemetry` upgrades to a WebSocket that streams the server's
tables as they grow, so that a notebook in another process (`roomlab.watch`) keeps the same
frames. Each message is one chunk of new rows of one table, column by column:

    {"table": "events", "start": 120, "columns": {"time": [...ns...], "room": [...], ...}}
"""

from __future__ import annotations

import asyncio

from aiohttp import WSCloseCode, web

from ..errors import RoomError
from ..telemetry.recorder import Telemetry
from ..telemetry.schema import TABLES

#: Seconds between two pushes of new rows.
PUSH_INTERVAL = 0.2


class TelemetryFeed:
    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self._sockets: set[web.WebSocketResponse] = set()

    async def close(self, app: web.Application | None = None) -> None:
        """Close every feed now (the server is stopping): watchers see the end at once, and the
        server does not wait for them to hang up (aiohttp's `on_shutdown` signal calls this)."""
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        wanted = request.query.get("tables")
        names = [n for n in wanted.split(",") if n] if wanted else list(TABLES)
        unknown = [n for n in names if n not in TABLES]
        if unknown:
            raise RoomError(20001, f"unknown table(s) {unknown}; tables: {', '.join(TABLES)}")
        ws = web.WebSocketResponse(heartbeat=10.0)
        await ws.prepare(request)
        self._sockets.add(ws)
        cursors = dict.fromkeys(names, 0)
        closing = asyncio.ensure_future(ws.receive())  # the client sends nothing; this ends with it
        try:
            while not ws.closed:
                for name in names:
                    columns, cursors[name] = self.telemetry.tables[name].rows_since(cursors[name])
                    if columns:
                        start = cursors[name] - len(next(iter(columns.values())))
                        await ws.send_json({"table": name, "start": start, "columns": columns})
                done, _ = await asyncio.wait({closing}, timeout=PUSH_INTERVAL)
                if done:
                    break
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self._sockets.discard(ws)
            closing.cancel()
            await ws.close()
        return ws
