"""Reconnection: a room whose signaling socket or media path breaks resumes its session.

The room emits `reconnecting` (RoomError 53001 signaling, 53405 media) and tries again, after
RECONNECT_FIRST_DELAY doubling up to RECONNECT_MAX_DELAY, for as long as the server said it keeps
sessions (its reconnect window): a new socket, `connect` with the session key. The server keeps
the peer connection when both ends still have it (then nothing else changes), or the client makes
a new one, on which the server publishes its tracks again under the same SIDs and subscribes it
again; the client's objects (participants, publications, remote tracks, local tracks) carry on.
Then `reconnected`; or `disconnected` when the server refuses (53204: the session has ended) or
the window closes first (53000).

`Reconnection` is a part of `Room` (its base class), kept apart because it is one concept.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from aiortc import RTCPeerConnection

from ..errors import RoomError
from ..net import closing
from ..net.ice import rtc_configuration
from ..protocol.batching import RELIABLE_BUFFER_BOUND
from ..protocol.signaling import PROTOCOL_VERSION
from .data_track import LocalDataTrack, RemoteDataTrack
from .media_track import EncodedTap, RemoteMediaTrack
from .participant import PUBLISH_TIMEOUT
from .signaling import SignalingConnection

if TYPE_CHECKING:
    from .participant import RemoteParticipant
    from .room import Room

log = logging.getLogger(__name__)

#: Seconds a client keeps trying to resume its session after a break, unless the server says
#: otherwise when it connects (it does: its `reconnect_window`, 30 s by default, as Twilio).
RECONNECT_WINDOW = 30.0
#: Waits between attempts to reach the server again: the first, doubling up to the last.
RECONNECT_FIRST_DELAY, RECONNECT_MAX_DELAY = 0.25, 2.0
#: Seconds a new connection may take to come up after a resume (negotiated, channels open).
RESTORE_TIMEOUT = 20.0


class Reconnection:
    def _on_connection_state(self: Room, pc: RTCPeerConnection) -> None:
        # aiortc goes from connected straight to closed when ICE consent expires, never "failed"
        if pc is self.pc and self.state == "connected" and pc.connectionState in ("failed", "closed"):
            log.debug("room %s: the media connection is %s", self.sid, pc.connectionState)
            self._broken = RoomError(53405, "Media connection failed or media activity ceased")
            self._close_signaling_soon()  # the reader then reconnects, with a new connection

    def _close_signaling_soon(self: Room) -> None:
        if self._signaling is not None:
            task = asyncio.get_running_loop().create_task(self._signaling.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _reconnect(self: Room, cause: RoomError | None) -> RoomError | None:
        """Resume the session within the reconnect window; None once back, else why not (the
        server's refusal, such as 53204 when the session has ended, or 53000 when the window
        closed without the server answering)."""
        loop = asyncio.get_running_loop()
        if self._restoring is not None:
            self._restoring.cancel()  # broke again before the new connection was up
        for future in self._pending.values():  # requests sent on the broken socket get no answer
            if not future.done():
                future.set_exception(RoomError(53001, "Signaling connection disconnected"))
        if self.state == "connected":
            self.state = "reconnecting"
            self._restored.clear()
            log.info("room %s: reconnecting (%s)", self.name, cause)
            self.emit("reconnecting", cause)
        window_closes = loop.time() + self._reconnect_window
        delay = RECONNECT_FIRST_DELAY
        while True:
            remaining = window_closes - loop.time()
            if remaining <= 0:
                return RoomError(
                    53000,
                    f"Signaling connection error: reconnection attempts exhausted ({self._reconnect_window:g} s)",
                )
            try:
                await asyncio.wait_for(self._resume(), remaining)
                return None
            except RoomError as refusal:
                return refusal
            except (aiohttp.ClientError, ConnectionError, OSError, TimeoutError) as exc:
                log.debug("room %s: cannot resume yet: %r", self.sid, exc)
            await asyncio.sleep(max(0.0, min(delay, window_closes - loop.time())))
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

    async def _resume(self: Room) -> None:
        """One attempt: a new socket, `connect` with the session key; on success the room is as
        the server has it (`reconnected` now, or once a new peer connection is up)."""
        assert self.local_participant is not None
        if self._signaling is not None:
            old, self._signaling = self._signaling, None
            await old.close()
        keep = self._broken is None and self.pc.connectionState == "connected"
        hello = {
            "type": "connect",
            "version": PROTOCOL_VERSION,
            "token": self._token,
            "options": self._connect_options(),
            "resume": {
                "participant_sid": self.local_participant.sid,
                "session": self._session_key,
                "peer_connection": "keep" if keep else "new",
            },
        }
        self._signaling, reply = await SignalingConnection.open(self.url, hello, RESTORE_TIMEOUT)
        self._broken = None
        self._session_key = reply["session"]
        self._reconnect_window = float(reply.get("reconnect_window", self._reconnect_window))
        self._reconcile(reply)
        if reply.get("peer_connection") == "new":
            self._new_peer_connection()
            self._restoring = asyncio.get_running_loop().create_task(self._restore())
        else:
            self._reconnected()

    def _reconnected(self: Room) -> None:
        self.state = "connected"
        self._restored.set()
        log.info("room %s: reconnected", self.name)
        self.emit("reconnected")

    def _new_peer_connection(self: Room) -> None:
        """Replace the broken peer connection; subscriptions and publications keep their objects
        and continue on the new one once the server has offered it."""
        old = self.pc
        for participant in self.participants.values():
            for publication in participant.tracks.values():
                if isinstance(publication.track, RemoteDataTrack):
                    publication.track._channel = None  # until the new connection's channel is there
        self.pc = RTCPeerConnection(rtc_configuration(self._ice_servers))
        self._watch(self.pc)
        if self.link is not None:
            self.link.attach(self.pc)
        self._channels, self._batchers, self._pending_track_channels = {}, {}, {}
        assert self.local_participant is not None
        for publication in self.local_participant.tracks.values():
            if isinstance(publication.track, LocalDataTrack):
                publication.track._unbind_channel()
        self._negotiated = asyncio.Event()
        for participant in self.participants.values():
            for publication in participant.tracks.values():
                if isinstance(publication.track, RemoteMediaTrack):  # waits for the new connection's receiver
                    publication.track._retap(EncodedTap())
        for tap in self._taps.values():  # receivers of the old connection: ended
            tap.stop()
        self._taps, self._mid_tracks = {}, {}
        for sid in self._published_media:
            waiter = self._media_waiters.get(sid)
            if waiter is None or waiter.done():
                self._media_waiters[sid] = asyncio.get_running_loop().create_future()
        task = asyncio.get_running_loop().create_task(closing.close_peer_connection(old))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _restore(self: Room) -> None:
        """Wait for the new connection: negotiated, its channels open, this participant's tracks
        published again (same SIDs); then send what was held meanwhile and say `reconnected`."""
        assert self.local_participant is not None
        try:
            await asyncio.wait_for(self._negotiated.wait(), RESTORE_TIMEOUT)
            for label in (self._data_label(True), self._data_label(False)):
                await asyncio.wait_for(self._channel_open(label), RESTORE_TIMEOUT)
            for sid, publication in list(self.local_participant.tracks.items()):
                track = publication.track
                if isinstance(track, LocalDataTrack):
                    channel = await self._open_track_channel(sid, track)
                    track._bind(sid, channel, self._counters, self)
                else:
                    await asyncio.wait_for(self._media_published(sid, track), PUBLISH_TIMEOUT)
        except (TimeoutError, RoomError) as exc:
            log.debug("room %s: the new connection did not come up: %r", self.sid, exc)
            self._broken = RoomError(53405, "Media connection failed: the new connection did not come up")
            self._close_signaling_soon()
            return
        for label, held in self._held.items():
            batcher = self._batchers[label]
            for frame in held:
                batcher.add(frame)
            held.clear()
        carried = {id(tap) for tap in self._taps.values()}
        for participant in self.participants.values():
            for publication in list(participant.tracks.values()):
                track = publication.track
                if isinstance(track, RemoteMediaTrack) and id(track._tap) not in carried:
                    self._unsubscribe(participant, publication)  # not offered again: no longer subscribed
                    track._tap.stop()
                    track._wake()
        self._reconnected()

    def _hold(self: Room, label: str, frame: bytes) -> bool:
        """Keep a publish_data frame sent while reconnecting; False when it cannot be kept (an
        unreliable one, or over the reliable bound)."""
        held = self._held[label]
        if label != self._data_label(True) or sum(map(len, held)) + len(frame) > RELIABLE_BUFFER_BOUND:
            return False
        held.append(frame)
        return True

    def _reconcile(self: Room, reply: dict[str, Any]) -> None:
        """The room as the server has it after a break: who came, left, published, unpublished
        or changed meanwhile, each with its event."""
        listed = {info["sid"]: info for info in reply["participants"]}
        for sid in [sid for sid in self.participants if sid not in listed]:
            self._remove_participant(sid)
        for sid, info in listed.items():
            participant = self.participants.get(sid)
            if participant is None:
                participant = self._add_participant(info)
                self.emit("participant_connected", participant)
                continue
            tracks = {track["sid"]: track for track in info.get("tracks", [])}
            for track_sid in [t for t in participant.tracks if t not in tracks]:
                self._remove_publication(participant, track_sid)
            for track_sid, track in tracks.items():
                if track_sid not in participant.tracks:
                    publication = self._add_publication(participant, track)
                    participant.emit("track_published", publication)
                    self.emit("track_published", publication, participant)
            if participant.metadata != info.get("metadata", ""):
                participant.metadata = info.get("metadata", "")
                participant.emit("metadata_changed", participant)
            self._set_participant_state(participant, info.get("state", "connected"))
        assert self.local_participant is not None
        for track in reply.get("tracks", []):
            if track["sid"] not in self.local_participant.tracks:  # published, but the reply was lost
                self._send({"type": "unpublish", "sid": track["sid"]})

    def _set_participant_state(self: Room, participant: RemoteParticipant, state: str) -> None:
        if state == participant.state or state not in ("connected", "reconnecting"):
            return
        participant.state = state
        event = "reconnecting" if state == "reconnecting" else "reconnected"
        participant.emit(event)
        self.emit(f"participant_{event}", participant)
