"""The forwarding plane: data tracks, media tracks and `publish_data` messages, from each publisher
to the participants subscribed to it. Participants never connect to each other; every path runs
through the server.

`Sfu` listens to the room domain: a track published creates a forwarder, a subscription attaches
the subscriber to it, an unsubscription or unpublication detaches; then every connection in the
room hears of the change, in its own signaling protocol (`ParticipantConnection.notify`).
Data-track frames are checked and forwarded as they arrived (the framing of SPEC §6 rides through
untouched; a connection whose client cannot frame adds and strips it at its edge).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable

from aiortc import MediaStreamTrack, RTCDataChannel, RTCRtpReceiver

from ..errors import RoomError
from ..policy.allocation import Layer
from ..protocol import framing
from ..protocol.batching import Batcher
from ..protocol.layers import LayerSpec
from ..telemetry.sampling import ChannelCounters, RtpStream
from .congestion import Congestion, watch_outlet
from .connection import ParticipantConnection
from .dominant_speaker import DominantSpeakers
from .media import MediaForwarder, OutgoingTrack
from .model import Participant, PublishedTrack, RoomEvent
from .rooms import REMOVED_BY_REST, REMOVED_BY_REST_MESSAGE, LiveRoom, Rooms
from .session import LOSSY_CHANNEL, RELIABLE_CHANNEL, TRACK_CHANNEL_PROTOCOL
from .simulcast import LayerSelection

log = logging.getLogger(__name__)

#: Largest data message the server accepts from a publisher (what aiortc advertises).
MAX_MESSAGE_BYTES = 262_144
#: Seconds without a frame after which a published audio or video track counts as stalled (a
#: silent talker still sends Opus DTX comfort noise every 0.4 s, and a camera 15 frames a second).
STALL_AFTER = 3.0
#: The publisher's warning name (Twilio's SDKs name their track warnings the same way).
MEDIA_STALLED_WARNING = "media-stalled"


class DataTrackForwarder:
    """One published data track: the publisher's channel in, one channel out per subscriber."""

    def __init__(
        self, track: PublishedTrack, publisher: ParticipantConnection | None, counters: ChannelCounters
    ) -> None:
        self.track = track
        self.publisher = publisher
        self.counters = counters
        self.source: RTCDataChannel | None = None
        self.outlets: dict[str, Batcher] = {}
        self._complaints = 0
        self.reliable = (
            track.options.get("max_packet_life_time") is None and track.options.get("max_retransmits") is None
        )
        #: end-to-end flow control of a reliable track (roomlab/server/congestion.py)
        self.congestion = Congestion(self.outlets.items, self._tell_congestion) if self.reliable else None

    @property
    def publisher_identity(self) -> str | None:
        return self.publisher.participant.identity if self.publisher is not None else None

    def attach_source(self, channel: RTCDataChannel) -> None:
        self.source = channel
        if self.publisher is not None:
            self.counters.watch(channel, self.publisher.participant.identity, self.track.name, self.publisher_identity)
            self.publisher.data_inlet(channel, self.forward)
        else:
            channel.on("message", self.forward)

    def forward(self, message: bytes | str, wire_size: int | None = None) -> None:
        """Pass a publisher's message on; `wire_size` is its size on the channel, when framing was
        added at the edge."""
        if self.source is not None:
            self.counters.received(self.source, len(message) if wire_size is None else wire_size)
        try:
            if len(message) > MAX_MESSAGE_BYTES:
                raise framing.FramingError(f"message of {len(message)} bytes exceeds {MAX_MESSAGE_BYTES}")
            frames = framing.count(message)
        except framing.FramingError as exc:
            self._complain(str(exc))
            return
        for batcher in self.outlets.values():
            if batcher.usable:
                batcher.add(message, frames)  # type: ignore[arg-type]
        if self.congestion is not None:
            self.congestion.check()

    def _tell_congestion(self, congested: bool) -> None:
        if self.publisher is not None:
            self.publisher.report_congestion(self.track.sid, congested)

    def _complain(self, reason: str) -> None:
        """Tell the publisher its message was dropped (at most a few times, not per message)."""
        self._complaints += 1
        if self.publisher is not None and self._complaints <= 10:
            self.publisher.report_error(
                RoomError(53300, f"Data track {self.track.sid}: message dropped: {reason}"), track_sid=self.track.sid
            )

    def add_subscriber(self, session: ParticipantConnection) -> None:
        options = self.track.options
        channel = session.open_data_channel(
            self.track.sid,
            ordered=options.get("ordered", True),
            maxPacketLifeTime=options.get("max_packet_life_time"),
            maxRetransmits=options.get("max_retransmits"),
            protocol=TRACK_CHANNEL_PROTOCOL,
        )
        self.outlets[session.sid] = session.data_outlet(
            channel, self.counters, self.track.sid, self.track.name, self.publisher_identity
        )
        if self.congestion is not None:
            watch_outlet(self.outlets[session.sid], self.congestion.relieve)

    def remove_subscriber(self, session: ParticipantConnection) -> None:
        batcher = self.outlets.pop(session.sid, None)
        if batcher is not None:
            batcher.flush()
            batcher.channel.close()
            if self.congestion is not None:
                self.congestion.relieve()

    def close(self) -> None:
        for batcher in self.outlets.values():
            batcher.flush()
            batcher.channel.close()
        self.outlets.clear()
        if self.congestion is not None:
            self.congestion.close()


