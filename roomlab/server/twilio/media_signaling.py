"""The SDK's media-signaling channels: in-room features on data channels the server opens (read
from twilio-video.js `lib/signaling/v2/*signaling.js` and `lib/data/transport.js`).

    connect.media_signaling    {<name>: {transports: [{type: "data-channel"}]}}       what the client wants
    connected.media_signaling  {<name>: {transport: {type: "data-channel", label}}}   what the server opened
    client, on each channel as it opens    {type: "ready"}   (the server writes nothing before it)

    active_speaker    server  {type: "active_speaker", participant: <SID or null>}
    network_quality   client  {type: "network_quality", reportLevel, remoteReportLevel, <its own stats>}
                      server  {type: "network_quality", local: <level, or {level, audio, video}>,
                               remotes: [{sid, level, audio?, video?}]}
                      (one answer per question; the client asks again 1 s after each answer, and
                      after 5 s, then 1.5 times longer each time, without one)
    track_switch_off  server  {type: "track_switch_off", off: [SID], on: [SID]}
    track_priority    client  {type: "track_priority", track: <SID>, subscribe: <priority or null>}
    render_hints      client  {type: "render_hints", subscriber: {id, hints: [{track, enabled?,
                               render_dimensions?: {width, height}}]}}
                      server  {type: "render_hints", subscriber: {id, hints: [{track, result: "OK"}]}}

Nothing here computes a level, a speaker or an allocation: the server's network quality, dominant
speaker and bandwidth allocation decide, and `MediaSignaling` says it in these words. The client's
own network-quality stats are not used (the server measures both directions itself). The
subscriber's priorities and render hints are kept (`priorities`, `render_hints`) and handed to the
bandwidth allocation as they change (`on_priority`, `on_render_hint`): a hint that no element shows
a track switches it off (reason `subscriber`), its size sets the layer it needs.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiortc import RTCDataChannel

from ...policy.allocation import PRIORITIES
from ...policy.quality import (
    NetworkQualityConfiguration,
    NetworkQualityMediaStats,
    NetworkQualitySendOrRecvStats,
    NetworkQualityStats,
)

log = logging.getLogger(__name__)

#: The channels this server opens when asked (the SDK's others, publisher_hints and
#: extension_transcriptions, are not offered: their features do not exist here).
CHANNELS = ("active_speaker", "network_quality", "track_switch_off", "track_priority", "render_hints")
#: Messages kept for a channel whose client has not said `ready` yet (the oldest go first).
WAITING_LIMIT = 100
#: Largest message read from a client on these channels.
MAX_MESSAGE_BYTES = 64 * 1024


def requested(media_signaling: Any) -> tuple[str, ...]:
    """The channels of `connect.media_signaling` this server opens: those asked for over a data channel."""
    if not isinstance(media_signaling, Mapping):
        return ()
    found = []
    for name in CHANNELS:
        wanted = media_signaling.get(name)
        transports = wanted.get("transports") if isinstance(wanted, Mapping) else None
        if isinstance(transports, list) and any(
            isinstance(t, Mapping) and t.get("type") == "data-channel" for t in transports
        ):
            found.append(name)
    return tuple(found)


# --- the SDK's shapes -------------------------------------------------------------------------------------


def _send_or_recv(stats: NetworkQualitySendOrRecvStats | None) -> dict[str, Any] | None:
    if stats is None:
        return None
    return {
        "bandwidth": {
            "actual": stats.bandwidth.actual,
            "available": stats.bandwidth.available,
            "level": stats.bandwidth.level,
        },
        "latency": {"jitter": stats.latency.jitter, "rtt": stats.latency.rtt, "level": stats.latency.level},
        "fractionLost": {"fractionLost": stats.fraction_lost.fraction_lost, "level": stats.fraction_lost.level},
    }


def _media(stats: NetworkQualityMediaStats | None) -> dict[str, Any] | None:
    if stats is None:
        return None
    return {
        "send": stats.send,
        "recv": stats.recv,
        "sendStats": _send_or_recv(stats.send_stats),
        "recvStats": _send_or_recv(stats.recv_stats),
    }


def sdk_levels(stats: NetworkQualityStats) -> int | dict[str, Any]:
    """Network quality as the SDK reads it: the level alone at `minimal`, else `{level, audio,
    video}` with `sendStats`/`recvStats` at `detailed` (its NetworkQualityStats, field for field)."""
    if stats.audio is None and stats.video is None:
        return stats.level
    return {"level": stats.level, "audio": _media(stats.audio), "video": _media(stats.video)}


def network_quality_message(local: NetworkQualityStats, remotes: Mapping[str, NetworkQualityStats]) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "network_quality", "local": sdk_levels(local)}
    if remotes:
        entries = []
        for sid, stats in remotes.items():
            levels = sdk_levels(stats)
            entries.append({"sid": sid, **(levels if isinstance(levels, dict) else {"level": levels})})
        message["remotes"] = entries
    return message


@dataclass(frozen=True)
class RenderHint:
    """What a subscriber says of how it shows a remote video track (the SDK sends it for attached
    video elements: whether one is visible, and its size)."""

    enabled: bool | None = None
    """False: no element shows it (the allocator may switch it off); None: not said."""
    render_dimensions: tuple[int, int] | None = None
    """(width, height) of the largest element showing it; None: not said."""


def parse_render_hint(hint: Any, previous: RenderHint | None) -> tuple[str, RenderHint] | None:
    """One entry of `render_hints.subscriber.hints`, merged into what was known (the SDK sends
    only what changed); None when it is not in the SDK's shape."""
    if not isinstance(hint, Mapping) or not isinstance(hint.get("track"), str):
        return None
    previous = previous or RenderHint()
    enabled = hint.get("enabled", previous.enabled)
    if enabled is not None and not isinstance(enabled, bool):
        return None
    dimensions = previous.render_dimensions
    size = hint.get("render_dimensions")
    if size is not None:
        width, height = (size.get("width"), size.get("height")) if isinstance(size, Mapping) else (None, None)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in (width, height)):
            return None
        dimensions = (int(width), int(height))  # type: ignore[arg-type]
    return hint["track"], RenderHint(enabled, dimensions)


