"""The `roomlab` command, run as a user runs it: a real process, ended by its own id."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from twilio.rest import Client


def test_serve_prints_url_and_credentials_and_serves_until_stopped(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "roomlab", "serve", "--db", str(tmp_path / "cli.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [process.stdout.readline() for _ in range(4)]  # type: ignore[union-attr]
        url = re.search(r"serving on (http://127\.0\.0\.1:\d+)", lines[0]).group(1)  # type: ignore[union-attr]
        fields = dict(line.split() for line in lines[1:])
        assert re.fullmatch(r"AC[0-9a-f]{32}", fields["account_sid"])
        assert re.fullmatch(r"SK[0-9a-f]{32}", fields["api_key"])
        client = Client(fields["api_key"], fields["api_secret"], fields["account_sid"])
        client.video.base_url = url
        room = client.video.v1.rooms.create(unique_name="from-cli")
        assert client.video.v1.rooms("from-cli").fetch().sid == room.sid
    finally:
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    assert (tmp_path / "cli.db").exists()


def test_serve_ends_promptly_on_ctrl_c_with_a_watcher_attached():
    """It took 13 s: the server waited for the watcher to hang up."""
    import roomlab

    process = subprocess.Popen(
        [sys.executable, "-m", "roomlab", "serve"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        lines = [process.stdout.readline() for _ in range(4)]  # type: ignore[union-attr]
        url = lines[0].split()[-1]
        fields = dict(line.split() for line in lines[1:])
        with roomlab.watch(url, fields["api_key"], fields["api_secret"]) as watcher:
            process.send_signal(signal.SIGINT)
            started = time.monotonic()
            assert process.wait(timeout=10) == 0
            assert time.monotonic() - started < 3
            assert process.stderr.read() == ""  # type: ignore[union-attr]
        assert not watcher.running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_demo_runs_to_completion(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "roomlab", "demo", "--room", "cli-demo", "--db", str(tmp_path / "demo.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"created room RM[0-9a-f]{32} \(cli-demo\), status in-progress", result.stdout)
    assert 'in-progress rooms: ["cli-demo"]' in result.stdout
    assert re.search(r"ended room RM[0-9a-f]{32}: status completed", result.stdout)
