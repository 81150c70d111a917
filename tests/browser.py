"""Headless Chromium for tests, driven over the Chrome DevTools protocol (after
scripts/make_chrome_fixtures.py): `async with Chromium.launch() as browser: page = await
browser.open(url); await page.evaluate("1 + 1")`.

Chromium runs in a process group of its own under `timeout`, so it cannot outlive `LIFETIME`
seconds even if the test process dies; `close()` terminates that group alone and reaps it, and
removes the temporary profile. Tests skip when Chromium is not installed.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CHROMIUM = "/usr/bin/chromium"
#: Seconds after which Chromium is killed whatever happens.
LIFETIME = 120
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--allow-loopback-in-peer-connection",
    # a page that may capture media gathers on every interface (127.0.0.1 too), without mDNS names
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--remote-debugging-port=0",
)


def _subreaper(on: bool) -> None:
    """While on (Linux), Chromium's helpers orphaned by its exit are reparented to us, so that we reap them."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)


class Page:
    """One tab: `evaluate(js)` awaits promises and returns JSON values; `console` collects its log."""

    def __init__(self, browser: Chromium, session: str, target: str = "") -> None:
        self.browser = browser
        self.session = session
        self.target = target
        self.console: list[str] = []

    async def close(self) -> None:
        """Close the tab (what it holds, peer connections included, goes with it); once."""
        if self.session not in self.browser.pages:
            return
        self.browser.pages.pop(self.session, None)
        await self.browser.send("Target.closeTarget", targetId=self.target)

    async def evaluate(self, expression: str, timeout: float = 10.0) -> Any:
        result = await self.browser.send(
            "Runtime.evaluate",
            self.session,
            timeout=timeout,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise RuntimeError(f"page error in {expression!r}: {text}\nconsole: {self.console}")
        return result["result"].get("value")


class Chromium:
    def __init__(self, process: subprocess.Popen[bytes], profile: Path) -> None:
        self.process = process
        self.profile = profile
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None
        self.pages: dict[str, Page] = {}
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}

    @classmethod
    async def launch(cls) -> Chromium:
        if not os.access(CHROMIUM, os.X_OK):
            pytest.skip(f"{CHROMIUM} is not installed (Debian: apt-get install -y chromium)")
        profile = Path(tempfile.mkdtemp(prefix="roomlab-chromium-"))
        _subreaper(True)
        process = subprocess.Popen(
            ["timeout", "-s", "KILL", str(LIFETIME), CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: we stop exactly the processes we started
        )
        browser = cls(process, profile)
        try:
            await asyncio.wait_for(browser._attach(), 15)
        except BaseException:
            await browser.close()
            raise
        return browser

    async def _attach(self) -> None:
        marker = self.profile / "DevToolsActivePort"  # Chromium writes its port and path there
        while not marker.exists() or len(marker.read_text().splitlines()) < 2:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited early with code {self.process.returncode}")
            await asyncio.sleep(0.05)
        port, path = marker.read_text().splitlines()[:2]
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0)
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is None or future.done():
                    continue
                if "error" in data:
                    future.set_exception(RuntimeError(f"CDP error: {data['error']}"))
                else:
                    future.set_result(data.get("result", {}))
            elif data.get("sessionId") in self.pages:
                page = self.pages[data["sessionId"]]
                params = data.get("params", {})
                if data.get("method") == "Runtime.consoleAPICalled":
                    page.console.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
                elif data.get("method") == "Runtime.exceptionThrown":
                    page.console.append(f"exception: {params['exceptionDetails'].get('text')}")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RuntimeError("the DevTools connection closed"))

    async def send(self, method: str, session: str | None = None, timeout: float = 10.0, **params: Any) -> Any:
        assert self.ws is not None
        command_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        message: dict[str, Any] = {"id": command_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self.ws.send_str(json.dumps(message))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(command_id, None)

    async def open(self, url: str) -> Page:
        """A new tab on `url` (its console recorded from the start)."""
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
        page = Page(self, attached["sessionId"], target["targetId"])
        self.pages[page.session] = page
        await self.send("Runtime.enable", page.session)
        await self.send("Page.navigate", page.session, url=url)
        return page

    async def close(self) -> None:
        """Close the DevTools connection, then end Chromium's process group (ours alone) and reap it."""
        if self.reader is not None:
            self.reader.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()
        await asyncio.get_running_loop().run_in_executor(None, self._stop)
        shutil.rmtree(self.profile, ignore_errors=True)

    def _stop(self) -> None:
        group = self.process.pid
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 3
        try:
            while True:
                try:
                    pid, _ = os.waitpid(-group, os.WNOHANG)  # members of Chromium's group only
                except ChildProcessError:
                    return  # all gone and reaped
                if pid == 0 and time.monotonic() > deadline:
                    os.killpg(group, signal.SIGKILL)
                    deadline = time.monotonic() + 3
                elif pid == 0:
                    time.sleep(0.02)
        finally:
            self.process.poll()  # let Popen know its process was reaped
            self._stop_crashpad()
            _subreaper(False)

    @staticmethod
    def _stop_crashpad() -> None:
        """Chromium's crash handlers leave its group (double fork, setsid); as subreaper we are their
        parent now: end those children of ours by pid, and reap them."""
        me = os.getpid()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                pid, rest = stat.read_text().split(" (", 1)
            except OSError:
                continue
            comm, fields = rest.rsplit(") ", 1)
            if int(fields.split()[1]) == me and comm.startswith("chrome_crashpad"):
                try:
                    os.kill(int(pid), signal.SIGKILL)
                    os.waitpid(int(pid), 0)
                except (ProcessLookupError, ChildProcessError):
                    pass

    async def __aenter__(self) -> Chromium:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
