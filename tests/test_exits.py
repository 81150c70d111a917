"""Leaving is prompt in every way a program ends (SPEC §5): an exception or a cancellation inside
asyncio.run(), Ctrl-C, a kernel interrupt in a notebook. Scripts run in a subprocess with this
repository's Python; each case runs several times, as the hang it guards against came 4 runs in 6."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import roomlab

from .conftest import eventually

SCRIPT = Path(__file__).parent / "clients" / "exit_while_connected.py"
RUNS = 3
#: Seconds a script may take to end once it is told to (it took 0.2-0.4 s here; hung before).
EXIT_BOUND = 5.0
NOISE = ("Task was destroyed", "never retrieved", "Exception ignored", "released by force", "Error in")


async def run_and_end(server: roomlab.Server, mode: str, room: str) -> tuple[int, str, float]:
    """Run the script until it prints "connected", end it the way `mode` says; return its exit
    code, its stderr and how long it took to end."""
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, server.url, server.token("first"), server.token("second"), room],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = await asyncio.to_thread(process.stdout.readline)  # type: ignore[union-attr]
        assert line.startswith("connected PA"), line
        told = time.monotonic()
        if mode == "wait":
            process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.to_thread(process.communicate, timeout=EXIT_BOUND)
        return process.returncode, stderr, time.monotonic() - told
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


async def assert_left(server: roomlab.Server, room: str) -> None:
    """Both participants said goodbye (no code: they left; not dropped, not reconnecting)."""

    def left() -> list:
        events = server.frame("events")
        gone = events[(events["room"] == room) & (events["event"] == "participant-disconnected")]
        return sorted(zip(gone["identity"], gone["code"].isna(), strict=True))

    assert await eventually(lambda: len(left()) == 2) and left() == [("first", True), ("second", True)]


@pytest.mark.parametrize(
    ("mode", "last_line", "returncode"),
    [
        ("raise", "RuntimeError: boom while connected", 1),
        ("cancel", "asyncio.exceptions.CancelledError", 1),
        ("wait", "KeyboardInterrupt", -signal.SIGINT),
    ],
    ids=["exception", "cancellation", "ctrl-c"],
)
async def test_a_script_with_connected_rooms_ends_promptly_with_its_traceback(server, mode, last_line, returncode):
    for run in range(RUNS):
        room = f"exit-{mode}-{run}"
        code, stderr, took = await run_and_end(server, mode, room)
        lines = stderr.strip().splitlines()
        assert code == returncode, stderr
        assert lines[0] == "Traceback (most recent call last):" and lines[-1] == last_line, stderr
        assert len(lines) <= 30, stderr  # the program's traceback, nothing else
        assert not [n for n in NOISE if n in stderr], stderr
        assert took < EXIT_BOUND
        await assert_left(server, room)


async def test_a_run_that_ends_normally_while_busy_prints_nothing():
    """Offers in flight as a participant leaves, the server stopped with another still connected:
    no teardown noise (no InvalidStateError for a closed connection's offer, no unretrieved task
    exception), twice in a row."""
    script = Path(__file__).parent / "clients" / "end_normally_while_busy.py"
    for _ in range(2):
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, str(script)], capture_output=True, text=True, timeout=30
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, "disconnected disconnected\n", "")


NOTEBOOK_START = """
import asyncio, roomlab
server = roomlab.serve()
watcher = await roomlab.connect(server.url, server.token("watcher"), name="nb")
"""
NOTEBOOK_SIT = """
async with await roomlab.connect(server.url, server.token("sitter"), name="nb", tracks=[roomlab.LocalDataTrack("d")]):
    print("in the room", flush=True)
    await asyncio.sleep(60)
"""
NOTEBOOK_AGAIN = """
got = asyncio.get_running_loop().create_future()
watcher.on("data_received", lambda data, p, topic: got.done() or got.set_result((p.identity, data)))
again = await roomlab.connect(server.url, server.token("sitter"), name="nb")
again.local_participant.publish_data("after the interrupt")
print(await asyncio.wait_for(got, 10), watcher.state, len(watcher.participants))
"""


async def test_a_kernel_interrupt_leaves_the_notebook_usable():
    """Interrupt a cell awaiting inside a connected room: the cell ends, the room is left, and
    the next cell connects again and exchanges a message."""
    from jupyter_client.manager import start_new_async_kernel

    km, kc = await start_new_async_kernel(kernel_name="python3")

    async def execute(code: str, interrupt_on: str | None = None) -> list[str]:
        msg_id = kc.execute(code)
        outputs: list[str] = []
        while True:
            msg = await kc.get_iopub_msg(timeout=30)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            content = msg["content"]
            if msg["msg_type"] == "stream":
                outputs.append(content["text"])
                if interrupt_on is not None and interrupt_on in content["text"]:
                    await km.interrupt_kernel()
            elif msg["msg_type"] == "error":
                outputs.append(f"{content['ename']}")
            elif msg["msg_type"] == "status" and content["execution_state"] == "idle":
                return outputs

    try:
        assert await execute(NOTEBOOK_START) == []
        started = time.monotonic()
        outputs = await execute(NOTEBOOK_SIT, interrupt_on="in the room")
        assert outputs == ["in the room\n", "CancelledError"] and time.monotonic() - started < 10
        left = "for _ in range(200):\n    if not watcher.participants: break\n    await asyncio.sleep(0.02)\n"
        assert await execute(left + "print(watcher.state, len(watcher.participants))") == ["connected 0\n"]
        assert await execute(NOTEBOOK_AGAIN) == ["('sitter', 'after the interrupt') connected 1\n"]
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
