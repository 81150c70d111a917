"""The Room Signaling Protocol, version 2: the messages twilio-video.js 2.x exchanges with its
server inside TCMP `msg` bodies (read from `lib/signaling/v2/`). Pure functions: checking what the
client sends, and building what the server sends from the room's records.

    client  connect {name, token, participant, peer_connections, subscribe, media_signaling, ...}
            update {session, participant?, peer_connections?, bandwidth_profile?}
            disconnect {session}
            sync {session, token, participant, peer_connections}: the first message on a new
                 socket after the last one dropped, within `session_timeout` seconds
            (ice: asks for ICE servers before connect when the app gave none)
    server  connected {session, options: {session_timeout}, sid, name, participant, participants,
                       peer_connections, published, subscribed, media_signaling}
            synced {session, participant, participants, peer_connections, published, subscribed}:
                   the answer to sync, with the whole state (remote participants it omits are gone)
            update {participants?, published?, subscribed?, peer_connections?}
            disconnected {status?}     error {code, message}     iced {ice_servers}

State is sent whole, each part with a revision that must grow: a remote participant's tracks,
the local participant's publications (`published`: the SDK's track id -> the server's SID), and
its subscriptions (`subscribed`: a track SID -> the id of what carries it, a data channel label or
a media track id in the server's SDP `a=msid`).
"""

from __future__ import annotations

from typing import Any

from ...errors import RoomError
from ...policy.allocation import BandwidthProfile
from ..model import Participant, PublishedTrack

VERSION = 2
CLIENT_MESSAGES = ("connect", "update", "disconnect", "sync", "ice")
LOCAL_TRACK_KINDS = ("audio", "video", "data")
#: The SDK's bandwidth_profile.video keys and roomlab's names for them (VideoBandwidthProfile).
BANDWIDTH_PROFILE_VIDEO = {
    "mode": "mode",
    "max_subscription_bandwidth": "max_subscription_bitrate",
    "max_tracks": "max_tracks",
    "render_dimensions": "render_dimensions",
    "active_speaker_priority": "dominant_speaker_priority",
    "track_switch_off": "track_switch_off_mode",
}
DESCRIPTION_TYPES = ("offer", "answer", "pranswer", "close", "rollback", "create-offer")
#: Participant states the SDK knows (`reconnecting`: its signaling broke, it may come back).
PARTICIPANT_STATES = ("connected", "reconnecting", "disconnected")


def invalid(reason: str) -> RoomError:
    return RoomError(53004, f"Client sent an invalid signaling message: {reason}")


def _check(condition: bool, reason: str) -> None:
    if not condition:
        raise invalid(reason)


def parse_client_message(body: dict[str, Any]) -> dict[str, Any]:
    """Check an RSP message from the client; raise RoomError 53004 naming what is wrong."""
    kind = body.get("type")
    _check(kind in CLIENT_MESSAGES, f"RSP type {kind!r}; expected one of {', '.join(CLIENT_MESSAGES)}")
    if kind == "ice":
        return body
    _check(body.get("version") == VERSION, f"RSP version {body.get('version')!r}; this server speaks {VERSION}")
    if kind in ("connect", "sync"):
        _check(isinstance(body.get("token"), str), f"{kind} needs a token string")
        _check(body.get("name") is None or isinstance(body.get("name"), str), "connect.name must be a string")
    if "participant" in body:
        parse_local_participant(body["participant"])
    for state in body.get("peer_connections") or []:
        parse_peer_connection(state)
    return body


def parse_local_participant(state: Any) -> dict[str, Any]:
    _check(isinstance(state, dict), "participant must be an object")
    _check(isinstance(state.get("revision"), int), "participant.revision must be an integer")
    tracks = state.get("tracks")
    _check(isinstance(tracks, list), "participant.tracks must be a list")
    for track in tracks:
        _check(isinstance(track, dict), "participant.tracks[] must be objects")
        _check(isinstance(track.get("id"), str) and bool(track["id"]), "a track needs an id string")
        _check(
            track.get("kind") in LOCAL_TRACK_KINDS,
            f"track kind {track.get('kind')!r}; expected one of {', '.join(LOCAL_TRACK_KINDS)}",
        )
        _check(isinstance(track.get("name"), str), "a track needs a name string")
        _check(isinstance(track.get("enabled", True), bool), "track.enabled must be true or false")
    return state


