"""`roomlab.serve()`: a room server running on an event loop of its own, beside the caller.

The server owns a thread and an asyncio loop, so a notebook (or a script) keeps working while it
serves, and blocking clients such as the official `twilio` library can call it from the same
process without deadlocking.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from ..telemetry.recorder import Telemetry
from ..telemetry.sampling import RtcStatsSampler, sample_forever
from .allocation import BandwidthAllocation
from .app import build_app
from .auth import Credentials, mint_access_token
from .callbacks import DeliveryPolicy, StatusCallbacks
from .dominant_speaker import DominantSpeakers
from .feed import TelemetryFeed
from .media import MEDIA_PATHS
from .network_quality import NetworkQuality
from .rest import RestApi
from .rooms import RECONNECT_WINDOW, Rooms
from .sfu import Sfu
from .signaling import SignalingEndpoint
from .store import Store
from .twilio import PATH as TWILIO_SIGNALING_PATH
from .twilio import TwilioSignalingEndpoint

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds between checks of room and participant timeouts.
EXPIRY_INTERVAL = 1.0


def finish_tasks(loop: asyncio.AbstractEventLoop, timeout: float = 5.0) -> None:
    """Cancel the tasks still pending on `loop` and wait for them: no coroutine may outlive its
    loop. One left suspended is finalized at interpreter exit, after asyncio's C module is torn
    down, and CPython 3.11 crashes there (a segfault formatting a Future's repr while it closes
    an `asyncio.Queue.get`): `roomlab simulate` stopped by Ctrl-C did, once in three runs."""
    for _ in range(3):  # a task may start others while it unwinds
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.wait(pending, timeout=timeout))
    log.warning("server: %d task(s) still pending after it stopped", len(pending))


class Server:
    """A running room server: its URL, credentials, and the rooms it holds."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        db: str | Path | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        *,
        account_sid: str | None = None,
        clock: Callable[[], float] = time.time,
        callback_policy: DeliveryPolicy | None = None,
        media_path: str = "forward",
        reconnect_window: float = RECONNECT_WINDOW,
        bandwidth_allocation: bool = True,
    ) -> None:
        if media_path not in MEDIA_PATHS:
            raise ValueError(f"media_path must be one of {', '.join(MEDIA_PATHS)}, got {media_path!r}")
        if isinstance(reconnect_window, bool) or not isinstance(reconnect_window, int | float) or reconnect_window < 0:
            raise ValueError(f"reconnect_window must be a number of seconds, 0 or more, got {reconnect_window!r}")
        if not isinstance(bandwidth_allocation, bool):
            raise ValueError(f"bandwidth_allocation must be True or False, got {bandwidth_allocation!r}")
        self.media_path = media_path
        self.reconnect_window = float(reconnect_window)
        self.bandwidth_allocation = bandwidth_allocation
        self.host = host
        self.port = port
        self.db = None if db is None else Path(db)
        self._requested = (account_sid, api_key, api_secret)
        self.clock = clock
        self.callback_policy = callback_policy
        self.credentials: Credentials | None = None
        self.rooms: Rooms | None = None
        self.store: Store | None = None
        self.sfu: Sfu | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._callbacks: StatusCallbacks | None = None
        self._expiry: asyncio.Task[None] | None = None
        self._stopped = threading.Event()
        self._sampler: asyncio.Task[None] | None = None
        self._speaker_task: asyncio.Task[None] | None = None
        #: the dominant-speaker detectors, network-quality levels and bandwidth allocation of every room
        #: (once started)
        self.speakers: DominantSpeakers | None = None
        self.network_quality: NetworkQuality | None = None
        self.allocation: BandwidthAllocation | None = None
        #: what the server sees and forwards, as live tables (`server.telemetry.frame("events")`)
        self.telemetry = Telemetry()
        self._rtc_sampler = RtcStatsSampler(self.telemetry, "server")

    # lifecycle ------------------------------------------------------------------------------
    def start(self) -> Server:
        """Start serving in a background thread; returns once the server accepts requests."""
        if self._thread is not None:
            raise RuntimeError("this server has already been started")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, failure), name="roomlab-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        return self

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # handed to the thread that called start()
            failure.append(exc)
            loop.run_until_complete(self._shutdown())
            loop.close()
            self._stopped.set()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            finish_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._stopped.set()

    async def _startup(self) -> None:
        self.store = Store(self.db)
        self.credentials = self._credentials(self.store)
        self.rooms = Rooms(self.store, self.credentials.account_sid, self.clock, self.reconnect_window)
        self.rooms.on_event(self._record_event)
        self._callbacks = StatusCallbacks(self.rooms, self.store, self.credentials.api_secret, self.callback_policy)
        await self._callbacks.start()
        self.speakers = DominantSpeakers(self.rooms)
        self.sfu = Sfu(self.rooms, self.media_path, self.speakers, start_lowest=self.bandwidth_allocation)
        self.network_quality = NetworkQuality(self.telemetry)
        self.allocation = BandwidthAllocation(
            self.rooms,
            self.sfu,
            self.network_quality.measurements,
            self.speakers,
            self.telemetry,
            enabled=self.bandwidth_allocation,
        )
        signaling = SignalingEndpoint(self.rooms, self.sfu, self.credentials, self.allocation)
        twilio_signaling = TwilioSignalingEndpoint(self.rooms, self.sfu, self.credentials, self.allocation)
        app = build_app(
            self.credentials,
            RestApi(self.rooms, self.store, self.sfu),
            signaling,
            twilio_signaling,
            TelemetryFeed(self.telemetry),
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._expiry = asyncio.get_running_loop().create_task(self._expire_forever())
        self._sampler = asyncio.get_running_loop().create_task(sample_forever(self._sample))
        self._speaker_task = asyncio.get_running_loop().create_task(self.speakers.run())
        log.info("roomlab server on %s", self.url)

    async def _shutdown(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self._sampler is not None:
            self._sampler.cancel()
        if self._speaker_task is not None:
            self._speaker_task.cancel()
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()  # no new connections: a client resuming now waits for a restart
        if self.rooms is not None:
            self.rooms.close()
        if self.sfu is not None:
            await self.sfu.close()  # every session says goodbye and closes, each step bounded
        if self._callbacks is not None:
            await self._callbacks.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.store is not None:
            self.store.close()

    def _record_event(self, event: Any, live: Any, participant: Any, track: Any) -> None:
        detail = event.detail
        if detail is None and track is not None:  # so that a run's expected streams can be listed from `events`
            owner = live.participants.get(track.participant_sid)
            publisher = owner.identity if owner is not None else None
            detail = json.dumps({"kind": track.kind, "name": track.name, "publisher": publisher})
        self.telemetry.record(
            "events",
            event.time,
            live.room.unique_name,
            live.room.sid,
            event.name,
            event.participant_sid,
            participant.identity if participant is not None else None,
            event.track_sid,
            event.code,
            detail,
        )

    async def _sample(self) -> None:
        assert self.sfu is not None and self.network_quality is not None and self.allocation is not None
        self.sfu.check_media_flow()
        self.network_quality.update(self.sfu.sessions.values(), self.sfu.counters.bytes_sent_by_transport())
        self.allocation.update()  # right after the downlink estimates
        await self._rtc_sampler.sample(self.sfu.rtp_streams())
        self.sfu.counters.sample(self.telemetry, "server")

    def frame(self, name: str) -> Any:
        """A telemetry table of this server (`events`, `rtc_stats`, `data_channel_stats`, ...)."""
        return self.telemetry.frame(name)

    def frames(self) -> dict[str, Any]:
        return self.telemetry.frames()

    async def _expire_forever(self) -> None:
        assert self.rooms is not None
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL)
            self.rooms.expire()

    def _credentials(self, store: Store) -> Credentials:
        """Given credentials win; otherwise a file store keeps the ones it was first given."""
        account_sid, api_key, api_secret = self._requested
        generated = Credentials.generate()
        saved = {name: store.setting(name) for name in ("account_sid", "api_key", "api_secret")}
        if api_key is None and api_secret is None:
            api_key, api_secret = saved["api_key"], saved["api_secret"]
        credentials = Credentials(
            account_sid or saved["account_sid"] or generated.account_sid,
            api_key or generated.api_key,
            api_secret or generated.api_secret,
        )
        for name in ("account_sid", "api_key", "api_secret"):
            store.set_setting(name, getattr(credentials, name))
        return credentials

    def stop(self) -> None:
        """Disconnect everyone, finish callbacks in flight (briefly), close the store."""
        if self._loop is None or self._thread is None or self._stopped.is_set():
            return
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # what users need ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def twilio_ws_url(self) -> str:
        """Where Twilio's JavaScript SDK connects: `Twilio.Video.connect(token, {wsServer: ...})`."""
        return "ws" + self.url[len("http") :] + TWILIO_SIGNALING_PATH

    @property
    def account_sid(self) -> str:
        return self._creds.account_sid

    @property
    def api_key(self) -> str:
        return self._creds.api_key

    @property
    def api_secret(self) -> str:
        return self._creds.api_secret

    @property
    def _creds(self) -> Credentials:
        if self.credentials is None:
            raise RuntimeError("the server has not been started")
        return self.credentials

    def token(self, identity: str, room: str | None = None, ttl: int = 3600) -> str:
        """An access token for `identity`, limited to `room` when given."""
        return mint_access_token(self._creds, identity, room, ttl)

    def twilio_client(self) -> Any:
        """The official `twilio.rest.Client`, with its video domain pointed at this server."""
        from twilio.rest import Client

        client = Client(self.api_key, self.api_secret, self.account_sid)
        client.video.base_url = self.url
        return client

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` on the server's loop (where room state lives) and return its result."""
        if self._loop is None or self._stopped.is_set():
            raise RuntimeError("the server is not running")
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)

        async def run() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    def __repr__(self) -> str:
        state = "stopped" if self._stopped.is_set() else "running" if self._loop else "not started"
        return f"<roomlab.Server {self.url} {state}>"


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    db: str | Path | None = None,
    api_key: str | None = None,
    api_secret: str | None = None,
    **options: Any,
) -> Server:
    """Start a room server without blocking the caller and return it.

    `db=None` keeps rooms in memory; a path stores them in SQLite so that they survive a restart.
    Credentials are generated unless given (a file store remembers the ones it was first given).
    Options: `account_sid`, `clock` (a function returning UNIX time, to fast-forward room
    timeouts in tests and simulations), `callback_policy` (a `DeliveryPolicy`), `media_path`
    ("forward": encoded frames pass through untouched, the default; "transcode": decoded once and
    encoded per subscriber, aiortc's MediaRelay way, kept to measure the two side by side),
    `reconnect_window` (seconds a participant whose connection broke may resume its session;
    30 by default, as Twilio), `bandwidth_allocation` (True: each subscriber's downlink is divided
    among its video tracks by its Bandwidth Profile, as Twilio does by default; False: every
    subscriber gets every track at its highest layer, for comparison).
    """
    return Server(host, port, db, api_key, api_secret, **options).start()
