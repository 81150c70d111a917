"""The views in a real JupyterLab on 127.0.0.1, driven by headless Debian Chromium through
Playwright: open notebook 05, run all its cells, watch a view's picture change while the room
runs, change a link with a view's controls and see the view show the new link; open notebook 04,
watch the allocation view update, change its mode control and see the view and the room's rows
take the new mode. Each once with
JupyterLab's default (widget messages on kernel subshells, so callbacks run on a thread of their
own) and once with subshells disabled (callbacks on the kernel's main thread).

One JupyterLab for the module (in a temporary root, with its own settings, no news or update
checks); Chromium is the Debian package (`/usr/bin/chromium`, never `playwright install`).
Screenshots go to the test's tmp_path; their paths are printed (`pytest -s` shows them).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
REPOSITORY = Path(__file__).resolve().parent.parent
WHITEBOARD = "05-prototyping-a-whiteboard.ipynb"
BANDWIDTH_PROFILES = "04-bandwidth-profiles.ipynb"
#: Seconds JupyterLab may take to start (10-20 s on two busy cores).
LAB_START_TIMEOUT = 120
#: Seconds the notebook may take to run all its cells in the browser.
RUN_TIMEOUT = 240
#: JupyterLab's own settings for a test: no news, no update checks, widget comms as the test says.
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"checkForUpdates": False, "fetchNews": "false"},
}
KERNEL_SETTINGS = "@jupyterlab/apputils-extension/kernels-settings.jupyterlab-settings"


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    settings: Path

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", method=method)
        request.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed (Debian: apt-get install -y chromium)")
    root = tmp_path_factory.mktemp("jupyterlab")
    settings = root / "settings"
    for name, values in SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    config = root / "config"
    config.mkdir()
    (config / "jupyter_lab_config.json").write_text(
        json.dumps(
            {
                "LabApp": {
                    "news_url": None,
                    "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
                    "extension_manager": "readonly",
                    "expose_app_in_browser": True,
                }
            }
        )
    )
    token = secrets.token_hex(16)
    port = _free_port()
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(root / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(root / "runtime"),
        IPYTHONDIR=str(root / "ipython"),
        # the kernel imports the roomlab of this repository (a checkout or worktree), not another install
        PYTHONPATH=os.pathsep.join(p for p in (str(REPOSITORY), os.environ.get("PYTHONPATH")) if p),
    )
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = (root / "jupyterlab.log").open("wb")
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    lab = Lab(f"http://127.0.0.1:{port}", token, root, settings)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited with {process.returncode}: {(root / 'jupyterlab.log').read_text()}"
                )
            try:
                lab.api("GET", "/api/status")
                break
            except OSError:
                if time.monotonic() - started > LAB_START_TIMEOUT:
                    raise RuntimeError(f"JupyterLab did not answer in {LAB_START_TIMEOUT} s") from None
                time.sleep(0.25)
        print(f"\nJupyterLab up in {time.monotonic() - started:.1f} s at {lab.url}")
        yield lab
    finally:
        _stop_lab(lab, process)
        log.close()


def _stop_lab(lab: Lab, process: subprocess.Popen[bytes]) -> None:
    """Shut JupyterLab down (it ends its kernels), then make sure its process group is gone."""
    try:
        lab.api("POST", "/api/shutdown")
        process.wait(20)
    except (OSError, subprocess.TimeoutExpired):
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
            process.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def _end_sessions(lab: Lab) -> None:
    for session in lab.api("GET", "/api/sessions"):
        lab.api("DELETE", f"/api/sessions/{session['id']}")


NOTEBOOK_READY = """() => {
    const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const kernel = widget && widget.sessionContext && widget.sessionContext.session
        && widget.sessionContext.session.kernel;
    return !!kernel && kernel.status === 'idle' && widget.context.isReady;
}"""
CELLS_STATE = """() => {
    const widget = window.jupyterapp.shell.currentWidget;
    const cells = widget.content.widgets.filter(cell => cell.model.type === 'code');
    const errors = [];
    for (const cell of cells) {
        for (let i = 0; i < cell.model.outputs.length; i++) {
            const output = cell.model.outputs.get(i).toJSON();
            // the failing line too: an assert without a message says nothing else
            if (output.output_type === 'error') {
                const where = (output.traceback || []).join('\\n').replace(/\\u001b\\[[0-9;]*m/g, '');
                errors.push(output.ename + ': ' + output.evalue + '\\n' + where.split('\\n').slice(-12).join('\\n'));
            }
        }
    }
    return {
        done: cells.every(cell => cell.model.executionCount !== null),
        idle: widget.sessionContext.session.kernel.status === 'idle',
        errors,
    };
}"""
RUN_IN_KERNEL = """async (code) => {
    const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    const future = kernel.requestExecute({code, store_history: false});
    let text = '';
    future.onIOPub = message => {
        if (message.header.msg_type === 'stream') text += message.content.text;
        if (message.header.msg_type === 'error') text += 'ERROR ' + message.content.evalue;
    };
    await future.done;
    return text;
}"""


def _until(what: str, predicate: Any, timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@contextmanager
def _notebook_in_lab(lab: Lab, subshells: str, notebook: str) -> Iterator[Any]:
    """A headless Chromium page with `notebook` (a copy) open in JupyterLab, its kernel idle, widget
    comms over subshells as `subshells` says; all its cells running. The kernel ends afterwards."""
    from playwright.sync_api import sync_playwright

    setting = lab.settings / KERNEL_SETTINGS
    if subshells == "default":
        setting.unlink(missing_ok=True)  # JupyterLab's default: comms over subshells, one per comm target
    else:
        setting.parent.mkdir(parents=True, exist_ok=True)
        setting.write_text(json.dumps({"commsOverSubshells": subshells}))
    folder = lab.root / "notebooks" / subshells
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPOSITORY / "notebooks" / notebook, folder / notebook)  # a copy: the run never touches the repository
    console: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            chromium_sandbox=False,
            args=["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-extensions"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
            # ?reset: a fresh workspace, not the previous test's notebook reopened beside this one
            page.goto(f"{lab.url}/lab/tree/notebooks/{subshells}/{notebook}?reset&token={lab.token}")
            page.wait_for_function(NOTEBOOK_READY, timeout=LAB_START_TIMEOUT * 1000, polling=250)
            effective = page.evaluate(
                "async () => (await window.jupyterapp.serviceManager.settings.fetch("
                "'@jupyterlab/apputils-extension:kernels-settings')).raw"
            )
            print(f"\n[{subshells}] kernels settings: {effective}")
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            yield page
        except BaseException:
            print("\n".join(console[-40:]))
            raise
        finally:
            browser.close()
            _end_sessions(lab)


def _no_errors(page: Any) -> dict[str, Any]:
    state = page.evaluate(CELLS_STATE)
    assert not state["errors"], state["errors"]
    return state


def _all_ran(page: Any) -> bool:
    state = _no_errors(page)
    return state["done"] and state["idle"]


def _changes(page: Any, selector: str, pictures: set[str]) -> bool:
    """Collect the pictures of the first view matching `selector`: True once it changed twice."""
    source = page.evaluate(
        f"() => {{ const img = document.querySelector('{selector} img.roomlab-figure'); return img ? img.src : null; }}"
    )
    if source:
        pictures.add(source)
    _no_errors(page)
    return len(pictures) >= 3


def _thread_check(page: Any, subshells: str, thread: str) -> None:
    """Where widget messages went: JupyterLab sends them on a subshell unless disabled; ipykernel 7.4
    routes each comm's messages to the subshell its kernel side last published from."""
    comm_subshells = page.evaluate(
        "() => [...new Set([...window.jupyterapp.shell.currentWidget.sessionContext.session.kernel._comms"
        ".values()].map(comm => comm.subshellId))]"
    )
    kernel_subshells = page.evaluate(
        RUN_IN_KERNEL, "print(*get_ipython().kernel.shell_channel_thread.manager.list_subshell())"
    ).split()
    print(
        f"[{subshells}] widget comms' subshells {comm_subshells}, the kernel's {kernel_subshells};"
        f" the control's callback ran on thread {thread!r}"
    )
    if subshells == "default":
        assert len(kernel_subshells) == 1 and comm_subshells == kernel_subshells
        assert thread == "MainThread" or thread == f"subshell-{kernel_subshells[0]}", thread
    else:
        assert kernel_subshells == [] and comm_subshells == [None]
        assert thread == "MainThread", thread


def _screenshots(page: Any, subshells: str, tmp_path: Path, elements: dict[str, Any]) -> None:
    for name, element in elements.items():
        element.scroll_into_view_if_needed()
        path = tmp_path / f"jupyterlab-{subshells}-{name}.png"
        element.screenshot(path=path)
        print(f"[{subshells}] screenshot: {path}")
    path = tmp_path / f"jupyterlab-{subshells}-page.png"
    page.screenshot(path=path)
    print(f"[{subshells}] screenshot: {path}")


@pytest.mark.parametrize("subshells", ["default", "disabled"])
def test_views_update_and_a_control_changes_the_room_in_jupyterlab(jupyterlab: Lab, subshells: str, tmp_path: Path):
    lab = jupyterlab
    started = time.monotonic()
    with _notebook_in_lab(lab, subshells, WHITEBOARD) as page:
        # the whiteboard's data monitor: its picture changes while the room runs
        pictures: set[str] = set()
        _until("the data monitor's picture to change twice", lambda: _changes(page, ".roomlab-data-monitor", pictures),
               RUN_TIMEOUT)  # fmt: skip
        print(f"[{subshells}] the monitor's picture changed {len(pictures) - 1} times so far")
        _until("every cell to run", lambda: _all_ran(page), RUN_TIMEOUT)
        ran = time.monotonic() - started

        # the playground at the end runs in the background: the kernel is idle, its controls act
        playground = page.locator(".roomlab-room-view").nth(1)
        playground.scroll_into_view_if_needed()
        details = playground.locator(".roomlab-details")
        ben = "<td>ben</td><td>playground</td><td>connected</td><td>cursor, strokes</td><td>2</td>"
        ben += "<td>delay 20 ms</td>"  # connected, and his link known from the simulation's tables
        _until("ben to join the playground", lambda: ben in details.inner_html(), 60)
        controls = playground.locator(".roomlab-link-controls")
        controls.locator(".roomlab-link-identity select").select_option("ben")
        delay = controls.locator(".roomlab-link-delay input")
        _until("ben's link in the fields", lambda: delay.input_value() == "20", 20)  # his link, from the tables
        loss = controls.locator(".roomlab-link-loss input")
        loss.fill("30")
        loss.press("Tab")
        controls.locator(".roomlab-link-apply").click()
        _until("the room view to show ben's new link", lambda: "delay 20 ms · loss 30 %" in details.text_content(), 30)
        _thread_check(page, subshells, page.evaluate(RUN_IN_KERNEL, "print(play_room.commands[-1].thread)").strip())
        changes = page.evaluate(
            RUN_IN_KERNEL,
            "print(play.frame('events').query(\"event == 'link-changed'\")['detail'].tolist())",
        )
        assert '{"loss": 0.3}' in changes, changes  # the room's own record: the change the fields made

        monitor = page.locator(".roomlab-data-monitor").nth(1)
        before = monitor.locator("img.roomlab-figure").get_attribute("src")
        _until(
            "the playground monitor to redraw",
            lambda: monitor.locator("img.roomlab-figure").get_attribute("src") != before,
            30,
        )
        _screenshots(page, subshells, tmp_path, {"room-view": playground, "data-monitor": monitor})
        print(f"[{subshells}] notebook ran in {ran:.0f} s; whole test {time.monotonic() - started:.0f} s")


@pytest.mark.parametrize("subshells", ["default", "disabled"])
def test_the_allocation_view_updates_and_its_mode_control_changes_the_room_in_jupyterlab(
    jupyterlab: Lab, subshells: str, tmp_path: Path
):
    started = time.monotonic()
    with _notebook_in_lab(jupyterlab, subshells, BANDWIDTH_PROFILES) as page:
        # the presentation viewer's allocation view: its picture changes while the room runs
        pictures: set[str] = set()
        _until("the allocation view to update twice", lambda: _changes(page, ".roomlab-allocation-view", pictures),
               RUN_TIMEOUT)  # fmt: skip
        print(f"[{subshells}] the allocation view's picture changed {len(pictures) - 1} times so far")
        _until("every cell to run", lambda: _all_ran(page), RUN_TIMEOUT)
        ran = time.monotonic() - started

        # the what-if room runs in the background: its view's mode control changes the viewer's profile
        what_if = page.locator(".roomlab-allocation-view").nth(1)
        what_if.scroll_into_view_if_needed()
        status = what_if.locator(".roomlab-status")
        _until("the viewer's first allocations", lambda: "viewer in grid mode" in status.text_content(), 60)
        mode = what_if.locator(".roomlab-allocation-mode select")
        _until("the mode field to show the room's", lambda: mode.input_value() == "grid", 20)
        before = what_if.locator("img.roomlab-figure").get_attribute("src")
        mode.select_option("collaboration")
        _until("the view to show the new mode", lambda: "viewer in collaboration mode" in status.text_content(), 30)
        _until(
            "the picture to show it",
            lambda: what_if.locator("img.roomlab-figure").get_attribute("src") != before,
            30,
        )
        _thread_check(page, subshells, page.evaluate(RUN_IN_KERNEL, "print(what_if.commands[-1].thread)").strip())
        modes = page.evaluate(
            RUN_IN_KERNEL,
            "rows = play.frame('allocations'); print(rows.loc[rows['time'] == rows['time'].max(), 'mode'].tolist())",
        )
        assert "collaboration" in modes and "grid" not in modes, modes  # the room's own rows: the new mode
        _screenshots(page, subshells, tmp_path, {"allocation-view": what_if})
        print(f"[{subshells}] notebook ran in {ran:.0f} s; whole test {time.monotonic() - started:.0f} s")
