"""When a peer connection may be renegotiated without losing the media it negotiates.

aiortc 1.16.0 starts the RTP senders and receivers of a negotiation once it completes, but only
if the DTLS transport is already connected then; a negotiation completed while DTLS is still
connecting starts nothing, and nothing starts it later (its media silently goes nowhere). A
participant that subscribes to a track published while its own connection is still coming up
meets exactly that. So every negotiation after the first waits until the connection is up, on the
server (before it offers) and on the client (before it applies an offer).
"""

from __future__ import annotations

import asyncio

from aiortc import RTCPeerConnection

from .bundle import primary_transport

#: DTLS states after which waiting longer cannot help.
SETTLED_STATES = ("connected", "failed", "closed")


async def transport_ready(pc: RTCPeerConnection, timeout: float) -> None:
    """Return once the transport that carries `pc`'s BUNDLE group is connected (or has failed or
    closed); TimeoutError after `timeout` s. (Not `pc.connectionState`: a transceiver added since
    the last negotiation sits on a transport of its own until negotiated, which never connects.)"""
    transport = primary_transport(pc)
    if transport is None or transport.state in SETTLED_STATES:
        return
    settled = asyncio.get_running_loop().create_future()

    def on_state() -> None:
        if transport.state in SETTLED_STATES and not settled.done():
            settled.set_result(None)

    transport.on("statechange", on_state)
    try:
        await asyncio.wait_for(settled, timeout)
    finally:
        transport.remove_listener("statechange", on_state)