# --- the channels -------------------------------------------------------------------------------------------


class Channel:
    """One media-signaling data channel: JSON messages both ways; what the server says waits for
    the client's `ready` (the SDK reads nothing before it has set the channel up)."""

    def __init__(self, name: str, channel: RTCDataChannel, on_message: Callable[[dict[str, Any]], None]) -> None:
        self.name = name
        self.channel = channel
        self.ready = False
        self._waiting: deque[dict[str, Any]] = deque(maxlen=WAITING_LIMIT)
        self._on_message = on_message
        channel.on("message", self._receive)

    def send(self, message: dict[str, Any]) -> None:
        if not self.ready:
            self._waiting.append(message)
            return
        if self.channel.readyState != "open":
            return
        self.channel.send(json.dumps(message, separators=(",", ":")))

    def _receive(self, data: str | bytes) -> None:
        try:
            if len(data) > MAX_MESSAGE_BYTES:
                raise ValueError(f"over {MAX_MESSAGE_BYTES} bytes")
            message = json.loads(data)
            if not isinstance(message, dict) or not isinstance(message.get("type"), str):
                raise ValueError("not an object with a type")
        except ValueError as exc:
            log.debug("media signaling %s: message ignored: %s", self.name, exc)
            return
        if message["type"] == "ready":
            self.ready = True
            while self._waiting:
                self.send(self._waiting.popleft())
            return
        self._on_message(message)


