"""The simulation rows of the bench, run in a process of their own (`python bench/simulation.py`
prints JSON), so that the roomlab server, in this process's thread, and the bots' worker
process are the only load:

- bots per core: publish-only bots (Talker + Cursor at 10 Hz) in one worker process; is the
  worker keeping real time (timer lateness, messages sent against those due, CPU)?
- room size: rooms where every bot subscribes to every other, conversational talkers (about one
  speaker at a time) and cursors at 10 Hz on clean links; data loss, latency, timer lateness,
  for a growing number of participants.
- link accuracy: two aiortc peers with a roomlab.Link between them: loss over 10,000 packets,
  added delay at p50, delivered rate of a saturating sender.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

import pandas as pd

import roomlab
from roomlab.net import ice
from roomlab.sim import Cursor, Talker


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 10 ms


def upstream_counts(server: Any, room: str) -> int:
    """Messages the server has received on the room's data-track channels, in its last sample."""
    dc = server.frame("data_channel_stats")
    dc = dc[(dc["label"].str.startswith("MT")) & (dc["participant"].str.startswith(room))]
    return int(dc.groupby("label", observed=True)["messages_received"].max().sum()) if len(dc) else 0


async def run_sim(server: Any, room: str, n: int, seconds: float, subscribe: bool, workers: int = 1) -> dict[str, Any]:
    """Run n bots; measure over a steady window that starts once all have joined."""
    sim = roomlab.Simulation(server, room=room, workers=workers, seed=1)
    talk = Talker(mean_talk_s=3.0, mean_silence_s=3.0 * max(1, n - 1))  # about one speaker at a time
    sim.add(n, identity=f"{room}-{{i}}", audio=talk, data=[Cursor(rate_hz=10)], subscribe=subscribe)
    run = asyncio.ensure_future(sim.run(seconds, progress=False))
    while not sim._workers:
        await asyncio.sleep(0.05)
    while len(sim._workers) < workers:
        await asyncio.sleep(0.05)
    pids = [w.process.pid for w in sim._workers]
    deadline = time.monotonic() + seconds
    while sum(1 for s in sim.states.values() if s == "joined") < n and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    joined_after = time.monotonic() - (sim._started_wall - time.time() + time.monotonic())
    await asyncio.sleep(2.0)  # settle: the last negotiations, and a fresh server sample
    window_start = pd.Timestamp.now(tz="UTC")
    count_before, wall_before = upstream_counts(server, room), time.monotonic()
    cpu_before = [cpu_seconds(pid) for pid in pids]
    server_before = cpu_seconds(os.getpid())  # the server runs in this process
    window = max(3.0, deadline - time.monotonic() - 2.0)
    await asyncio.sleep(window)
    elapsed = time.monotonic() - wall_before
    count_after = upstream_counts(server, room)
    worker_cpu = [(cpu_seconds(pid) - before) / elapsed for pid, before in zip(pids, cpu_before, strict=True)]
    server_cpu = (cpu_seconds(os.getpid()) - server_before) / elapsed
    window_end = pd.Timestamp.now(tz="UTC")
    await run
    lateness = sorted(sim.lateness.values())  # since the last bot joined
    result: dict[str, Any] = {
        "bots": n,
        "workers": workers,
        "server_cpu_pct": round(100 * server_cpu, 1),
        "joined": sum(1 for s in sim.states.values() if s in ("joined", "left")),
        "join_s": round(joined_after, 1),
        "window_s": round(elapsed, 1),
        "worker_cpu_pct": " + ".join(f"{100 * c:.1f}" for c in worker_cpu),
        "lateness_ms_p50": round(1000 * lateness[len(lateness) // 2], 1),
        "lateness_ms_max": round(1000 * lateness[-1], 1),
        # cursor and chat-free rooms: each bot's cursor sends 10 msg/s; what reached the server per bot
        "cursor_rate_per_bot": round((count_after - count_before) / elapsed / n, 2),
    }
    if subscribe:
        messages = sim.frame("messages")
        cursor = messages[(messages["track"] == "cursor") & messages["time"].between(window_start, window_end)]
        loss = roomlab.frames.loss(cursor)
        result["data_loss_pct"] = round(100 * loss["lost"].sum() / max(1, loss["sent"].sum()), 2)
        result["latency_ms_p50"] = round(float(cursor["latency_ms"].median()), 2)
        result["latency_ms_p99"] = round(float(cursor["latency_ms"].quantile(0.99)), 2)
        result["messages"] = len(cursor)
    return result


async def link_accuracy() -> dict[str, Any]:
    from aiortc import RTCPeerConnection

    async def pair(link: roomlab.Link | None, **options: Any) -> tuple[Any, Any, Any, Any]:
        pc1, pc2 = RTCPeerConnection(ice.rtc_configuration()), RTCPeerConnection(ice.rtc_configuration())
        if link is not None:
            link.attach(pc1)
        channel = pc1.createDataChannel("accuracy", **options)
        remote: list[Any] = []
        pc2.on("datachannel", remote.append)
        await pc1.setLocalDescription(await pc1.createOffer())
        await pc2.setRemoteDescription(pc1.localDescription)
        await pc2.setLocalDescription(await pc2.createAnswer())
        await pc1.setRemoteDescription(pc2.localDescription)
        while not (remote and channel.readyState == "open" and remote[0].readyState == "open"):
            await asyncio.sleep(0.01)
        return pc1, pc2, channel, remote[0]

    results: dict[str, Any] = {}
    # loss: 10,000 small unreliable messages, one datagram each, through a 10% loss link
    pc1, pc2, channel, remote = await pair(roomlab.Link(loss=0.10, seed=1), ordered=False, maxRetransmits=0)
    got = [0]
    remote.on("message", lambda m: got.__setitem__(0, got[0] + 1))
    for i in range(10_000):
        channel.send(b"%05d" % i)
        if i % 20 == 19:
            await asyncio.sleep(0.002)
    await asyncio.sleep(1.0)
    results["loss_configured_pct"] = 10.0
    results["loss_measured_pct"] = round(100 * (1 - got[0] / 10_000), 2)
    await pc1.close()
    await pc2.close()

    # delay: one-way latency p50 without and with a 50 ms link, in the same run
    async def latency_p50(link: roomlab.Link | None) -> float:
        pc1, pc2, channel, remote = await pair(link)
        samples: list[float] = []
        remote.on("message", lambda m: samples.append(time.perf_counter() - float(m)))
        for _ in range(300):
            channel.send(repr(time.perf_counter()))
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        await pc1.close()
        await pc2.close()
        return 1000 * statistics.median(samples)

    base = await latency_p50(None)
    delayed = await latency_p50(roomlab.Link(delay_ms=50, seed=1))
    results["delay_configured_ms"] = 50.0
    results["delay_added_p50_ms"] = round(delayed - base, 2)

    # rate: a saturating reliable sender through 2000 kbit/s up, delivered IP-level bitrate
    link = roomlab.Link(up_kbps=2000, seed=1)
    pc1, pc2, channel, remote = await pair(link)
    stop = time.monotonic() + 5
    while time.monotonic() < stop:
        if channel.bufferedAmount < 256 * 1024:
            channel.send(b"r" * 1024)
        else:
            await asyncio.sleep(0.005)
        if time.monotonic() > stop - 4 and "start" not in results:
            results["start"] = (time.monotonic(), link.stats()["up"]["bytes_delivered"])
    started, bytes_then = results.pop("start")
    delivered = link.stats()["up"]["bytes_delivered"] - bytes_then
    results["rate_configured_kbps"] = 2000
    results["rate_delivered_kbps"] = round(delivered * 8 / (time.monotonic() - started) / 1000, 1)
    await pc1.close()
    await pc2.close()
    return results


async def main(quick: bool) -> None:
    seconds = 15.0 if quick else 25.0
    report: dict[str, Any] = {"link": await link_accuracy()}
    with roomlab.serve() as server:
        report["bots_per_core"] = [await run_sim(server, "publish", 50, seconds, subscribe=False)]
        sizes = (10, 20) if quick else (10, 20, 30)
        report["room_size"] = [await run_sim(server, f"room{n}", n, seconds, subscribe=True) for n in sizes]
        report["room_size"].append(await run_sim(server, "room30x2", 30, seconds, subscribe=True, workers=2))
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main("--quick" in sys.argv))
