"""The README's JavaScript block runs as written in headless Chromium with Twilio's SDK: it joins a
roomlab room and logs what a Python participant sends on a data track."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlencode

import pytest
from aiohttp import web

import roomlab
from roomlab.web import INSTALL_TWILIO_VIDEO, twilio_video_version

from .browser import Chromium
from .readme import of_language

pytestmark = pytest.mark.skipif(
    twilio_video_version() is None, reason=f"twilio-video is not installed: {INSTALL_TWILIO_VIDEO}"
)
PAGES = Path(__file__).parent / "pages"


async def test_the_readme_javascript_joins_and_logs_what_python_sends(server):
    (block,) = of_language("js")
    app = web.Application()
    app.router.add_static("/", PAGES)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    pages = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    browser = await Chromium.launch()
    python = None
    try:
        page = await browser.open(
            f"{pages}/twilio-video.html?{urlencode({'sdk': f'{server.url}/web/twilio-video.min.js'})}"
        )
        for _ in range(100):
            if await page.evaluate("typeof window.Twilio") == "object":
                break
            await asyncio.sleep(0.1)
        token, ws_server = json.dumps(server.token("alice", room="standup")), json.dumps(server.twilio_ws_url)
        sid = await page.evaluate(
            f"(async () => {{ const token = {token}, wsServer = {ws_server};\n{block.code}\n"
            "window.readmeRoom = room; return room.sid; })()",
            timeout=30,
        )
        assert sid.startswith("RM")
        notes = roomlab.LocalDataTrack("notes")
        python = await roomlab.connect(server.url, server.token("py"), name="standup", tracks=[notes])
        for _ in range(100):  # the page subscribes to the new track
            subscribed = "(window.readmeRoom.participants.size === 1 && [...window.readmeRoom.participants.values()][0]"
            if await page.evaluate(subscribed + ".dataTracks.size === 1)"):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        notes.send("hello from python")
        for _ in range(100):
            if "py hello from python" in page.console:
                break
            await asyncio.sleep(0.1)
        assert "py hello from python" in page.console, page.console
        names = [p.identity for p in python.participants.values()]
        tracks = [pub.track_name for p in python.participants.values() for pub in p.tracks.values()]
        assert names == ["alice"] and tracks == ["chat"]  # the page's data track, as the block publishes it
    finally:
        if python is not None:
            await python.disconnect()
        await browser.close()
        await runner.cleanup()
