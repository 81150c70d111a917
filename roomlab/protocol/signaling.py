"""The signaling protocol between a client and the server: JSON messages over a WebSocket.

Every message is an object with a `type`. The client opens with `connect` (its token and options);
the server answers `connected` with the room's state, then drives every SDP negotiation: it sends
`offer`, the client replies `answer`. Only the server offers, so offers never cross.

`connected` carries a session key. A client whose socket or media path broke opens a new socket
and sends `connect` with `resume: {participant_sid, session, peer_connection: "keep" | "new"}`;
the server answers `connected` with `resumed: true`, `peer_connection: "kept" | "new"` (a new one
when either end lost its connection) and the participant's own `tracks`, or an error (53204 once
the session has ended). Others meanwhile get `participant_reconnecting`, then
`participant_reconnected` (or `participant_disconnected` when the window closes).

Client to server:   connect, answer, publish, unpublish, set_metadata, set_track_enabled,
                    set_track_priority, set_network_quality, set_bandwidth_profile,
                    set_subscriber_priority, switch_track, ping, leave
Server to client:   connected, offer, published, participant_connected, participant_disconnected,
                    participant_reconnecting, participant_reconnected,
                    track_published, track_unpublished, track_enabled, track_disabled,
                    track_priority_changed, metadata_changed, unsubscribed, track_warning,
                    track_warnings_cleared, network_quality, dominant_speaker_changed, layer_changed,
                    track_switched_off, track_switched_on, track_congestion, data_congestion, error,
                    disconnected, pong

In-room features a client asks for in `connect.options` (`CONNECT_OPTIONS`):
- `network_quality: {"local": 0-3, "remote": 0-3}` (Twilio's NetworkQualityConfiguration; absent:
  off). The server then sends `network_quality` about once a second with what changed:
  `{"participants": {sid: stats or null}}`, the client's own at its local verbosity and the others'
  at its remote verbosity (see protocol/network_quality.py for the stats). `set_network_quality`
  (`local`, `remote`) changes the verbosities live (or turns it on); the server answers with
  everything at the new verbosities.
- `dominant_speaker: true`: the server sends `dominant_speaker_changed` with `participant_sid`
  (null: nobody) on every change, and the current one on joining.
- `bandwidth_profile: {"video": {...}}` (Twilio's BandwidthProfileOptions in snake case, see
  roomlab/policy/allocation.py; absent: Twilio's defaults). `set_bandwidth_profile`
  (`bandwidth_profile`) replaces it live. The server allocates every subscriber's downlink whether
  it asks or not, and sends `track_switched_off` (`track_sid`, `reason`: bandwidth, max_tracks,
  subscriber, publisher, disabled; again when the reason changes) and `track_switched_on`
  (`track_sid`, `reason`) for its subscribed video tracks. The subscriber overrides a track's
  priority with `set_subscriber_priority` (`track_sid`, `priority` or null) and switches one off or
  on itself with `switch_track` (`track_sid`, `switched_off`). A publisher changes its track's
  priority with `set_track_priority` (`sid`, `priority`); the others get `track_priority_changed`.

A layered video track (roomlab/protocol/layers.py) is published with `options.layers`; the offer's
`mids` name the layer each of its transceivers carries (`{"role": "publish", "track_sid": ...,
"layer": "low"}`), and `layer_changed` (`track_sid`, `layer` or null) tells a subscriber which layer
the server forwards to it now.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from ..errors import RoomError

PROTOCOL_VERSION = 1
#: Largest signaling message either side accepts (SDP of a large room fits with room to spare).
MAX_MESSAGE_BYTES = 256 * 1024
PATH = "/signaling"

ClientMessageType = Literal[
    "connect",
    "answer",
    "publish",
    "unpublish",
    "set_metadata",
    "set_track_enabled",
    "set_track_priority",
    "set_network_quality",
    "set_bandwidth_profile",
    "set_subscriber_priority",
    "switch_track",
    "ping",
    "leave",
]
#: Keys of `connect.options`.
CONNECT_OPTIONS = ("network_quality", "dominant_speaker", "bandwidth_profile")

_OPTIONAL = object()

#: type -> field -> accepted Python types (a field whose types include _OPTIONAL may be absent).
CLIENT_MESSAGES: dict[str, dict[str, tuple[Any, ...]]] = {
    "connect": {
        "version": (int,),
        "token": (str,),
        "room": (str, type(None), _OPTIONAL),
        "automatic_subscription": (bool, _OPTIONAL),
        "metadata": (str, _OPTIONAL),
        "options": (dict, _OPTIONAL),
        "resume": (dict, _OPTIONAL),
    },
    "answer": {"sdp": (str,)},
    "publish": {"ref": (int,), "name": (str,), "kind": (str,), "options": (dict, _OPTIONAL)},
    "unpublish": {"sid": (str,)},
    "set_metadata": {"metadata": (str,)},
    "set_track_enabled": {"sid": (str,), "enabled": (bool,)},
    "set_track_priority": {"sid": (str,), "priority": (str,)},
    "set_network_quality": {"local": (int, str), "remote": (int, str)},
    "set_bandwidth_profile": {"bandwidth_profile": (dict,)},
    "set_subscriber_priority": {"track_sid": (str,), "priority": (str, type(None))},
    "switch_track": {"track_sid": (str,), "switched_off": (bool,)},
    "ping": {},
    "leave": {},
}


def invalid(reason: str) -> RoomError:
    return RoomError(53004, f"Client sent an invalid signaling message: {reason}")


def parse_client_message(text: str | bytes) -> dict[str, Any]:
    """Decode and check one client message; raise RoomError(53004) saying what is wrong."""
    if len(text) > MAX_MESSAGE_BYTES:
        raise invalid(f"message of {len(text)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise invalid("not valid JSON") from None
    if not isinstance(message, dict):
        raise invalid("a message must be a JSON object")
    kind = message.get("type")
    schema = CLIENT_MESSAGES.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise invalid(f"unknown type {kind!r}; expected one of {', '.join(CLIENT_MESSAGES)}")
    for field, types in schema.items():
        if field not in message:
            if _OPTIONAL in types:
                continue
            raise invalid(f"{kind} needs the field {field!r}")
        value = message[field]
        accepted = tuple(t for t in types if t is not _OPTIONAL)
        # bool is an int in Python; an int field must not take true/false
        if not isinstance(value, accepted) or (bool not in accepted and isinstance(value, bool)):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in accepted)
            raise invalid(f"{kind}.{field} must be {names}")
    return message


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))
