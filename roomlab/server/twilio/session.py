"""One SDK client's session: RSP v2 over its TCMP connection, on the peer connection that every
signaling protocol shares (`connection.ParticipantConnection`).

Negotiation follows the SDK's rules (`lib/signaling/v2/peerconnection.js`):
- The client offers first, in `connect`; the server answers in `connected`. Later the client
  offers again when it adds media or its first data track; the server offers when it adds media
  or data channels for subscriptions. One revision counter per peer connection counts offers: a
  new offer has the last revision + 1, and its answer carries the same revision.
- Glare: an offer from the client that arrives while the server's own offer waits for its answer
  is dropped. The SDK, in `have-local-offer` when the server's offer reaches it, rolls back,
  answers, and offers again.
- aiortc starts RTP senders and receivers only if DTLS is up when a negotiation completes, so no
  negotiation after the first starts before the peer connection is connected.
- Transceivers for subscriptions are created just before the server's offer, under the same lock as
  the client's offers, so a client's new m-line never binds to one of them.

Room events arrive through `notify`; the state the SDK holds (remote participants and their tracks,
this participant's publications and subscriptions) is recomputed from the room, and whatever
changed is sent in one `update` per event-loop turn, each part at a higher revision. In-room
features (dominant speaker, network quality, track switch-off, the subscriber's priorities and
render hints) go over the media-signaling channels (`media_signaling.MediaSignaling`); the
bandwidth profile, priorities and render hints go to the server's one bandwidth allocation, whose
switch-offs and switch-ons come back as room events.

Reconnection: when the socket drops, the session outlives it (`detach`) while its participant is
`reconnecting`; the peer connection goes on. The SDK opens a new socket within `session_timeout`
and sends `sync`; the session carries on there (`attach`), answering with `synced`: the whole
state again, and the last offer or answer it sent (lost, perhaps, with the old socket). Time spent
reconnecting does not count against the client's answer to an offer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

from aiortc import RTCDataChannel, RTCRtpTransceiver, RTCSessionDescription
from aiortc.exceptions import InvalidStateError

from ...errors import RoomError
from ...net import closing
from ...net.ice import host_addresses
from ...net.renegotiation import transport_ready
from ...policy.allocation import PRIORITIES, BandwidthProfile
from ...policy.quality import NetworkQualityStats
from ...telemetry.sampling import ChannelCounters
from ..allocation import BandwidthAllocation
from ..connection import DropNotice, MediaSlot, ParticipantConnection
from ..model import Participant, PublishedTrack, RoomEvent
from ..rooms import MEDIA_BROKE, LiveRoom, Rooms
from ..signaling import track_options
from . import rsp
from .data import PlainOutlet, frame_arrivals
from .media_signaling import MediaSignaling, RenderHint
from .sdp import Numbering, ice_candidate, media_track_ids, renumber
from .tcmp import TcmpConnection

log = logging.getLogger(__name__)

#: Seconds the server waits for the client's answer to its offer before it ends the session.
#: Seconds a later negotiation waits for ICE and DTLS to come up before it gives up.
TRANSPORT_TIMEOUT = 20.0
#: Seconds a peer connection that ended waits for the socket to say why (a page that goes away
#: closes both) before the session ends for a lost media path.
MEDIA_LOST_GRACE = 1.0


class TwilioSession(ParticipantConnection):
    def __init__(
        self,
        live: LiveRoom,
        participant: Participant,
        connection: TcmpConnection,
        rooms: Rooms,
        on_closed: Callable[[TwilioSession, int | None], None],
        session_key: str | None = None,
        media_signaling: tuple[str, ...] = (),
        bandwidth_profile: BandwidthProfile | None = None,
        allocation: BandwidthAllocation | None = None,
    ) -> None:
        super().__init__(live, participant)
        self.connection = connection
        self.rooms = rooms
        #: the RSP session id the client repeats in its updates and resumes with (`sync`): the
        #: participant's session key (the room domain keeps its hash)
        self.rsp_session = session_key or secrets.token_hex(16)
        #: the SDK's peer connection id (it opens one)
        self.pc_id = ""
        #: the server's bandwidth allocation, which takes this subscriber's profile, priorities and hints
        self.allocation = allocation
        #: the media-signaling channels the client asked for (`connect.media_signaling`)
        self.media_signaling = MediaSignaling(self, media_signaling, self._set_priority, self._set_render_hint)
        #: the client's `bandwidth_profile` (None: it gave none; Twilio's defaults apply)
        self.bandwidth_profile = bandwidth_profile
        self._set_profile(bandwidth_profile)
        self._on_closed = on_closed
        self._connected_sent = False
        self._attached.set()  # (an SDK session starts on its socket)
        #: the last offer or answer sent, sent again in `synced` (it may have been lost)
        self._last_description: dict[str, Any] | None = None
        # negotiation
        self._revision = 0
        self._sdp_lock = asyncio.Lock()
        self._offer_revision = 0
        self._negotiating: asyncio.Task[None] | None = None
        self._renegotiate = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._mid_track_ids: dict[str, str] = {}
        self._numbering = Numbering()
        self._remote_candidates: set[str] = set()
        # the local participant's tracks, by the SDK's track id
        self._participant_revision = -1
        self._local_tracks: dict[str, dict[str, Any]] = {}
        self._published: dict[str, str] = {}
        self._refused: dict[str, RoomError] = {}
        self._unclaimed_channels: dict[str, RTCDataChannel] = {}
        # what the client has been told, to send only changes
        self._revisions = itertools.count(1)
        self._told_participants: dict[str, tuple[int, str, str]] = {}
        self._told_published = ""
        self._told_subscribed = ""
        self._push_scheduled = False
        self._closing: asyncio.Future[None] | None = None

    # joining -----------------------------------------------------------------------------------
    async def start(self, connect: dict[str, Any]) -> None:
        """Publish what `connect` lists, answer its offer, and send `connected`."""
        offers = [
            state
            for state in connect.get("peer_connections") or []
            if (state.get("description") or {}).get("type") == "offer"
        ]
        if len(offers) != 1:
            raise rsp.invalid(f"connect must carry exactly one offer, got {len(offers)}")
        self.apply_participant(connect["participant"])
        state = offers[0]
        self.pc_id = state["id"]
        async with self._sdp_lock:
            answer = await self._answer_offer(state["description"]["sdp"], state["description"]["revision"])
        self._last_description = self._description("answer", self._revision, answer)
        announced = self.media_signaling.open(self.open_data_channel)  # negotiated next if SCTP is not yet
        self.connection.send(self._connected_message(answer, announced))
        self._connected_sent = True

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState in ("failed", "closed") and not self.closed:
                asyncio.get_running_loop().call_later(MEDIA_LOST_GRACE, self._media_lost)

        if state.get("ice"):
            await self._add_candidates(state["ice"])
        if self._renegotiate:
            self.request_negotiation()

    def _media_lost(self) -> None:
        """The peer connection ended and the socket did not say why: the media path is lost, and
        aiortc has no ICE restart (the SDK's way back), so the session ends with 53405."""
        if not self.closed:
            log.debug("participant %s: peer connection lost (%s)", self.sid, self.pc.connectionState)
            self._on_closed(self, MEDIA_BROKE)

    def _connected_message(self, answer_sdp: str, media_signaling: dict[str, Any]) -> dict[str, Any]:
        room = self.live.room
        return {
            "type": "connected",
            "version": rsp.VERSION,
            "session": self.rsp_session,
            # how long the SDK tries to resume a dropped socket: the room's reconnect window
            "options": {"session_timeout": round(self.rooms.reconnect_window)},
            "sid": room.sid,
            "name": room.unique_name,
            "participant": {"sid": self.sid, "identity": self.participant.identity},
            "peer_connections": [self._description("answer", self._revision, answer_sdp)],
            "media_signaling": media_signaling,
            **self._changed_state(),
        }

    # the subscriber's bandwidth profile, priorities and render hints, for the allocation -------
    def _set_profile(self, profile: BandwidthProfile | None) -> None:
        self.bandwidth_profile = profile
        if self.allocation is not None:
            self.allocation.set_profile(self.sid, profile or BandwidthProfile())

    def _set_priority(self, track_sid: str, priority: str | None) -> None:
        if self.allocation is not None and self._subscribed_video(track_sid):
            self.allocation.set_priority(self.sid, track_sid, priority)

    def _set_render_hint(self, track_sid: str, hint: RenderHint) -> None:
        if self.allocation is None or not self._subscribed_video(track_sid):
            return
        if hint.enabled is not None:
            self.allocation.switch(self.sid, track_sid, off=not hint.enabled)
        if hint.render_dimensions is not None:
            self.allocation.set_render_dimensions(self.sid, track_sid, hint.render_dimensions)

    def _subscribed_video(self, track_sid: str) -> bool:
        track = self.live.tracks.get(track_sid)
        return track is not None and track.kind == "video" and track.participant_sid != self.sid

    # the client's messages ---------------------------------------------------------------------
    async def handle(self, body: dict[str, Any]) -> None:
        """An `update` (or the `sync` that resumes the session) from the client: its bandwidth
        profile, its publications, then its SDP and ICE."""
        if body.get("bandwidth_profile") is not None:
            self._set_profile(rsp.bandwidth_profile(body["bandwidth_profile"]))
        if body.get("participant") is not None:
            self.apply_participant(body["participant"])
        for state in body.get("peer_connections") or []:
            if state["id"] != self.pc_id:
                log.debug("participant %s: ignoring peer connection %s (one per client)", self.sid, state["id"])
                continue
            if state.get("ice"):
                await self._add_candidates(state["ice"])
            if state.get("description"):
                self._on_description(state["description"])

    def apply_participant(self, state: dict[str, Any]) -> None:
        """The client's full list of tracks: publish the new ones, unpublish the gone, follow `enabled`."""
        if state["revision"] <= self._participant_revision:
            return
        self._participant_revision = state["revision"]
        current = {track["id"]: track for track in state["tracks"]}
        for track_id in [t for t in self._local_tracks if t not in current]:
            del self._local_tracks[track_id]
            self._refused.pop(track_id, None)
            sid = self._published.pop(track_id, None)
            if sid is not None and sid in self.live.tracks:
                self.rooms.unpublish_track(sid)
        for track_id, track in current.items():
            known = self._local_tracks.get(track_id)
            self._local_tracks[track_id] = track
            if known is None:
                if track["kind"] != "data":
                    self._publish(track_id, track)
                elif track_id in self._unclaimed_channels:
                    # its channel opened before this message came: let the forwarding plane take it now
                    self.pc.emit("datachannel", self._unclaimed_channels.pop(track_id))
            elif track_id in self._published:
                sid = self._published[track_id]
                if known.get("enabled", True) != track.get("enabled", True):
                    self.rooms.set_track_enabled(sid, track.get("enabled", True))
                priority = track.get("priority") or "standard"
                if known.get("priority") != track.get("priority") and priority in PRIORITIES:
                    self.rooms.set_track_priority(sid, priority)  # its LocalTrackPublication.setPriority
        self._schedule_push()

    def _publish(self, track_id: str, track: dict[str, Any], channel: RTCDataChannel | None = None) -> str | None:
        options: dict[str, Any] = {"priority": track.get("priority") or "standard"}
        if channel is not None:
            options.update(
                ordered=channel.ordered,
                max_packet_life_time=channel.maxPacketLifeTime,
                max_retransmits=channel.maxRetransmits,
            )
        try:
            checked = track_options(track["kind"], options)
            published = self.rooms.publish_track(self.sid, track["name"], track["kind"], checked)
        except RoomError as error:
            log.debug("participant %s: track %s refused: %s", self.sid, track_id, error)
            self._refused[track_id] = error
            self._schedule_push()
            return None
        self._published[track_id] = published.sid
        if not track.get("enabled", True):
            self.rooms.set_track_enabled(published.sid, False)
        self._schedule_push()
        return published.sid

    # data --------------------------------------------------------------------------------------
    def published_track_for_channel(self, channel: RTCDataChannel) -> str | None:
        """A data channel the SDK opened for a data track it lists: publish the track now, with the
        channel's reliability (the SDK's track list does not carry it). A channel whose track is not
        listed yet waits for the client's next update (returns None)."""
        track_id = channel.label
        if track_id in self._published:
            return self._published[track_id]
        track = self._local_tracks.get(track_id)
        if track is None:
            self._unclaimed_channels[track_id] = channel
            return None
        if track["kind"] != "data":
            return ""  # not a data track's channel: refused
        return self._publish(track_id, track, channel) or ""  # "": refused, the channel is closed

    def data_inlet(self, channel: RTCDataChannel, deliver: Callable[..., None]) -> None:
        frame_arrivals(channel, deliver)

    def data_outlet(  # type: ignore[override]
        self,
        channel: RTCDataChannel,
        counters: ChannelCounters,
        track_sid: str,
        track_name: str | None = None,
        publisher: str | None = None,
    ) -> PlainOutlet:
        counters.watch(channel, self.participant.identity, track_name, publisher)
        return PlainOutlet(channel, counters, DropNotice(self, track_sid))

    # media -------------------------------------------------------------------------------------
    def receive_media(self, kind: str, track_sid: str, layers: tuple[str, ...] = ()) -> None:
        """Nothing to add: the SDK's own offer carries the m-line of every track it publishes (its
        publications have no roomlab layers)."""

    def publishing_slot(self, transceiver: RTCRtpTransceiver) -> MediaSlot | None:
        """The slot of a client m-line, found by the track id the SDK wrote in its `a=msid` (the SDK
        reuses an m-line whose track it unpublished for the next track of that kind)."""
        sid = self._published.get(self._mid_track_ids.get(transceiver.mid or "", ""))
        if sid is None:
            return None
        slot = next((s for s in self.slots if s.transceiver is transceiver), None)
        if slot is None:
            slot = MediaSlot(transceiver, "publish", sid)
            self.slots.append(slot)
        slot.role, slot.track_sid = "publish", sid
        return slot

    def stop_media(self, track_sid: str) -> None:
        """A track gone: its publishing m-line stays as the client left it (it may reuse it); a
        subscription's m-line goes inactive, as for every protocol."""
        for slot in self.slots:
            if slot.track_sid == track_sid and slot.role == "publish":
                slot.role, slot.track_sid = "retired", None
        if any(slot.track_sid == track_sid for slot in self.slots):
            super().stop_media(track_sid)

    def _bind_client_media(self) -> None:
        """After a description from the client is applied: hand the forwarding plane every m-line
        the client sends a published track on that no slot carries yet. aiortc signals a remote
        track once per m-line, and the client may first send a track in an answer (after glare) or
        on a reused m-line, so the signal is repeated here for those."""
        for transceiver in self.pc.getTransceivers():
            track = transceiver.receiver.track
            if track is None or transceiver.currentDirection not in ("recvonly", "sendrecv"):
                continue
            sid = self._published.get(self._mid_track_ids.get(transceiver.mid or "", ""))
            carried = next((s for s in self.slots if s.transceiver is transceiver and s.role == "publish"), None)
            if sid is not None and (carried is None or carried.track_sid != sid):
                self.pc.emit("track", track)

    # negotiation -------------------------------------------------------------------------------
    async def _answer_offer(self, sdp: str, revision: int) -> str:
        self._mid_track_ids.update(media_track_ids(sdp))
        self._numbering.learn(sdp)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except Exception as exc:  # any parse or negotiation failure of the client's SDP
            raise RoomError(53403, f"Server is unable to apply a remote media description: {exc}") from None
        self._revision = revision
        self._bind_client_media()
        return self.pc.localDescription.sdp

    def _description(self, kind: str, revision: int, sdp: str) -> dict[str, Any]:
        return {"id": self.pc_id, "description": rsp.description(kind, revision, sdp)}

    def _on_description(self, description: dict[str, Any]) -> None:
        kind, revision = description["type"], description["revision"]
        if kind == "offer":
            if self._awaiting_answer or revision <= self._revision:
                log.debug("participant %s: offer %d dropped (glare or stale)", self.sid, revision)
                return
            self._spawn(self._answer_later(description["sdp"], revision))
        elif kind == "answer":
            if self._awaiting_answer and revision == self._offer_revision:
                self._answer.set_result(description["sdp"])  # type: ignore[union-attr]

    @property
    def _awaiting_answer(self) -> bool:
        """The server's offer is out and its answer has not come: the client's offers are glare.
        (An offer that follows the answer in the same burst is not: the SDK answers, then offers.)"""
        return self._answer is not None and not self._answer.done()

    async def _answer_later(self, sdp: str, revision: int) -> None:
        """A later offer from the client, answered once the transport is up and nothing else negotiates."""
        try:
            await transport_ready(self.pc, TRANSPORT_TIMEOUT)
            async with self._sdp_lock:
                if self.closed or revision <= self._revision:
                    return  # the server offered meanwhile: the client rolled this one back
                answer = await self._answer_offer(sdp, revision)
            self._last_description = self._description("answer", revision, answer)
            self._send_update({"peer_connections": [self._last_description]})
        except RoomError as error:
            log.debug("participant %s: offer %d failed: %s", self.sid, revision, error)
            self._on_closed(self, error.code)
        except (TimeoutError, InvalidStateError) as exc:  # no transport in time, or the session closed
            log.debug("participant %s: offer %d not answered: %s", self.sid, revision, exc)

    def request_negotiation(self) -> None:
        """Offer soon (after `connected` and once the transport is up); requests fold into one round."""
        self._renegotiate = True
        if self.closed or not self._connected_sent:
            return
        if self._negotiating is not None and not self._negotiating.done():
            return
        self._negotiating = self._spawn(self._negotiate_until_settled())

    async def _negotiate_until_settled(self) -> None:
        try:
            await transport_ready(self.pc, TRANSPORT_TIMEOUT)
            while self._renegotiate and not self.closed:
                self._renegotiate = False
                await self._offer_once()
        except TimeoutError:
            log.debug("participant %s: no answer or no transport in time", self.sid)
            self._on_closed(self, 53002)
        except InvalidStateError as exc:  # the session closed meanwhile
            log.debug("participant %s: negotiation ended: %s", self.sid, exc)

    async def _offer_once(self) -> None:
        """One offer and its answer, the SDP lock held throughout: a client offer that comes meanwhile
        is either glare (dropped on arrival) or follows the answer, and waits until it is applied."""
        async with self._sdp_lock:
            self.add_pending_transceivers()
            await self.pc.setLocalDescription(await self.pc.createOffer())
            self._offer_revision = revision = self._revision + 1
            self._answer = asyncio.get_running_loop().create_future()
            sdp = renumber(self.pc.localDescription.sdp, self._numbering)
            self._last_description = self._description("offer", revision, sdp)
            self._send_update({"peer_connections": [self._last_description]})
            try:
                answer = await self._wait_for_answer()
                self._mid_track_ids.update(media_track_ids(answer))
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
                self._revision = revision
                self._bind_client_media()
            finally:
                self._answer = None

    async def _add_candidates(self, ice: dict[str, Any]) -> None:
        """Trickled candidates (the SDK sends all so far each time); those on the server's addresses."""
        for init in ice.get("candidates") or []:
            key = json.dumps(init, sort_keys=True)
            if key in self._remote_candidates:
                continue
            self._remote_candidates.add(key)
            candidate = ice_candidate(init, host_addresses())
            if candidate is not None:
                await self.pc.addIceCandidate(candidate)

    # telling the client ------------------------------------------------------------------------
    def report_switch(self, track_sid: str, off: bool, reason: str | None) -> None:
        self.media_signaling.switched(track_sid, off=off)  # (Twilio's channel carries no reason)

    def notify_room(
        self, event: RoomEvent, live: LiveRoom, participant: Participant | None, track: PublishedTrack | None
    ) -> None:
        name = event.name
        if name == "participant-disconnected" and participant is not None:
            self.media_signaling.forget(participant.sid)
        elif name == "track-removed" or (name == "track-unsubscribed" and event.participant_sid == self.sid):
            self.media_signaling.forget_track(event.track_sid or "")
        self._schedule_push()

    def _schedule_push(self) -> None:
        if self._push_scheduled or self.closed:
            return
        self._push_scheduled = True
        asyncio.get_running_loop().call_soon(self._push)

    def _push(self) -> None:
        self._push_scheduled = False
        if self.closed or not self._connected_sent or not self.attached:
            return  # `connected` (or `synced`, on return) carries everything so far
        changed = self._changed_state()
        if changed:
            self._send_update(changed)

    def _send_update(self, fields: dict[str, Any]) -> None:
        if not self.attached:
            return  # the state goes whole in `synced`, with the last description
        self.connection.send({"type": "update", "version": rsp.VERSION, "session": self.rsp_session, **fields})

    def _changed_state(self) -> dict[str, Any]:
        """What the client does not know yet, each part at a new revision."""
        changed: dict[str, Any] = {}
        participants = self._changed_participants()
        if participants:
            changed["participants"] = participants
        published = [rsp.published_entry(i, self._published.get(i), self._refused.get(i)) for i in self._local_tracks]
        fingerprint = json.dumps(published, sort_keys=True)
        if fingerprint != self._told_published:
            self._told_published = fingerprint
            changed["published"] = {"revision": next(self._revisions), "tracks": published}
        subscribed = self._subscribed()
        fingerprint = json.dumps(subscribed, sort_keys=True)
        if fingerprint != self._told_subscribed:
            self._told_subscribed = fingerprint
            changed["subscribed"] = {"revision": next(self._revisions), "tracks": subscribed}
        return changed

    def _changed_participants(self) -> list[dict[str, Any]]:
        states = []
        present = set()
        for other in self.live.participants.values():
            if other.sid == self.sid:
                continue
            present.add(other.sid)
            tracks = [t for t in self.live.tracks.values() if t.participant_sid == other.sid]
            fingerprint = json.dumps([other.status, *(rsp.track_state(t) for t in tracks)], sort_keys=True)
            told = self._told_participants.get(other.sid)
            if told is None or told[2] != fingerprint:
                revision = next(self._revisions)
                self._told_participants[other.sid] = (revision, other.identity, fingerprint)
                states.append(rsp.participant_state(other, tracks, revision))
        for sid in [s for s in self._told_participants if s not in present]:
            _, identity, _ = self._told_participants.pop(sid)
            states.append(rsp.departed_state(sid, identity, next(self._revisions)))
        return states

    def _subscribed(self) -> list[dict[str, str]]:
        """Every subscription with the id of what carries it: the data channel's label (the track
        SID), or the outgoing media track whose id is the `a=msid` of its m-line."""
        entries = []
        for track_sid in sorted(self.live.subscriptions.get(self.sid, {})):
            track = self.live.tracks.get(track_sid)
            if track is None:
                continue
            if track.kind == "data":
                entries.append({"sid": track_sid, "id": track_sid})
                continue
            slot = next((s for s in self.slots if s.role == "subscribe" and s.track_sid == track_sid), None)
            if slot is not None and slot.outgoing is not None:
                entries.append({"sid": track_sid, "id": slot.outgoing.id})
        return entries

    def report_dropped(self, track_sid: str, count: int) -> None:
        """RSP has no message for it: the count shows in the server's telemetry and logs."""
        log.debug("participant %s: %d message(s) of %s dropped (slow subscriber)", self.sid, count, track_sid)

    def report_track_warning(self, track_sid: str, name: str, message: str, cleared: bool) -> None:
        """RSP's `warning` carries recording states only: the warning shows in the server's events."""
        log.debug("participant %s: track %s %s: %s", self.sid, track_sid, name, "cleared" if cleared else message)

    def report_layer(self, track_sid: str, layer: str | None) -> None:
        """The SDK has no message for the layer it receives (it sees the picture size change).
        Switch-offs and switch-ons come from the allocation's room events (`notify`)."""
        log.debug("participant %s: track %s: layer %s", self.sid, track_sid, layer)

    def report_network_quality(self, participants: dict[str, NetworkQualityStats | None]) -> None:
        self.media_signaling.network_quality(participants)

    def report_dominant_speaker(self, participant_sid: str | None) -> None:
        self.media_signaling.dominant_speaker(participant_sid)

    def report_error(self, error: RoomError, **context: Any) -> None:
        """RSP's `error` ends the SDK's session, so a non-fatal one is only logged."""
        log.debug("participant %s: %s %s", self.sid, error, context or "")

    # reconnection ------------------------------------------------------------------------------

    def detach(self) -> None:
        """The socket dropped (or the client is back on another): nothing is sent until it
        resumes (or its window closes); the old socket is closed, if it is not yet."""
        self._attached.clear()
        self._spawn(self.connection.close())

    async def attach(self, connection: TcmpConnection, sync: dict[str, Any]) -> None:
        """Carry on over `connection`, whose client sent `sync`: answer `synced` with the whole
        state and the last description, then take what the client holds (its tracks, its offer
        or its answer to ours) as from an `update`."""
        self.connection = connection
        self._attached.set()
        self._told_participants, self._told_published, self._told_subscribed = {}, "", ""
        synced: dict[str, Any] = {
            "type": "synced",
            "version": rsp.VERSION,
            "session": self.rsp_session,
            "participant": {"sid": self.sid, "identity": self.participant.identity},
            **self._changed_state(),
        }
        if self._last_description is not None:
            synced["peer_connections"] = [self._last_description]
        connection.send(synced)
        try:
            await self.handle(sync)
        except RoomError as error:
            self.report_error(error)

    # teardown ----------------------------------------------------------------------------------
    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self, code: int | None = None, message: str | None = None) -> None:
        """Tell the client why it leaves (`disconnected` when the room completed, else `error`),
        then `bye`, and close the socket and the peer connection. Every caller waits for the end
        of the one closing."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(code, message))
        await asyncio.shield(self._closing)

    async def _close(self, code: int | None, message: str | None) -> None:
        if code == 53118:
            self.connection.send(rsp.disconnected(code))
        elif code is not None:
            self.connection.send(rsp.error(RoomError(code, message)))
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._answer is not None and not self._answer.done():
            self._answer.cancel()
        await self.connection.close()
        await closing.close_peer_connection(self.pc)
