"""Status callbacks: Twilio's room events, signed and delivered to each room's `status_callback`.

Delivery happens in tasks of its own, never in the room's code path: an event only enqueues a
delivery. Each attempt is bounded by a timeout, failed attempts are retried a bounded number of
times after a growing delay, and every attempt is recorded in the store.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
from yarl import URL

from .model import CallbackDelivery, Participant, PublishedTrack, RoomEvent
from .rooms import LiveRoom, Rooms
from .store import Store

log = logging.getLogger(__name__)

#: The room events Twilio sends status callbacks for.
CALLBACK_EVENTS = frozenset(
    {
        "room-created",
        "room-ended",
        "participant-connected",
        "participant-disconnected",
        "track-added",
        "track-removed",
        "track-enabled",
        "track-disabled",
    }
)


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard the server tries to reach a status-callback receiver."""

    attempts: int = 3
    """Attempts per callback, the first included."""
    timeout: float = 5.0
    """Seconds an attempt may take before it counts as failed."""
    backoff: float = 1.0
    """Seconds before the second attempt; doubles for each later one."""
    concurrency: int = 8
    """Deliveries in flight at once, across all rooms."""
    pending_limit: int = 10_000
    """Deliveries waiting at most; past it new callbacks are recorded as failed, not queued."""


@dataclass(frozen=True)
class Delivery:
    room_sid: str
    sequence_number: int
    event: str
    url: str
    method: str
    params: dict[str, str]
    attempt: int = 1


def iso_timestamp(t: float) -> str:
    """UTC ISO 8601 with milliseconds, as Twilio stamps callbacks."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def twilio_signature(secret: str, url: str, params: dict[str, str]) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 of the URL followed by each sorted name and value."""
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(secret.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def callback_parameters(
    event: RoomEvent,
    live: LiveRoom,
    participant: Participant | None,
    track: PublishedTrack | None,
    sequence_number: int,
) -> dict[str, str]:
    """Twilio's form parameters for one room event."""
    room = live.room
    params = {
        "AccountSid": room.account_sid,
        "RoomSid": room.sid,
        "RoomName": room.unique_name,
        "RoomStatus": room.status,
        "RoomType": room.type,
        "StatusCallbackEvent": event.name,
        "Timestamp": iso_timestamp(event.time),
        "SequenceNumber": str(sequence_number),
    }
    if participant is not None:
        params["ParticipantSid"] = participant.sid
        params["ParticipantIdentity"] = participant.identity
        params["ParticipantStatus"] = participant.status
    if event.name == "participant-disconnected" and participant is not None:
        params["ParticipantDuration"] = str(participant.duration or 0)
    if event.name == "room-ended":
        params["RoomDuration"] = str(room.duration or 0)
    if track is not None:
        params["TrackSid"] = track.sid
        params["TrackKind"] = track.kind
        params["TrackName"] = track.name
    return params


class StatusCallbacks:
    """Turns room events into signed HTTP requests to each room's status_callback URL."""

    def __init__(self, rooms: Rooms, store: Store, secret: str, policy: DeliveryPolicy | None = None) -> None:
        self.store = store
        self.secret = secret
        self.policy = policy or DeliveryPolicy()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None
        rooms.on_event(self._on_event)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.policy.timeout))
        self._slots = asyncio.Semaphore(self.policy.concurrency)

    async def stop(self, grace: float = 2.0) -> None:
        """Give deliveries in flight a moment, then cancel what is left."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _on_event(
        self, event: RoomEvent, live: LiveRoom, participant: Participant | None, track: PublishedTrack | None
    ) -> None:
        room = live.room
        if not room.status_callback or event.name not in CALLBACK_EVENTS:
            return
        room.callback_sequence += 1
        self.store.save(room)
        params = callback_parameters(event, live, participant, track, room.callback_sequence)
        delivery = Delivery(
            room.sid, room.callback_sequence, event.name, room.status_callback, room.status_callback_method, params
        )
        self._spawn(delivery)

    def _spawn(self, delivery: Delivery, delay: float = 0.0) -> None:
        if self._session is None or len(self._tasks) >= self.policy.pending_limit:
            self._record(delivery, None, "not sent: the delivery queue is full or stopped", 0.0, "failed")
            return
        task = asyncio.get_running_loop().create_task(self._attempt(delivery, delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attempt(self, delivery: Delivery, delay: float) -> None:
        assert self._session is not None and self._slots is not None
        if delay:
            await asyncio.sleep(delay)
        async with self._slots:
            url, body = self._request_target(delivery)
            headers = {"X-Twilio-Signature": twilio_signature(self.secret, url, body)}
            started = time.perf_counter()
            status: int | None = None
            error: str | None = None
            try:
                if delivery.method == "GET":
                    async with self._session.get(URL(url, encoded=True), headers=headers) as response:
                        status = response.status
                else:
                    async with self._session.post(url, data=body, headers=headers) as response:
                        status = response.status
                if status >= 500 or status == 429:
                    error = f"receiver answered HTTP {status}"
            except TimeoutError:
                error = f"no answer within {self.policy.timeout:g} s"
            except aiohttp.ClientError as exc:
                error = f"{type(exc).__name__}: {exc}"
        elapsed_ms = (time.perf_counter() - started) * 1000
        if error is None:
            self._record(delivery, status, None, elapsed_ms, "delivered")
        elif delivery.attempt < self.policy.attempts:
            self._record(delivery, status, error, elapsed_ms, "retrying")
            delay = self.policy.backoff * 2 ** (delivery.attempt - 1)
            self._spawn(replace(delivery, attempt=delivery.attempt + 1), delay)
        else:
            self._record(delivery, status, error, elapsed_ms, "failed")
            log.debug(
                "room %s: callback %s #%s failed: %s",
                delivery.room_sid,
                delivery.event,
                delivery.sequence_number,
                error,
            )

    @staticmethod
    def _request_target(delivery: Delivery) -> tuple[str, dict[str, str]]:
        """GET carries the parameters in the query string (and signs the full URL); POST in the body."""
        if delivery.method != "GET":
            return delivery.url, delivery.params
        parts = urlsplit(delivery.url)
        query = "&".join(q for q in (parts.query, urlencode(delivery.params)) if q)
        # sign the URL exactly as the HTTP client will write it on the wire
        return str(URL(urlunsplit(parts._replace(query=query)))), {}

    def _record(
        self, delivery: Delivery, status: int | None, error: str | None, elapsed_ms: float, outcome: str
    ) -> None:
        self.store.save(
            CallbackDelivery(
                room_sid=delivery.room_sid,
                sequence_number=delivery.sequence_number,
                event=delivery.event,
                url=delivery.url,
                method=delivery.method,
                attempt=delivery.attempt,
                time=time.time(),
                status=status,
                error=error,
                elapsed_ms=round(elapsed_ms, 3),
                outcome=outcome,
            )
        )
