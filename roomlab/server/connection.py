"""One participant's peer connection with the server, whatever signaling protocol negotiates it.

The forwarding plane (`sfu.py`) attaches to this side only: the media slots that carry published
and subscribed tracks, the data channels of subscriptions, and how data messages enter and leave
the room's framing (SPEC §6). Each signaling protocol subclasses `ParticipantConnection` as an
adapter: it negotiates the SDP its own way (`request_negotiation`), and turns room events and
the server's notices into its own messages (`notify`, `report_dropped`, `report_error`,
`report_track_warning`, `report_network_quality`, `report_dominant_speaker`,
`report_congestion`, `close`).
roomlab's own signaling is `session.Session`; Twilio's SDK is `twilio.session.TwilioSession`.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection, RTCRtpTransceiver

from ..errors import RoomError
from ..net import bundle, closing, sctp
from ..net.ice import rtc_configuration
from ..net.pacing import Pacer, pace, pace_from_start
from ..net.rtp import limit_retransmissions
from ..policy.quality import NetworkQualityConfiguration, NetworkQualityStats
from ..protocol.batching import Batcher
from ..telemetry.sampling import ChannelCounters
from .media import OutgoingTrack, route_keyframe_requests
from .model import Participant, PublishedTrack, RoomEvent
from .rooms import LiveRoom

sctp.install()
bundle.install()
closing.install()

#: Roles of a media slot: "publish" carries a track from the client, "subscribe" one to it, and
#: "retired" is a publisher's slot whose track is gone (roomlab's client never sends on it again;
#: Twilio's SDK may send its next track of that kind on it).
SLOT_ROLES = ("publish", "subscribe", "retired")


@dataclass
class MediaSlot:
    """A transceiver and the published track it carries (`role` publish: client to server; `layer`:
    which layer of a layered video track, each of which the publisher sends on a slot of its own).

    `transceiver` is None until the server's next offer adds it: transceivers are created just
    before an offer, so that an offer from the client can never bind to one of ours.
    """

    transceiver: RTCRtpTransceiver | None
    role: str
    track_sid: str | None
    outgoing: OutgoingTrack | None = None
    kind: str = ""
    layer: str | None = None

    def __post_init__(self) -> None:
        if self.role not in SLOT_ROLES:
            raise ValueError(f"role must be one of {', '.join(SLOT_ROLES)}, got {self.role!r}")
        if not self.kind and self.transceiver is not None:
            self.kind = self.transceiver.kind


#: Seconds a client has to answer an offer (while its socket is attached).
ANSWER_TIMEOUT = 15.0


class ParticipantConnection(ABC):
    """The peer-connection side of a participant's session, shared by every signaling protocol."""

    def __init__(self, live: LiveRoom, participant: Participant) -> None:
        self.live = live
        self.participant = participant
        self.pc = RTCPeerConnection(rtc_configuration())
        self.closed = False
        self.slots: list[MediaSlot] = []
        #: publish_data channels (roomlab's own signaling only), and their outlets by label
        self.reliable: RTCDataChannel | None = None
        self.lossy: RTCDataChannel | None = None
        self.batchers: dict[str, Batcher] = {}
        #: what the client asked to hear of network quality (None: nothing) and of the dominant speaker
        self.network_quality: NetworkQualityConfiguration | None = None
        self.dominant_speaker = False
        #: paces the video the server sends this participant (at the rate the bandwidth allocation sets)
        self.pacer = Pacer()
        #: set while a socket is attached (cleared while the participant is reconnecting)
        self._attached = asyncio.Event()
        #: the answer to the offer in flight (None: no offer waits)
        self._answer: asyncio.Future[str] | None = None

    @property
    def sid(self) -> str:
        return self.participant.sid

    @property
    def attached(self) -> bool:
        return self._attached.is_set()

    async def _wait_for_answer(self) -> str:
        """The client's answer within ANSWER_TIMEOUT of being attached: time spent reconnecting
        does not count (each signaling sends the offer again on the client's new socket)."""
        assert self._answer is not None
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(self._answer), ANSWER_TIMEOUT)
            except TimeoutError:
                if self.attached:
                    raise
                await self._attached.wait()

    # what each signaling adapter provides ------------------------------------------------------
    @abstractmethod
    def request_negotiation(self) -> None:
        """Negotiate the peer connection again soon (the adapter's offer/answer rules)."""
        ...

    def notify(
        self, event: RoomEvent, live: LiveRoom, participant: Participant | None, track: PublishedTrack | None
    ) -> None:
        """A change in this participant's room: the dominant speaker (if the client asked for it)
        and its own tracks switched off or on go to `report_*`; the rest to `notify_room`."""
        name = event.name
        if name == "dominant-speaker-changed":
            if self.dominant_speaker:
                self.report_dominant_speaker(participant.sid if participant is not None else None)
        elif name in ("track-switched-off", "track-switched-on"):
            if participant is not None and participant.sid == self.sid and event.track_sid is not None:
                self.report_switch(event.track_sid, name == "track-switched-off", event.detail)
        else:
            self.notify_room(event, live, participant, track)

    @abstractmethod
    def notify_room(
        self, event: RoomEvent, live: LiveRoom, participant: Participant | None, track: PublishedTrack | None
    ) -> None:
        """Any other change in this participant's room, for the adapter to tell its client in its own words."""
        ...

    @abstractmethod
    def report_switch(self, track_sid: str, off: bool, reason: str | None) -> None:
        """The server's bandwidth allocation switched a video track this participant receives off
        (with its reason) or back on."""
        ...

    @abstractmethod
    def report_dropped(self, track_sid: str, count: int) -> None:
        """The server dropped `count` messages of a track for this slow subscriber."""
        ...

    @abstractmethod
    def report_error(self, error: RoomError, **context: Any) -> None:
        """A non-fatal refusal (a message dropped, a bad request): the session goes on."""
        ...

    @abstractmethod
    def report_track_warning(self, track_sid: str, name: str, message: str, cleared: bool) -> None:
        """A warning about one of this participant's published tracks (`cleared`: it is over)."""
        ...

    @abstractmethod
    def report_network_quality(self, participants: dict[str, NetworkQualityStats | None]) -> None:
        """Network quality that changed, per participant SID, at the verbosities the client asked
        for in `network_quality` (only called when it did)."""
        ...

    @abstractmethod
    def report_dominant_speaker(self, participant_sid: str | None) -> None:
        """The room's dominant speaker is now this participant (None: nobody); only called when the
        client asked for it (`dominant_speaker`)."""
        ...

    @abstractmethod
    def report_layer(self, track_sid: str, layer: str | None) -> None:
        """The server now forwards `layer` of a layered video track to this subscriber (None:
        nothing, it is switched off)."""
        ...

    @abstractmethod
    async def close(self, code: int | None = None, message: str | None = None) -> None:
        """Tell the client why it leaves (if it is still there), then close its socket and connection."""
        ...

    def report_congestion(self, track_sid: str | None, congested: bool) -> None:  # noqa: B027 (a default: ignore)
        """The server holds too much of this participant's reliable data (of a track, or of its
        publish_data: None) for a subscriber, or no longer (roomlab/server/congestion.py). A
        protocol whose clients have no flow control to feed ignores it (this default)."""

    # data --------------------------------------------------------------------------------------
    def published_track_for_channel(self, channel: RTCDataChannel) -> str | None:
        """The SID of the data track a channel opened by the client carries (its label here); None
        while its track is not known yet (the connection emits `datachannel` again once it is)."""
        return channel.label

    def open_data_channel(self, label: str, **options: Any) -> RTCDataChannel:
        """A data channel from the server to the client; negotiated first if SCTP is not yet."""
        channel = self.pc.createDataChannel(label, **options)
        if self.pc.sctp is None or self.pc.sctp.mid is None:
            self.request_negotiation()
        return channel

    def data_inlet(self, channel: RTCDataChannel, deliver: Callable[[bytes | str], None]) -> None:
        """Feed what the client sends on `channel` to `deliver`, as framed messages (SPEC §6)."""
        channel.on("message", deliver)

    def data_outlet(
        self,
        channel: RTCDataChannel,
        counters: ChannelCounters,
        track_sid: str,
        track_name: str | None = None,
        publisher: str | None = None,
    ) -> Batcher:
        """The subscriber's end of a data path: batched frames, bounded, counted, and it says when it drops."""
        counters.watch(channel, self.participant.identity, track_name, publisher)
        return Batcher(
            channel,
            on_sent=lambda size, frames: counters.sent(channel, size),
            on_drop=DropNotice(self, track_sid),
        )

    # media -------------------------------------------------------------------------------------
    def receive_media(self, kind: str, track_sid: str, layers: tuple[str, ...] = ()) -> None:
        """Room for a track the client publishes (a slot per layer of a layered track); the slots'
        transceivers come with the next offer."""
        for layer in layers or (None,):
            self.slots.append(MediaSlot(None, "publish", track_sid, kind=kind, layer=layer))
        self.request_negotiation()

    def publishing_slot(self, transceiver: RTCRtpTransceiver) -> MediaSlot | None:
        return next((s for s in self.slots if s.transceiver is transceiver and s.role == "publish"), None)

    def pace_video(self, rate_bps: float | None) -> None:
        """Pace the video sent to this participant at `rate_bps` (None: as it comes)."""
        self.pacer.set_rate(rate_bps)
        if rate_bps is None:
            return
        for slot in self.slots:
            if slot.role == "subscribe" and slot.kind == "video" and slot.transceiver is not None:
                pace(slot.transceiver.sender, self.pacer)

    def send_media(self, track_sid: str, kind: str) -> OutgoingTrack:
        """A sending slot for `track_sid` (an idle one of the kind if there is one); the forwarder
        pushes the track's frames into the returned outgoing track."""
        slot = next(
            (s for s in self.slots if s.role == "subscribe" and s.track_sid is None and s.kind == kind),
            None,
        )
        if slot is None:
            slot = MediaSlot(None, "subscribe", None, OutgoingTrack(kind), kind=kind)
            self.slots.append(slot)
        if slot.transceiver is not None:
            slot.transceiver.direction = "sendonly"
        slot.track_sid = track_sid
        self.request_negotiation()
        assert slot.outgoing is not None
        return slot.outgoing

    def stop_media(self, track_sid: str) -> None:
        for slot in self.slots:
            if slot.track_sid == track_sid:
                if slot.transceiver is not None:
                    slot.transceiver.direction = "inactive"
                slot.track_sid = None
                if slot.outgoing is None:
                    slot.role = "retired"
        self.request_negotiation()

    def add_pending_transceivers(self) -> None:
        """Create the transceivers of slots that have none yet (call just before creating an offer)."""
        for slot in self.slots:
            if slot.transceiver is not None or slot.role == "retired":
                continue
            if slot.role == "subscribe":
                assert slot.outgoing is not None
                direction = "sendonly" if slot.track_sid is not None else "inactive"
                slot.transceiver = self.pc.addTransceiver(slot.outgoing, direction=direction)
                route_keyframe_requests(slot.transceiver.sender, slot.outgoing.request_keyframe)
                limit_retransmissions(slot.transceiver.sender)
                if slot.kind == "video":  # paced from its first packet, at the rate of the last allocation
                    pace_from_start(slot.transceiver.sender, self.pacer)
            else:
                slot.transceiver = self.pc.addTransceiver(slot.kind, direction="recvonly")


class DropNotice:
    """Tells a subscriber how many messages it missed because it fell behind, at most once a second."""

    INTERVAL = 1.0

    def __init__(self, connection: ParticipantConnection, track_sid: str) -> None:
        self.connection = connection
        self.track_sid = track_sid
        self.pending = 0
        self.total = 0

    def __call__(self, count: int) -> None:
        self.total += count
        if self.pending == 0:
            asyncio.get_running_loop().call_later(self.INTERVAL, self._tell)
        self.pending += count

    def _tell(self) -> None:
        self.connection.report_dropped(self.track_sid, self.pending)
        self.pending = 0
