"""Twilio Video v1 REST resources, served by aiohttp over the room domain model.

Requests are form-encoded, responses are JSON with Twilio's field names, `url`, `links` and the
paging `meta`; errors are Twilio's `{code, message, more_info, status}`. Roomlab's own extensions
(`Events`, `CallbackDeliveries`) live under the room with names of their own.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDictProxy

from ..errors import RoomError
from .model import (
    CallbackDelivery,
    Participant,
    PublishedTrack,
    Room,
    RoomEvent,
    SubscribeRules,
    Subscription,
)
from .rooms import REMOVED_BY_REST, Rooms
from .sfu import Sfu
from .store import Store

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: Largest SendData payload (what fits one data-channel message with room for the framing).
MAX_DATA_BYTES = 256 * 1024 - 2048
ROOM_STATUSES = ("in-progress", "completed", "failed")
PARTICIPANT_STATUSES = ("connected", "disconnected", "reconnecting")


# formatting -----------------------------------------------------------------------------------
def twilio_time(t: float | None) -> str | None:
    """ISO 8601 in UTC to the second, the way Twilio's Video API writes times."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def room_json(room: Room, base: str) -> dict[str, Any]:
    url = f"{base}/v1/Rooms/{room.sid}"
    return {
        "sid": room.sid,
        "status": room.status,
        "date_created": twilio_time(room.date_created),
        "date_updated": twilio_time(room.date_updated),
        "account_sid": room.account_sid,
        "enable_turn": True,
        "unique_name": room.unique_name,
        "status_callback": room.status_callback,
        "status_callback_method": room.status_callback_method,
        "end_time": twilio_time(room.end_time),
        "duration": room.duration,
        "type": room.type,
        "max_participants": room.max_participants,
        "max_participant_duration": room.max_participant_duration,
        "max_concurrent_published_tracks": 0,
        "record_participants_on_connect": room.record_participants_on_connect,
        "video_codecs": room.video_codecs,
        "media_region": room.media_region,
        "audio_only": room.audio_only,
        "empty_room_timeout": room.empty_room_timeout,
        "unused_room_timeout": room.unused_room_timeout,
        "large_room": room.large_room,
        "url": url,
        "links": {
            "participants": f"{url}/Participants",
            "events": f"{url}/Events",
            "callback_deliveries": f"{url}/CallbackDeliveries",
        },
    }


def participant_json(p: Participant, base: str) -> dict[str, Any]:
    url = f"{base}/v1/Rooms/{p.room_sid}/Participants/{p.sid}"
    return {
        "sid": p.sid,
        "room_sid": p.room_sid,
        "account_sid": p.account_sid,
        "status": p.status,
        "identity": p.identity,
        "date_created": twilio_time(p.date_created),
        "date_updated": twilio_time(p.date_updated),
        "start_time": twilio_time(p.start_time),
        "end_time": twilio_time(p.end_time),
        "duration": p.duration,
        "url": url,
        "links": {
            "published_tracks": f"{url}/PublishedTracks",
            "subscribed_tracks": f"{url}/SubscribedTracks",
            "subscribe_rules": f"{url}/SubscribeRules",
        },
    }


def published_track_json(t: PublishedTrack, base: str) -> dict[str, Any]:
    return {
        "sid": t.sid,
        "participant_sid": t.participant_sid,
        "room_sid": t.room_sid,
        "name": t.name,
        "date_created": twilio_time(t.date_created),
        "date_updated": twilio_time(t.date_updated),
        "enabled": t.enabled,
        "kind": t.kind,
        "url": f"{base}/v1/Rooms/{t.room_sid}/Participants/{t.participant_sid}/PublishedTracks/{t.sid}",
    }


def subscribed_track_json(s: Subscription, base: str) -> dict[str, Any]:
    return {
        "sid": s.sid,
        "participant_sid": s.participant_sid,
        "publisher_sid": s.publisher_sid,
        "room_sid": s.room_sid,
        "name": s.name,
        "date_created": twilio_time(s.date_created),
        "date_updated": twilio_time(s.date_updated),
        "enabled": s.enabled,
        "kind": s.kind,
        "url": f"{base}/v1/Rooms/{s.room_sid}/Participants/{s.participant_sid}/SubscribedTracks/{s.sid}",
    }


def subscribe_rules_json(r: SubscribeRules) -> dict[str, Any]:
    return {
        "participant_sid": r.participant_sid,
        "room_sid": r.room_sid,
        "rules": r.rules,
        "date_created": twilio_time(r.date_created),
        "date_updated": twilio_time(r.date_updated),
    }


