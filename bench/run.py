"""Measure roomlab against what a user would pick instead, in one run, and print one Markdown table.

    python bench/run.py [--quick] [--only data,media,memory,telemetry,sim,quality,allocation] [--server-arg=...]

Every participant, relay and server runs in a process of its own (bench/worker.py, and
`python -m roomlab serve` for the server); the measuring happens in those processes and comes back
as JSON. All traffic stays on 127.0.0.1. Every process this script starts is stopped by it, by
PID, before it exits. See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import aiortc

import roomlab
from roomlab.server.auth import Credentials, mint_access_token

BENCH = Path(__file__).resolve().parent
WORKER = BENCH / "worker.py"
ROOM = "bench"
SECTIONS = ("data", "media", "memory", "telemetry", "sim", "quality", "allocation")
SIZES = (64, 1024, 16384)
#: the processes that others connect to, stopped after those
SERVERS = ("server", "ws-relay")

ROOMLAB, P2P, WS = "roomlab", "raw aiortc p2p", "WebSocket relay"


STARTED = time.monotonic()


def progress(text: str) -> None:
    """What the run is doing, on stderr, with the seconds since it started."""
    print(f"[{time.monotonic() - STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    """How long and how much each measurement runs."""

    latency_messages: int = 1000
    latency_rate: float = 100.0
    latency_size: int = 64
    many_subscribers: int = 10
    flood_seconds: float = 5.0
    #: a flood also stops after this many messages per size, whichever comes first
    flood_max_messages: dict[int, int] = field(default_factory=lambda: {64: 200_000, 1024: 200_000, 16384: 30_000})
    #: seconds subscribers may take, after the publisher stopped, to receive what it sent
    drain_cap: float = 30.0
    #: ...and they stop waiting earlier when nothing arrived for this long (lost, or dropped)
    idle_cap: float = 3.0
    media_subscribers: tuple[int, ...] = (1, 4, 8)
    media_warmup: float = 2.0
    media_window: float = 6.0
    memory_participants: int = 20
    telemetry_rows: int = 1_000_000


FULL = Plan()
QUICK = replace(
    FULL,
    latency_messages=200,
    flood_seconds=1.5,
    flood_max_messages={64: 30_000, 1024: 30_000, 16384: 5_000},
    drain_cap=5.0,
    idle_cap=1.5,
    media_subscribers=(4,),
    media_warmup=1.0,
    media_window=2.5,
    memory_participants=10,
)


# processes ----------------------------------------------------------------------------------
class WorkerError(RuntimeError):
    """A worker refused a command or died; carries its traceback or the tail of its stderr."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class Process:
    """A process this run started: its PID, its stderr log, and a JSON-lines conversation."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.pid = proc.pid
        self.log_path = log_path
        self.ready: dict[str, Any] = {}

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def read_reply(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            except TimeoutError:
                raise WorkerError(f"{self.name} (pid {self.pid}) did not answer within {timeout:.0f} s") from None
            if not line:
                await asyncio.sleep(0.2)  # let it finish writing its stderr
                raise WorkerError(f"{self.name} (pid {self.pid}) exited", self.log_tail())
            if line.startswith(b"{"):
                reply = json.loads(line)
                if "error" in reply:
                    raise WorkerError(f"{self.name}: {reply['error']}", reply.get("traceback", ""))
                return reply

    async def call(self, cmd: str, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **params}) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.read_reply(timeout)

    async def stop(self) -> None:
        """Ask a worker to exit (a server does not read stdin), then SIGTERM, then SIGKILL: this PID only."""
        steps: list[tuple[signal.Signals | None, float]] = [(signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)]
        if self.name != "server" and self.proc.stdin is not None and not self.proc.stdin.is_closing():
            try:
                self.proc.stdin.write(b'{"cmd": "exit"}\n')
                self.proc.stdin.close()
            except (ConnectionError, RuntimeError):
                pass
            steps.insert(0, (None, 10.0))
        for sig, wait in steps:
            if sig is not None and self.proc.returncode is None:
                try:
                    os.kill(self.pid, sig)
                except ProcessLookupError:
                    pass
            try:
                await asyncio.wait_for(self.proc.wait(), wait)
                return
            except TimeoutError:
                continue


@dataclass
class RoomlabServer:
    process: Process
    url: str
    credentials: Credentials

    @property
    def pid(self) -> int:
        return self.process.pid

    def token(self, identity: str) -> str:
        return mint_access_token(self.credentials, identity)


class Launcher:
    """Starts workers and servers, and remembers them all so that each is stopped at the end."""

    #: a server stops by itself after this long, should this script die without stopping it
    SERVER_LIFETIME = 1200

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[Process] = []
        self._count = 0

    async def _spawn(self, name: str, argv: Sequence[str]) -> Process:
        self._count += 1
        log_path = self.log_dir / f"{self._count:03d}-{name}.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log, cwd=BENCH.parent
            )
        process = Process(name, proc, log_path)
        self.processes.append(process)
        return process

    async def worker(self, role: str, name: str | None = None, timeout: float = 90.0, **params: Any) -> Process:
        """Start a worker and wait until it is set up; one that fails is stopped."""
        process = await self._spawn(name or role, [sys.executable, str(WORKER), role, json.dumps(params)])
        try:
            process.ready = await process.read_reply(timeout)
        except BaseException:
            await process.stop()
            raise
        return process

    async def workers(self, role: str, count: int, params: Any, timeout: float = 120.0) -> list[Process]:
        """`count` workers started at once (`params(i)` gives each one's parameters): all, or none."""
        started = await asyncio.gather(
            *(self.worker(role, f"{role}{i}", timeout, **params(i)) for i in range(count)), return_exceptions=True
        )
        ready = [p for p in started if isinstance(p, Process)]
        failed = [e for e in started if isinstance(e, BaseException)]
        if failed:
            await self.stop(ready)
            raise failed[0]
        return ready

    async def server(self, extra_args: Sequence[str]) -> RoomlabServer:
        argv = [sys.executable, "-m", "roomlab", "serve", "--port", "0", "--duration", str(self.SERVER_LIFETIME)]
        process = await self._spawn("server", [*argv, *extra_args])
        assert process.proc.stdout is not None
        found: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while len(found) < 4:
            remaining = deadline - time.monotonic()
            try:
                line = (await asyncio.wait_for(process.proc.stdout.readline(), max(remaining, 0.1))).decode()
            except TimeoutError:
                raise WorkerError("the roomlab server did not print its URL within 30 s", process.log_tail()) from None
            if not line:
                await asyncio.sleep(0.2)
                raise WorkerError(f"the roomlab server exited ({' '.join(extra_args)})", process.log_tail())
            if match := re.search(r"serving on (\S+)", line):
                found["url"] = match.group(1)
            elif match := re.match(r"\s+(account_sid|api_key|api_secret)\s+(\S+)", line):
                found[match.group(1)] = match.group(2)
        credentials = Credentials(found["account_sid"], found["api_key"], found["api_secret"])
        return RoomlabServer(process, found["url"], credentials)

    async def stop(self, processes: Sequence[Process | RoomlabServer]) -> None:
        """Stop these, clients first (a server stopped first would see them all vanish at once)."""
        owned = [p.process if isinstance(p, RoomlabServer) else p for p in processes]
        await asyncio.gather(*(p.stop() for p in owned if p.name not in SERVERS))
        await asyncio.gather(*(p.stop() for p in owned if p.name in SERVERS))

    async def stop_all(self) -> None:
        await self.stop(self.processes)


# /proc ----------------------------------------------------------------------------------------
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def system_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class CpuSample:
    percent: dict[int, float]
    """% of one core, per PID"""
    system_busy: float
    """% of all cores busy, machine-wide"""


async def measure_cpu(pids: Sequence[int], seconds: float) -> CpuSample:
    before = {pid: cpu_seconds(pid) for pid in pids}
    busy0, total0 = system_ticks()
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    busy1, total1 = system_ticks()
    percent = {pid: 100 * (cpu_seconds(pid) - before[pid]) / elapsed for pid in pids}
    return CpuSample(percent, 100 * (busy1 - busy0) / max(total1 - total0, 1))


# results --------------------------------------------------------------------------------------
@dataclass
class Cell:
    text: str
    values: tuple[float, ...] = ()
    """the numbers a ratio is taken of (for example p50 and p99)"""


@dataclass
class Row:
    metric: str
    cells: dict[str, Cell] = field(default_factory=dict)
    ratio: bool = True


class Results:
    """The table being filled, the notes under it, and the problems met on the way."""

    def __init__(self, roomlab_column: str) -> None:
        self.roomlab_column = roomlab_column
        self.rows: dict[str, Row] = {}
        self.notes: list[str] = []
        self.problems: list[tuple[str, str]] = []

    def row(self, metric: str, ratio: bool = True) -> Row:
        if metric not in self.rows:
            self.rows[metric] = Row(metric, ratio=ratio)
        return self.rows[metric]

    def set(self, metric: str, column: str, cell: Cell, ratio: bool = True) -> None:
        self.row(metric, ratio).cells[column] = cell

    def fail(self, metrics: Sequence[str], column: str, what: str, exc: BaseException) -> None:
        """Mark cells that could not be measured, and keep the reason and its traceback."""
        number = len(self.problems) + 1
        for metric in metrics:
            self.row(metric).cells.setdefault(column, Cell(f"failed [{number}]"))
        detail = exc.detail if isinstance(exc, WorkerError) else ""
        self.problems.append((f"[{number}] {what}: {type(exc).__name__}: {exc}", detail))
        progress(f"  ! {what}: {exc}")

    def note(self, text: str) -> None:
        self.notes.append(text)
        progress(f"  - {text}")

    def markdown(self, header: str) -> str:
        columns = [ROOMLAB, P2P, WS]
        titles = [self.roomlab_column, P2P, WS, "roomlab / p2p", "roomlab / WS relay"]
        lines = [header, "", "| metric | " + " | ".join(titles) + " |", "|---" * (len(titles) + 1) + "|"]
        for row in self.rows.values():
            cells = [row.cells.get(c, Cell("–")).text for c in columns]
            ratios = [ratio(row, P2P), ratio(row, WS)] if row.ratio else ["", ""]
            lines.append(f"| {row.metric} | " + " | ".join(cells + ratios) + " |")
        if self.notes:
            lines += ["", "Notes:", ""] + [f"- {n}" for n in self.notes]
        if self.problems:
            lines += ["", "Problems:", ""]
            for title, detail in self.problems:
                lines.append(f"- {title}")
                if detail.strip():
                    lines += ["", "  ```", *("  " + d for d in detail.strip().splitlines()), "  ```", ""]
        return "\n".join(lines) + "\n"


def ratio(row: Row, baseline: str) -> str:
    ours, theirs = row.cells.get(ROOMLAB), row.cells.get(baseline)
    if not ours or not theirs or not ours.values or len(ours.values) != len(theirs.values):
        return "–"
    return " / ".join(f"{a / b:.2g}×" if b else "–" for a, b in zip(ours.values, theirs.values, strict=True))


def ms(us: float) -> float:
    return us / 1000


def percentile(sorted_values: Sequence[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def rate_text(msgs_per_s: float, mb_per_s: float, size: int) -> str:
    text = f"{msgs_per_s / 1000:.1f}k msg/s" if msgs_per_s >= 1000 else f"{msgs_per_s:.0f} msg/s"
    return f"{text}, {mb_per_s:.1f} MB/s" if size >= 16384 else text


def size_text(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def subs_text(n: int) -> str:
    return f"{n} subscriber" + ("s" if n > 1 else "")


# data tracks ----------------------------------------------------------------------------------
@dataclass
class Rig:
    """One publisher and its subscribers on one transport, and every process they need."""

    column: str
    publisher: Process
    subscribers: list[Process]
    processes: list[Process | RoomlabServer]


async def roomlab_rig(launcher: Launcher, server_args: Sequence[str], n: int, record: bool = True) -> Rig:
    server = await launcher.server(server_args)
    rig = Rig(ROOMLAB, None, [], [server])  # type: ignore[arg-type]
    try:
        common = {"url": server.url, "room": ROOM}
        rig.publisher = await launcher.worker("roomlab-pub", token=server.token("publisher"), **common)
        rig.processes.append(rig.publisher)
        rig.subscribers = await launcher.workers(
            "roomlab-sub", n, lambda i: {"token": server.token(f"subscriber{i}"), "record": record, **common}
        )
        rig.processes += rig.subscribers
    except BaseException:
        await launcher.stop(rig.processes)
        raise
    return rig


async def p2p_rig(launcher: Launcher) -> Rig:
    publisher = await launcher.worker("p2p-pub")
    subscriber = await launcher.worker("p2p-sub")
    rig = Rig(P2P, publisher, [subscriber], [publisher, subscriber])
    try:
        answer = await subscriber.call("accept", offer=publisher.ready["offer"])
        await publisher.call("connect", answer=answer["answer"])
        await subscriber.call("wait_open")
    except BaseException:
        await launcher.stop(rig.processes)
        raise
    return rig


async def ws_rig(launcher: Launcher, n: int) -> Rig:
    relay = await launcher.worker("ws-relay")
    url = f"http://127.0.0.1:{relay.ready['port']}/ws"
    rig = Rig(WS, None, [], [relay])  # type: ignore[arg-type]
    try:
        rig.subscribers = await launcher.workers("ws-sub", n, lambda i: {"url": url})
        rig.processes += rig.subscribers
        rig.publisher = await launcher.worker("ws-pub", url=url)
        rig.processes.append(rig.publisher)
        joined = await relay.call("subscribers")
        if joined["subscribers"] != n:
            raise RuntimeError(f"the relay has {joined['subscribers']} subscribers, expected {n}")
    except BaseException:
        await launcher.stop(rig.processes)
        raise
    return rig


class DataBench:
    """Latency and delivered rate through one rig, written into the results."""

    def __init__(self, plan: Plan, results: Results) -> None:
        self.plan = plan
        self.results = results
        self.case = 0

    def next_case(self) -> int:
        self.case += 1
        return self.case

    @staticmethod
    def latency_metric(n: int) -> str:
        return f"data latency p50 / p99, 64 B at 100 msg/s, {subs_text(n)} (ms)"

    @staticmethod
    def rate_metric(size: int, n: int) -> str:
        return f"delivered rate, {size_text(size)}, {subs_text(n)}"

    async def collect(self, rig: Rig, expect: int, latencies: bool = False) -> list[dict[str, Any]]:
        plan = self.plan
        return list(
            await asyncio.gather(
                *(
                    s.call(
                        "collect",
                        timeout=plan.drain_cap + 30,
                        expect=expect,
                        idle=plan.idle_cap,
                        deadline=plan.drain_cap,
                        latencies=latencies,
                    )
                    for s in rig.subscribers
                )
            )
        )

    async def latency(self, rig: Rig) -> None:
        plan, n = self.plan, len(rig.subscribers)
        case = self.next_case()
        await asyncio.gather(*(s.call("reset", case=case) for s in rig.subscribers))
        count = plan.latency_messages
        await rig.publisher.call(
            "paced",
            timeout=count / plan.latency_rate + 60,
            case=case,
            size=plan.latency_size,
            rate=plan.latency_rate,
            count=count,
        )
        reports = await self.collect(rig, count, latencies=True)
        latencies = sorted(v for r in reports for v in r["latencies_us"])
        delivered = sum(r["count"] for r in reports)
        metric = self.latency_metric(n)
        if not latencies:
            raise RuntimeError("no message arrived")
        p50, p99 = ms(percentile(latencies, 0.50)), ms(percentile(latencies, 0.99))
        self.results.set(metric, rig.column, Cell(f"{p50:.2f} / {p99:.2f}", (p50, p99)))
        if delivered < count * n:
            self.results.note(
                f"{rig.column}, {metric}: {delivered} of {count * n} messages delivered within the drain cap"
            )

    async def rate(self, rig: Rig, size: int) -> None:
        plan, n = self.plan, len(rig.subscribers)
        case = self.next_case()
        metric = self.rate_metric(size, n)
        await asyncio.gather(*(s.call("reset", case=case) for s in rig.subscribers))
        sent = await rig.publisher.call(
            "flood",
            timeout=plan.flood_seconds + 60,
            case=case,
            size=size,
            seconds=plan.flood_seconds,
            max_messages=plan.flood_max_messages[size],
        )
        reports = await self.collect(rig, sent["sent"])
        delivered = sum(r["count"] for r in reports)
        if not delivered:
            raise RuntimeError(f"none of {sent['sent']} messages arrived")
        elapsed = (max(r["last_us"] for r in reports) - sent["t0_us"]) / 1e6
        msgs_per_s = delivered / elapsed
        mb_per_s = sum(r["bytes"] for r in reports) / elapsed / 1e6
        published = sent["sent"] / ((sent["t1_us"] - sent["t0_us"]) / 1e6)
        self.results.set(metric, rig.column, Cell(rate_text(msgs_per_s, mb_per_s, size), (msgs_per_s,)))
        summary = (
            f"{rig.column}, {metric}: published {sent['sent']} messages at {published:.0f} msg/s; "
            f"delivered {delivered} of {sent['sent'] * n} in {elapsed:.1f} s"
        )
        if delivered < sent["sent"] * n:
            self.results.note(summary + f" (the rest had not arrived {plan.drain_cap:.0f} s after the last send)")
        else:
            progress(f"  . {summary}")
        # let whatever is still queued drain before the next case
        quiet = await asyncio.gather(
            *(s.call("quiet", timeout=plan.drain_cap + 30, idle=0.5, cap=plan.drain_cap) for s in rig.subscribers)
        )
        if not all(q["quiet"] for q in quiet):
            self.results.note(f"{rig.column}: still receiving {plan.drain_cap:.0f} s after {metric}")

    async def run(self, rig: Rig) -> None:
        n = len(rig.subscribers)
        progress(f"data: {rig.column}, {subs_text(n)}: latency")
        try:
            await self.latency(rig)
        except Exception as exc:
            self.results.fail([self.latency_metric(n)], rig.column, f"{rig.column}, latency, {subs_text(n)}", exc)
        for size in SIZES:
            progress(f"data: {rig.column}, {subs_text(n)}: rate, {size_text(size)}")
            try:
                await self.rate(rig, size)
            except Exception as exc:
                metric = self.rate_metric(size, n)
                self.results.fail([metric], rig.column, f"{rig.column}, {metric}", exc)


async def bench_data(launcher: Launcher, server_args: Sequence[str], plan: Plan, results: Results) -> None:
    bench = DataBench(plan, results)
    for n in (1, plan.many_subscribers):  # declare the rows in reading order
        results.row(bench.latency_metric(n))
        for size in SIZES:
            results.row(bench.rate_metric(size, n))
    setups: list[tuple[str, int, Any]] = []
    for n in (1, plan.many_subscribers):
        setups.append((ROOMLAB, n, lambda n=n: roomlab_rig(launcher, server_args, n)))
        if n == 1:
            setups.append((P2P, n, lambda: p2p_rig(launcher)))
        setups.append((WS, n, lambda n=n: ws_rig(launcher, n)))
    for column, n, make in setups:
        metrics = [bench.latency_metric(n)] + [bench.rate_metric(s, n) for s in SIZES]
        try:
            progress(f"data: setting up {column}, {subs_text(n)}")
            rig = await make()
        except Exception as exc:
            results.fail(metrics, column, f"{column}, setting up {subs_text(n)}", exc)
            continue
        try:
            await bench.run(rig)
        finally:
            await launcher.stop(rig.processes)


# media ----------------------------------------------------------------------------------------
def media_metric(kind: str, k: int) -> str:
    return f"server CPU per forwarded {kind} stream, {subs_text(k)} (% of a core)"


async def bench_media(launcher: Launcher, server_args: Sequence[str], plan: Plan, results: Results) -> None:
    for kind in ("audio", "video"):
        for k in plan.media_subscribers:
            results.row(media_metric(kind, k))
    for kind in ("audio", "video"):
        metrics = [media_metric(kind, k) for k in plan.media_subscribers]
        progress(f"media: roomlab, {kind}")
        try:
            await roomlab_media(launcher, server_args, plan, results, kind)
        except Exception as exc:
            results.fail(metrics, ROOMLAB, f"roomlab, {kind} forwarding", exc)
        progress(f"media: p2p, {kind}")
        try:
            await p2p_media(launcher, plan, results, kind, metrics)
        except Exception as exc:
            results.fail(metrics, P2P, f"p2p, {kind} stream", exc)


async def roomlab_media(
    launcher: Launcher, server_args: Sequence[str], plan: Plan, results: Results, kind: str
) -> None:
    server = await launcher.server(server_args)
    processes: list[Process | RoomlabServer] = [server]
    try:
        common = {"url": server.url, "room": ROOM}
        publisher = await launcher.worker("media-pub", token=server.token("publisher"), kind=kind, **common)
        processes.append(publisher)
        await asyncio.sleep(plan.media_warmup)
        base = await measure_cpu([server.pid], plan.media_window)
        results.note(
            f"roomlab {kind}: server at {base.percent[server.pid]:.1f}% of a core with the publisher alone "
            f"(machine {base.system_busy:.0f}% busy)"
        )
        subscribers: list[Process] = []
        for k in plan.media_subscribers:
            first = len(subscribers)
            more = await launcher.workers(
                "media-sub", k - first, lambda i, first=first: {"token": server.token(f"s{first + i}"), **common}
            )
            subscribers += more
            processes += more
            await asyncio.sleep(plan.media_warmup)
            before = await asyncio.gather(*(s.call("frames") for s in subscribers))
            sample = await measure_cpu([server.pid], plan.media_window)
            after = await asyncio.gather(*(s.call("frames") for s in subscribers))
            rates = [(a["frames"] - b["frames"]) / (a["time"] - b["time"]) for a, b in zip(after, before, strict=True)]
            per_stream = (sample.percent[server.pid] - base.percent[server.pid]) / k
            results.set(media_metric(kind, k), ROOMLAB, Cell(f"{per_stream:.2f}", (per_stream,)))
            results.note(
                f"roomlab {kind}, {subs_text(k)}: server at {sample.percent[server.pid]:.1f}% of a core; "
                f"subscribers received {min(rates):.1f}-{max(rates):.1f} frames/s; "
                f"machine {sample.system_busy:.0f}% busy"
            )
    finally:
        await launcher.stop(processes)


async def p2p_media(launcher: Launcher, plan: Plan, results: Results, kind: str, metrics: Sequence[str]) -> None:
    """The same source sent straight from one aiortc peer to another: what one stream costs its ends."""
    publisher = await launcher.worker("p2p-pub", media=kind)
    subscriber = await launcher.worker("p2p-sub")
    try:
        answer = await subscriber.call("accept", offer=publisher.ready["offer"])
        await publisher.call("connect", answer=answer["answer"])
        await asyncio.sleep(plan.media_warmup)
        sample = await measure_cpu([publisher.pid, subscriber.pid], plan.media_window)
        sender, receiver = sample.percent[publisher.pid], sample.percent[subscriber.pid]
        for metric in metrics:
            results.set(metric, P2P, Cell(f"{sender + receiver:.2f}", (sender + receiver,)))
        results.note(
            f"p2p {kind}: sender {sender:.1f}% + receiver {receiver:.1f}% of a core "
            f"(machine {sample.system_busy:.0f}% busy)"
        )
    finally:
        await launcher.stop([publisher, subscriber])


# memory ---------------------------------------------------------------------------------------
async def bench_memory(launcher: Launcher, server_args: Sequence[str], plan: Plan, results: Results) -> None:
    n = plan.memory_participants
    metric = f"server memory per participant, {n} data-only participants (MiB)"
    results.row(metric)
    progress("memory: roomlab")
    try:
        server = await launcher.server(server_args)
        processes: list[Process | RoomlabServer] = [server]
        try:
            await asyncio.sleep(1.0)
            empty = rss_mib(server.pid)
            tokens = [server.token(f"idle{i}") for i in range(n)]
            group = await launcher.worker(
                "idle-participants", timeout=30 + 5 * n, url=server.url, tokens=tokens, room=ROOM
            )
            processes.append(group)
            await asyncio.sleep(1.5)
            full = rss_mib(server.pid)
            await group.call("leave", timeout=60)
            await asyncio.sleep(2.0)
            left = rss_mib(server.pid)
        finally:
            await launcher.stop(processes)
        per = (full - empty) / n
        results.set(metric, ROOMLAB, Cell(f"{per:.2f}", (per,)))
        results.note(
            f"roomlab server RSS: {empty:.1f} MiB empty, {full:.1f} MiB with {n} participants (each publishing a "
            f"data track, subscribed to every other: {n * (n - 1)} forwarded channels), {left:.1f} MiB after all left"
        )
    except Exception as exc:
        results.fail([metric], ROOMLAB, "roomlab, memory", exc)
    progress("memory: WebSocket relay")
    try:
        relay = await launcher.worker("ws-relay")
        processes = [relay]
        try:
            await asyncio.sleep(0.5)
            empty = rss_mib(relay.pid)
            url = f"http://127.0.0.1:{relay.ready['port']}/ws"
            processes.append(await launcher.worker("idle-websockets", url=url, count=n))
            await asyncio.sleep(1.0)
            full = rss_mib(relay.pid)
        finally:
            await launcher.stop(processes)
        per = (full - empty) / n
        results.set(metric, WS, Cell(f"{per:.2f}", (per,)))
        results.note(f"WebSocket relay RSS: {empty:.1f} MiB empty, {full:.1f} MiB with {n} connections")
    except Exception as exc:
        results.fail([metric], WS, "WebSocket relay, memory", exc)


# telemetry ------------------------------------------------------------------------------------
async def bench_recording(launcher: Launcher, server_args: Sequence[str], plan: Plan, results: Results) -> None:
    """The recorder's cost on the data path: 64 B to one subscriber, recording its `messages` or not."""
    metric = "telemetry: delivered rate with / without recording messages (64 B, 1 subscriber)"
    progress("telemetry: recorder overhead on the data path")
    rates: dict[bool, float] = {}
    try:
        for record in (False, True, False, True):  # interleaved, against drift in the machine's load
            scratch = Results(ROOMLAB)
            rig = await roomlab_rig(launcher, server_args, 1, record=record)
            try:
                await DataBench(plan, scratch).rate(rig, 64)
            finally:
                await launcher.stop(rig.processes)
            rate = next(iter(scratch.rows.values())).cells[ROOMLAB].values[0]
            rates[record] = max(rates.get(record, 0.0), rate)
        cost = 100 * (1 - rates[True] / rates[False])
        text = f"{rates[True] / 1000:.1f}k / {rates[False] / 1000:.1f}k msg/s (recording costs {cost:.1f}%; best of 2)"
        results.set(metric, ROOMLAB, Cell(text), ratio=False)
    except Exception as exc:
        results.fail([metric], ROOMLAB, "recording overhead", exc)


async def bench_telemetry(launcher: Launcher, plan: Plan, results: Results) -> None:
    rows = plan.telemetry_rows
    frame_metric = f"telemetry: build a {rows:,}-row messages frame (s)"
    append_metric = "telemetry: Table.append per row (µs)"
    progress("telemetry")
    try:
        worker = await launcher.worker("telemetry")
        try:
            built = await worker.call("build", timeout=600, rows=rows)
        finally:
            await launcher.stop([worker])
        results.set(frame_metric, ROOMLAB, Cell(f"{built['frame_s']:.2f}"), ratio=False)
        results.set(append_metric, ROOMLAB, Cell(f"{1e6 * built['append_s'] / rows:.2f}"), ratio=False)
    except Exception as exc:
        results.fail([frame_metric, append_metric], ROOMLAB, "telemetry", exc)


async def run_script(
    script: str, quick: bool, timeout: float, results: Results, key: str, section: str
) -> dict[str, Any] | None:
    """Run a section's script of bench/ in a process of its own; its report (the JSON of its last
    line), or None when it failed or took over `timeout` seconds (said in `results`)."""
    command = [sys.executable, str(Path(__file__).with_name(script))] + (["--quick"] if quick else [])
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        results.fail([key], ROOMLAB, section, TimeoutError(f"bench/{script} took over {timeout:g} s"))
        return None
    if process.returncode != 0:
        tail = err.decode(errors="replace")[-2000:]
        results.fail([key], ROOMLAB, section, RuntimeError(f"exit {process.returncode}: {tail}"))
        return None
    report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return report


async def bench_sim(plan: Plan, quick: bool, results: Results) -> None:
    """Simulated participants (bench/simulation.py, in a process of its own): bots per core,
    room size, link accuracy."""
    progress("sim: bots per core, room sizes, link accuracy")
    report = await run_script("simulation.py", quick, 900, results, "simulation", "sim")
    if report is None:
        return
    for row in report["bots_per_core"]:
        results.set(
            f"bots per core: {row['bots']} publish-only bots (Talker + Cursor 10 Hz) in one worker, after all joined "
            f"(in {row['join_s']} s): timer lateness p50 / max, worker CPU, cursor msg/s per bot at the server (of 10)",
            ROOMLAB,
            Cell(
                f"{row['lateness_ms_p50']} / {row['lateness_ms_max']} ms, {row['worker_cpu_pct']}% of a core, "
                f"{row['cursor_rate_per_bot']}"
            ),
            ratio=False,
        )
    for row in report["room_size"]:
        results.set(
            f"room of {row['bots']}, everyone subscribed to everyone (conversational Talkers, Cursor 10 Hz, "
            f"{row['workers']} worker{'s' if row['workers'] > 1 else ''}), after all joined: data loss, cursor latency "
            "p50 / p99, timer lateness max, CPU of the worker(s) and of the server",
            ROOMLAB,
            Cell(
                f"{row['data_loss_pct']}%, {row['latency_ms_p50']} / {row['latency_ms_p99']} ms, "
                f"{row['lateness_ms_max']} ms, {row['worker_cpu_pct']}% / {row['server_cpu_pct']}% of a core "
                f"({row['joined']} joined in {row['join_s']} s; {row['messages']} messages)"
            ),
            ratio=False,
        )
    link = report["link"]
    results.set(
        "link: loss over 10,000 packets, configured → measured",
        ROOMLAB,
        Cell(f"{link['loss_configured_pct']}% → {link['loss_measured_pct']}%"),
        ratio=False,
    )
    results.set(
        "link: added one-way delay at p50, configured → measured",
        ROOMLAB,
        Cell(f"{link['delay_configured_ms']} → {link['delay_added_p50_ms']} ms"),
        ratio=False,
    )
    results.set(
        "link: rate limit, saturating sender, configured → delivered (IP level)",
        ROOMLAB,
        Cell(f"{link['rate_configured_kbps']} → {link['rate_delivered_kbps']} kbit/s"),
        ratio=False,
    )


async def bench_quality(quick: bool, results: Results) -> None:
    """Network quality and dominant speaker (bench/quality.py, in a process of its own): server
    CPU per participant in rooms of 10 and 20."""
    progress("quality: network quality and dominant speaker, rooms of 10 and 20")
    report = await run_script("quality.py", quick, 600, results, "quality", "quality")
    if report is None:
        return
    for row in report["rooms"]:
        results.set(
            f"server CPU for network quality + dominant speaker per participant, room of {row['participants']} "
            "(conversational Talkers, everyone subscribed to everyone, all asking for both): "
            "both, quality, speaker (% of a core)",
            ROOMLAB,
            Cell(
                f"{row['both_pct_per_participant']}, {row['quality_pct_per_participant']}, "
                f"{row['speaker_pct_per_participant']} (server {row['server_cpu_pct']}% of a core in all; "
                f"{row['audio_packets_per_s']} audio packets/s at {row['level_us_per_packet']} µs each; "
                f"{row['joined']} joined)"
            ),
            ratio=False,
        )


async def bench_allocation(quick: bool, results: Results) -> None:
    """Bandwidth allocation (bench/allocation.py, in a process of its own): server CPU per
    subscriber, the estimate on SPEC §11's link steps, audio loss behind 400 kbit/s with and without."""
    progress("allocation: CPU per subscriber, the estimate on 600 -> 300 -> 3000 kbit/s, audio behind 400 kbit/s")
    report = await run_script("allocation.py", quick, 900, results, "allocation", "allocation")
    if report is None:
        return
    cpu, steps, audio = report["cpu"], report["steps"], report["audio"]
    results.set(
        f"server CPU for bandwidth allocation per subscriber, {cpu['subscribers']} subscribers of 3 camera bots "
        "(3 layers each): allocation + estimate, allocation, estimate (% of a core)",
        ROOMLAB,
        Cell(
            f"{cpu['both_pct_per_subscriber']}, {cpu['allocate_pct_per_subscriber']}, "
            f"{cpu['estimate_pct_per_subscriber']} (server {cpu['server_cpu_pct']}% of a core in all; "
            f"{cpu['passes_per_subscriber_s']} passes/s per subscriber at {cpu['us_per_pass']} µs each)"
        ),
        ratio=False,
    )
    low, high = steps["estimate_at_600_range_kbps"]
    results.set(
        "downlink estimate, 3 camera bots and a subscriber behind Link(down_kbps=600): within 25 % after "
        "joining (s); median and range over the last 8 s at 600 (kbit/s)",
        ROOMLAB,
        Cell(f"{steps['settled_within_25pct_s']} s; {steps['estimate_at_600_median_kbps']} ({low}-{high})"),
        ratio=False,
    )
    results.set(
        "downlink estimate after the drop to 300 kbit/s: below 375 after (s); median from 5 s on (kbit/s)",
        ROOMLAB,
        Cell(
            f"{steps['below_375_after_drop_s']} s; {steps['estimate_at_300_median_kbps']}"
            + (" (above 375 again later)" if steps["above_375_again"] else "")
        ),
        ratio=False,
    )
    results.set(
        "after the rise to 3000 kbit/s: allocations back above their level at 600 after (s); estimate and "
        "allocated at the end (kbit/s)",
        ROOMLAB,
        Cell(
            f"{steps['climbed_back_after_rise_s']} s (above {steps['allocated_at_600_kbps']}); "
            f"{steps['estimate_at_3000_end_kbps']}, {steps['allocated_at_3000_end_kbps']}"
        ),
        ratio=False,
    )
    with_, without = audio["with"], audio["without"]
    results.set(
        "subscriber's audio loss, 3 talking camera bots behind 400 kbit/s, with allocation / "
        "serve(bandwidth_allocation=False): whole run (from 5 s on), %",
        ROOMLAB,
        Cell(
            f"{with_['loss_pct']} ({with_['loss_from_5s_pct']}) / {without['loss_pct']} ({without['loss_from_5s_pct']})"
        ),
        ratio=False,
    )


# the run --------------------------------------------------------------------------------------
LOG_TROUBLE = re.compile(r"Traceback|Error|Exception|exception")


def scan_logs(launcher: Launcher, results: Results) -> None:
    """Report what any process wrote about errors on its stderr (roomlab logs there), once per distinct text."""
    seen: set[str] = set()
    for process in launcher.processes:
        try:
            text = process.log_path.read_text(errors="replace")
        except OSError:
            continue
        if not LOG_TROUBLE.search(text):
            continue
        lines = text.splitlines()
        excerpt = "\n".join(lines[:60])
        key = re.sub(r"\d", "", excerpt)  # the same trouble in another process or at another time
        if key in seen:
            results.problems.append((f"{process.log_path.name}: the same as above", ""))
            continue
        seen.add(key)
        more = f" (first 60 of {len(lines)} lines)" if len(lines) > 60 else ""
        title = f"{process.name} (pid {process.pid}) wrote to stderr{more}, {process.log_path}"
        results.problems.append((title, excerpt))


def machine() -> str:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=BENCH, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        commit = "?"
    return (
        f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, aiortc {aiortc.__version__}, "
        f"aiohttp {aiohttp.__version__}, roomlab {roomlab.__version__} (HEAD {commit}, plus any uncommitted changes)"
    )


async def run(args: argparse.Namespace) -> str:
    plan = QUICK if args.quick else FULL
    sections = args.only.split(",") if args.only else list(SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--only takes {', '.join(SECTIONS)}; unknown: {', '.join(sorted(unknown))}")
    server_args: list[str] = args.server_arg or []
    column = ROOMLAB + (f" (`{' '.join(server_args)}`)" if server_args else "")
    results = Results(column)
    log_dir = Path(tempfile.mkdtemp(prefix="roomlab-bench-"))
    launcher = Launcher(log_dir)
    started = time.monotonic()
    load_before = Path("/proc/loadavg").read_text().split()[0]  # others' work on the machine shows here
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        if "data" in sections:
            await bench_data(launcher, server_args, plan, results)
        if "media" in sections:
            await bench_media(launcher, server_args, plan, results)
        if "memory" in sections:
            await bench_memory(launcher, server_args, plan, results)
        if "telemetry" in sections:
            await bench_telemetry(launcher, plan, results)
            await bench_recording(launcher, server_args, plan, results)
        if "sim" in sections:
            await bench_sim(plan, args.quick, results)
        if "quality" in sections:
            await bench_quality(args.quick, results)
        if "allocation" in sections:
            await bench_allocation(args.quick, results)
    finally:
        await launcher.stop_all()
    scan_logs(launcher, results)
    leftovers = [p.pid for p in launcher.processes if p.proc.returncode is None]
    if leftovers:
        results.note(f"processes that would not stop: {leftovers}")
    results.note(f"worker and server logs: {log_dir}")
    duration = time.monotonic() - started
    load = f"load average {load_before} before, {Path('/proc/loadavg').read_text().split()[0]} after"
    header = (
        f"# roomlab bench{' (--quick)' if args.quick else ''}\n\n"
        f"{date}; {machine()}; took {duration:.0f} s; {load}.\n"
        f"Ratios are roomlab / baseline: above 1× means roomlab is higher (slower, for latency and CPU; "
        f"for rates, above 1× means roomlab delivers more)."
    )
    return results.markdown(header)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer messages and shorter windows (under ~2 min)")
    parser.add_argument("--only", default="", help=f"comma-separated sections to run: {','.join(SECTIONS)}")
    parser.add_argument(
        "--server-arg",
        action="append",
        help="an extra argument for `roomlab serve` (repeatable; write --server-arg=--option for options)",
    )
    parser.add_argument("--out", default=str(BENCH / "RESULTS.md"), help="where to write the table")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    print(report)
    Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
