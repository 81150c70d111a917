"""The client's signaling connection: one WebSocket to the server, opened with `connect` (a first
join, or the resumption of a session after a break; see roomlab/protocol/signaling.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from ..errors import RoomError
from ..protocol import signaling

log = logging.getLogger(__name__)

#: Seconds between the client's WebSocket pings; a server whose pong is half of it late is gone.
HEARTBEAT = 5.0
#: Seconds a client leaving waits for the server to take its goodbye and close the WebSocket.
LEAVE_TIMEOUT = 1.0


def signaling_url(url: str) -> str:
    """The server's WebSocket signaling address, from its http(s) or ws(s) URL."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"url must be the server's http(s):// or ws(s):// address, got {url!r}")
    return urlunsplit((scheme, parts.netloc, signaling.PATH, "", ""))


def parse(frame: aiohttp.WSMessage) -> dict[str, Any] | None:
    if frame.type != aiohttp.WSMsgType.TEXT:
        return None
    try:
        message = signaling.json.loads(frame.data)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _sent(task: asyncio.Task[None]) -> None:
    """A message that could not be sent because the socket just closed is no error of its own:
    the reader sees the socket close and acts on that."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("signaling message not sent: %r", task.exception())


class SignalingConnection:
    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._http = http
        self._ws = ws

    @classmethod
    async def open(cls, url: str, hello: dict[str, Any], timeout: float) -> tuple[SignalingConnection, dict[str, Any]]:
        """Connect, send `hello` (a connect message) and return the connection with the server's
        `connected` reply. A refusal raises RoomError with its code; an unreachable server or a
        socket that ends first raises aiohttp.ClientError or ConnectionError."""
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(
                signaling_url(url),
                heartbeat=HEARTBEAT,
                max_msg_size=signaling.MAX_MESSAGE_BYTES * 4,
                timeout=aiohttp.ClientWSTimeout(ws_close=LEAVE_TIMEOUT),
            )
            await ws.send_str(signaling.encode(hello))
            reply = parse(await ws.receive(timeout=timeout))
        except BaseException:
            await http.close()
            raise
        connection = cls(http, ws)
        if reply is None or reply.get("type") != "connected":
            await connection.close()
            if reply is not None and reply.get("type") == "error":
                raise RoomError(int(reply["code"]), str(reply["message"]))
            raise ConnectionError("the server closed the signaling connection")
        return connection, reply

    @property
    def closed(self) -> bool:
        return self._ws.closed

    def send(self, message: dict[str, Any]) -> None:
        if self._ws.closed:
            raise RoomError(53001, "Signaling connection disconnected")
        task = asyncio.get_running_loop().create_task(self._ws.send_str(signaling.encode(message)))
        task.add_done_callback(_sent)

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """The server's messages until the socket closes (frames that are not JSON objects are skipped)."""
        async for frame in self._ws:
            message = parse(frame)
            if message is not None:
                yield message

    async def leave(self) -> None:
        """Say goodbye (bounded), so that the server removes the participant at once."""
        if not self._ws.closed:
            try:
                await asyncio.wait_for(self._ws.send_str(signaling.encode({"type": "leave"})), LEAVE_TIMEOUT)
            except (ConnectionError, TimeoutError):
                pass

    async def close(self) -> None:
        try:
            await self._ws.close()  # bounded by LEAVE_TIMEOUT (the ws_close timeout)
        finally:
            await self._http.close()
