"""The Twilio Connections Messaging Protocol (TCMP, version 2): the framing under the SDK's room
signaling, one JSON text frame per message, read from twilio-video.js `lib/twilioconnection.js`.

    client  hello {id, timeout, version: 2, body?}     server  welcome {negotiatedTimeout}
    both    msg {body}     heartbeat                     client  bye
    server  bad {reason}   (during the handshake the client closes on it; later it only logs it)

The client must get `welcome` within 5 s of its hello, may not be sent `msg` before it, sends a
heartbeat after `negotiatedTimeout - 200` ms of its own silence, and closes the socket after three
timeouts without anything from the server; every `msg` counts as a heartbeat both ways.
`TcmpConnection` is that connection on one aiohttp WebSocket: a writer task with a bounded
outbox (nothing in a room waits on one client's socket) that also sends the server's heartbeats.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web

from ...errors import RoomError

log = logging.getLogger(__name__)

VERSION = 2
#: Heartbeat period the server grants (ms): a client asks for 5000; more is never granted.
MAX_NEGOTIATED_TIMEOUT_MS = 5000
#: How long before its period ends the server sends its heartbeat (the SDK's own offset).
HEARTBEAT_MARGIN_MS = 200
#: Seconds a new socket has to say hello (the SDK sends it as soon as the socket opens).
HELLO_TIMEOUT = 10.0
#: Messages that may wait for a slow client before its connection is dropped.
OUTBOX_LIMIT = 1000
#: Largest TCMP frame read (an SDP of a large room fits many times over).
MAX_FRAME_BYTES = 1024 * 1024
MESSAGE_TYPES = ("hello", "msg", "heartbeat", "bye")
#: Close codes of a client that will not come back: it left (1000), or its page went away (1001).
LEAVING_CLOSE_CODES = (1000, 1001)


def parse(text: str) -> dict[str, Any]:
    """One client frame, checked: a JSON object whose `type` is a TCMP message; else RoomError 53004."""
    if len(text) > MAX_FRAME_BYTES:
        raise RoomError(53004, f"Client sent an invalid signaling message: frame over {MAX_FRAME_BYTES} bytes")
    try:
        message = json.loads(text)
    except ValueError:
        raise RoomError(53004, "Client sent an invalid signaling message: not JSON") from None
    if not isinstance(message, dict) or message.get("type") not in MESSAGE_TYPES:
        kind = message.get("type") if isinstance(message, dict) else None
        raise RoomError(
            53004,
            f"Client sent an invalid signaling message: type {kind!r}, expected one of {', '.join(MESSAGE_TYPES)}",
        )
    if message["type"] == "msg" and not isinstance(message.get("body"), dict):
        raise RoomError(53004, "Client sent an invalid signaling message: msg without an object body")
    return message


def negotiated_timeout(requested: object) -> int:
    """The heartbeat period granted for the one a hello asks for (ms)."""
    if isinstance(requested, int) and not isinstance(requested, bool) and requested > 0:
        return min(requested, MAX_NEGOTIATED_TIMEOUT_MS)
    return MAX_NEGOTIATED_TIMEOUT_MS


class TcmpConnection:
    """One SDK client's TCMP connection: handshake, messages both ways, heartbeats, close."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.timeout_ms = MAX_NEGOTIATED_TIMEOUT_MS
        self.closed = False
        self.overflowed = False
        #: the code of the client's close frame (1000: it left, 1001: its page went away); None
        #: when the socket ended without one (a dropped connection: the SDK will `sync`)
        self.client_close_code: int | None = None
        self._outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def handshake(self) -> dict[str, Any] | None:
        """Wait for hello, answer welcome, start writing; return the hello's body (None without one)."""
        try:
            frame = await self.ws.receive(timeout=HELLO_TIMEOUT)
        except TimeoutError:
            raise RoomError(53002, f"Signaling connection timed out: no hello within {HELLO_TIMEOUT:g} s") from None
        if frame.type != WSMsgType.TEXT:
            raise RoomError(53004, "Client sent an invalid signaling message: the first frame must be a text hello")
        hello = parse(frame.data)
        if hello["type"] != "hello" or hello.get("version") != VERSION:
            await self.ws.send_str(json.dumps({"type": "bad", "reason": f"expected hello, TCMP version {VERSION}"}))
            raise RoomError(53004, f"Client sent an invalid signaling message: expected a TCMP {VERSION} hello")
        self.timeout_ms = negotiated_timeout(hello.get("timeout"))
        await self.ws.send_str(json.dumps({"type": "welcome", "negotiatedTimeout": self.timeout_ms}))
        self._writer = asyncio.get_running_loop().create_task(self._write_forever())
        body = hello.get("body")
        return body if isinstance(body, dict) else None

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """The client's frames after the handshake, parsed (a malformed one is answered `bad`),
        until the socket closes (`client_close_code` then says whether the client closed it)."""
        while True:
            frame = await self.ws.receive()
            if frame.type == WSMsgType.CLOSE:
                self.client_close_code = frame.data
                return
            if frame.type in (WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            if frame.type == WSMsgType.TEXT:
                try:
                    yield parse(frame.data)
                except RoomError as error:
                    self._queue({"type": "bad", "reason": error.message})
            elif frame.type == WSMsgType.BINARY:
                self._queue({"type": "bad", "reason": "binary frames are not part of TCMP"})
            elif frame.type == WSMsgType.ERROR:
                log.debug("TCMP socket error: %s", self.ws.exception())
                return

    @property
    def client_left(self) -> bool:
        """The client closed the socket as one that leaves (not a dropped connection, after which
        the SDK opens another and sends `sync`)."""
        return self.client_close_code in LEAVING_CLOSE_CODES

    def send(self, body: dict[str, Any]) -> None:
        """Queue an RSP message; a client that stops reading is cut off, not waited on."""
        self._queue({"type": "msg", "body": body})

    def _queue(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        if self._outbox.qsize() >= OUTBOX_LIMIT:
            self.overflowed = True
            log.debug("TCMP outbox over %d messages: closing", OUTBOX_LIMIT)
            asyncio.get_running_loop().create_task(self.ws.close())
            return
        self._outbox.put_nowait(message)

    async def _write_forever(self) -> None:
        idle = (self.timeout_ms - HEARTBEAT_MARGIN_MS) / 1000
        while True:
            try:
                message = await asyncio.wait_for(self._outbox.get(), idle)
            except TimeoutError:
                message = {"type": "heartbeat"}  # the client counts three silent periods as a dead server
            if message is None:
                return
            try:
                await self.ws.send_str(json.dumps(message, separators=(",", ":")))
            except (ConnectionError, RuntimeError):
                return

    async def close(self) -> None:
        """Send what is queued (a last `msg` saying why, then `bye`), and close the socket."""
        if self.closed:
            return
        self._queue({"type": "bye"})
        self.closed = True
        self._outbox.put_nowait(None)
        if self._writer is None:  # refused before the handshake ended: write what is queued now
            self._writer = asyncio.get_running_loop().create_task(self._write_forever())
        try:
            await asyncio.wait_for(self._writer, 2.0)
        except TimeoutError:
            self._writer.cancel()
        await self.ws.close()
