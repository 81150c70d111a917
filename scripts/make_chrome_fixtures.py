"""Record the Chrome dump fixtures of tests/fixtures/chrome/ from a real headless Chromium call.

Why: `roomlab.frames.read_webrtc_internals` and `read_rtcstats` must be tested on what Chrome
really writes, not on what we think it writes. So this script makes a real call and has Chrome
itself write both dumps:

1. An aiohttp server on 127.0.0.1 serves a page that opens two RTCPeerConnections in the same
   page (a loopback call, `iceServers: []`) and sends a fake audio + video getUserMedia track
   from the first to the second for `--seconds` seconds.
2. Chromium runs headless with fake media devices and `--remote-debugging-port=0`; over the
   DevTools protocol (a small client on aiohttp's websocket) the script opens
   chrome://webrtc-internals in one tab and the call page in another. webrtc-internals polls
   getStats of every peer connection once a second, as it does for a user.
3. While the call is still up, the script clicks the two download links of webrtc-internals:
   "Download the PeerConnection updates and stats data" (`webrtc_internals_dump.gz`: the JSON
   dump, gzipped because the compression checkbox beside the link is ticked by default) and the RTCStats-format
   link (`rtcstats_dump.gz`, RTCStats dump format v3, which webrtc-internals always gzips). The
   downloads land in the output directory as Chrome wrote them: these are genuine dumps, not
   reconstructions from getStats.

Everything stays on 127.0.0.1: before anything else the script moves itself into a private
network namespace (Linux, needs root; or run it under `unshare --map-root-user --net`) whose only
interface is `lo`, so Chromium can neither reach nor even see another address. The page passes only
127.0.0.1 candidates between the two peer connections, uses no STUN/TURN server, and reports the
selected candidate pair, which the script checks is 127.0.0.1 on both ends.

The run is bounded by `--timeout` (about 10 s are needed). Chromium is started in its own process
group, and only that group is terminated (and reaped) at the end.

Usage: python scripts/make_chrome_fixtures.py [--out tests/fixtures/chrome] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import fcntl
import itertools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "chrome"
INTERNALS_URL = "chrome://webrtc-internals"
# What Chrome names the downloads (webrtc-internals gzips both by default).
DUMPS = ("webrtc_internals_dump.gz", "rtcstats_dump.gz")

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
CLONE_NEWNET = 0x40000000  # linux/sched.h
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1  # linux/sockios.h, linux/if.h

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--remote-debugging-port=0",
)

PAGE = """<!doctype html><html><body><pre id=out>starting</pre><script>
// A loopback call: pc1 sends a fake camera and microphone to pc2 in the same page.
const log = (s) => { document.getElementById('out').textContent += "\\n" + s; };
(async () => {
  try {
    const stream = await navigator.mediaDevices.getUserMedia(
        {audio: true, video: {width: 320, height: 240, frameRate: 15}});
    const pc1 = new RTCPeerConnection({iceServers: []});
    const pc2 = new RTCPeerConnection({iceServers: []});
    window.pcs = [pc1, pc2];  // keep them alive until the dumps are written
    // Only loopback candidates reach the other end, so media flows over 127.0.0.1 alone.
    const loopback = (e) => e.candidate && e.candidate.address === '127.0.0.1';
    pc1.onicecandidate = e => loopback(e) && pc2.addIceCandidate(e.candidate);
    pc2.onicecandidate = e => loopback(e) && pc1.addIceCandidate(e.candidate);
    const playing = new Promise(r => pc2.ontrack = e => {
      if (e.track.kind === 'video') {
        const v = document.createElement('video');
        v.muted = true; v.autoplay = true; v.srcObject = e.streams[0];
        document.body.appendChild(v); r();
      }
    });
    for (const track of stream.getTracks()) pc1.addTrack(track, stream);
    await pc1.setLocalDescription(await pc1.createOffer());
    await pc2.setRemoteDescription(pc1.localDescription);
    await pc2.setLocalDescription(await pc2.createAnswer());
    await pc1.setRemoteDescription(pc2.localDescription);
    await playing;
    log('connected');
    await new Promise(r => setTimeout(r, SECONDS * 1000));
    // Report the addresses of pc1's selected candidate pair, so the script can check it was loopback.
    const stats = await pc1.getStats();
    const addresses = [];
    stats.forEach(s => {
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = stats.get(s.selectedCandidatePairId);
        addresses.push(stats.get(pair.localCandidateId).address, stats.get(pair.remoteCandidateId).address);
      }
    });
    log('DONE ' + addresses);
    await fetch('/done', {method: 'POST', body: JSON.stringify({addresses})});
  } catch (e) {
    log('ERR ' + e);
    await fetch('/done', {method: 'POST', body: JSON.stringify({error: String(e)})});
  }
})();
</script></body></html>
"""


class DevTools:
    """A minimal Chrome DevTools protocol client: commands with ids, events into a queue."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data:
                future = self.pending.pop(data["id"])
                if "error" in data:
                    future.set_exception(RuntimeError(f"CDP error: {data['error']}"))
                else:
                    future.set_result(data.get("result", {}))
            else:
                await self.events.put(data)

    async def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        command_id = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[command_id] = future
        message: dict[str, Any] = {"id": command_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self.ws.send_str(json.dumps(message))
        return await future

    async def attach(self, url: str) -> str:
        """Open `url` in a new tab and return the session id for talking to it."""
        target = await self.send("Target.createTarget", url=url)
        attached = await self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
        return str(attached["sessionId"])

    async def evaluate(self, session: str, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", session, expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")


async def serve_page(seconds: float) -> tuple[web.AppRunner, str, asyncio.Future[str]]:
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=PAGE.replace("SECONDS", str(seconds)), content_type="text/html")

    async def finished(request: web.Request) -> web.Response:
        if not done.done():
            done.set_result(await request.text())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_post("/done", finished)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/", done


