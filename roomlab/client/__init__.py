"""The client SDK: connect to a room, publish and subscribe to tracks, send and receive data."""

from .connect import connect
from .data_track import LocalDataTrack, RemoteDataTrack
from .media_track import LocalAudioTrack, LocalVideoTrack, RemoteAudioTrack, RemoteVideoTrack, VideoLayer
from .participant import LocalParticipant, RemoteParticipant
from .publication import LocalTrackPublication, RemoteTrackPublication
from .room import Room

__all__ = [
    "LocalAudioTrack",
    "LocalDataTrack",
    "LocalParticipant",
    "LocalTrackPublication",
    "LocalVideoTrack",
    "RemoteAudioTrack",
    "RemoteDataTrack",
    "RemoteParticipant",
    "RemoteTrackPublication",
    "RemoteVideoTrack",
    "Room",
    "VideoLayer",
    "connect",
]
