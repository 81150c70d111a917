"""Dominant speaker end to end (SPEC §10): levels read by the server from forwarded audio packets,
the floor decided per room, `dominant_speaker_changed` on clients that asked, `events` rows."""

from __future__ import annotations

import asyncio
import fractions
import math
import time

import av
import numpy as np
from aiortc import MediaStreamTrack

import roomlab
from roomlab.sim import Talker

from .conftest import eventually

RATE = 48_000
FRAME = 960  # 20 ms


class Voice(MediaStreamTrack):
    """A 20 ms-paced audio source that is a loud tone while `loud` and digital silence otherwise:
    aiortc encodes it and stamps each packet's RFC 6464 level itself."""

    kind = "audio"

    def __init__(self, loud: bool = False) -> None:
        super().__init__()
        self.loud = loud
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME
            await asyncio.sleep(max(0.0, self._start + self._pts / RATE - time.monotonic()))
        t = (np.arange(FRAME) + self._pts) / RATE
        amplitude = 0.3 * 32767 if self.loud else 0.0
        samples = (amplitude * np.sin(2 * math.pi * 300 * t)).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self._pts, fractions.Fraction(1, RATE)
        return frame


def floor_changes(server: roomlab.Server, room: str) -> list[tuple[str | None, str]]:
    events = server.frame("events")
    rows = events[(events["room"] == room) & (events["event"] == "dominant-speaker-changed")]
    return [(None if isinstance(i, float) else i, d) for i, d in zip(rows["identity"], rows["detail"], strict=True)]


async def test_dominant_speaker_follows_a_simulated_talker_among_silent_bots(server, join):
    sim = roomlab.Simulation(server, room="standup", workers=0, seed=3)
    sim.add(2, identity="quiet-{i}", audio=Talker(mean_talk_s=0.001, mean_silence_s=1000))
    sim.add(identity="talker", audio=Talker(mean_talk_s=1000, mean_silence_s=0.001), dominant_speaker=True)
    run = asyncio.ensure_future(sim.run(8, progress=False))
    try:
        listener = await join("listener", room="standup", dominant_speaker=True)
        heard: list[str | None] = []
        listener.on("dominant_speaker_changed", lambda p: heard.append(p.identity if p is not None else None))
        speaker = await eventually(lambda: listener.dominant_speaker, timeout=8)
        assert speaker is not None and speaker.identity == "talker"
        await asyncio.sleep(2)
        assert listener.dominant_speaker is speaker
        assert heard in ([], ["talker"])  # the current speaker may already have been set on joining
    finally:
        await run
    changes = floor_changes(server, "standup")
    assert changes[0][0] == "talker" and changes[0][1].startswith("took-floor")
    assert [identity for identity, _ in changes if identity is not None] == ["talker"]


async def test_a_cough_does_not_steal_the_floor_and_a_new_talker_takes_it(server, join):
    talker, cougher = Voice(loud=True), Voice()
    await join("talker", room="meeting", tracks=[roomlab.LocalAudioTrack(talker)])
    await join("cougher", room="meeting", tracks=[roomlab.LocalAudioTrack(cougher)])
    listener = await join("listener", room="meeting", dominant_speaker=True)
    heard: list[str | None] = []
    listener.on("dominant_speaker_changed", lambda p: heard.append(p.identity if p is not None else None))
    speaker = await eventually(lambda: listener.dominant_speaker, timeout=8)
    assert speaker is not None and speaker.identity == "talker"  # a tone from aiortc's encoder carries levels
    for _ in range(3):  # three coughs of 300 ms, a second apart
        cougher.loud = True
        await asyncio.sleep(0.3)
        cougher.loud = False
        await asyncio.sleep(1.0)
    assert listener.dominant_speaker.identity == "talker"
    talker.loud, cougher.loud = False, True
    taken_at = time.monotonic()
    new = await eventually(lambda: listener.dominant_speaker.identity == "cougher", timeout=5)
    assert new, f"the floor stayed with {listener.dominant_speaker.identity}"
    assert time.monotonic() - taken_at < 3.0
    assert heard[-1] == "cougher" and "cougher" not in heard[:-1]
    changes = [identity for identity, _ in floor_changes(server, "meeting")]
    assert changes == ["talker", "cougher"]


async def test_only_clients_that_asked_hear_of_the_dominant_speaker(join):
    await join("talker", room="asked", tracks=[roomlab.LocalAudioTrack.tone()])
    asked = await join("asked", room="asked", dominant_speaker=True)
    other = await join("other", room="asked")
    assert await eventually(lambda: asked.dominant_speaker, timeout=8)
    await asyncio.sleep(0.5)
    assert other.dominant_speaker is None
