"""Every code block of the README runs as written, so the docs cannot drift from the code.

The two commands at the top are what CI runs (the main job runs here too, in a scratch folder);
the Python blocks run top to bottom in one session, as cells of one notebook would (top-level
`await` included), and print what the README says they print; the scenario is a valid scenario;
the shell commands do what the README says. The JavaScript block runs in the SDK's own tests'
page (tests/test_twilio_sdk.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

import roomlab
from roomlab.sim.scenario import Scenario
from roomlab.web import INSTALL_TWILIO_VIDEO, twilio_video_version

from .readme import README, of_language

ROOT = README.parent
CI = (ROOT / ".ci" / "run").read_text()
BASH = of_language("bash")
NOTEBOOK = r"""
import ast, asyncio, json, sys

async def main() -> None:
    namespace = {"__name__": "__main__"}
    for index, code in enumerate(json.load(open(sys.argv[1]))):
        print(f"### block {index}", flush=True)
        compiled = compile(code, f"<README block {index}>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(compiled, namespace)
        if asyncio.iscoroutine(result):
            await result
    print("### done", flush=True)

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like the repository for the README's relative paths: `.venv` (this
    interpreter's environment) and `scenarios/`."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / ".venv").symlink_to(sys.prefix)
    shutil.copytree(ROOT / "scenarios", folder / "scenarios")
    return folder


@pytest.fixture(scope="module")
def main_job(scratch: Path) -> subprocess.CompletedProcess[str]:
    """The main job of the first command, as written (its install part is what CI does first)."""
    command = BASH[0].code.strip().split(" && ")[-1]
    return subprocess.run(command, shell=True, cwd=scratch, capture_output=True, text=True, timeout=300)


def test_the_first_two_commands_are_the_ones_ci_runs():
    install, tests = (block.code.strip() for block in BASH[:2])
    assert [block.line for block in BASH[:2]] == [11, 15]  # near the top, the first two blocks
    assert install.startswith("python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && ")
    assert "python3 -m venv .venv" in CI and ".venv/bin/pip install -q -e '.[test]'" in CI
    assert tests in CI.splitlines()


def test_the_main_job_writes_the_frames_and_the_report(main_job, scratch):
    assert main_job.returncode == 0, main_job.stderr
    run = scratch / "runs" / "standup"
    frames = roomlab.load(run)
    assert {"messages", "rtc_stats", "events", "network_quality"} <= set(frames.frames())
    assert len(frames.frame("messages")) > 1000
    report = (run / "report.png").read_bytes()
    assert report[:8] == b"\x89PNG\r\n\x1a\n" and len(report) > 100_000
    assert "report: runs/standup/report.png" in main_job.stdout


def test_the_python_blocks_run_top_to_bottom_and_print_what_the_readme_says(main_job, scratch):
    assert main_job.returncode == 0  # a block reads the main job's run
    blocks = of_language("python")
    (scratch / "blocks.json").write_text(json.dumps([block.code for block in blocks]))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", NOTEBOOK, "blocks.json"], cwd=scratch, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.stdout.rstrip().endswith("### done")
    printed = result.stdout.split("### block ")[1:]
    for index, block in enumerate(blocks):
        if block.prints is not None:
            lines = set(printed[index].splitlines()[1:])
            expected = set(block.prints.splitlines())
            assert expected <= lines, f"README line {block.line} should print {expected}, printed {lines}"
    for noise in ("Traceback", "Task exception was never retrieved", "Error"):
        assert noise not in result.stderr, result.stderr[-3000:]
    assert time.monotonic() - started < 200


def test_the_scenario_shown_is_a_valid_scenario(server):
    (shown,) = of_language("yaml")
    scenario = Scenario.parse(yaml.safe_load(shown.code))
    assert scenario.room == "standup" and scenario.duration == 20
    simulation = scenario.build(server)  # every behaviour, link and option checked
    assert simulation.identities == ["bot-0", "bot-1", "bot-2", "bot-3"]


def test_the_sdk_install_step_is_the_one_ci_runs():
    (step,) = [block.code.strip() for block in BASH if "npm" in block.code]
    assert step in CI


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_whiteboard_command_serves_its_page_and_stops_on_one_ctrl_c(scratch):
    (command,) = [block.code.strip() for block in BASH if "whiteboard" in block.code]
    if twilio_video_version() is None:
        pytest.skip(f"the whiteboard demo needs twilio-video: {INSTALL_TWILIO_VIDEO}")
    if not port_free(8000):
        pytest.skip("the whiteboard demo serves on port 8000, which something else holds here")
    process = subprocess.Popen(command.split(), cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if "whiteboard.html?token=" in line:
                url = line[line.index("http://") :].split()[0]
        assert url is not None and url.startswith("http://127.0.0.1:8000/web/whiteboard.html?token=")
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200 and b"Twilio.Video.connect" in page.read()
        time.sleep(2)  # the bots draw
        os.kill(process.pid, signal.SIGINT)
        started = time.monotonic()
        process.wait(timeout=20)
        assert time.monotonic() - started < 10
        assert process.returncode in (0, 130)
        assert "Traceback" not in process.stderr.read()  # type: ignore[union-attr]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
