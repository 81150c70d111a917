"""A focused fix of aiortc 1.16.0's BUNDLE handling, without which media silently goes nowhere.

aiortc's default bundle policy ("balanced") gives a new transceiver the transport of the first
transceiver of the same kind. When that first one is itself new (not yet answered, so still on a
transport of its own), the later one inherits that provisional transport and is marked bundled.
The answer then moves the first transceiver onto the BUNDLE group's transport and stops the
provisional one, but skips the transceivers marked bundled: they stay on a stopped transport, so
their senders never send and their receivers never receive. This happens whenever two audio (or
two video) transceivers are added in one negotiation: a participant joining a room with several
talkers, or several talkers joining together.

`install()` wraps `setRemoteDescription` (on the offering and the answering side alike): once a
description is applied, every transceiver of the BUNDLE group is moved onto the group's transport,
before aiortc starts its senders and receivers. `tests/test_media_matrix.py` covers it.
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCDtlsTransport, RTCPeerConnection

_original_set_remote_description = RTCPeerConnection.setRemoteDescription
_installed = False


def bundle_group(sdp: str) -> list[str]:
    """The mids of an SDP's BUNDLE group, in order (the first one's transport carries them all)."""
    for line in sdp.splitlines():
        if line.startswith("a=group:BUNDLE "):
            return line.split()[1:]
    return []


def primary_transport(pc: RTCPeerConnection) -> RTCDtlsTransport | None:
    """The DTLS transport that carries the BUNDLE group (None before the first negotiation)."""
    description = pc.remoteDescription
    mids = bundle_group(description.sdp) if description is not None else []
    if not mids:
        return None
    sctp = pc.sctp
    if sctp is not None and sctp.mid == mids[0]:
        return sctp.transport
    return next((t.receiver.transport for t in pc.getTransceivers() if t.mid == mids[0]), None)


def rebundle(pc: RTCPeerConnection) -> int:
    """Move every transceiver of the BUNDLE group onto the group's transport; returns how many moved."""
    primary = primary_transport(pc)
    if primary is None:
        return 0
    mids = bundle_group(pc.remoteDescription.sdp)
    moved = 0
    for transceiver in pc.getTransceivers():
        if transceiver.mid in mids and transceiver.receiver.transport is not primary:
            transceiver.receiver.setTransport(primary)
            transceiver.sender.setTransport(primary)
            transceiver._bundled = True
            moved += 1
    return moved


async def _set_remote_description(self: RTCPeerConnection, sessionDescription: Any) -> None:  # noqa: N803
    await _original_set_remote_description(self, sessionDescription)
    # aiortc has only scheduled its connect step: this runs before it starts senders and receivers
    rebundle(self)


def install() -> None:
    """Apply the fix to every RTCPeerConnection of the process (once; later calls do nothing)."""
    global _installed
    if _installed:
        return
    RTCPeerConnection.setRemoteDescription = _set_remote_description  # type: ignore[method-assign]
    _installed = True


def installed() -> bool:
    return _installed