class MediaSignaling:
    """One SDK client's media-signaling channels, and what it was told and said on them.

    `connection` is its `ParticipantConnection`: its `network_quality` (the configuration the
    server's network quality reports at) and `dominant_speaker` are set from what it asked for."""

    def __init__(
        self,
        connection: Any,
        names: Iterable[str],
        on_priority: Callable[[str, str | None], None] | None = None,
        on_render_hint: Callable[[str, RenderHint], None] | None = None,
    ) -> None:
        self.connection = connection
        self._on_priority = on_priority
        self._on_render_hint = on_render_hint
        self.names = tuple(name for name in CHANNELS if name in set(names))
        self.channels: dict[str, Channel] = {}
        #: what was said before the channels opened (the session joins the room first)
        self._early: dict[str, list[dict[str, Any]]] = {}
        # network quality: the latest stats per participant SID at the asked verbosities
        self._levels: dict[str, NetworkQualityStats] = {}
        self._question_waiting = False
        # bandwidth profile
        self._switched_off: set[str] = set()
        #: the subscriber's priority for a track (its `track.setPriority`), by track SID
        self.priorities: dict[str, str] = {}
        #: the subscriber's render hints, by track SID
        self.render_hints: dict[str, RenderHint] = {}
        if "network_quality" in self.names:
            connection.network_quality = NetworkQualityConfiguration()
        if "active_speaker" in self.names:
            connection.dominant_speaker = True

    def open(self, create: Callable[[str], RTCDataChannel]) -> dict[str, Any]:
        """Open a channel for each feature asked for (`create(label)` opens a data channel to the
        client); return what `connected.media_signaling` says of them."""
        handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "network_quality": self._on_network_quality,
            "track_priority": self._on_track_priority,
            "render_hints": self._on_render_hints,
        }
        announced = {}
        for name in self.names:
            channel = self.channels[name] = Channel(name, create(name), handlers.get(name, self._unexpected))
            for message in self._early.pop(name, []):
                channel.send(message)
            announced[name] = {"transport": {"type": "data-channel", "label": name}}
        return announced

    def _send(self, name: str, message: dict[str, Any]) -> None:
        channel = self.channels.get(name)
        if channel is not None:
            channel.send(message)
        elif name in self.names:
            self._early.setdefault(name, []).append(message)

    def _unexpected(self, message: dict[str, Any]) -> None:
        log.debug("participant %s: media signaling message %r ignored", self.connection.sid, message["type"])

    # active_speaker ---------------------------------------------------------------------------------------
    def dominant_speaker(self, participant_sid: str | None) -> None:
        self._send("active_speaker", {"type": "active_speaker", "participant": participant_sid})

    # network_quality --------------------------------------------------------------------------------------
    def network_quality(self, changed: Mapping[str, NetworkQualityStats | None]) -> None:
        """Levels that changed (the server's reports at the client's verbosities); a question
        waiting for the first of them is answered now."""
        for sid, stats in changed.items():
            if stats is None:
                self._levels.pop(sid, None)
            else:
                self._levels[sid] = stats
        if self._question_waiting:
            self._answer()

    def forget(self, participant_sid: str) -> None:
        """A participant left: no more levels of it, nor switch-offs and hints of its tracks."""
        self._levels.pop(participant_sid, None)

    def forget_track(self, track_sid: str) -> None:
        self._switched_off.discard(track_sid)
        self.priorities.pop(track_sid, None)
        self.render_hints.pop(track_sid, None)

    def _on_network_quality(self, message: dict[str, Any]) -> None:
        """A question: the verbosities it names become the configuration, and it is answered with
        the levels known (or with the first ones, once the server has computed them)."""
        try:
            configuration = NetworkQualityConfiguration(
                message.get("reportLevel", 1), message.get("remoteReportLevel", 0)
            )
        except ValueError as exc:
            log.debug("participant %s: network_quality ignored: %s", self.connection.sid, exc)
            return
        if configuration != self.connection.network_quality:
            self.connection.network_quality = configuration
            self._levels.clear()  # the server tells every level again at the new verbosities
        self._question_waiting = True
        self._answer()

    def _answer(self) -> None:
        local = self._levels.get(self.connection.sid)
        if local is None:
            return  # answered with the first levels the server computes
        self._question_waiting = False
        remotes = {sid: stats for sid, stats in self._levels.items() if sid != self.connection.sid}
        self._send("network_quality", network_quality_message(local, remotes))

    # track_switch_off -------------------------------------------------------------------------------------
    def switched(self, track_sid: str, off: bool) -> None:
        """The server stopped (or resumed) forwarding a subscribed video track to this client."""
        if off == (track_sid in self._switched_off):
            return
        if off:
            self._switched_off.add(track_sid)
        else:
            self._switched_off.discard(track_sid)
        change = {"off": [track_sid], "on": []} if off else {"off": [], "on": [track_sid]}
        self._send("track_switch_off", {"type": "track_switch_off", **change})

    # track_priority and render_hints ----------------------------------------------------------------------
    def _on_track_priority(self, message: dict[str, Any]) -> None:
        track, priority = message.get("track"), message.get("subscribe")
        if not isinstance(track, str) or (priority is not None and priority not in PRIORITIES):
            log.debug("participant %s: track_priority ignored: %r", self.connection.sid, message)
            return
        if priority is None:
            self.priorities.pop(track, None)
        else:
            self.priorities[track] = priority
        if self._on_priority is not None:
            self._on_priority(track, priority)

    def _on_render_hints(self, message: dict[str, Any]) -> None:
        subscriber = message.get("subscriber")
        hints = subscriber.get("hints") if isinstance(subscriber, Mapping) else None
        if not isinstance(hints, list):
            log.debug("participant %s: render_hints ignored: %r", self.connection.sid, message)
            return
        results = []
        for hint in hints:
            track = hint.get("track") if isinstance(hint, dict) else None
            parsed = parse_render_hint(hint, self.render_hints.get(track) if isinstance(track, str) else None)
            if parsed is None:
                results.append({"track": track, "result": "INVALID"})
                continue
            self.render_hints[parsed[0]] = parsed[1]
            results.append({"track": track, "result": "OK"})
            if self._on_render_hint is not None:
                self._on_render_hint(*parsed)
        reply = {"id": subscriber.get("id"), "hints": results}  # type: ignore[union-attr]
        self._send("render_hints", {"type": "render_hints", "subscriber": reply})
