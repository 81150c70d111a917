"""`roomlab.connect()`: join a room on a roomlab server, as Twilio's `connect(token, options)`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..net.link import Link
from ..policy.allocation import BandwidthProfile
from ..policy.quality import NetworkQualityConfiguration
from .data_track import LocalDataTrack
from .media_track import LocalMediaTrack
from .room import Room


async def connect(
    url: str,
    token: str,
    name: str | None = None,
    tracks: Sequence[LocalDataTrack | LocalMediaTrack] = (),
    automatic_subscription: bool = True,
    metadata: str = "",
    ice_servers: list[Any] | None = None,
    decode_media: bool = True,
    link: Link | None = None,
    record: bool = True,
    network_quality: Any = False,
    dominant_speaker: bool = False,
    bandwidth_profile: Any = None,
) -> Room:
    """Join the room `name` (or the one the token grants) and publish `tracks`.

    Returns once the connection with the server is up, its data channels are open and every
    track is published. `automatic_subscription=False` starts from Twilio's "exclude all" rule;
    subscribe rules set over REST take effect live. `ice_servers` is empty unless you set it.
    `decode_media=False` receives audio and video without decoding them (counted, and `recv()`
    gives encoded frames): what simulated participants do.
    `link` (a `roomlab.Link`) shapes the path between this participant and the server.
    `record=False` keeps no `messages` rows (the other telemetry tables are still sampled).
    `network_quality`: Twilio's Network Quality API (True: your own level, nothing of the
    others; or `{"local": ..., "remote": ...}` with verbosities 0-3 or none, minimal, moderate,
    detailed). `dominant_speaker=True`: `room.dominant_speaker` and `dominant_speaker_changed`.
    `bandwidth_profile`: Twilio's Bandwidth Profile options in snake case, `{"video": {"mode": ...,
    "max_subscription_bitrate": ..., "max_tracks": ..., "render_dimensions": ...,
    "dominant_speaker_priority": ..., "track_switch_off_mode": ...}}` (None: Twilio's defaults,
    grid and predicted): how the server divides your downlink among the video you receive.
    Refusals raise `roomlab.RoomError` with Twilio's code; bad options are `ValueError`s.
    """
    quality = NetworkQualityConfiguration.from_option(network_quality)
    profile = BandwidthProfile.from_options(bandwidth_profile) if bandwidth_profile is not None else None
    if not isinstance(dominant_speaker, bool):
        raise ValueError(f"dominant_speaker must be True or False, got {dominant_speaker!r}")
    room = Room(url, ice_servers, decode_media, record)
    room._network_quality = quality
    room._dominant_speaker_enabled = dominant_speaker
    room._bandwidth_profile = profile
    if link is not None:
        link.attach(room.pc)  # before signaling: the server's first offer creates the ICE transport
        room.link = link
    try:
        await room._connect(token, name, automatic_subscription, metadata)
        for track in tracks:
            await room.local_participant.publish_track(track)  # type: ignore[union-attr]
    except BaseException:
        await room._teardown()
        raise
    return room
