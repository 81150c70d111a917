"""`roomlab.watch()`: the live tables of a server running in another process (or machine)."""

from __future__ import annotations

import asyncio
import base64
import threading
from typing import Any

import aiohttp
import pandas as pd

from ..errors import RoomError
from .recorder import Telemetry
from .schema import columns


class Watch:
    """Keeps a copy of a server's telemetry tables up to date, in a thread of its own."""

    def __init__(self, url: str, api_key: str, api_secret: str, tables: list[str] | None = None) -> None:
        for name in tables or ():
            columns(name)
        self.url = url.rstrip("/")
        self.telemetry = Telemetry()
        credentials = base64.b64encode(f"{api_key}:{api_secret}".encode()).decode()
        self._headers = {"Authorization": f"Basic {credentials}"}
        self._tables = tables
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="roomlab-watch", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._follow())
        self._loop.close()

    async def _follow(self) -> None:
        self._stop = asyncio.Event()
        query = f"?tables={','.join(self._tables)}" if self._tables else ""
        async with aiohttp.ClientSession(headers=self._headers) as http:
            try:
                ws = await http.ws_connect(f"{self.url}/v1/Telemetry{query}", heartbeat=10.0)
            except aiohttp.WSServerHandshakeError as exc:
                code = 20003 if exc.status == 401 else 20001
                self._error = RoomError(code, f"cannot watch {self.url}: HTTP {exc.status}", exc.status)
                self._ready.set()
                return
            except aiohttp.ClientError as exc:
                self._error = RoomError(53000, f"cannot reach {self.url}: {exc}")
                self._ready.set()
                return
            self._ready.set()
            stopping = asyncio.ensure_future(self._stop.wait())
            try:
                while True:
                    receiving = asyncio.ensure_future(ws.receive())
                    done, _ = await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    if stopping in done:
                        receiving.cancel()
                        break
                    message = receiving.result()
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break  # the server stopped: the tables keep what arrived
                    self._append(message.json())
            finally:
                stopping.cancel()
                await ws.close()

    def _append(self, chunk: dict[str, Any]) -> None:
        table = self.telemetry.tables[chunk["table"]]
        data = chunk["columns"]
        for row in zip(*(data[c.name] for c in table.columns), strict=True):
            table.append(*row)

    def frame(self, name: str) -> pd.DataFrame:
        return self.telemetry.frame(name)

    def frames(self) -> dict[str, pd.DataFrame]:
        return self.telemetry.frames()

    @property
    def running(self) -> bool:
        """Whether the feed is still followed (False once stopped, or once the server stopped)."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop following (the tables keep what arrived); also on leaving a `with` block."""
        if self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # its loop already closed: the server ended the feed
                pass
        self._thread.join(5)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def watch(url: str, api_key: str, api_secret: str, tables: list[str] | None = None) -> Watch:
    """Follow the telemetry of the server at `url` (its URL and API credentials, as
    `roomlab serve` prints them); `.frame(name)` at any moment, `.stop()` when done."""
    return Watch(url, api_key, api_secret, tables)