class MediaTrackForwarder:
    """One published audio or video track and the sessions subscribed to it.

    Of a video track each subscriber gets one layer (a track without layers is one layer,
    `SINGLE_LAYER`): `layers()` says which layers arrive and at what bitrate, `select_layer(subscriber,
    layer or None)` chooses (until then the highest, or the lowest with `start_lowest`; None switches
    the subscriber off), `receiving()` says what each subscriber gets now.
    """

    def __init__(
        self,
        track: PublishedTrack,
        path: str,
        now: float,
        audio_level: Callable[[int], None] | None = None,
        start_lowest: bool = False,
    ) -> None:
        self.track = track
        self.start_lowest = start_lowest
        self.specs = tuple(LayerSpec.from_wire(layer) for layer in track.options.get("layers", ()))
        self.media = MediaForwarder(track.sid, track.kind, path, tuple(spec.name for spec in self.specs))
        #: gets the RFC 6464 level of each audio packet (the dominant speaker's input)
        self.audio_level = audio_level
        self.subscribers: dict[str, tuple[ParticipantConnection, OutgoingTrack]] = {}
        self.stalled = False
        self._frames_seen = 0
        self._flowed_at = now

    def check_flow(self, now: float) -> bool | None:
        """Called about once a second: True when media starts flowing again after a stall, False
        when an enabled track has delivered no frame for `STALL_AFTER` seconds, None otherwise."""
        frames = self.media.frames_forwarded
        if frames != self._frames_seen or not self.track.enabled:
            self._frames_seen = frames
            self._flowed_at = now
            if self.stalled:
                self.stalled = False
                return True
            return None
        if not self.stalled and now - self._flowed_at >= STALL_AFTER:
            self.stalled = True
            return False
        return None

    def hold(self, now: float) -> None:
        """Count the time until `now` as flowing (its publisher is reconnecting)."""
        self._flowed_at = now

    def attach_source(self, receiver: RTCRtpReceiver, source: MediaStreamTrack, layer: str | None = None) -> None:
        self.media.attach(receiver, source, self.audio_level, layer)

    def add_subscriber(self, session: ParticipantConnection) -> None:
        outgoing = session.send_media(self.track.sid, self.track.kind)
        self.subscribers[session.sid] = (session, outgoing)
        sid = self.track.sid
        self.media.add(outgoing, lambda layer: session.report_layer(sid, layer), self.start_lowest)

    # simulcast: the allocator's handles -------------------------------------------------------
    def layers(self, now: float | None = None) -> list[Layer]:
        """The layers the server receives now (a frame within the last 2 s), lowest first, with the
        bitrate measured over that window (at least the announced bitrate until a whole window has
        been seen); a video track without layers is one, `SINGLE_LAYER` (its
        size from its keyframes, 0 x 0 until one is seen). Empty for audio, and on the transcode
        path (where nothing is selected)."""
        if not self.media.selects_layers:
            return []
        now = time.monotonic() if now is None else now
        found = []
        for name in self.media.stream_names:
            stream = self.media.streams[name]
            spec = next((s for s in self.specs if s.name == name), None)
            width, height = (spec.width, spec.height) if spec is not None else stream.size or (0, 0)
            if stream.meter.flowing(now):
                bitrate = stream.meter.bitrate_bps(now)
                if spec is not None and stream.meter.young(now):  # until measured over a whole window
                    bitrate = max(bitrate, spec.bitrate_bps)
                found.append(Layer(name, width, height, bitrate))
        return found

    def starting(self, now: float | None = None) -> bool:
        """The track's layers are still starting, one RTP stream after the other: its lowest layer
        has not arrived yet, and the first layer that did arrived less than a bitrate window ago."""
        if not self.specs:
            return False
        now = time.monotonic() if now is None else now
        streams = self.media.streams
        lowest = streams.get(self.media.stream_names[0])
        if lowest is not None and lowest.meter.flowing(now):
            return False
        return all(stream.meter.young(now) for stream in streams.values())

    def select_layer(self, subscriber_sid: str, layer: str | None) -> None:
        """Forward `layer` to a subscriber from that layer's next keyframe (its current layer until
        then); None switches it off at once: nothing is forwarded, its slot stays."""
        entry = self.subscribers.get(subscriber_sid)
        if entry is None:
            raise ValueError(f"participant {subscriber_sid} is not subscribed to track {self.track.sid}")
        self.media.select_layer(entry[1], layer)

    def selection(self, subscriber_sid: str) -> LayerSelection | None:
        """What one subscriber gets of this video track now (None: not a subscriber, or no selection here)."""
        entry = self.subscribers.get(subscriber_sid)
        return self.media.selection(entry[1]) if entry is not None else None

    def receiving(self) -> dict[str, LayerSelection]:
        """Per subscriber SID, what it gets of a video track now and what it asked for."""
        found = {}
        for sid, (_, outgoing) in self.subscribers.items():
            selection = self.media.selection(outgoing)
            if selection is not None:
                found[sid] = selection
        return found

    def remove_subscriber(self, session: ParticipantConnection) -> None:
        entry = self.subscribers.pop(session.sid, None)
        if entry is not None:
            self.media.remove(entry[1])
            if not session.closed:
                session.stop_media(self.track.sid)

    def close(self) -> None:
        for session, _ in list(self.subscribers.values()):
            self.remove_subscriber(session)
        self.media.close()