def event_json(e: RoomEvent, base: str) -> dict[str, Any]:
    return {
        "room_sid": e.room_sid,
        "event": e.name,
        "timestamp": datetime.fromtimestamp(e.time, UTC).isoformat().replace("+00:00", "Z"),
        "participant_sid": e.participant_sid,
        "track_sid": e.track_sid,
        "code": e.code,
        "detail": e.detail,
    }


def delivery_json(d: CallbackDelivery, base: str) -> dict[str, Any]:
    return {
        "room_sid": d.room_sid,
        "sequence_number": d.sequence_number,
        "event": d.event,
        "url": d.url,
        "method": d.method,
        "attempt": d.attempt,
        "timestamp": datetime.fromtimestamp(d.time, UTC).isoformat().replace("+00:00", "Z"),
        "status": d.status,
        "error": d.error,
        "elapsed_ms": d.elapsed_ms,
        "outcome": d.outcome,
    }


# parsing --------------------------------------------------------------------------------------
def _int(form: MultiDictProxy[str], name: str, code: int = 20001) -> int | None:
    value = form.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise RoomError(code, f"{name} must be an integer, got {value!r}") from None


def _bool(form: MultiDictProxy[str], name: str) -> bool:
    value = form.get(name)
    if value is None or value == "":
        return False
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise RoomError(20001, f"{name} must be true or false, got {value!r}")


