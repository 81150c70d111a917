"""The signaling endpoint: a WebSocket per participant, authenticated by its access token.

The first message must be `connect`; the token decides who joins and where. After that every
message is checked; a bad one gets an error naming what is wrong and the session goes on. Only a
flood, or a socket that goes silent, ends it. Nothing one connection sends reaches another's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from ..errors import RoomError
from ..policy.allocation import BandwidthProfile
from ..policy.quality import NetworkQualityConfiguration
from ..protocol import signaling
from ..protocol.layers import parse_layers
from .allocation import BandwidthAllocation
from .auth import Credentials, verify_access_token
from .model import TRACK_KINDS, Participant
from .rooms import MEDIA_BROKE, SIGNALING_BROKE, LiveRoom, Rooms
from .session import Session, participant_info, track_info
from .sfu import Sfu

log = logging.getLogger(__name__)

#: Seconds a new socket has to send `connect`.
CONNECT_TIMEOUT = 10.0
#: WebSocket ping interval; a client that misses a pong for half of it is gone.
HEARTBEAT = 5.0
#: Seconds the server waits for a client to answer its closing handshake.
CLOSE_TIMEOUT = 1.0
#: Messages per second a client may send on average, and in one burst.
RATE, BURST = 50.0, 200.0
#: Largest WebSocket frame read at all; frames between signaling.MAX_MESSAGE_BYTES and this get
#: an error and the session goes on, larger ones close the socket (1009).
WS_FRAME_LIMIT = 4 * 1024 * 1024
UINT16_MAX = 65_535
PRIORITIES = ("low", "standard", "high")


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def track_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check a publication's options; data tracks keep their reliability on every hop, layered video
    tracks name their layers (roomlab/protocol/layers.py)."""
    allowed = {"priority"} | {
        "data": {"ordered", "max_packet_life_time", "max_retransmits"},
        "video": {"layers"},
    }.get(kind, set())
    unknown = set(options) - allowed
    if unknown:
        raise RoomError(53300, f"Track is invalid: unknown option(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    checked: dict[str, Any] = {"priority": options.get("priority", "standard")}
    if checked["priority"] not in PRIORITIES:
        raise RoomError(53300, f"Track is invalid: priority must be one of {', '.join(PRIORITIES)}")
    if kind == "data":
        ordered = options.get("ordered", True)
        lifetime = options.get("max_packet_life_time")
        retransmits = options.get("max_retransmits")
        if not isinstance(ordered, bool):
            raise RoomError(53300, "Track is invalid: ordered must be true or false")
        for name, value in (("max_packet_life_time", lifetime), ("max_retransmits", retransmits)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT16_MAX
            ):
                raise RoomError(53300, f"Track is invalid: {name} must be an integer from 0 to {UINT16_MAX}")
        if lifetime is not None and retransmits is not None:
            raise RoomError(53300, "Track is invalid: set max_packet_life_time or max_retransmits, not both")
        checked.update(ordered=ordered, max_packet_life_time=lifetime, max_retransmits=retransmits)
    if kind == "video" and "layers" in options:
        try:
            checked["layers"] = [layer.to_wire() for layer in parse_layers(options["layers"])]
        except ValueError as exc:
            raise RoomError(53300, f"Track is invalid: {exc}") from None
    return checked


@dataclass(frozen=True)
class Features:
    """The in-room features a client asks for when it connects (`connect.options`)."""

    network_quality: NetworkQualityConfiguration | None = None
    """Its network quality configuration (None: off)."""
    dominant_speaker: bool = False
    """Whether it wants dominant speaker changes."""
    bandwidth_profile: BandwidthProfile | None = None
    """Its Bandwidth Profile (None: Twilio's defaults)."""


def bandwidth_profile(options: Any, where: str) -> BandwidthProfile:
    try:
        return BandwidthProfile.from_options(options)
    except (ValueError, TypeError) as exc:
        raise signaling.invalid(f"{where}: {exc}") from None


def connect_options(options: dict[str, Any]) -> Features:
    """Check `connect.options`: the in-room features a client asks for."""
    unknown = set(options) - set(signaling.CONNECT_OPTIONS)
    if unknown:
        allowed = ", ".join(signaling.CONNECT_OPTIONS)
        raise signaling.invalid(f"connect.options has unknown key(s) {sorted(unknown)}; allowed: {allowed}")
    try:
        network_quality = NetworkQualityConfiguration.from_option(options.get("network_quality"))
    except (ValueError, TypeError) as exc:
        raise signaling.invalid(f"connect.options.network_quality: {exc}") from None
    dominant_speaker = options.get("dominant_speaker", False)
    if not isinstance(dominant_speaker, bool):
        raise signaling.invalid("connect.options.dominant_speaker must be true or false")
    profile = options.get("bandwidth_profile")
    return Features(
        network_quality,
        dominant_speaker,
        bandwidth_profile(profile, "connect.options.bandwidth_profile") if profile is not None else None,
    )


class SignalingEndpoint:
    def __init__(
        self, rooms: Rooms, sfu: Sfu, credentials: Credentials, allocation: BandwidthAllocation | None = None
    ) -> None:
        self.rooms = rooms
        self.sfu = sfu
        self.credentials = credentials
        self.allocation = allocation

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=WS_FRAME_LIMIT, timeout=CLOSE_TIMEOUT)
        await ws.prepare(request)
        try:
            session = await self._join(ws)
        except RoomError as error:
            await self._refuse(ws, error)
            return ws
        code = await self._serve(session)
        if session.closed or self.sfu.sessions.get(session.sid) is not session or session.ws is not ws:
            return ws  # the server ended the session (and said why), or it resumed on another socket
        if code == SIGNALING_BROKE and self.rooms.is_connected(session.sid):
            session.detach()  # the participant may come back within the reconnect window
            self.rooms.start_reconnecting(session.sid, SIGNALING_BROKE)
            return ws
        if self.rooms.is_connected(session.sid):
            self.rooms.disconnect(session.live.room.sid, session.sid, code=code)
        self.sfu.remove_session(session)
        await session.close(code)
        return ws

    @staticmethod
    async def _refuse(ws: web.WebSocketResponse, error: RoomError) -> None:
        try:
            await ws.send_str(signaling.encode({"type": "error", "code": error.code, "message": error.message}))
        except ConnectionError:  # the client went away first: nobody left to tell
            pass
        await ws.close()

    async def _join(self, ws: web.WebSocketResponse) -> Session:
        try:
            first = await ws.receive(timeout=CONNECT_TIMEOUT)
        except TimeoutError:
            raise RoomError(
                53002, f"Signaling connection timed out: no connect message within {CONNECT_TIMEOUT:g} s"
            ) from None
        if first.type != WSMsgType.TEXT:
            raise signaling.invalid("the first message must be a connect message (text)")
        message = signaling.parse_client_message(first.data)
        if message["type"] != "connect":
            raise signaling.invalid(f"the first message must be connect, got {message['type']}")
        if message["version"] != signaling.PROTOCOL_VERSION:
            supported = signaling.PROTOCOL_VERSION
            raise signaling.invalid(
                f"protocol version {message['version']} is not supported; this server speaks {supported}"
            )
        access = verify_access_token(message["token"], self.credentials)
        features = connect_options(message.get("options") or {})
        if "resume" in message:
            return self._resume(ws, access.identity, message["resume"], features)
        room_key = self.rooms.admit(access, message.get("room"))
        live, participant = self.rooms.connect(
            room_key,
            access.identity,
            automatic_subscription=message.get("automatic_subscription", True),
            metadata=message.get("metadata", ""),
        )
        session = Session(live, participant, ws, self._ended)
        self._take_features(session, features)
        session.start()
        session.send(self._connected(live, participant, self.rooms.new_session_key(participant)))
        self.sfu.add_session(session)
        session.request_negotiation()
        log.debug("room %s, participant %s joined over signaling", live.room.sid, participant.sid)
        return session

    def _connected(self, live: LiveRoom, participant: Participant, key: str, **resumed: Any) -> dict[str, Any]:
        """The reply to `connect`: the room as it is now, and the key to resume this session."""
        return {
            "type": "connected",
            "version": signaling.PROTOCOL_VERSION,
            "room": {"sid": live.room.sid, "name": live.room.unique_name},
            "participant": {"sid": participant.sid, "identity": participant.identity},
            "participants": [participant_info(p, live) for p in live.participants.values() if p.sid != participant.sid],
            "heartbeat": HEARTBEAT,
            "session": key,
            "reconnect_window": self.rooms.reconnect_window,
            **resumed,
        }

    def _resume(
        self,
        ws: web.WebSocketResponse,
        identity: str,
        resume: Any,
        features: Features,
    ) -> Session:
        """A client back after a break, with its session key (and the in-room features it asked
        for). Its peer connection is kept if both ends still have it connected (a break of
        signaling only); otherwise it gets a new one, and its tracks are published again under the
        same SIDs (after a restart, a media break)."""
        if not isinstance(resume, dict) or not all(
            isinstance(resume.get(field), str) for field in ("participant_sid", "session", "peer_connection")
        ):
            raise signaling.invalid("connect.resume needs participant_sid, session and peer_connection (strings)")
        live, participant = self.rooms.resumable(resume["participant_sid"], identity, resume["session"])
        old = self.sfu.sessions.get(participant.sid)
        if old is not None and not isinstance(old, Session):
            raise RoomError(53204, "Participant not found: no session of this protocol to resume")
        keep = (
            old is not None
            and resume["peer_connection"] == "keep"
            and not old.closed
            and old.pc.connectionState == "connected"
        )
        own = [track_info(t) for t in live.tracks.values() if t.participant_sid == participant.sid]
        if keep:
            assert old is not None
            self._take_features(old, features)
            if old.attached and old.ws is not ws:
                asyncio.get_running_loop().create_task(old.ws.close())  # a socket the server thought alive
            self.rooms.resume(participant.sid)
            reply = self._connected(live, participant, resume["session"], resumed=True, peer_connection="kept")
            old.attach(ws, first={**reply, "tracks": own})
            session = old
        else:
            if old is not None:
                self.sfu.remove_session(old)
                self.sfu.close_session(old, None)
            session = Session(live, participant, ws, self._ended)
            self._take_features(session, features)
            session.start()
            self.sfu.add_session(session)
            self.rooms.resume(participant.sid)
            reply = self._connected(live, participant, resume["session"], resumed=True, peer_connection="new")
            session.attach(ws, first={**reply, "tracks": own})
            session.request_negotiation()
        log.debug("room %s, participant %s resumed (%s)", live.room.sid, participant.sid, reply["peer_connection"])
        return session

    def _take_features(self, session: Session, features: Features) -> None:
        session.network_quality, session.dominant_speaker = features.network_quality, features.dominant_speaker
        if self.allocation is not None:
            self.allocation.set_profile(session.sid, features.bandwidth_profile or BandwidthProfile())

    async def _serve(self, session: Session) -> int | None:
        """Handle the client's messages until it leaves (None), floods (53004) or its socket
        ends (53001); return the code its participant leaves with."""
        bucket = TokenBucket(RATE, BURST)
        async for frame in session.ws:
            if frame.type == WSMsgType.TEXT or frame.type == WSMsgType.BINARY:
                if not bucket.take():
                    session.send_error(signaling.invalid(f"more than {BURST:g} messages in a burst; disconnecting"))
                    return 53004
                if frame.type == WSMsgType.BINARY:
                    session.send_error(signaling.invalid("binary WebSocket frames are not part of the protocol"))
                    continue
                message: dict[str, Any] = {}
                try:
                    message = signaling.parse_client_message(frame.data)
                    if message["type"] == "leave":
                        return None
                    self._dispatch(session, message)
                except RoomError as error:
                    ref = message.get("ref")
                    session.send_error(error, **({"ref": ref} if ref is not None else {}))
            elif frame.type == WSMsgType.ERROR:
                log.debug("participant %s: signaling error %s", session.sid, session.ws.exception())
                break
        return 53001

    def _dispatch(self, session: Session, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "ping":
            session.send({"type": "pong"})
        elif kind == "answer":
            session.on_answer(message["sdp"])
        elif kind == "publish":
            track_kind = message["kind"]
            if track_kind not in TRACK_KINDS:
                raise RoomError(53300, f"Track kind must be one of {', '.join(TRACK_KINDS)}, got {track_kind!r}")
            options = track_options(track_kind, message.get("options") or {})
            # the reply is queued before the negotiation it may start, so the client knows the SID first
            track = self.rooms.publish_track(session.sid, message["name"], track_kind, options)
            session.send({"type": "published", "ref": message["ref"], "track": track_info(track)})
        elif kind == "unpublish":
            self._own_track(session, message["sid"])
            self.rooms.unpublish_track(message["sid"])
        elif kind == "set_track_enabled":
            self._own_track(session, message["sid"])
            self.rooms.set_track_enabled(message["sid"], message["enabled"])
        elif kind == "set_track_priority":
            self._own_track(session, message["sid"])
            if message["priority"] not in PRIORITIES:
                raise signaling.invalid(f"priority must be one of {', '.join(PRIORITIES)}")
            self.rooms.set_track_priority(message["sid"], message["priority"])
        elif kind == "set_metadata":
            self.rooms.set_metadata(session.sid, message["metadata"])
        elif kind == "set_network_quality":
            try:
                session.network_quality = NetworkQualityConfiguration(message["local"], message["remote"])
            except ValueError as exc:
                raise signaling.invalid(str(exc)) from None
        elif kind == "set_bandwidth_profile":
            profile = bandwidth_profile(message["bandwidth_profile"], "set_bandwidth_profile")
            if self.allocation is not None:
                self.allocation.set_profile(session.sid, profile)
        elif kind == "set_subscriber_priority":
            priority = message["priority"]
            if priority is not None and priority not in PRIORITIES:
                raise signaling.invalid(f"priority must be one of {', '.join(PRIORITIES)} or null")
            track_sid = self._subscribed_track(session, message["track_sid"])
            if self.allocation is not None:
                self.allocation.set_priority(session.sid, track_sid, priority)
        elif kind == "switch_track":
            track_sid = self._subscribed_track(session, message["track_sid"])
            if self.allocation is not None:
                self.allocation.switch(session.sid, track_sid, message["switched_off"])
        elif kind == "connect":
            raise signaling.invalid("already connected")

    def _subscribed_track(self, session: Session, track_sid: str) -> str:
        track = session.live.tracks.get(track_sid)
        if track is None or track.kind != "video" or track.participant_sid == session.sid:
            raise RoomError(53300, f"Track {track_sid!r} is not a video track of another participant in the room")
        return track_sid

    def _own_track(self, session: Session, track_sid: str) -> None:
        track = session.live.tracks.get(track_sid)
        if track is None or track.participant_sid != session.sid:
            raise RoomError(53300, f"Track {track_sid!r} is not a track you published")

    def _ended(self, session: Session, code: int | None) -> None:
        """A session broke. Its media path (53405): the participant reconnects (its socket is
        closed too, so that the client does, if it has not noticed). No answer or a backlog of
        signaling (53002): its participant is removed with that code."""
        current = self.sfu.sessions.get(session.sid) is session and not session.closed
        if code == MEDIA_BROKE and current and self.rooms.is_connected(session.sid):
            self.rooms.start_reconnecting(session.sid, MEDIA_BROKE)
            if session.attached:
                asyncio.get_running_loop().create_task(session.ws.close())
            return
        if self.rooms.is_connected(session.sid):
            self.rooms.disconnect(session.live.room.sid, session.sid, code=code)
        else:
            self.sfu.remove_session(session)
            self.sfu.close_session(session, code)
