"""One participant's session over roomlab's own signaling: its WebSocket, on top of the peer
connection that every protocol shares (`connection.ParticipantConnection`).

The server drives every SDP negotiation: it adds data channels and transceivers, offers, and
applies the client's answer. Requests for negotiation coalesce, so a burst of subscriptions costs
one round trip. Outgoing signaling goes through a queue and a writer task, so that nothing in the
room ever waits on one client's socket. Room events become this protocol's messages in `notify`.

When the socket breaks, the session outlives it while its participant is `reconnecting`: what the
room says meanwhile waits in the queue, an offer waiting for its answer waits too, and a client
that resumes on a new socket (`attach`) gets them there, after the message that resumes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiortc import RTCSessionDescription

from ..errors import RoomError
from ..net import closing
from ..net.renegotiation import transport_ready
from ..policy.quality import NetworkQualityStats
from ..protocol import signaling
from ..protocol.network_quality import stats_to_wire
from .connection import ANSWER_TIMEOUT, ParticipantConnection
from .model import Participant, PublishedTrack, RoomEvent
from .rooms import LiveRoom

log = logging.getLogger(__name__)

#: Seconds the server waits for a client's answer before it counts the session as broken.
#: Signaling messages that may wait for a slow client before its session is closed.
OUTBOX_LIMIT = 1000
#: Labels of the two channels every participant has for `publish_data` (after LiveKit's).
RELIABLE_CHANNEL = "_reliable"
LOSSY_CHANNEL = "_lossy"
TRACK_CHANNEL_PROTOCOL = "roomlab-track"


def participant_info(p: Participant, live: LiveRoom) -> dict[str, Any]:
    return {
        "sid": p.sid,
        "identity": p.identity,
        "state": p.status,
        "metadata": p.metadata,
        "tracks": [track_info(t) for t in live.tracks.values() if t.participant_sid == p.sid],
    }


def track_info(t: PublishedTrack) -> dict[str, Any]:
    return {"sid": t.sid, "name": t.name, "kind": t.kind, "enabled": t.enabled, "options": t.options}


class Session(ParticipantConnection):
    def __init__(
        self,
        live: LiveRoom,
        participant: Participant,
        ws: web.WebSocketResponse,
        on_closed: Callable[[Session, int | None], None],
    ) -> None:
        super().__init__(live, participant)
        self.ws = ws
        #: signaling messages waiting for the writer task; one stays queued until it is written
        self._outbox: deque[dict[str, Any]] = deque()
        self._queued = asyncio.Event()
        self._emptied = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._negotiating: asyncio.Task[None] | None = None
        self._renegotiate = False
        #: the offer waiting for its answer (sent again on a new socket after a break)
        self._offer: dict[str, Any] | None = None
        self._on_closed = on_closed

    # signaling out ---------------------------------------------------------------------------
    def start(self) -> None:
        self.attach(self.ws)
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
        if len(self._outbox) >= OUTBOX_LIMIT:
            log.debug("participant %s: signaling backlog over %d, closing", self.sid, OUTBOX_LIMIT)
            self._on_closed(self, 53002)
            return
        self._outbox.append(message)
        self._emptied.clear()
        self._queued.set()

    def send_error(self, error: RoomError, **context: Any) -> None:
        self.send({"type": "error", "code": error.code, "message": error.message, **context})

    report_error = send_error

    def report_track_warning(self, track_sid: str, name: str, message: str, cleared: bool) -> None:
        kind = "track_warnings_cleared" if cleared else "track_warning"
        self.send({"type": kind, "track_sid": track_sid, "name": name, "message": message})

    def report_dropped(self, track_sid: str, count: int) -> None:
        self.send({"type": "data_dropped", "track_sid": track_sid, "messages": count})

    def report_network_quality(self, participants: dict[str, NetworkQualityStats | None]) -> None:
        wire = {sid: stats_to_wire(stats) for sid, stats in participants.items()}
        self.send({"type": "network_quality", "participants": wire})

    def report_dominant_speaker(self, participant_sid: str | None) -> None:
        self.send({"type": "dominant_speaker_changed", "participant_sid": participant_sid})

    def report_layer(self, track_sid: str, layer: str | None) -> None:
        self.send({"type": "layer_changed", "track_sid": track_sid, "layer": layer})

    def report_congestion(self, track_sid: str | None, congested: bool) -> None:
        if track_sid is None:
            self.send({"type": "data_congestion", "congested": congested})
        else:
            self.send({"type": "track_congestion", "track_sid": track_sid, "congested": congested})

    def report_switch(self, track_sid: str, off: bool, reason: str | None) -> None:
        kind = "track_switched_off" if off else "track_switched_on"
        self.send({"type": kind, "track_sid": track_sid, "reason": reason})

    def notify_room(
        self, event: RoomEvent, live: LiveRoom, participant: Participant | None, track: PublishedTrack | None
    ) -> None:
        """Room news in this protocol's messages: about the others, and this client's unsubscriptions."""
        name = event.name
        if participant is None:
            return
        if participant.sid == self.sid:
            if name == "track-unsubscribed":
                self.send({"type": "unsubscribed", "track_sid": event.track_sid})
            return
        if name == "participant-connected":
            self.send({"type": "participant_connected", "participant": participant_info(participant, live)})
        elif name == "participant-disconnected":
            self.send({"type": "participant_disconnected", "participant_sid": participant.sid})
        elif name in ("participant-reconnecting", "participant-reconnected"):
            self.send({"type": name.replace("-", "_"), "participant_sid": participant.sid})
        elif name == "participant-metadata-changed":
            metadata = participant.metadata
            self.send({"type": "metadata_changed", "participant_sid": participant.sid, "metadata": metadata})
        elif name == "track-added" and track is not None:
            self.send({"type": "track_published", "participant_sid": participant.sid, "track": track_info(track)})
        elif name == "track-removed" and track is not None:
            self.send({"type": "track_unpublished", "participant_sid": participant.sid, "track_sid": track.sid})
        elif name in ("track-enabled", "track-disabled") and track is not None:
            self.send({"type": name.replace("-", "_"), "participant_sid": participant.sid, "track_sid": track.sid})
        elif name == "track-priority-changed" and track is not None:
            priority = track.options.get("priority", "standard")
            changed = {"participant_sid": participant.sid, "track_sid": track.sid, "priority": priority}
            self.send({"type": "track_priority_changed", **changed})

    def attach(self, ws: web.WebSocketResponse, first: dict[str, Any] | None = None) -> None:
        """Write to `ws` from now on: `first`, then an offer still waiting for its answer (it may
        have been lost with the last socket), then whatever is queued."""
        if self._writer is not None:
            self._writer.cancel()
        self.ws = ws
        if self._offer is not None and not any(m is self._offer for m in self._outbox):
            self._outbox.appendleft(self._offer)
        if first is not None:
            self._outbox.appendleft(first)
        if self._outbox:
            self._emptied.clear()
        self._attached.set()
        self._queued.set()
        self._writer = asyncio.get_running_loop().create_task(self._write_forever(ws))

    def detach(self) -> None:
        """The socket broke: keep queueing until the client resumes (or the window closes)."""
        self._attached.clear()
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None

    async def _write_forever(self, ws: web.WebSocketResponse) -> None:
        while True:
            if not self._outbox:
                self._queued.clear()
                self._emptied.set()
                await self._queued.wait()
                continue
            try:
                await ws.send_str(signaling.encode(self._outbox[0]))
            except (ConnectionError, RuntimeError):
                return  # kept queued: the socket broke, and the reader will say so
            self._outbox.popleft()

    async def _flush(self, timeout: float) -> None:
        """Give the writer up to `timeout` seconds to write what is queued (a goodbye)."""
        writer = self._writer
        if not self._outbox or writer is None or writer.done() or not self.attached:
            return
        emptied = asyncio.ensure_future(self._emptied.wait())
        try:
            await asyncio.wait({emptied, writer}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            emptied.cancel()

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
        self.add_pending_transceivers()
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)
        self._answer = asyncio.get_running_loop().create_future()
        mids = {
            slot.transceiver.mid: {"role": slot.role, "track_sid": slot.track_sid}
            | ({"layer": slot.layer} if slot.layer is not None else {})
            for slot in self.slots
            if slot.transceiver is not None and slot.transceiver.mid is not None
        }
        self._offer = {"type": "offer", "sdp": self.pc.localDescription.sdp, "mids": mids}
        self.send(self._offer)
        while True:
            sdp = await self._wait_for_answer()
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            except Exception as exc:  # any parse or negotiation failure of the client's SDP
                self._answer = asyncio.get_running_loop().create_future()
                self.send_error(RoomError(53403, f"Server unable to apply the remote answer: {exc}"))
                self.send(self._offer)
                continue
            break
        self._answer = self._offer = None

    def on_answer(self, sdp: str) -> None:
        if self._answer is None or self._answer.done():
            raise signaling.invalid("answer without a pending offer")
        self._answer.set_result(sdp)

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
        await self._flush(2.0)
        self.detach()
        if self._negotiating is not None:
            self._negotiating.cancel()
        if self._answer is not None and not self._answer.done():
            self._answer.cancel()
        await self.ws.close()  # bounded by the socket's close timeout (signaling.CLOSE_TIMEOUT)
        await closing.close_peer_connection(self.pc)