def _date(value: str | None, name: str) -> float | None:
    """A filter date: YYYY-MM-DD (midnight UTC) or an ISO 8601 time."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RoomError(20001, f"{name} must be a date (YYYY-MM-DD) or an ISO 8601 time, got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _choice(value: str | None, allowed: tuple[str, ...], name: str, code: int = 20001) -> str | None:
    if value is None or value == "":
        return None
    if value not in allowed:
        raise RoomError(code, f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


async def _form(request: web.Request) -> MultiDictProxy[str]:
    if not request.can_read_body:
        return MultiDictProxy(request.query.copy())  # type: ignore[arg-type]
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise RoomError(20001, f"Request body must be application/x-www-form-urlencoded, got {request.content_type}")
    try:
        form = await request.post()
    except (ValueError, UnicodeDecodeError) as exc:
        raise RoomError(20001, f"Malformed form body: {exc}") from None
    return form  # type: ignore[return-value]


# paging ---------------------------------------------------------------------------------------
def _page(
    request: web.Request,
    store: Store,
    record_type: type,
    key: str,
    render: Callable[[Any, str], dict[str, Any]],
    where: dict[str, Any],
    conditions: list[tuple[str, Any]] | None = None,
    newest_first: bool = False,
) -> web.Response:
    query = request.query
    page_size = _int(query, "PageSize")  # type: ignore[arg-type]
    page_size = DEFAULT_PAGE_SIZE if page_size is None else page_size
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise RoomError(20001, f"PageSize must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
    page = _int(query, "Page") or 0  # type: ignore[arg-type]
    if page < 0:
        raise RoomError(20001, f"Page must be 0 or more, got {page}")
    token = query.get("PageToken")
    after = None
    offset = 0
    if token:
        if not token.startswith("PT") or not token[2:].isdigit():
            raise RoomError(20001, f"PageToken is not one this server issued: {token!r}")
        after = int(token[2:])
    else:
        offset = page * page_size
    result = store.select(
        record_type,
        where,
        conditions=conditions or [],
        newest_first=newest_first,
        after=after,
        limit=page_size + offset,
    )
    records = result.records[offset:]
    base = str(request.url.origin())
    filters = {k: v for k, v in query.items() if k not in ("Page", "PageSize", "PageToken")}

    def link(p: int, page_token: str | None = None) -> str:
        params = {**filters, "PageSize": page_size, "Page": p}
        if page_token:
            params["PageToken"] = page_token
        return f"{base}{request.path}?{urlencode(params)}"

    body = {
        key: [render(r, base) for r in records],
        "meta": {
            "page": page,
            "page_size": page_size,
            "first_page_url": link(0),
            "previous_page_url": link(page - 1) if page > 0 else None,
            "url": link(page, token),
            "next_page_url": link(page + 1, f"PT{result.next_key}") if result.next_key is not None else None,
            "key": key,
        },
    }
    return web.json_response(body)


# routes ---------------------------------------------------------------------------------------
class RestApi:
    """The `/v1` routes."""

    def __init__(self, rooms: Rooms, store: Store, sfu: Sfu) -> None:
        self.rooms = rooms
        self.store = store
        self.sfu = sfu

    def add_routes(self, app: web.Application) -> None:
        room = "/v1/Rooms/{room}"
        participant = room + "/Participants/{participant}"
        app.router.add_post("/v1/Rooms", self.create_room)
        app.router.add_get("/v1/Rooms", self.list_rooms)
        app.router.add_get(room, self.fetch_room)
        app.router.add_post(room, self.update_room)
        app.router.add_get(room + "/Participants", self.list_participants)
        app.router.add_get(participant, self.fetch_participant)
        app.router.add_post(participant, self.update_participant)
        app.router.add_get(participant + "/PublishedTracks", self.list_published_tracks)
        app.router.add_get(participant + "/PublishedTracks/{track}", self.fetch_published_track)
        app.router.add_get(participant + "/SubscribedTracks", self.list_subscribed_tracks)
        app.router.add_get(participant + "/SubscribedTracks/{track}", self.fetch_subscribed_track)
        app.router.add_get(participant + "/SubscribeRules", self.fetch_subscribe_rules)
        app.router.add_post(participant + "/SubscribeRules", self.update_subscribe_rules)
        app.router.add_get(room + "/Events", self.list_events)
        app.router.add_post(room + "/SendData", self.send_data)
        app.router.add_get(room + "/CallbackDeliveries", self.list_callback_deliveries)

    # rooms
    async def create_room(self, request: web.Request) -> web.Response:
        form = await _form(request)
        room = self.rooms.create_room(
            form.get("UniqueName"),
            type=form.get("Type") or None,
            max_participants=_int(form, "MaxParticipants", 53107),
            max_participant_duration=_int(form, "MaxParticipantDuration", 53109),
            empty_room_timeout=_int(form, "EmptyRoomTimeout", 53109),
            unused_room_timeout=_int(form, "UnusedRoomTimeout", 53109),
            status_callback=form.get("StatusCallback"),
            status_callback_method=form.get("StatusCallbackMethod"),
            record_participants_on_connect=_bool(form, "RecordParticipantsOnConnect"),
            audio_only=_bool(form, "AudioOnly"),
            large_room=_bool(form, "LargeRoom"),
            video_codecs=form.getall("VideoCodecs", None) or None,
            media_region=form.get("MediaRegion") or None,
        )
        return web.json_response(room_json(room, str(request.url.origin())), status=201)

    async def list_rooms(self, request: web.Request) -> web.Response:
        query = request.query
        status = _choice(query.get("Status"), ROOM_STATUSES, "Status") or "in-progress"
        where: dict[str, Any] = {"status": status}
        if query.get("UniqueName"):
            where["unique_name"] = query["UniqueName"]
        conditions = self._date_conditions(query)
        return _page(request, self.store, Room, "rooms", room_json, where, conditions, newest_first=True)

    async def fetch_room(self, request: web.Request) -> web.Response:
        room = self.rooms.find_room(request.match_info["room"])
        return web.json_response(room_json(room, str(request.url.origin())))

    async def update_room(self, request: web.Request) -> web.Response:
        form = await _form(request)
        room = self.rooms.find_room(request.match_info["room"])
        if form.get("Status") != "completed":
            raise RoomError(
                53112, f"Status is invalid: a room can only be updated to completed, got {form.get('Status')!r}"
            )
        room = self.rooms.end_room(room.sid)
        return web.json_response(room_json(room, str(request.url.origin())), status=202)

    # participants
    async def list_participants(self, request: web.Request) -> web.Response:
        room = self.rooms.find_room(request.match_info["room"])
        query = request.query
        default = "connected" if room.status == "in-progress" else "disconnected"
        status = _choice(query.get("Status"), PARTICIPANT_STATUSES, "Status") or default
        where: dict[str, Any] = {"room_sid": room.sid, "status": status}
        if query.get("Identity"):
            where["identity"] = query["Identity"]
        return _page(
            request, self.store, Participant, "participants", participant_json, where, self._date_conditions(query)
        )

    async def fetch_participant(self, request: web.Request) -> web.Response:
        room, participant = self._participant(request)
        return web.json_response(participant_json(participant, str(request.url.origin())))

    async def update_participant(self, request: web.Request) -> web.Response:
        form = await _form(request)
        room, participant = self._participant(request)
        if form.get("Status") != "disconnected":
            raise RoomError(
                53112,
                f"Status is invalid: a participant can only be updated to disconnected, got {form.get('Status')!r}",
            )
        participant = self.rooms.disconnect(room.sid, participant.sid, code=REMOVED_BY_REST)
        return web.json_response(participant_json(participant, str(request.url.origin())), status=202)

    # tracks
    async def list_published_tracks(self, request: web.Request) -> web.Response:
        _, participant = self._participant(request)
        where = {"participant_sid": participant.sid, "state": "published"}
        return _page(request, self.store, PublishedTrack, "published_tracks", published_track_json, where)

    async def fetch_published_track(self, request: web.Request) -> web.Response:
        _, participant = self._participant(request)
        key = request.match_info["track"]
        track = self.store.get(PublishedTrack, participant_sid=participant.sid, sid=key) or self.store.get(
            PublishedTrack, participant_sid=participant.sid, name=key, state="published"
        )
        if track is None:
            raise RoomError(20404, f"PublishedTrack not found: {key!r}")
        return web.json_response(published_track_json(track, str(request.url.origin())))

    async def list_subscribed_tracks(self, request: web.Request) -> web.Response:
        _, participant = self._participant(request)
        where = {"participant_sid": participant.sid, "state": "subscribed"}
        return _page(request, self.store, Subscription, "subscribed_tracks", subscribed_track_json, where)

    async def fetch_subscribed_track(self, request: web.Request) -> web.Response:
        _, participant = self._participant(request)
        key = request.match_info["track"]
        subscription = self.store.get(Subscription, participant_sid=participant.sid, sid=key)
        if subscription is None:
            raise RoomError(20404, f"SubscribedTrack not found: {key!r}")
        return web.json_response(subscribed_track_json(subscription, str(request.url.origin())))

    # subscribe rules
    async def fetch_subscribe_rules(self, request: web.Request) -> web.Response:
        room, participant = self._participant(request)
        return web.json_response(subscribe_rules_json(self.rooms.subscribe_rules(room, participant)))

    async def update_subscribe_rules(self, request: web.Request) -> web.Response:
        form = await _form(request)
        room, participant = self._participant(request)
        raw = form.get("Rules")
        if raw is None:
            raise RoomError(53215, "Invalid Subscribe Rule(s): the Rules parameter is required")
        try:
            rules = json.loads(raw)
        except ValueError:
            raise RoomError(53215, "Invalid Subscribe Rule(s): Rules is not valid JSON") from None
        updated = self.rooms.set_subscribe_rules(room, participant, rules)
        return web.json_response(subscribe_rules_json(updated))

    # roomlab extensions
    async def list_events(self, request: web.Request) -> web.Response:
        room = self.rooms.find_room(request.match_info["room"])
        return _page(request, self.store, RoomEvent, "events", event_json, {"room_sid": room.sid})

    async def send_data(self, request: web.Request) -> web.Response:
        """Roomlab's `SendData` (after LiveKit's RoomService): a message from the server to everyone
        in the room, or to the named identities, on their reliable or lossy data channel."""
        form = await _form(request)
        room = self.rooms.find_room(request.match_info["room"])
        if room.status != "in-progress":
            raise RoomError(53118, f"Room {room.sid} is not in progress (status {room.status})")
        data = form.get("Data")
        if data is None:
            raise RoomError(20001, "Data is required")
        encoding = _choice(form.get("Encoding"), ("text", "base64"), "Encoding") or "text"
        payload: bytes | str = data
        if encoding == "base64":
            try:
                payload = base64.b64decode(data, validate=True)
            except binascii.Error:
                raise RoomError(20001, "Data is not valid base64") from None
        if len(payload) > MAX_DATA_BYTES:
            raise RoomError(20001, f"Data must be at most {MAX_DATA_BYTES} bytes, got {len(payload)}")
        reliable = _bool(form, "Reliable") if form.get("Reliable") not in (None, "") else True
        recipients = self.sfu.send_data(
            room.sid,
            payload,
            topic=form.get("Topic") or None,
            destination_identities=form.getall("DestinationIdentities", None) or None,
            reliable=reliable,
        )
        return web.json_response({"room_sid": room.sid, "recipients": recipients}, status=202)

    async def list_callback_deliveries(self, request: web.Request) -> web.Response:
        room = self.rooms.find_room(request.match_info["room"])
        return _page(
            request, self.store, CallbackDelivery, "callback_deliveries", delivery_json, {"room_sid": room.sid}
        )

    # helpers
    def _participant(self, request: web.Request) -> tuple[Room, Participant]:
        room = self.rooms.find_room(request.match_info["room"])
        return room, self.rooms.find_participant(room, request.match_info["participant"])

    @staticmethod
    def _date_conditions(query: Any) -> list[tuple[str, Any]]:
        conditions = []
        after = _date(query.get("DateCreatedAfter"), "DateCreatedAfter")
        before = _date(query.get("DateCreatedBefore"), "DateCreatedBefore")
        if after is not None:
            conditions.append(("date_created >= ?", after))
        if before is not None:
            conditions.append(("date_created < ?", before))
        return conditions