def parse_peer_connection(state: Any) -> dict[str, Any]:
    _check(isinstance(state, dict) and isinstance(state.get("id"), str), "peer_connections[] need an id string")
    description = state.get("description")
    if description is not None:
        _check(isinstance(description, dict), "description must be an object")
        _check(
            description.get("type") in DESCRIPTION_TYPES,
            f"description type {description.get('type')!r}; expected one of {', '.join(DESCRIPTION_TYPES)}",
        )
        _check(isinstance(description.get("revision"), int), "description.revision must be an integer")
        if description["type"] in ("offer", "answer", "pranswer"):
            _check(isinstance(description.get("sdp"), str), f"a description of type {description['type']} needs sdp")
    ice = state.get("ice")
    if ice is not None:
        _check(isinstance(ice, dict) and isinstance(ice.get("candidates", []), list), "ice.candidates must be a list")
        _check(isinstance(ice.get("revision", 0), int), "ice.revision must be an integer")
    return state


def automatic_subscription(subscribe: Any) -> bool:
    """The SDK's `subscribe.rules`: include all (automaticSubscription: true) or exclude all."""
    rules = subscribe.get("rules") if isinstance(subscribe, dict) else None
    if not isinstance(rules, list):
        return True
    return not any(isinstance(rule, dict) and rule.get("type") == "exclude" and rule.get("all") for rule in rules)


def track_state(track: PublishedTrack) -> dict[str, Any]:
    """A remote participant's track, as the SDK's RemoteTrackPublicationV2 reads it."""
    return {
        "sid": track.sid,
        "name": track.name,
        "kind": track.kind,
        "enabled": track.enabled,
        "priority": track.options.get("priority", "standard"),
    }


def participant_state(participant: Participant, tracks: list[PublishedTrack], revision: int) -> dict[str, Any]:
    """A remote participant as the SDK's RemoteParticipantV2 reads it (its `state` drives the
    SDK's participantReconnecting / participantReconnected)."""
    state = participant.status if participant.status in PARTICIPANT_STATES else "connected"
    return {
        "sid": participant.sid,
        "identity": participant.identity,
        "revision": revision,
        "state": state,
        "tracks": [track_state(t) for t in tracks],
    }


def departed_state(sid: str, identity: str, revision: int) -> dict[str, Any]:
    """What makes the SDK drop a remote participant: its state `disconnected` at a higher revision."""
    return {"sid": sid, "identity": identity, "revision": revision, "state": "disconnected", "tracks": []}


def bandwidth_profile(payload: Any) -> BandwidthProfile:
    """The SDK's `bandwidth_profile` (its createBandwidthProfilePayload: `video` with `mode`,
    `max_subscription_bandwidth`, `max_tracks`, `render_dimensions: {priority: {width, height}}`,
    `active_speaker_priority`, `track_switch_off`) as roomlab's BandwidthProfile; else 53004."""
    _check(isinstance(payload, dict), "bandwidth_profile must be an object")
    unknown = set(payload) - {"video"}
    _check(not unknown, f"bandwidth_profile has unknown key(s) {sorted(unknown)}; allowed: ['video']")
    video = payload.get("video") or {}
    _check(isinstance(video, dict), "bandwidth_profile.video must be an object")
    unknown = set(video) - set(BANDWIDTH_PROFILE_VIDEO)
    allowed = ", ".join(BANDWIDTH_PROFILE_VIDEO)
    _check(not unknown, f"bandwidth_profile.video has unknown key(s) {sorted(unknown)}; allowed: {allowed}")
    options = {BANDWIDTH_PROFILE_VIDEO[key]: value for key, value in video.items()}
    try:
        return BandwidthProfile.from_options({"video": options})
    except (ValueError, TypeError) as exc:
        raise invalid(f"bandwidth_profile.video: {exc}") from None


def published_entry(track_id: str, sid: str | None, error: RoomError | None = None) -> dict[str, Any]:
    if error is not None:
        return {"id": track_id, "state": "failed", "error": {"code": error.code, "message": error.message}}
    if sid is None:
        return {"id": track_id, "state": "created"}
    return {"id": track_id, "sid": sid, "state": "ready"}


def description(kind: str, revision: int, sdp: str) -> dict[str, Any]:
    return {"type": kind, "revision": revision, "sdp": sdp}


def disconnected(code: int | None) -> dict[str, Any]:
    """The room ended (53118: the SDK raises RoomCompletedError), or the server let the client go."""
    return {"type": "disconnected", "status": "completed"} if code == 53118 else {"type": "disconnected"}


def error(failure: RoomError) -> dict[str, Any]:
    """A refusal the SDK turns into the TwilioError of that code, and disconnects with."""
    return {"type": "error", "code": failure.code, "message": failure.message}