async def devtools_url(profile: Path, process: subprocess.Popen[bytes]) -> str:
    """Chromium writes its chosen debugging port and browser path to DevToolsActivePort."""
    marker = profile / "DevToolsActivePort"
    while not marker.exists() or len(marker.read_text().splitlines()) < 2:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited early with code {process.returncode}")
        await asyncio.sleep(0.1)
    port, path = marker.read_text().splitlines()[:2]
    return f"ws://127.0.0.1:{port}{path}"


async def download(cdp: DevTools, session: str, element_ids: tuple[str, ...], out: Path) -> list[Path]:
    """Click webrtc-internals download links at once (so both dumps hold the same polls) and await the files."""
    clicks = "; ".join(f"document.getElementById({element_id!r}).click()" for element_id in element_ids)
    await cdp.evaluate(session, clicks)
    names: dict[str, str] = {}
    completed: list[str] = []
    while len(completed) < len(element_ids):
        event = await cdp.events.get()
        method, params = event.get("method"), event.get("params", {})
        if method == "Browser.downloadWillBegin":
            names[params["guid"]] = params["suggestedFilename"]
        elif method == "Browser.downloadProgress" and params["state"] == "completed":
            completed.append(params["guid"])
        elif method == "Browser.downloadProgress" and params["state"] == "canceled":
            raise RuntimeError(f"a download was canceled: {names.get(params['guid'], params['guid'])}")
    files = [out / names[guid] for guid in completed]
    missing = [str(path) for path in files if not path.exists()]
    if missing:
        raise RuntimeError(f"Chrome reported downloads finished but these files are missing: {missing}")
    return sorted(files)


async def record(out: Path, seconds: float, chromium: str) -> tuple[str, list[Path]]:
    adopt_orphans()
    runner, page_url, done = await serve_page(seconds)
    profile = Path(tempfile.mkdtemp(prefix="roomlab-chromium-"))
    process = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: we stop exactly the processes we started
    )
    try:
        url = await devtools_url(profile, process)
        async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
            cdp = DevTools(ws)
            version = (await cdp.send("Browser.getVersion"))["product"]
            for name in DUMPS:
                (out / name).unlink(missing_ok=True)  # else Chrome would write "name (1).gz"
            await cdp.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(out), eventsEnabled=True)
            internals = await cdp.attach(INTERNALS_URL)
            await asyncio.sleep(1.0)  # let webrtc-internals register its listeners first
            await cdp.attach(page_url)
            outcome = json.loads(await done)
            if "error" in outcome:
                raise RuntimeError(f"the call page failed: {outcome['error']}")
            if not outcome["addresses"] or set(outcome["addresses"]) != {"127.0.0.1"}:
                raise RuntimeError(f"media did not flow over 127.0.0.1 alone: {outcome['addresses']}")
            await asyncio.sleep(1.5)  # one more stats poll after the last second of media
            files = await download(cdp, internals, ("dump-click-target", "dump-click-target-rtcstats"), out)
            cdp.reader.cancel()
            return str(version), files
    finally:
        await runner.cleanup()
        stop(process)
        shutil.rmtree(profile, ignore_errors=True)


def isolate_network() -> None:
    """Move this process (and so Chromium, later) into a fresh network namespace with only `lo`, and bring it up."""
    if [name for _, name in socket.if_nameindex()] != ["lo"]:
        if not sys.platform.startswith("linux"):
            raise SystemExit("a private network namespace needs Linux")
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            error = os.strerror(ctypes.get_errno())
            raise SystemExit(f"cannot create a network namespace ({error}); run as root or under unshare -rn")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))


def adopt_orphans() -> None:
    """Become a subreaper (Linux), so Chromium's helpers that outlive it are reaped by us, not left as zombies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the process group Chromium was started in (ours alone), kill what lingers, reap it all."""
    group = process.pid
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 5
    while True:
        try:
            pid, _ = os.waitpid(-group, os.WNOHANG)  # only members of Chromium's group
        except ChildProcessError:
            return  # every process of the group is gone and reaped
        if pid == 0 and time.monotonic() > deadline:
            os.killpg(group, signal.SIGKILL)
            deadline = time.monotonic() + 5
        elif pid == 0:
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for the two dumps")
    parser.add_argument("--seconds", type=float, default=6.0, help="how long media flows")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium", help="browser binary")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    isolate_network()  # before any thread or socket exists
    out = args.out.resolve()
    try:
        version, files = asyncio.run(asyncio.wait_for(record(out, args.seconds, args.chromium), args.timeout))
    except TimeoutError:
        print(f"gave up after {args.timeout} s", file=sys.stderr)
        return 1
    for path in files:
        print(f"{path}: {path.stat().st_size} bytes")
    print(f"recorded with {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
