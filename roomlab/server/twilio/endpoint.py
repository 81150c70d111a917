"""The SDK's signaling endpoint, `/twilio/signaling`: a TCMP connection per client, whose hello
carries the RSP `connect` (or `ice` first, answered `iced` with no servers). The token decides who
joins and where, through the same rooms and forwarding plane as roomlab's own signaling.

A socket that drops (no goodbye, no close frame of a client leaving) leaves its participant
`reconnecting` for the room's reconnect window, the session and its peer connection kept; the
SDK opens a new socket whose hello carries `sync` with the session key, and carries on there.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from aiohttp import web

from ...errors import RoomError
from ..allocation import BandwidthAllocation
from ..auth import Credentials, verify_access_token
from ..rooms import SIGNALING_BROKE, Rooms
from ..sfu import Sfu
from ..signaling import BURST, HEARTBEAT, RATE, TokenBucket
from . import media_signaling, rsp
from .session import TwilioSession
from .tcmp import MAX_FRAME_BYTES, TcmpConnection

log = logging.getLogger(__name__)

PATH = "/twilio/signaling"
#: Seconds a client that asked for ICE servers has to send its `connect`.
CONNECT_TIMEOUT = 10.0


class TwilioSignalingEndpoint:
    def __init__(
        self, rooms: Rooms, sfu: Sfu, credentials: Credentials, allocation: BandwidthAllocation | None = None
    ) -> None:
        self.rooms = rooms
        self.sfu = sfu
        self.credentials = credentials
        self.allocation = allocation

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_FRAME_BYTES * 2)
        await ws.prepare(request)
        connection = TcmpConnection(ws)
        try:
            body = await connection.handshake()
            session = await self._join(connection, body)
        except RoomError as error:
            log.debug("SDK client refused: %s", error)
            connection.send(rsp.error(error))
            await connection.close()
            return ws
        code = await self._serve(session, connection)
        if session.closed or self.sfu.sessions.get(session.sid) is not session or session.connection is not connection:
            return ws  # the server ended the session (and said why), or it resumed on another socket
        resumable = self.rooms.reconnect_window > 0 and not connection.client_left
        if code == SIGNALING_BROKE and resumable and self.rooms.is_connected(session.sid):
            session.detach()  # the SDK syncs on a new socket within its session_timeout
            self.rooms.start_reconnecting(session.sid, SIGNALING_BROKE)
            return ws
        if self.rooms.is_connected(session.sid):
            self.rooms.disconnect(session.live.room.sid, session.sid, code=code)
        self.sfu.remove_session(session)
        await session.close(code)
        return ws

    async def _join(self, connection: TcmpConnection, body: dict[str, Any] | None) -> TwilioSession:
        if body is not None and body.get("type") == "ice":
            connection.send({"type": "iced", "ice_servers": []})  # none: candidates on 127.0.0.1 only
            body = await self._next_body(connection)
        if body is None:
            raise rsp.invalid("the hello must carry a connect message")
        connect = rsp.parse_client_message(body)
        if connect["type"] == "sync":
            return await self._resume(connection, connect)
        if connect["type"] != "connect":
            raise rsp.invalid(f"the first message must be connect or sync, got {connect['type']}")
        access = verify_access_token(connect["token"], self.credentials)
        profile = connect.get("bandwidth_profile")
        profile = rsp.bandwidth_profile(profile) if profile is not None else None
        room_key = self.rooms.admit(access, connect.get("name"))
        live, participant = self.rooms.connect(
            room_key, access.identity, automatic_subscription=rsp.automatic_subscription(connect.get("subscribe"))
        )
        session = TwilioSession(
            live,
            participant,
            connection,
            self.rooms,
            self._ended,
            session_key=self.rooms.new_session_key(participant),
            media_signaling=media_signaling.requested(connect.get("media_signaling")),
            bandwidth_profile=profile,
            allocation=self.allocation,
        )
        self.sfu.add_session(session)
        try:
            await session.start(connect)
        except RoomError:
            self.sfu.remove_session(session)
            if self.rooms.is_connected(participant.sid):
                self.rooms.disconnect(live.room.sid, participant.sid, code=53403)
            await session.pc.close()
            raise
        log.debug("room %s, participant %s joined with twilio-video.js", live.room.sid, participant.sid)
        return session

    async def _resume(self, connection: TcmpConnection, sync: dict[str, Any]) -> TwilioSession:
        """A client back on a new socket with its session key, within the reconnect window: the
        same session (and peer connection) carries on; else 53204, the session has ended."""
        access = verify_access_token(sync["token"], self.credentials)
        key = sync.get("session")
        session = next(
            (
                s
                for s in self.sfu.sessions.values()
                if isinstance(s, TwilioSession) and isinstance(key, str) and hmac.compare_digest(s.rsp_session, key)
            ),
            None,
        )
        if session is None or session.closed:
            raise RoomError(53204, "Participant not found: the session to resume has ended")
        self.rooms.resumable(session.sid, access.identity, key)  # (its identity, key and window)
        if session.attached:  # its old socket, which the server still thought alive, goes
            session.detach()
        self.rooms.resume(session.sid)
        await session.attach(connection, sync)
        log.debug("room %s, participant %s resumed with twilio-video.js", session.live.room.sid, session.sid)
        return session

    @staticmethod
    async def _next_body(connection: TcmpConnection) -> dict[str, Any] | None:
        async def first() -> dict[str, Any] | None:
            async for message in connection.messages():
                if message["type"] == "msg":
                    return message["body"]
                if message["type"] == "bye":
                    return None
            return None

        try:
            return await asyncio.wait_for(first(), CONNECT_TIMEOUT)
        except TimeoutError:
            raise RoomError(53002, f"Signaling connection timed out: no connect within {CONNECT_TIMEOUT:g} s") from None

    async def _serve(self, session: TwilioSession, connection: TcmpConnection) -> int | None:
        """Handle the client's messages on `connection` until it leaves (None), floods (53004) or
        its socket ends (53001); return the code its participant leaves with."""
        bucket = TokenBucket(RATE, BURST)
        async for message in connection.messages():
            if not bucket.take():
                return 53004
            if message["type"] == "bye":
                return None
            if message["type"] != "msg":
                continue  # heartbeats: the socket's own ping keeps watch on the client
            try:
                body = rsp.parse_client_message(message["body"])
                if body["type"] == "disconnect":
                    return None
                if body["type"] == "update":
                    await session.handle(body)
            except RoomError as error:
                session.report_error(error)
        return 53002 if connection.overflowed else SIGNALING_BROKE

    def _ended(self, session: TwilioSession, code: int | None) -> None:
        """A session broke (no answer, no transport, bad SDP): remove its participant with `code`."""
        if self.rooms.is_connected(session.sid):
            self.rooms.disconnect(session.live.room.sid, session.sid, code=code)
        else:
            self.sfu.remove_session(session)
            self.sfu.close_session(session, code)
