"""The bandwidth allocation rows of the bench, run in a process of their own (`python
bench/allocation.py` prints JSON):

- cpu: what allocating costs the server per subscriber: three camera bots (three layers each) and
  subscriber bots in one worker process, everyone subscribed to the cameras; over a steady window
  the server thread's CPU time in `BandwidthAllocation.allocate` (the per-subscriber pass: inputs,
  the pure allocator, layers to the forwarder, pacing, the `allocations` rows) and in
  `DownlinkEstimator.update` (the estimate, once a second per subscriber), each call timed with the
  thread's CPU clock; per subscriber = CPU seconds / window / subscribers, in % of one core;
- steps: the estimate on an emulated downlink: three camera bots and a subscriber bot behind
  `Link(down_kbps=600)`, dropped to 300, raised to 3000 (SPEC §11's steps), read from the
  `allocations` rows (the estimate of each pass, the allocated sum);
- audio: three talking camera bots and a subscriber behind 400 kbit/s, the subscriber's audio loss
  from its own `rtc_stats`, with allocation and with `serve(bandwidth_allocation=False)`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

import roomlab
from roomlab.policy.bandwidth_estimate import DownlinkEstimator
from roomlab.server.allocation import BandwidthAllocation
from roomlab.sim import Camera, Talker


class Account:
    """Thread CPU seconds spent in the wrapped functions."""

    def __init__(self) -> None:
        self.seconds = {"allocate": 0.0, "estimate": 0.0}
        self.calls = {"allocate": 0, "estimate": 0}

    def timed(self, what: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[what] += time.thread_time() - started
                self.calls[what] += 1

        return wrapper

    def snapshot(self) -> tuple[dict[str, float], dict[str, int]]:
        return dict(self.seconds), dict(self.calls)


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


async def cpu(account: Account, subscribers: int, seconds: float) -> dict[str, Any]:
    with roomlab.serve() as server:
        sim = roomlab.Simulation(server, room="allocation", workers=1, seed=1)
        sim.add(3, identity="cam-{i}", video=Camera(), subscribe=False)
        sim.add(subscribers, identity="sub-{i}")
        run = asyncio.ensure_future(sim.run(seconds, progress=False))
        deadline = time.monotonic() + seconds
        while sum(1 for s in sim.states.values() if s == "joined") < subscribers + 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(4.0)  # subscriptions negotiated, estimates under way
        (before, calls_before), wall, server_before = account.snapshot(), time.monotonic(), cpu_seconds(os.getpid())
        await asyncio.sleep(max(3.0, deadline - time.monotonic() - 1.0))
        (after, calls_after), elapsed = account.snapshot(), time.monotonic() - wall
        server_cpu = (cpu_seconds(os.getpid()) - server_before) / elapsed
        await run
        rows = sim.frame("allocations")
    allocate = (after["allocate"] - before["allocate"]) / elapsed
    estimate = (after["estimate"] - before["estimate"]) / elapsed
    passes = calls_after["allocate"] - calls_before["allocate"]
    return {
        "subscribers": subscribers,
        "window_s": round(elapsed, 1),
        "allocate_pct_per_subscriber": round(100 * allocate / subscribers, 3),
        "estimate_pct_per_subscriber": round(100 * estimate / subscribers, 3),
        "both_pct_per_subscriber": round(100 * (allocate + estimate) / subscribers, 3),
        "passes_per_subscriber_s": round(passes / elapsed / subscribers, 2),
        "us_per_pass": round(1e6 * (after["allocate"] - before["allocate"]) / max(passes, 1)),
        "server_cpu_pct": round(100 * server_cpu, 1),
        "rows": len(rows),
    }


async def steps(quick: bool) -> dict[str, Any]:
    at_600, at_300, total = (16, 8, 40) if quick else (24, 10, 64)
    with roomlab.serve() as server:
        sim = roomlab.Simulation(server, room="steps", workers=0, seed=7)
        sim.add(3, identity="cam-{i}", video=Camera(), subscribe=False)
        sim.add(identity="sub", link={"down_kbps": 600})
        sim.at(at_600, "sub", down_kbps=300)
        sim.at(at_600 + at_300, "sub", down_kbps=3000)
        await sim.run(total, progress=False)
        rows = server.frame("allocations")
        started = server.frame("events")["time"].min()
    rows = rows[rows["subscriber"] == "sub"]
    passes = (
        rows.assign(t=(rows["time"] - started).dt.total_seconds())
        .groupby("time")
        .agg(t=("t", "first"), estimate=("estimate_bps", "first"), allocated=("allocated_bps", "sum"))
    )

    def during(start: float, end: float) -> pd.DataFrame:
        return passes[(passes["t"] >= start) & (passes["t"] < end)]

    first = during(0, at_600)
    outside = first[~first["estimate"].between(450e3, 750e3)]
    settled_at = float(outside["t"].iloc[-1]) if len(outside) else float(first["t"].iloc[0])
    joined = float(first["t"].iloc[0])
    drop = during(at_600, at_600 + at_300)
    below = drop[drop["estimate"] < 375e3]
    above_after = drop[(drop["estimate"] >= 375e3) & (drop["t"] > (below["t"].iloc[0] if len(below) else 1e9))]
    before = during(at_600 - 8, at_600)["allocated"].median()
    rise = during(at_600 + at_300, total)
    back = rise[rise["allocated"] > before]
    return {
        "settled_within_25pct_s": round(settled_at - joined, 1),
        "estimate_at_600_median_kbps": round(during(at_600 - 8, at_600)["estimate"].median() / 1e3),
        "estimate_at_600_range_kbps": [
            round(during(at_600 - 8, at_600)["estimate"].min() / 1e3),
            round(during(at_600 - 8, at_600)["estimate"].max() / 1e3),
        ],
        "below_375_after_drop_s": round(float(below["t"].iloc[0]) - at_600, 1) if len(below) else None,
        "above_375_again": len(above_after) > 0,
        "estimate_at_300_median_kbps": round(drop[drop["t"] >= at_600 + 5]["estimate"].median() / 1e3),
        "allocated_at_600_kbps": round(before / 1e3),
        "climbed_back_after_rise_s": round(float(back["t"].iloc[0]) - at_600 - at_300, 1) if len(back) else None,
        "estimate_at_3000_end_kbps": round(rise["estimate"].iloc[-3:].median() / 1e3),
        "allocated_at_3000_end_kbps": round(rise["allocated"].iloc[-3:].median() / 1e3),
    }


async def audio(allocation: bool, seconds: float) -> dict[str, Any]:
    with roomlab.serve(bandwidth_allocation=allocation) as server:
        sim = roomlab.Simulation(server, room="talk", workers=0, seed=6)
        talking = Talker(mean_talk_s=1000, mean_silence_s=0.001)
        sim.add(3, identity="cam-{i}", audio=talking, video=Camera(), subscribe=False)
        sim.add(identity="sub", link={"down_kbps": 400})
        await sim.run(seconds, progress=False)
        stats = sim.frame("rtc_stats")
    rows = stats[
        (stats["participant"] == "sub")
        & (stats["source"] == "client")
        & (stats["direction"] == "inbound")
        & (stats["kind"] == "audio")
    ].sort_values("time")
    last = rows.groupby("track", observed=True)[["packets", "packets_lost"]].last().sum()
    settled = rows[(rows["time"] - rows["time"].min()).dt.total_seconds() >= 5]
    first = settled.groupby("track", observed=True)[["packets", "packets_lost"]].first().sum()
    lost, received = last["packets_lost"] - first["packets_lost"], last["packets"] - first["packets"]
    return {
        "loss_pct": round(100 * float(last["packets_lost"]) / float(last.sum()), 2),
        "loss_from_5s_pct": round(100 * float(lost) / float(lost + received), 2),
        "packets": int(last["packets"]),
    }


async def main(quick: bool) -> None:
    account = Account()
    BandwidthAllocation.allocate = account.timed("allocate", BandwidthAllocation.allocate)  # type: ignore[method-assign]
    DownlinkEstimator.update = account.timed("estimate", DownlinkEstimator.update)  # type: ignore[method-assign]
    report: dict[str, Any] = {"cpu": await cpu(account, 6 if quick else 10, 16.0 if quick else 24.0)}
    report["steps"] = await steps(quick)
    seconds = 20.0 if quick else 30.0
    report["audio"] = {"with": await audio(True, seconds), "without": await audio(False, seconds)}
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main("--quick" in sys.argv))