Forwarder = DataTrackForwarder | MediaTrackForwarder


class Sfu:
    def __init__(
        self,
        rooms: Rooms,
        media_path: str = "forward",
        speakers: DominantSpeakers | None = None,
        start_lowest: bool = False,
    ) -> None:
        self.rooms = rooms
        self.media_path = media_path
        #: a subscription to a layered track starts at its lowest layer, not its highest (under bandwidth
        #: allocation: a new subscriber's downlink is not estimated yet, and the allocator raises layers
        #: that fit at its next pass; three cameras' high layers are 3.6 Mbit/s, their keyframes at once)
        self.start_lowest = start_lowest
        #: the rooms' dominant-speaker detectors, fed every forwarded audio packet's level
        self.speakers = speakers
        self.sessions: dict[str, ParticipantConnection] = {}
        self.forwarders: dict[str, Forwarder] = {}
        self.counters = ChannelCounters()
        #: server-sent (SendData) sequence numbers: room sid -> destination (None = everyone) -> seq
        self._server_seq: dict[str, dict[str | None, int]] = defaultdict(lambda: defaultdict(int))
        #: sessions being closed (their goodbyes and connections), awaited when the server stops
        self._closing: set[asyncio.Task[None]] = set()
        #: participant sid -> flow control of its reliable publish_data
        self._data_congestion: dict[str, Congestion] = {}
        rooms.on_event(self._on_event)
        for live in rooms.live.values():  # tracks kept across a restart, for publishers to resume
            for track in live.tracks.values():
                self.forwarders[track.sid] = self._forwarder(track, None)

    def _forwarder(self, track: PublishedTrack, publisher: ParticipantConnection | None) -> Forwarder:
        if track.kind == "data":
            return DataTrackForwarder(track, publisher, self.counters)
        levels = self.speakers.observer(track) if self.speakers is not None and track.kind == "audio" else None
        return MediaTrackForwarder(track, self.media_path, time.monotonic(), levels, self.start_lowest)

    # sessions -------------------------------------------------------------------------------
    def add_session(self, session: ParticipantConnection) -> None:
        """Wire a new session: its channels, the tracks it already may subscribe to."""
        self.sessions[session.sid] = session
        for kind, channel in ((RELIABLE_CHANNEL, session.reliable), (LOSSY_CHANNEL, session.lossy)):
            if channel is None:
                continue  # a protocol without publish_data
            session.batchers[kind] = session.data_outlet(channel, self.counters, kind, track_name=kind)
            channel.on("message", lambda message, s=session, k=kind: self.route_data(s, k, message))
        if RELIABLE_CHANNEL in session.batchers:
            watch_outlet(session.batchers[RELIABLE_CHANNEL], self._relieve_data)
        congestion = self._data_congestion.pop(session.sid, None)  # a session resumed on a new connection
        if congestion is not None:
            congestion.close()

        @session.pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            track_sid = session.published_track_for_channel(channel)
            if track_sid is None:
                return  # its track is not known yet: the connection hands the channel on once it is
            forwarder = self.forwarders.get(track_sid)
            if (
                isinstance(forwarder, DataTrackForwarder)
                and forwarder.track.participant_sid == session.sid
                and forwarder.source is None
            ):
                forwarder.attach_source(channel)
            else:
                session.report_error(RoomError(53300, f"Data channel {channel.label!r} is not a track you published"))
                channel.close()

        @session.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            transceiver = next((t for t in session.pc.getTransceivers() if t.receiver.track is track), None)
            slot = session.publishing_slot(transceiver) if transceiver else None
            forwarder = self.forwarders.get(slot.track_sid) if slot and slot.track_sid else None
            if isinstance(forwarder, MediaTrackForwarder) and transceiver is not None and slot is not None:
                forwarder.attach_source(transceiver.receiver, track, slot.layer)

        for track_sid in list(session.live.subscriptions.get(session.sid, {})):
            forwarder = self.forwarders.get(track_sid)
            if forwarder is not None:
                forwarder.add_subscriber(session)
        if session.dominant_speaker and self.speakers is not None:
            current = self.speakers.dominant(session.live.room.sid)
            if current is not None:
                session.report_dominant_speaker(current)
        # a participant resuming on a new connection publishes its tracks again, under their SIDs
        for track in [t for t in session.live.tracks.values() if t.participant_sid == session.sid]:
            forwarder = self.forwarders.get(track.sid)
            if isinstance(forwarder, DataTrackForwarder):
                forwarder.publisher, forwarder.source = session, None
                if forwarder.congestion is not None:
                    forwarder.congestion.tell_again()
            elif isinstance(forwarder, MediaTrackForwarder):
                session.receive_media(track.kind, track.sid, forwarder.media.layers)

    def remove_session(self, session: ParticipantConnection) -> None:
        if self.sessions.get(session.sid) is session:
            del self.sessions[session.sid]
            congestion = self._data_congestion.pop(session.sid, None)
            if congestion is not None:
                congestion.close()
        for forwarder in self.forwarders.values():
            forwarder.remove_subscriber(session)
        self._relieve_data()

    def close_session(self, session: ParticipantConnection, code: int | None, reason: str | None = None) -> None:
        """Close a session in a task of its own; `close()` waits for every such task."""
        task = asyncio.get_running_loop().create_task(session.close(code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """The server is stopping: close every session still open without a goodbye (their
        participants are reconnecting, for a restarted server to take back), and wait for every
        close under way (each of their steps is bounded)."""
        sessions = list(self.sessions.values())
        for session in sessions:
            self.close_session(session, None)
        if self._closing:
            await asyncio.wait(set(self._closing))
        for session in sessions:  # (after closing: nothing is renegotiated or reset on the way out)
            self.remove_session(session)

    def room_sessions(self, room_sid: str, except_sid: str | None = None) -> list[ParticipantConnection]:
        return [s for s in self.sessions.values() if s.live.room.sid == room_sid and s.sid != except_sid]

    # room events ----------------------------------------------------------------------------
    def _on_event(
        self, event: RoomEvent, live: LiveRoom, participant: Participant | None, track: PublishedTrack | None
    ) -> None:
        """Forward what the change asks for, then tell every connection in the room."""
        name = event.name
        if name == "participant-disconnected" and participant is not None:
            own = self.sessions.get(participant.sid)
            if own is not None:
                self.remove_session(own)
                reason = REMOVED_BY_REST_MESSAGE if event.code == REMOVED_BY_REST else None
                self.close_session(own, event.code, reason)
        elif name == "track-added" and track is not None and participant is not None:
            publisher = self.sessions.get(participant.sid)
            forwarder = self.forwarders[track.sid] = self._forwarder(track, publisher)
            if isinstance(forwarder, MediaTrackForwarder) and publisher is not None:
                publisher.receive_media(track.kind, track.sid, forwarder.media.layers)
        elif name == "track-removed" and track is not None and participant is not None:
            forwarder = self.forwarders.pop(track.sid, None)
            if forwarder is not None:
                forwarder.close()
            publisher = self.sessions.get(participant.sid)
            if publisher is not None and track.kind != "data":
                publisher.stop_media(track.sid)
        elif name == "track-subscribed" and track is not None and participant is not None:
            subscriber = self.sessions.get(participant.sid)
            forwarder = self.forwarders.get(track.sid)
            if subscriber is not None and forwarder is not None:
                forwarder.add_subscriber(subscriber)
        elif name == "track-unsubscribed" and participant is not None:
            subscriber = self.sessions.get(participant.sid)
            forwarder = self.forwarders.get(event.track_sid or "")
            if subscriber is not None and forwarder is not None:
                forwarder.remove_subscriber(subscriber)
        for session in self.room_sessions(live.room.sid):
            session.notify(event, live, participant, track)

    # media flow -----------------------------------------------------------------------------
    def check_media_flow(self) -> None:
        """Make a published track that delivers no media visible: an `events` row, a warning in the
        server's log and a `track_warning` for its publisher (and the same when it resumes)."""
        now = time.monotonic()
        for forwarder in list(self.forwarders.values()):
            if not isinstance(forwarder, MediaTrackForwarder):
                continue
            live = self.rooms.live.get(forwarder.track.room_sid)
            if live is not None and forwarder.track.participant_sid in live.reconnecting:
                forwarder.hold(now)  # its publisher sends nothing until it is back: not a stall
                continue
            flowing = forwarder.check_flow(now)
            if flowing is None:
                continue
            track = forwarder.track
            publisher = self.sessions.get(track.participant_sid)
            identity = publisher.participant.identity if publisher is not None else track.participant_sid
            what = f"room {track.room_sid}: {identity}'s {track.kind} track {track.name!r} ({track.sid})"
            detail = "media flows again" if flowing else f"no media for {STALL_AFTER:g} s"
            (log.info if flowing else log.warning)("%s: %s", what, detail)
            self.rooms.note_media_flow(track.sid, flowing, detail)
            if publisher is not None:
                publisher.report_track_warning(track.sid, MEDIA_STALLED_WARNING, detail, cleared=flowing)

    # publish_data ---------------------------------------------------------------------------
    def route_data(self, sender: ParticipantConnection, channel_kind: str, message: bytes | str) -> None:
        """Deliver a participant's `publish_data` frames to everyone else, or to named identities."""
        channel = sender.reliable if channel_kind == RELIABLE_CHANNEL else sender.lossy
        if channel is not None:
            self.counters.received(channel, len(message))
        try:
            if len(message) > MAX_MESSAGE_BYTES:
                raise framing.FramingError(f"message of {len(message)} bytes exceeds {MAX_MESSAGE_BYTES}")
            frames = framing.decode(message)
        except framing.FramingError as exc:
            sender.report_error(RoomError(53004, f"publish_data message dropped: {exc}"))
            return
        for frame in frames:
            self._deliver(sender.live.room.sid, sender.sid, channel_kind, frame)
        if channel_kind == RELIABLE_CHANNEL:
            self._sender_congestion(sender).check()

    def _sender_congestion(self, sender: ParticipantConnection) -> Congestion:
        """End-to-end flow control of a participant's reliable publish_data (see congestion.py)."""
        congestion = self._data_congestion.get(sender.sid)
        if congestion is None:
            room_sid = sender.live.room.sid

            def outlets() -> list[tuple[str, Batcher]]:
                others = self.room_sessions(room_sid, except_sid=sender.sid)
                return [(s.sid, s.batchers[RELIABLE_CHANNEL]) for s in others if RELIABLE_CHANNEL in s.batchers]

            def tell(congested: bool) -> None:
                sender.report_congestion(None, congested)

            congestion = self._data_congestion[sender.sid] = Congestion(outlets, tell)
        return congestion

    def _relieve_data(self) -> None:
        for congestion in list(self._data_congestion.values()):
            congestion.relieve()

    def _deliver(self, room_sid: str, sender_sid: str | None, channel_kind: str, frame: framing.Frame) -> None:
        if frame.destinations:
            for identity, seq in frame.destinations:
                target = next(
                    (s for s in self.room_sessions(room_sid) if s.participant.identity == identity),
                    None,
                )
                if target is None or target.sid == sender_sid:
                    continue
                data = framing.encode(
                    frame.payload, seq, frame.sent_us, topic=frame.topic, sender=sender_sid, direct=True
                )
                self._send_on(target, channel_kind, data)
            return
        data = framing.encode(frame.payload, frame.seq, frame.sent_us, topic=frame.topic, sender=sender_sid)
        for target in self.room_sessions(room_sid, except_sid=sender_sid):
            self._send_on(target, channel_kind, data)

    def _send_on(self, session: ParticipantConnection, channel_kind: str, data: bytes) -> None:
        batcher = session.batchers.get(channel_kind)
        if batcher is not None and batcher.usable:
            batcher.add(data)

    def rtp_streams(self) -> list[RtpStream]:
        """Every media stream the server carries, named from its participant's side: what a
        publisher sends is `outbound`, what a subscriber receives is `inbound`."""
        streams = []
        for session in list(self.sessions.values()):
            identity = session.participant.identity
            live = session.live
            for slot in session.slots:
                if slot.track_sid is None or slot.transceiver is None:
                    continue
                kind = slot.transceiver.kind
                track = live.tracks.get(slot.track_sid)
                name = track.name if track is not None else None
                owner = live.participants.get(track.participant_sid) if track is not None else None
                publisher = owner.identity if owner is not None else None
                if slot.role == "publish":
                    endpoint, direction = slot.transceiver.receiver, "outbound"
                    layer = slot.layer
                elif slot.role == "subscribe":
                    endpoint, direction = slot.transceiver.sender, "inbound"
                    layer = self._forwarded_layer(slot.track_sid, slot.outgoing)
                else:
                    continue
                streams.append(
                    RtpStream(identity, slot.track_sid, kind, direction, endpoint, None, name, publisher, layer)
                )
        return streams

    def _forwarded_layer(self, track_sid: str, outlet: OutgoingTrack | None) -> Callable[[], str | None] | None:
        """What tells the layer of a layered track a subscriber's slot carries now (None: no layers)."""
        forwarder = self.forwarders.get(track_sid)
        if not isinstance(forwarder, MediaTrackForwarder) or outlet is None or not forwarder.media.layers:
            return None
        media = forwarder.media

        def layer() -> str | None:
            selection = media.selection(outlet)
            return selection.current if selection is not None else None

        return layer

    def send_data(
        self,
        room_sid: str,
        payload: bytes | str,
        *,
        topic: str | None = None,
        destination_identities: list[str] | None = None,
        reliable: bool = True,
    ) -> int:
        """Messages from the server itself (REST `SendData`); returns how many participants got it."""
        channel_kind = RELIABLE_CHANNEL if reliable else LOSSY_CHANNEL
        counters = self._server_seq[room_sid]
        sessions = self.room_sessions(room_sid)
        if destination_identities:
            targets = [s for s in sessions if s.participant.identity in set(destination_identities)]
            for session in targets:
                counters[session.participant.identity] += 1
                data = framing.encode(payload, counters[session.participant.identity], topic=topic, direct=True)
                self._send_on(session, channel_kind, data)
            return len(targets)
        counters[None] += 1
        data = framing.encode(payload, counters[None], topic=topic)
        for session in sessions:
            self._send_on(session, channel_kind, data)
        return len(sessions)
