"""One simulated participant: who it is, what it does, on which link, when it joins and leaves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from ..client.connect import connect
from ..client.media_track import RemoteVideoTrack
from ..client.room import Room
from ..net.link import Link
from .behaviours import Behaviour

log = logging.getLogger(__name__)


@dataclass
class BotSpec:
    """Everything a worker process needs to run one bot (plain, picklable data)."""

    identity: str
    token: str
    behaviours: list[Behaviour] = field(default_factory=list)
    link: dict[str, Any] | None = None
    """Link parameters (roomlab.Link keyword arguments), or None for an unimpaired path."""
    join_at: float = 0.0
    """Seconds after the start of the run."""
    leave_at: float | None = None
    """Seconds after the start of the run; None: stays to the end."""
    subscribe: bool = True
    """Subscribe to the others' tracks (False: publish only, Twilio's automaticSubscription=false)."""
    link_seed: int | None = None
    """Seed of the link made when a bot given none has its link changed."""
    network_quality: Any = False
    """`connect(network_quality=...)`: False, True, or {"local": ..., "remote": ...}."""
    dominant_speaker: bool = False
    """`connect(dominant_speaker=...)`."""
    bandwidth_profile: dict[str, Any] | None = None
    """`connect(bandwidth_profile=...)`: Twilio's options in snake case (None: Twilio's defaults)."""


class Bot:
    """Runs a BotSpec: joins at its time, runs its behaviours, leaves at its time or the end."""

    def __init__(self, spec: BotSpec, url: str, room: str) -> None:
        self.spec = spec
        self.url = url
        self.room_name = room
        self.room: Room | None = None
        self.link: Any = None
        self.state = "waiting"
        self.error: str | None = None
        self._stop = asyncio.Event()

    @property
    def identity(self) -> str:
        return self.spec.identity

    async def run(self, started: float, duration: float) -> None:
        loop = asyncio.get_running_loop()
        end = started + duration
        if self.spec.leave_at is not None:
            end = min(end, started + self.spec.leave_at)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, started + self.spec.join_at - loop.time()))
            if self._stop.is_set():  # stopped before its time to join: it never does
                return
            self.state = "joining"
            tracks = [(track, behaviour) for behaviour in self.spec.behaviours for track in behaviour.tracks()]
            if self.link is None and self.spec.link:
                self.link = Link(**self.spec.link)
            self.room = await connect(
                self.url,
                self.spec.token,
                name=self.room_name,
                decode_media=False,
                link=self.link,
                automatic_subscription=self.spec.subscribe,
                network_quality=self.spec.network_quality,
                dominant_speaker=self.spec.dominant_speaker,
                bandwidth_profile=self.spec.bandwidth_profile,
            )
            assert self.room.local_participant is not None
            for track, behaviour in tracks:  # as connect(tracks=...) would, with each behaviour's priority
                priority = getattr(behaviour, "priority", "standard")
                await self.room.local_participant.publish_track(track, priority=priority)
            self.state = "joined"
            tasks = [asyncio.ensure_future(b.run(self.room, self._stop)) for b in self.spec.behaviours]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, end - loop.time()))
            self._stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.state = "left"
        except Exception as exc:  # one bot failing must not take the others down
            self.state = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("bot %s failed: %s", self.identity, self.error)
        finally:
            self._stop.set()
            if self.room is not None:
                await self.room.disconnect()

    def stop(self) -> None:
        self._stop.set()

    def change_link(self, changes: dict[str, Any]) -> None:
        """Change this bot's link; a bot without one gets one now, unconstrained but for the changes
        (until then its datagrams took no detour through a link)."""
        if self.link is None:
            self.link = Link(seed=self.spec.link_seed)
            if self.room is not None:
                self.link.attach(self.room.pc)
                self.room.link = self.link
        self.link.update(**changes)

    def set_bandwidth_profile(self, options: dict[str, Any]) -> None:
        """Change this bot's Bandwidth Profile (as its `set_bandwidth_profile` would); it must have joined."""
        self._joined().local_participant.set_bandwidth_profile(options)  # type: ignore[union-attr]

    def set_track_priority(self, track_sid: str, priority: str | None) -> None:
        """This bot's own priority for a video track it receives (None: the publisher's)."""
        for participant in self._joined().participants.values():
            publication = participant.tracks.get(track_sid)
            if publication is not None and isinstance(publication.track, RemoteVideoTrack):
                publication.track.set_priority(priority)
                return
        raise ValueError(f"bot {self.identity} receives no video track {track_sid!r}")

    def _joined(self) -> Room:
        if self.room is None or self.room.local_participant is None or self.state != "joined":
            raise ValueError(f"bot {self.identity} is not in the room (it is {self.state})")
        return self.room

    @property
    def lateness(self) -> float:
        return max((b.lateness for b in self.spec.behaviours), default=0.0)

    def reset_lateness(self) -> None:
        for behaviour in self.spec.behaviours:
            behaviour.reset_lateness()


def settle(bots: list[Bot], joined_before: int) -> int:
    """When every bot whose time has come has joined and one more did since last time, start
    counting timer lateness afresh: joining is handshakes, not the steady load being measured.
    Returns the number joined now."""
    joined = sum(1 for bot in bots if bot.state == "joined")
    if joined > joined_before and not any(bot.state == "joining" for bot in bots):
        for bot in bots:
            bot.reset_lateness()
    return joined
