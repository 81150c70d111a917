"""A connected room, as one client sees it: signaling, the peer connection with the server, the
other participants and their tracks, and the room's events."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import aiohttp
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from ..errors import RoomError
from ..net import bundle, closing, sctp
from ..net.ice import rtc_configuration
from ..net.renegotiation import transport_ready
from ..net.rtp import tap_receiver
from ..policy.allocation import BandwidthProfile
from ..policy.quality import NetworkQualityConfiguration
from ..protocol import framing
from ..protocol.batching import Batcher
from ..protocol.network_quality import stats_from_wire
from ..protocol.signaling import PROTOCOL_VERSION
from ..telemetry.recorder import Telemetry, now_ns
from ..telemetry.sampling import ChannelCounters, RtcStatsSampler, RtpStream, sample_forever
from .data_track import LocalDataTrack, RemoteDataTrack, check_payload_size, message_limit
from .events import EventEmitter
from .media_track import EncodedTap, FrameTap, LocalMediaTrack, RemoteAudioTrack, RemoteMediaTrack, RemoteVideoTrack
from .participant import PUBLISH_TIMEOUT, LocalParticipant, RemoteParticipant
from .publication import RemoteTrackPublication
from .reconnection import RECONNECT_WINDOW, Reconnection
from .signaling import LEAVE_TIMEOUT, SignalingConnection

log = logging.getLogger(__name__)
sctp.install()
bundle.install()
closing.install()

RELIABLE_CHANNEL = "_reliable"
LOSSY_CHANNEL = "_lossy"
TRACK_CHANNEL_PROTOCOL = "roomlab-track"
#: Seconds `connect()` waits for the server (signaling, first negotiation, data channels open).
CONNECT_TIMEOUT = 20.0


class Room(Reconnection, EventEmitter):
    def __init__(
        self, url: str, ice_servers: list[Any] | None = None, decode_media: bool = True, record: bool = True
    ) -> None:
        super().__init__()
        self.url = url
        self.decode_media = decode_media
        #: record one `messages` row per data message received (False: none, e.g. to measure its cost)
        self.record = record
        #: the emulated network path to the server, if any (`room.link.update(...)`, `.stats()`)
        self.link: Any = None
        self.sid = ""
        self.name = ""
        self.state = "connecting"
        self.local_participant: LocalParticipant | None = None
        self.participants: dict[str, RemoteParticipant] = {}
        #: the participant holding the floor (with `connect(dominant_speaker=True)`; None: nobody or you)
        self.dominant_speaker: RemoteParticipant | None = None
        self._dominant_speaker_enabled = False
        #: what this client asked to hear of network quality (None: nothing)
        self._network_quality: NetworkQualityConfiguration | None = None
        #: how the server divides this client's downlink (None: Twilio's defaults)
        self._bandwidth_profile: BandwidthProfile | None = None
        self._ice_servers = ice_servers
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self._signaling: SignalingConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        #: what resuming the session after a break needs: the token, the key the server gave
        self._token = ""
        self._session_key = ""
        self._reconnect_window = RECONNECT_WINDOW
        #: why the connection broke, when the media path did (the socket is then closed on purpose)
        self._broken: RoomError | None = None
        #: set while connected: data sent while reconnecting waits for it
        self._restored = asyncio.Event()
        self._restoring: asyncio.Task[None] | None = None
        #: publish_data frames sent while reconnecting with a new connection, by channel label
        self._held: dict[str, list[bytes]] = {RELIABLE_CHANNEL: [], LOSSY_CHANNEL: []}
        self._message_limit: int | None = None
        #: clear while the server says it holds too much of this participant's reliable publish_data
        self._data_uncongested = asyncio.Event()
        self._data_uncongested.set()
        #: replaced peer connections and broken sockets being closed (teardown waits for them)
        self._closing: set[asyncio.Task[None]] = set()
        self._refs = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._channels: dict[str, RTCDataChannel] = {}
        self._batchers: dict[str, Batcher] = {}
        self._packet_recorders: dict[tuple[str, str, str | None], Any] = {}
        self._pending_track_channels: dict[str, RTCDataChannel] = {}
        self._negotiated = asyncio.Event()
        #: the reason this room disconnected, once it has (data-track drains end with it)
        self._ended: asyncio.Future[RoomError] = asyncio.get_running_loop().create_future()
        #: mid -> tap on the receiver, and mid -> track SID it currently carries
        self._taps: dict[str, FrameTap | EncodedTap] = {}
        self._mid_tracks: dict[str, str] = {}
        self._media_waiters: dict[str, asyncio.Future[None]] = {}
        self._published_media: dict[str, LocalMediaTrack] = {}
        #: track SID -> the layer of it the server forwards to this client now (layered tracks)
        self._received_layers: dict[str, str | None] = {}
        #: track SID -> why the server switched it off for this client (absent: on)
        self._switched_off: dict[str, str] = {}
        #: what this client receives and sends, as live tables (`room.telemetry.frame("messages")`)
        self.telemetry = Telemetry()
        self._counters = ChannelCounters()
        self._rtc_sampler = RtcStatsSampler(self.telemetry, "client")
        self._sampler: asyncio.Task[None] | None = None
        self._watch(self.pc)

    def _watch(self, pc: RTCPeerConnection) -> None:
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", lambda: self._on_connection_state(pc))

    # connecting -----------------------------------------------------------------------------
    async def _connect(
        self,
        token: str,
        name: str | None,
        automatic_subscription: bool,
        metadata: str,
    ) -> None:
        hello = {
            "type": "connect",
            "version": PROTOCOL_VERSION,
            "token": token,
            "room": name,
            "automatic_subscription": automatic_subscription,
            "metadata": metadata,
            "options": self._connect_options(),
        }
        try:
            self._signaling, reply = await SignalingConnection.open(self.url, hello, CONNECT_TIMEOUT)
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
            raise RoomError(53000, f"Signaling connection error: cannot reach {self.url}: {exc}") from None
        self._token = token
        self._session_key = reply["session"]
        self._reconnect_window = float(reply.get("reconnect_window", RECONNECT_WINDOW))
        self.sid = reply["room"]["sid"]
        self.name = reply["room"]["name"]
        self.local_participant = LocalParticipant(
            self, reply["participant"]["sid"], reply["participant"]["identity"], metadata
        )
        for info in reply["participants"]:
            self._add_participant(info)
        self._reader = asyncio.get_running_loop().create_task(self._read_forever())
        await self._before_disconnect(self._negotiated.wait(), CONNECT_TIMEOUT)
        for label in (RELIABLE_CHANNEL, LOSSY_CHANNEL):
            await self._before_disconnect(self._channel_open(label), CONNECT_TIMEOUT)
        self._sampler = asyncio.get_running_loop().create_task(sample_forever(self._sample))
        self.state = "connected"
        self._restored.set()

    def _connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self._network_quality is not None:
            options["network_quality"] = {"local": self._network_quality.local, "remote": self._network_quality.remote}
        if self._dominant_speaker_enabled:
            options["dominant_speaker"] = True
        if self._bandwidth_profile is not None:
            options["bandwidth_profile"] = self._bandwidth_profile.options()
        return options

    async def _before_disconnect(self, awaitable: Any, timeout: float) -> Any:
        """`awaitable`'s result within `timeout` (else TimeoutError), or the room's RoomError if it
        disconnects first."""
        task = asyncio.ensure_future(awaitable)
        done, _ = await asyncio.wait({task, self._ended}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        if self._ended.done():
            raise self._ended.result()
        raise TimeoutError

    async def _channel_open(self, label: str) -> RTCDataChannel:
        while label not in self._channels:
            await asyncio.sleep(0.01)
        channel = self._channels[label]
        while channel.readyState != "open":
            await asyncio.sleep(0.01)
        return channel

    # signaling ------------------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        if self._signaling is None or self._signaling.closed:
            raise RoomError(53001, "Signaling connection disconnected")
        self._signaling.send(message)

    async def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        ref = next(self._refs)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        self._send({**message, "ref": ref})
        try:
            return await asyncio.wait_for(future, PUBLISH_TIMEOUT)
        finally:
            self._pending.pop(ref, None)

    async def _read_forever(self) -> None:
        """Signaling for the room's whole life: handle the server's messages; when the socket or
        the media path breaks, reconnect; end with `disconnected`."""
        try:
            while True:
                ended, error = await self._read_socket()
                if self.state == "disconnected":  # the socket closed because the room is leaving
                    return
                if ended or self.state == "connecting":  # (a break while joining fails the join)
                    break
                error = await self._reconnect(error)
                if error is not None:
                    break
        except asyncio.CancelledError:
            # the program is ending (asyncio.run() cancels every task, also on Ctrl-C): leave, promptly
            if self.state != "disconnected":
                await self._teardown(leave=True)
                self.emit("disconnected", self, None)
            raise
        if self.state != "disconnected":
            await self._teardown(error=error)
            self.emit("disconnected", self, error)

    async def _read_socket(self) -> tuple[bool, RoomError | None]:
        """Handle messages until the socket closes: (True, why) when the server ended the
        session (None: no error), (False, why) when the connection broke."""
        assert self._signaling is not None
        async for message in self._signaling.messages():
            if message.get("type") == "disconnected":
                code = message.get("code")
                return True, RoomError(int(code), str(message.get("message") or "")) if code else None
            try:
                await self._handle(message)
            except Exception:
                if self.state == "disconnected":  # torn down while handling: nothing left to do
                    return True, None
                log.exception("room %s: failed to handle %s", self.sid, message.get("type"))
        return False, self._broken or RoomError(53001, "Signaling connection disconnected")

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "offer":
            if self.pc.signalingState == "closed":  # the connection ended under it; what follows says why
                log.debug("room %s: offer for a closed peer connection ignored", self.sid)
                return
            remote, local = self.pc.remoteDescription, self.pc.localDescription
            if self.pc.signalingState == "stable" and remote is not None and remote.sdp == message["sdp"]:
                # sent again after a break: the answer was lost with the old socket
                self._send({"type": "answer", "sdp": local.sdp})
                return
            await self._on_offer(message["sdp"], message.get("mids") or {})
        elif kind == "published":
            future = self._pending.get(message.get("ref", -1))
            if future is not None and not future.done():
                future.set_result(message)
        elif kind == "error":
            error = RoomError(int(message["code"]), str(message["message"]))
            future = self._pending.get(message.get("ref", -1))
            if future is not None and not future.done():
                future.set_exception(error)
            else:
                log.warning("room %s: %s", self.sid, error)
                self.emit("error", error)
        elif kind == "participant_connected":
            if message["participant"]["sid"] not in self.participants:  # (known already after a resume)
                participant = self._add_participant(message["participant"])
                self.emit("participant_connected", participant)
        elif kind == "participant_disconnected":
            self._remove_participant(message["participant_sid"])
        elif kind in ("participant_reconnecting", "participant_reconnected"):
            participant = self.participants.get(message["participant_sid"])
            if participant is not None:
                self._set_participant_state(participant, "reconnecting" if kind.endswith("ing") else "connected")
        elif kind == "track_published":
            participant = self.participants.get(message["participant_sid"])
            if participant is not None and message["track"]["sid"] not in participant.tracks:
                publication = self._add_publication(participant, message["track"])
                participant.emit("track_published", publication)
                self.emit("track_published", publication, participant)
        elif kind == "track_unpublished":
            participant = self.participants.get(message["participant_sid"])
            if participant is not None:
                self._remove_publication(participant, message["track_sid"])
        elif kind == "unsubscribed":
            for participant in self.participants.values():
                publication = participant.tracks.get(message["track_sid"])
                if publication is not None:
                    self._unsubscribe(participant, publication)
        elif kind in ("track_enabled", "track_disabled"):
            participant = self.participants.get(message["participant_sid"])
            publication = participant.tracks.get(message["track_sid"]) if participant else None
            if participant is not None and publication is not None:
                publication.is_track_enabled = kind == "track_enabled"
                if publication.track is not None:
                    publication.track.is_enabled = publication.is_track_enabled
                participant.emit(kind, publication)
                self.emit(kind, publication, participant)
        elif kind == "data_dropped":
            found = self._find_publication(message["track_sid"])
            if found is not None and isinstance(found[1].track, RemoteDataTrack):
                track = found[1].track
                track.messages_dropped += int(message["messages"])
                track.emit("dropped", int(message["messages"]))
                log.warning(
                    "room %s: the server dropped %s message(s) of %s for this slow subscriber",
                    self.sid,
                    message["messages"],
                    track.name,
                )
        elif kind == "data_congestion":
            if message["congested"]:
                self._data_uncongested.clear()
            else:
                self._data_uncongested.set()
        elif kind == "track_congestion":
            publication = self.local_participant.tracks.get(message["track_sid"]) if self.local_participant else None
            if publication is not None and isinstance(publication.track, LocalDataTrack):
                if message["congested"]:
                    publication.track._uncongested.clear()
                else:
                    publication.track._uncongested.set()
        elif kind in ("track_warning", "track_warnings_cleared"):
            publication = self.local_participant.tracks.get(message["track_sid"]) if self.local_participant else None
            if publication is None:
                return
            if kind == "track_warning":
                log.warning(
                    "room %s: the server says your %s track %r: %s (%s)",
                    self.name,
                    publication.kind,
                    publication.track_name,
                    message["name"],
                    message.get("message", ""),
                )
                self.emit("track_warning", message["name"], publication, self.local_participant)
            else:
                self.emit("track_warnings_cleared", publication, self.local_participant)
        elif kind == "layer_changed":
            self._on_layer_changed(message["track_sid"], message.get("layer"))
        elif kind in ("track_switched_off", "track_switched_on"):
            off = kind == "track_switched_off"
            self._on_switched(message["track_sid"], str(message.get("reason") or "bandwidth") if off else None)
        elif kind == "track_priority_changed":
            participant = self.participants.get(message["participant_sid"])
            publication = participant.tracks.get(message["track_sid"]) if participant else None
            if participant is not None and publication is not None:
                publication.options = {**publication.options, "priority": message["priority"]}
                participant.emit("track_publish_priority_changed", message["priority"], publication)
                self.emit("track_publish_priority_changed", message["priority"], publication, participant)
        elif kind == "metadata_changed":
            participant = self.participants.get(message["participant_sid"])
            if participant is not None:
                participant.metadata = message["metadata"]
                participant.emit("metadata_changed", participant)
        elif kind == "network_quality":
            self._on_network_quality(message["participants"])
        elif kind == "dominant_speaker_changed":
            speaker = self.participants.get(message.get("participant_sid") or "")
            if speaker is not self.dominant_speaker:
                self.dominant_speaker = speaker
                self.emit("dominant_speaker_changed", speaker)

    # network quality ------------------------------------------------------------------------
    def _on_network_quality(self, entries: dict[str, Any]) -> None:
        local = self.local_participant
        for sid, wire in entries.items():
            participant: LocalParticipant | RemoteParticipant | None
            participant = local if local is not None and sid == local.sid else self.participants.get(sid)
            if participant is None:
                continue
            stats = stats_from_wire(wire)
            if participant._set_network_quality(stats):
                self.emit("network_quality_level_changed", participant, participant.network_quality_level, stats)

    def _set_network_quality_configuration(self, configuration: NetworkQualityConfiguration) -> None:
        self._network_quality = configuration
        self._send({"type": "set_network_quality", "local": configuration.local, "remote": configuration.remote})
        if not configuration.remote:  # nothing more will be said of the others
            for participant in self.participants.values():
                participant.network_quality_level = None
                participant.network_quality_stats = None

    # participants and tracks ----------------------------------------------------------------
    def _add_participant(self, info: dict[str, Any]) -> RemoteParticipant:
        participant = RemoteParticipant(info["sid"], info["identity"], info.get("metadata", ""))
        participant.state = info.get("state", "connected")
        self.participants[participant.sid] = participant
        for track in info.get("tracks", []):
            self._add_publication(participant, track)
        return participant

    def _add_publication(self, participant: RemoteParticipant, info: dict[str, Any]) -> RemoteTrackPublication:
        publication = RemoteTrackPublication(
            info["sid"], info["name"], info["kind"], info.get("options") or {}, info.get("enabled", True)
        )
        participant.tracks[publication.track_sid] = publication
        channel = self._pending_track_channels.pop(publication.track_sid, None)
        if channel is not None:
            self._subscribe_data(participant, publication, channel)
        return publication

    def _remove_participant(self, sid: str) -> None:
        participant = self.participants.pop(sid, None)
        if participant is not None:
            for publication in participant.tracks.values():
                self._unsubscribe(participant, publication)
            if participant is self.dominant_speaker:  # the server's change follows within 0.2 s
                self.dominant_speaker = None
                self.emit("dominant_speaker_changed", None)
            participant.state = "disconnected"
            participant.emit("disconnected", participant)
            self.emit("participant_disconnected", participant)

    def _remove_publication(self, participant: RemoteParticipant, track_sid: str) -> None:
        publication = participant.tracks.pop(track_sid, None)
        if publication is not None:
            self._unsubscribe(participant, publication)
            participant.emit("track_unpublished", publication)
            self.emit("track_unpublished", publication, participant)

    def _find_publication(self, track_sid: str) -> tuple[RemoteParticipant, RemoteTrackPublication] | None:
        for participant in self.participants.values():
            if track_sid in participant.tracks:
                return participant, participant.tracks[track_sid]
        return None

    def _subscribe_data(
        self, participant: RemoteParticipant, publication: RemoteTrackPublication, channel: RTCDataChannel
    ) -> None:
        kept = publication.track if isinstance(publication.track, RemoteDataTrack) else None
        # a subscription that continues on a new connection keeps its track (and its handlers)
        track = kept or RemoteDataTrack(publication.track_sid, publication.track_name, publication.options, participant)
        track._channel = channel
        me = self.local_participant.identity if self.local_participant else ""
        self._counters.watch(channel, me, track.name, participant.identity)
        record = None
        if self.record:
            record = self.telemetry.tables["messages"].bind(
                room=self.name,
                publisher=participant.identity,
                subscriber=me,
                track=track.name,
                reliable=track.reliable,
                topic=None,
            )

        def on_message(message: bytes | str) -> None:
            received_ns = now_ns()
            self._counters.received(channel, len(message))
            try:
                frames = framing.decode(message)
            except framing.FramingError as exc:
                log.warning("room %s, track %s: undecodable message: %s", self.sid, track.sid, exc)
                return
            for frame in frames:
                sent_ns = frame.sent_us * 1000
                if record is not None:
                    record(received_ns, sent_ns, (received_ns - sent_ns) / 1e6, frame.seq, frame.size)
                track.messages_received += 1
                track.bytes_received += frame.size
                track.emit("message", frame.payload)
                participant.emit("track_message", frame.payload, track)
                self.emit("track_message", frame.payload, track, participant)

        channel.on("message", on_message)
        # no unsubscription on the channel's close: the server says so (unsubscribed, track_unpublished),
        # and a channel also closes when its connection is replaced after a break
        if kept is None:
            publication.track = track
            participant.emit("track_subscribed", track, publication)
            self.emit("track_subscribed", track, publication, participant)

    def _unsubscribe(
        self, participant: RemoteParticipant, publication: RemoteTrackPublication, only: Any = None
    ) -> None:
        track = publication.track
        if track is None or (only is not None and track is not only):
            return
        publication.track = None
        if isinstance(track, RemoteVideoTrack):
            self._received_layers.pop(publication.track_sid, None)
            self._switched_off.pop(publication.track_sid, None)
        if isinstance(track, RemoteDataTrack) and track._channel is not None:
            track._channel.close()
        participant.emit("track_unsubscribed", track, publication)
        self.emit("track_unsubscribed", track, publication, participant)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label in (RELIABLE_CHANNEL, LOSSY_CHANNEL):
            self._channels[channel.label] = channel
            me = self.local_participant.identity if self.local_participant else ""
            self._counters.watch(channel, me, channel.label)
            self._batchers[channel.label] = Batcher(
                channel, on_sent=lambda size, frames, c=channel: self._counters.sent(c, size)
            )
            channel.on("message", lambda message, c=channel: self._on_data_packet(c, message))
            return
        if channel.protocol != TRACK_CHANNEL_PROTOCOL:
            log.debug("room %s: ignoring data channel %r", self.sid, channel.label)
            return
        found = self._find_publication(channel.label)
        if found is None:
            self._pending_track_channels[channel.label] = channel  # its track_published is on the way
        else:
            self._subscribe_data(*found, channel)

    def _on_data_packet(self, channel: RTCDataChannel, message: bytes | str) -> None:
        received_ns = now_ns()
        self._counters.received(channel, len(message))
        try:
            frames = framing.decode(message)
        except framing.FramingError as exc:
            log.warning("room %s: undecodable data packet: %s", self.sid, exc)
            return
        me = self.local_participant.identity if self.local_participant else ""
        reliable = channel.label == RELIABLE_CHANNEL
        for frame in frames:
            participant = self.participants.get(frame.sender) if frame.sender else None
            sent_ns = frame.sent_us * 1000
            if self.record:
                publisher = participant.identity if participant else ""
                track = channel.label + (":direct" if frame.direct else "")
                key = (publisher, track, frame.topic)
                record = self._packet_recorders.get(key)
                if record is None:
                    record = self._packet_recorders[key] = self.telemetry.tables["messages"].bind(
                        room=self.name,
                        publisher=publisher,
                        subscriber=me,
                        track=track,
                        reliable=reliable,
                        topic=frame.topic,
                    )
                record(received_ns, sent_ns, (received_ns - sent_ns) / 1e6, frame.seq, frame.size)
            if participant is not None:
                participant.emit("data_received", frame.payload, frame.topic)
            self.emit("data_received", frame.payload, participant, frame.topic)

    @staticmethod
    def _data_label(reliable: bool) -> str:
        return RELIABLE_CHANNEL if reliable else LOSSY_CHANNEL

    def _data_outlet(self, label: str) -> tuple[RTCDataChannel, Batcher] | None:
        """publish_data's channel and batcher of this kind, while open."""
        channel = self._channels.get(label)
        if channel is None or channel.readyState != "open" or label not in self._batchers:
            return None
        return channel, self._batchers[label]

    def _data_queued(self, label: str) -> int:
        """publish_data's bytes of this kind not yet sent (held ones included)."""
        held = sum(map(len, self._held[label]))
        outlet = self._data_outlet(label)
        return held + (outlet[0].bufferedAmount + outlet[1].queued if outlet is not None else 0)

    def _queue_data(self, frame: bytes, reliable: bool) -> None:
        """A publish_data frame: batched on its channel, or held while reconnecting; a reliable
        one over the 4 MiB bound is refused (RoomError), an unreliable one dropped."""
        channel = self._data_channel(reliable)
        if channel is not None:
            self._message_limit = message_limit(channel)
        check_payload_size(frame, self._message_limit)
        label = self._data_label(reliable)
        kept = self._batchers[label].add(frame) if channel is not None else self._hold(label, frame)
        if not kept and reliable:
            raise RoomError(
                53300,
                f"{self._data_queued(label)} bytes of reliable data already queued; "
                "wait for the queue to drain (drain_data()) before sending more",
            )

    def _data_channel(self, reliable: bool) -> RTCDataChannel | None:
        """publish_data's open channel of this kind; None while reconnecting without one."""
        channel = self._channels.get(RELIABLE_CHANNEL if reliable else LOSSY_CHANNEL)
        if self.state == "reconnecting" and (channel is None or channel.readyState != "open"):
            return None
        if channel is None or channel.readyState != "open" or self.state not in ("connected", "reconnecting"):
            raise RuntimeError("the room is not connected")
        return channel

    async def _open_track_channel(self, sid: str, track: LocalDataTrack) -> RTCDataChannel:
        channel = self.pc.createDataChannel(
            sid,
            ordered=track.ordered,
            maxPacketLifeTime=track.max_packet_life_time,
            maxRetransmits=track.max_retransmits,
            protocol=TRACK_CHANNEL_PROTOCOL,
        )
        opened = asyncio.get_running_loop().create_future()
        channel.once("open", lambda: opened.done() or opened.set_result(None))
        await asyncio.wait_for(opened, PUBLISH_TIMEOUT)
        me = self.local_participant.identity if self.local_participant else ""
        self._counters.watch(channel, me, track.name, me)
        return channel

    # media ----------------------------------------------------------------------------------
    async def _media_published(self, sid: str, track: LocalMediaTrack) -> None:
        """Wait until the server's offer for this track has been answered with it attached."""
        self._published_media[sid] = track
        future = self._media_waiters.setdefault(sid, asyncio.get_running_loop().create_future())
        await future

    async def _on_offer(self, sdp: str, mids: dict[str, dict[str, Any]]) -> None:
        if self.pc.remoteDescription is not None:  # a renegotiation
            await transport_ready(self.pc, CONNECT_TIMEOUT)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if not self.decode_media:
            # before the answer: aiortc starts a receiver (and its decoder) only once answered
            for transceiver in self.pc.getTransceivers():
                mid = transceiver.mid or ""
                if transceiver.receiver.track is not None and mid not in self._taps:
                    encoded = self._taps[mid] = EncodedTap()
                    tap_receiver(transceiver.receiver, transceiver.kind, encoded.deliver)
        attached: dict[str, set[str | None]] = {}
        for transceiver in self.pc.getTransceivers():
            info = mids.get(transceiver.mid or "")
            publishing = info is not None and info["role"] == "publish"
            local = self._published_media.get(info["track_sid"]) if publishing and info is not None else None
            layer = info.get("layer") if info is not None else None
            if local is not None and info is not None and layer in local.sources():
                outgoing = local._sender_track(layer)
                if transceiver.sender.track is not outgoing:
                    transceiver.sender.replaceTrack(outgoing)
                    if local.on_sender is not None:
                        local.on_sender(transceiver.sender)
                transceiver.direction = "sendonly"
                attached.setdefault(info["track_sid"], set()).add(info.get("layer"))
            elif info is not None and info["role"] in ("publish", "retired"):
                transceiver.sender.replaceTrack(None)
                transceiver.direction = "inactive"
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        self._send({"type": "answer", "sdp": self.pc.localDescription.sdp})
        self._negotiated.set()
        for sid, layers in attached.items():
            future = self._media_waiters.get(sid)
            complete = layers == set(self._published_media[sid].sources())
            if future is not None and not future.done() and complete:
                future.set_result(None)
        self._update_media_subscriptions(mids)

    def _update_media_subscriptions(self, mids: dict[str, dict[str, Any]]) -> None:
        for transceiver in self.pc.getTransceivers():
            mid = transceiver.mid or ""
            info = mids.get(mid)
            wanted = info["track_sid"] if info is not None and info["role"] == "subscribe" else None
            current = self._mid_tracks.get(mid)
            if wanted == current:
                continue
            if current is not None:
                found = self._find_publication(current)
                if found is not None:
                    self._unsubscribe(*found)
                del self._mid_tracks[mid]
            source: MediaStreamTrack | None = transceiver.receiver.track
            if wanted is None or source is None:
                continue
            found = self._find_publication(wanted)
            if found is None:
                continue
            participant, publication = found
            tap = self._taps.get(mid)
            if tap is None:
                tap = self._taps[mid] = FrameTap(source)
            if isinstance(publication.track, RemoteMediaTrack):  # the same subscription, a new connection
                publication.track._retap(tap)
                self._mid_tracks[mid] = wanted
                continue
            reconnecting = lambda: self.state == "reconnecting"  # noqa: E731
            remote: RemoteMediaTrack
            if publication.kind == "audio":
                remote = RemoteAudioTrack(publication.track_sid, publication.track_name, tap, participant, reconnecting)
            else:
                remote = RemoteVideoTrack(
                    publication.track_sid, publication.track_name, tap, participant, reconnecting, self._send
                )
                remote.layer = self._received_layers.get(wanted)
                reason = self._switched_off.get(wanted)
                remote.is_switched_off, remote.switch_off_reason = reason is not None, reason
            publication.track = remote
            self._mid_tracks[mid] = wanted
            participant.emit("track_subscribed", remote, publication)
            self.emit("track_subscribed", remote, publication, participant)

    def _on_layer_changed(self, track_sid: str, layer: str | None) -> None:
        """The server now forwards `layer` of a layered video track to this client (None: nothing)."""
        self._received_layers[track_sid] = layer
        found = self._find_publication(track_sid)
        if found is None or not isinstance(found[1].track, RemoteVideoTrack):
            return  # the track comes with the next offer and starts with this layer
        participant, publication = found
        assert isinstance(publication.track, RemoteVideoTrack)
        if publication.track._set_layer(layer):
            self.emit("track_layer_changed", publication.track, publication, participant)

    def _on_switched(self, track_sid: str, reason: str | None) -> None:
        """The server switched a video track off for this client, for `reason` (None: on again)."""
        if reason is None:
            self._switched_off.pop(track_sid, None)
        else:
            self._switched_off[track_sid] = reason
        found = self._find_publication(track_sid)
        if found is None or not isinstance(found[1].track, RemoteVideoTrack):
            return  # the track comes with the next offer and starts in this state
        participant, publication = found
        track = publication.track
        assert isinstance(track, RemoteVideoTrack)
        if track._set_switched_off(reason):
            event = "track_switched_off" if reason is not None else "track_switched_on"
            participant.emit(event, track, publication)
            self.emit(event, track, publication, participant)

    def _set_bandwidth_profile(self, profile: BandwidthProfile) -> None:
        self._send({"type": "set_bandwidth_profile", "bandwidth_profile": profile.options()})
        self._bandwidth_profile = profile

    # stats and teardown ---------------------------------------------------------------------
    def _rtp_streams(self) -> list[RtpStream]:
        me = self.local_participant.identity if self.local_participant else ""
        streams = []
        by_mid = {t.mid: t for t in self.pc.getTransceivers()}
        for sid, local in self._published_media.items():
            for layer in local.sources():
                sender = next((t.sender for t in by_mid.values() if local._is_sent_by(t.sender.track, layer)), None)
                if sender is not None:
                    streams.append(RtpStream(me, sid, local.kind, "outbound", sender, None, local.name, me, layer))
        for mid, sid in self._mid_tracks.items():
            transceiver, tap = by_mid.get(mid), self._taps.get(mid)
            if transceiver is not None and tap is not None:
                frames = (lambda t=tap: t.frames) if transceiver.kind == "video" else None
                found = self._find_publication(sid)
                name, publisher = (found[1].track_name, found[0].identity) if found is not None else (None, None)
                receiver = transceiver.receiver
                layer = (lambda s=sid: self._received_layers.get(s)) if transceiver.kind == "video" else None
                streams.append(
                    RtpStream(me, sid, transceiver.kind, "inbound", receiver, frames, name, publisher, layer)
                )
        return streams

    async def _sample(self) -> None:
        await self._rtc_sampler.sample(self._rtp_streams())
        self._counters.sample(self.telemetry, "client")

    def frame(self, name: str) -> Any:
        """A telemetry table of this client (`messages`, `rtc_stats`, `data_channel_stats`, ...)."""
        return self.telemetry.frame(name)

    def frames(self) -> dict[str, Any]:
        return self.telemetry.frames()

    async def get_stats(self) -> Any:
        """aiortc's RTCStatsReport for the connection with the server."""
        return await self.pc.getStats()

    async def disconnect(self) -> None:
        """Leave the room (promptly: every step of leaving is bounded)."""
        if self.state == "disconnected":
            return
        await self._teardown(leave=True)
        self.emit("disconnected", self, None)

    async def _teardown(self, leave: bool = False, error: RoomError | None = None) -> None:
        """Close signaling and the peer connection, once. Safe to run while the task running it,
        and every task around it, is being cancelled: each step is bounded and none waits for
        another task, so a program that ends (exception, cancellation, Ctrl-C) ends promptly."""
        if self.state == "disconnected":
            return
        self.state = "disconnected"
        if not self._ended.done():
            self._ended.set_result(error or RoomError(53001, "Disconnected: the participant left the room"))
        if self._sampler is not None:
            self._sampler.cancel()
        self._restored.clear()
        if self._restoring is not None:
            self._restoring.cancel()
        for tap in self._taps.values():
            tap.stop()
        for participant in self.participants.values():
            for publication in participant.tracks.values():
                if isinstance(publication.track, RemoteDataTrack):
                    self._unsubscribe(participant, publication)
                elif isinstance(publication.track, RemoteMediaTrack):
                    publication.track._tap.stop()  # (one waiting for a new connection is no receiver's)
                    publication.track._wake()
        for future in [*self._pending.values(), *self._media_waiters.values()]:
            if not future.done():
                future.set_exception(RoomError(53001, "Signaling connection disconnected"))
        # the reader stops when signaling closes: cancelling it first would make aiohttp drop the
        # socket without the closing handshake, and the server could lose the goodbye still unread
        reader = self._reader if self._reader is not asyncio.current_task() else None
        cancelled = False
        for step in (
            self._close_signaling(leave),
            self._reader_stopped(reader),
            closing.close_peer_connection(self.pc),
            self._closed_pcs(),
        ):
            try:
                await step
            except asyncio.CancelledError:
                cancelled = True  # close the rest first: a half-closed room leaks sockets and threads
        if cancelled:
            raise asyncio.CancelledError

    async def _close_signaling(self, leave: bool) -> None:
        signaling, self._signaling = self._signaling, None
        if signaling is not None:
            if leave:
                await signaling.leave()
            await signaling.close()

    @staticmethod
    async def _reader_stopped(reader: asyncio.Task[None] | None) -> None:
        """The signaling reader has seen its socket close (bounded: cancelled if it has not)."""
        if reader is not None and not reader.done():
            await asyncio.wait({reader}, timeout=LEAVE_TIMEOUT)
            reader.cancel()

    async def _closed_pcs(self) -> None:
        """Wait for the connections and sockets replaced after breaks to finish closing (each is bounded)."""
        if self._closing:
            await asyncio.wait(set(self._closing))

    async def __aenter__(self) -> Room:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    def __repr__(self) -> str:
        return f"<Room {self.name!r} {self.sid} {self.state}, {len(self.participants)} other participant(s)>"
