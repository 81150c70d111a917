"""Fixtures: a real roomlab server on 127.0.0.1, the official twilio client, a real HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

import roomlab
from roomlab.server.callbacks import DeliveryPolicy


class ManualClock:
    """A clock the test moves forward, so that timeouts in minutes take no time."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


FAST_CALLBACKS = DeliveryPolicy(attempts=3, timeout=1.0, backoff=0.05)


@pytest.fixture
def server() -> Iterator[roomlab.Server]:
    with roomlab.serve(callback_policy=FAST_CALLBACKS) as running:
        yield running


@pytest.fixture
def clocked_server(clock: ManualClock) -> Iterator[roomlab.Server]:
    with roomlab.serve(clock=clock, callback_policy=FAST_CALLBACKS) as running:
        yield running


@pytest.fixture
def client(server: roomlab.Server) -> Client:
    return server.twilio_client()


def plain_client(server: roomlab.Server, username: str | None = None, password: str | None = None) -> Client:
    """A twilio.rest.Client built the way a user would, with video.base_url set by hand."""
    c = Client(username or server.api_key, password or server.api_secret, server.account_sid)
    c.video.base_url = server.url
    return c


@dataclass
class Received:
    method: str
    url: str
    headers: dict[str, str]
    form: dict[str, str]
    time: float


@dataclass
class CallbackReceiver:
    """An HTTP server on 127.0.0.1 that records every request; `status` and `hold` shape replies."""

    status: int = 200
    hold: threading.Event | None = None
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> CallbackReceiver:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def handle(request: web.Request) -> web.Response:
            form = dict(await request.post()) if request.method == "POST" else {}
            with self._arrived:
                self.requests.append(
                    Received(
                        request.method,
                        f"http://{request.host}{request.raw_path}",
                        dict(request.headers),
                        form,
                        time.time(),
                    )  # type: ignore[arg-type]
                )
                self._arrived.notify_all()
            if self.hold is not None:
                await loop.run_in_executor(None, self.hold.wait, 10)
            return web.Response(status=self.status, text="ok")

        async def start() -> web.AppRunner:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}/status"
            return runner

        runner = loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    r = CallbackReceiver().start()
    yield r
    r.stop()


def twilio_error(call) -> TwilioRestException:  # type: ignore[no-untyped-def]
    """The library raises TwilioRestException for fetch/create/update, and a bare TwilioException
    carrying the response for list pages; both become a TwilioRestException here."""
    with pytest.raises(TwilioException) as caught:
        call()
    error = caught.value
    if isinstance(error, TwilioRestException):
        return error
    response = error.args[1]
    body = json.loads(response.text)
    return TwilioRestException(response.status_code, "", body["message"], body["code"])


async def eventually(predicate, timeout: float = 5.0, interval: float = 0.01):  # type: ignore[no-untyped-def]
    """Wait until `predicate()` is truthy and return its value (or the last falsy one on timeout)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        done = value is not None if isinstance(value, pd.DataFrame | pd.Series) else bool(value)
        if done or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(interval)


@pytest.fixture
async def rooms_to_close():
    """Rooms a test joined; disconnected at the end whatever happened."""
    joined: list = []
    yield joined
    for room in joined:
        await room.disconnect()


@pytest.fixture
def join(server, rooms_to_close):  # type: ignore[no-untyped-def]
    """`await join("alice", room="standup", **options)`: a connected client in the test's loop."""

    async def joiner(identity: str, room: str = "room", **options):  # type: ignore[no-untyped-def]
        connected = await roomlab.connect(server.url, server.token(identity), name=room, **options)
        rooms_to_close.append(connected)
        return connected

    return joiner
