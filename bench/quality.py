"""The network quality and dominant speaker rows of the bench, run in a process of their own
(`python bench/quality.py` prints JSON): what computing levels and the dominant speaker costs the
server, per participant, in rooms of 10 and 20.

The server runs in this process's thread; the bots in one worker process: conversational Talkers
(about one speaker at a time), everyone subscribed to everyone, every bot asking for its level at
`detailed`, the others' at `moderate`, and for the dominant speaker (so the signaling to them is
counted too). Over a steady window the server thread's CPU time is counted where the work is:

- quality: `NetworkQuality.update` (measurements, meters, the `network_quality` rows, the
  messages to clients; once a second) and the RTCP observer (`ParticipantNetwork.on_rtcp`, every
  RTCP packet), each call timed with the thread's CPU clock;
- speaker: `DominantSpeakers.decide` (every 200 ms), timed the same way, and the per-packet level
  observation (an `AudioPassThrough` with an observer, calling the detector), which is too quick to
  time call by call: its packets are counted in the run and its cost per packet timed apart
  (timeit, in this process, against the same detector with as many tracks).

Per participant = CPU seconds / window seconds / participants, in % of one core. The server's
whole CPU over the window is given beside it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

from aiortc.rtp import RtpPacket

import roomlab
from roomlab.net.rtp import AudioPassThrough
from roomlab.policy.speaker import DominantSpeaker
from roomlab.server.dominant_speaker import DominantSpeakers
from roomlab.server.measurements import ParticipantNetwork
from roomlab.server.network_quality import NetworkQuality
from roomlab.sim import Talker


class Account:
    """Thread CPU seconds spent in the wrapped functions, and how many packets were observed."""

    def __init__(self) -> None:
        self.seconds = {"quality": 0.0, "speaker": 0.0}
        self.packets = 0

    def timed(self, what: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[what] += time.thread_time() - started

        return wrapper

    def counted(self, observe: Callable[[int], None]) -> Callable[[int], None]:
        def on_level(level: int) -> None:
            self.packets += 1
            observe(level)

        return on_level

    def snapshot(self) -> tuple[float, float, int]:
        return self.seconds["quality"], self.seconds["speaker"], self.packets


def instrument(account: Account) -> None:
    """Wrap the server's quality and speaker work (before the server starts)."""
    NetworkQuality.update = account.timed("quality", NetworkQuality.update)  # type: ignore[method-assign]
    ParticipantNetwork.on_rtcp = account.timed("quality", ParticipantNetwork.on_rtcp)  # type: ignore[method-assign]
    DominantSpeakers.decide = account.timed("speaker", DominantSpeakers.decide)  # type: ignore[method-assign]
    observer = DominantSpeakers.observer

    def counted_observer(self: DominantSpeakers, track: Any) -> Callable[[int], None]:
        return account.counted(observer(self, track))

    DominantSpeakers.observer = counted_observer  # type: ignore[method-assign]


def per_packet_seconds(tracks: int) -> float:
    """CPU seconds one audio packet's level costs: the observer call in the pass-through buffer and
    the detector's `observe`, less the buffer without an observer."""
    detector = DominantSpeaker()
    clock = time.monotonic
    observers = []
    for number in range(tracks):
        key = f"MT{number}"
        detector.observe(key, clock(), 30)

        def on_level(level: int, key: str = key) -> None:
            detector.observe(key, clock(), level)

        observers.append(on_level)
    packet = RtpPacket(payload_type=111, sequence_number=0, timestamp=0)
    packet.extensions.audio_level = (False, 30)
    packet._data = b"x" * 60  # type: ignore[attr-defined]

    def run(buffer: AudioPassThrough) -> float:
        def step() -> None:
            packet.sequence_number = (packet.sequence_number + 1) & 0xFFFF
            buffer.add(packet)

        number = 200_000
        return min(timeit.repeat(step, number=number, repeat=5)) / number

    return max(0.0, run(AudioPassThrough(observers[0])) - run(AudioPassThrough()))


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


async def room(server: Any, account: Account, n: int, seconds: float) -> dict[str, Any]:
    name = f"quality{n}"
    sim = roomlab.Simulation(server, room=name, workers=1, seed=1)
    talk = Talker(mean_talk_s=3.0, mean_silence_s=3.0 * max(1, n - 1))
    sim.add(
        n,
        identity=f"{name}-{{i}}",
        audio=talk,
        network_quality={"local": "detailed", "remote": "moderate"},
        dominant_speaker=True,
    )
    run = asyncio.ensure_future(sim.run(seconds, progress=False))
    deadline = time.monotonic() + seconds
    while sum(1 for s in sim.states.values() if s == "joined") < n and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(3.0)  # the last negotiations; every participant measured at least twice
    before, wall, server_before = account.snapshot(), time.monotonic(), cpu_seconds(os.getpid())
    await asyncio.sleep(max(3.0, deadline - time.monotonic() - 1.0))
    after, elapsed = account.snapshot(), time.monotonic() - wall
    server_cpu = (cpu_seconds(os.getpid()) - server_before) / elapsed
    await run
    packets = after[2] - before[2]
    packet_s = per_packet_seconds(n)
    quality = (after[0] - before[0]) / elapsed
    speaker = (after[1] - before[1] + packets * packet_s) / elapsed
    rows = sim.frame("network_quality")
    return {
        "participants": n,
        "joined": sum(1 for s in sim.states.values() if s in ("joined", "left")),
        "window_s": round(elapsed, 1),
        "quality_pct_per_participant": round(100 * quality / n, 3),
        "speaker_pct_per_participant": round(100 * speaker / n, 3),
        "both_pct_per_participant": round(100 * (quality + speaker) / n, 3),
        "server_cpu_pct": round(100 * server_cpu, 1),
        "audio_packets_per_s": round(packets / elapsed),
        "level_us_per_packet": round(1e6 * packet_s, 3),
        "levels_recorded": len(rows),
    }


async def main(quick: bool) -> None:
    account = Account()
    instrument(account)
    seconds = 14.0 if quick else 24.0
    with roomlab.serve() as server:
        report = {"rooms": [await room(server, account, n, seconds) for n in (10, 20)]}
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main("--quick" in sys.argv))
