"""One participant's connection to the server: its signaling WebSocket and its peer connection.

The server drives every SDP negotiation: it adds data channels and transceivers, offers, and
applies the client's answer. Requests for negotiation coalesce, so a burst of subscriptions costs
one round trip. Outgoing signaling goes through a queue and a writer task, so that nothing in the
room ever waits on one client's socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiortc import RTCDataChannel, RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription

from ..errors import RoomError
from ..net import bundle, sctp
from ..net.ice import rtc_configuration
from ..net.renegotiation import transport_ready
from ..protocol import signaling
from ..protocol.batching import Batcher
from .media import OutgoingTrack, route_keyframe_requests
from .model import Participant
from .rooms import LiveRoom

log = logging.getLogger(__name__)
sctp.install()
bundle.install()

#: Seconds the server waits for a client's answer before it counts the session as broken.
ANSWER_TIMEOUT = 15.0
#: Signaling messages that may wait for a slow client before its session is closed.
OUTBOX_LIMIT = 1000
#: Labels of the two channels every participant has for `publish_data` (after LiveKit's).
RELIABLE_CHANNEL = "_reliable"
LOSSY_CHANNEL = "_lossy"
TRACK_CHANNEL_PROTOCOL = "roomlab-track"


@dataclass
class MediaSlot:
    """A transceiver and the published track it carries (`role` publish: client to server)."""

    transceiver: RTCRtpTransceiver
    role: str
    track_sid: str | None
    outgoing: OutgoingTrack | None = None


class Session:
    def __init__(
        self,
        live: LiveRoom,
        participant: Participant,
        ws: web.WebSocketResponse,
        on_closed: Callable[[Session, int | None], None],
    ) -> None:
        self.live = live
        self.participant = participant
        self.ws = ws
        self.pc = RTCPeerConnection(rtc_configuration())
        self.closed = False
        self.reliable: RTCDataChannel | None = None
        self.lossy: RTCDataChannel | None = None
        self.slots: list[MediaSlot] = []
        #: publish_data outlets to this client, by channel label
        self.batchers: dict[str, Batcher] = {}
        #: signaling messages waiting for the writer task (None: close)
        self._outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._negotiating: asyncio.Task[None] | None = None
        self._renegotiate = False
        self._answer: asyncio.Future[str] | None = None
        self._on_closed = on_closed

    @property
    def sid(self) -> str:
        return self.participant.sid

    # signaling out ---------------------------------------------------------------------------
    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_forever())
        self.reliable = self.pc.createDataChannel(RELIABLE_CHANNEL, ordered=True)
        self.lossy = self.pc.createDataChannel(LOSSY_CHANNEL, ordered=False, maxRetransmits=0)

        @self.pc.on("connectionstatechange")
        async def on_state() -> None:
            # aiortc goes from connected straight to closed when ICE consent expires, never "failed"
            if self.pc.connectionState in ("failed", "closed") and not self.closed:
                log.debug("participant %s: peer connection lost (%s)", self.sid, self.pc.connectionState)
                self._on_closed(self, 53405)

    def send(self, message: dict[str, Any]) -> None:
        """Queue a signaling message; a client that stops reading is disconnected, not waited on."""
        if self.closed:
            return
        if self._outbox.qsize() >= OUTBOX_LIMIT:
            log.debug("participant %s: signaling backlog over %d, closing", self.sid, OUTBOX_LIMIT)
            self._on_closed(self, 53002)
            return
        self._outbox.put_nowait(message)

    def send_error(self, error: RoomError, **context: Any) -> None:
        self.send({"type": "error", "code": error.code, "message": error.message, **context})

    async def _write_forever(self) -> None:
        while True:
            message = await self._outbox.get()
            if message is None:
                return
            try:
                await self.ws.send_str(signaling.encode(message))
            except (ConnectionError, RuntimeError):
                return

    # negotiation ----------------------------------------------------------------------------
    def request_negotiation(self) -> None:
        """Negotiate soon; requests made while a negotiation runs are folded into one more round."""
        if self.closed:
            return
        if self._negotiating is not None and not self._negotiating.done():
            self._renegotiate = True
            return
        self._negotiating = asyncio.get_running_loop().create_task(self._negotiate_until_settled())

    async def _negotiate_until_settled(self) -> None:
        try:
            while True:
                self._renegotiate = False
                if self.pc.remoteDescription is not None:  # a renegotiation
                    await transport_ready(self.pc, ANSWER_TIMEOUT)
                    if self.closed:
                        break
                await self._negotiate_once()
                if not self._renegotiate or self.closed:
                    break
        except RoomError as error:
            log.debug("participant %s: negotiation failed: %s", self.sid, error)
            self.send_error(error)
        except TimeoutError:
            log.debug("participant %s: no answer within %s s", self.sid, ANSWER_TIMEOUT)
            self._on_closed(self, 53002)

    async def _negotiate_once(self) -> None:
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)
        self._answer = asyncio.get_running_loop().create_future()
        mids = {
            slot.transceiver.mid: {"role": slot.role, "track_sid": slot.track_sid}
            for slot in self.slots
            if slot.transceiver.mid is not None
        }
        self.send({"type": "offer", "sdp": self.pc.localDescription.sdp, "mids": mids})
        while True:
            sdp = await asyncio.wait_for(asyncio.shield(self._answer), ANSWER_TIMEOUT)
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            except Exception as exc:  # any parse or negotiation failure of the client's SDP
                self._answer = asyncio.get_running_loop().create_future()
                self.send_error(RoomError(53403, f"Server unable to apply the remote answer: {exc}"))
                self.send({"type": "offer", "sdp": self.pc.localDescription.sdp, "mids": mids})
                continue
            break
        self._answer = None

    def on_answer(self, sdp: str) -> None:
        if self._answer is None or self._answer.done():
            raise signaling.invalid("answer without a pending offer")
        self._answer.set_result(sdp)

    # media ----------------------------------------------------------------------------------
    def receive_media(self, kind: str, track_sid: str) -> None:
        """A recvonly transceiver for a track the client publishes; negotiated soon."""
        transceiver = self.pc.addTransceiver(kind, direction="recvonly")
        self.slots.append(MediaSlot(transceiver, "publish", track_sid))
        self.request_negotiation()

    def publishing_slot(self, transceiver: RTCRtpTransceiver) -> MediaSlot | None:
        return next((s for s in self.slots if s.transceiver is transceiver and s.role == "publish"), None)

    def send_media(self, track_sid: str, kind: str) -> OutgoingTrack:
        """A sending slot for `track_sid` (an idle one of the kind if there is one); the forwarder
        pushes the track's frames into the returned outgoing track."""
        slot = next(
            (s for s in self.slots if s.role == "subscribe" and s.track_sid is None and s.transceiver.kind == kind),
            None,
        )
        if slot is None:
            outgoing = OutgoingTrack(kind)
            transceiver = self.pc.addTransceiver(outgoing, direction="sendonly")
            route_keyframe_requests(transceiver.sender, outgoing.request_keyframe)
            slot = MediaSlot(transceiver, "subscribe", None, outgoing)
            self.slots.append(slot)
        assert slot.outgoing is not None
        slot.transceiver.direction = "sendonly"
        slot.track_sid = track_sid
        self.request_negotiation()
        return slot.outgoing

    def stop_media(self, track_sid: str) -> None:
        for slot in self.slots:
            if slot.track_sid == track_sid:
                slot.transceiver.direction = "inactive"
                slot.track_sid = None
                if slot.outgoing is None:
                    slot.role = "retired"  # a publisher's slot is not used again; a subscriber's waits idle
        self.request_negotiation()

    # teardown -------------------------------------------------------------------------------
    async def close(self, code: int | None = None, message: str | None = None) -> None:
        """Tell the client why (if it is still there), then close its socket and connection."""
        if self.closed:
            return
        if code is not None or message is not None:
            error = RoomError(code) if code is not None else None
            self.send(
                {
                    "type": "disconnected",
                    "code": code,
                    "message": message or (error.message if error else "Disconnected"),
                }
            )
        self.closed = True
        self._outbox.put_nowait(None)
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._writer, 2.0)
            except TimeoutError:
                self._writer.cancel()
        if self._negotiating is not None:
            self._negotiating.cancel()
        if self._answer is not None and not self._answer.done():
            self._answer.cancel()
        await self.ws.close()
        await self.pc.close()
