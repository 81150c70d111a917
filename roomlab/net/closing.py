"""Closing aiortc peer connections promptly, however the program ends.

`RTCPeerConnection.close()` in aiortc 1.16.0 can wait for ever when the tasks it stops were
cancelled first, which is exactly what `asyncio.run()` does when `main()` raises or is cancelled
(and on Ctrl-C): it cancels every task at once, then waits for them all. Three of aiortc's
`stop()` methods wait on something a cancelled task would have done:

- `RTCIceTransport.stop()` awaits its ICE monitor task, which re-raises that task's cancellation
  inside `close()`: `close()` aborts half-way and leaves its "closed" future pending, so every
  later `close()` (aiortc starts one by itself when DTLS closes) waits for ever.
- `RTCRtpSender.stop()` and `RTCRtpReceiver.stop()` wait for their RTP/RTCP tasks to say they
  started; a task cancelled before its first step never says so.

This module waits for those tasks to finish instead (`asyncio.wait`, which never re-raises their
cancellation), and makes an interrupted `close()` release the other callers waiting on it.
`close_peer_connection()` adds a bounded wait as the backstop, then releases what must not
outlive the connection (decoder threads, which are not daemon threads and would hold up the
interpreter's exit, and ICE sockets). `install()` applies the changes once per process; aiortc
is pinned to 1.16.0 because they replace private methods (tests/test_exits.py covers them).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiortc import RTCIceTransport, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender

log = logging.getLogger(__name__)

#: Seconds `close_peer_connection()` lets aiortc close a connection before releasing it by force.
CLOSE_TIMEOUT = 2.0

_original_pc_close = RTCPeerConnection.close
_installed = False


async def _finished(*tasks: asyncio.Task[Any] | None) -> None:
    """Wait until the tasks are done, whether they ended, failed or were cancelled."""
    pending = [task for task in tasks if task is not None]
    if pending:
        await asyncio.wait(pending)


async def _ice_transport_stop(self: Any) -> None:
    if self.state != "closed":
        self._RTCIceTransport__setState("closed")
        await self._connection.close()
        monitor = self._RTCIceTransport__monitor_task
        if monitor is not None:
            await _finished(monitor)
            self._RTCIceTransport__monitor_task = None


async def _sender_stop(self: Any) -> None:
    if self._RTCRtpSender__started:
        self._RTCRtpSender__transport._unregister_rtp_sender(self)
        rtp, rtcp = self._RTCRtpSender__rtp_task, self._RTCRtpSender__rtcp_task
        rtp.cancel()
        rtcp.cancel()
        await _finished(rtp, rtcp)


async def _receiver_stop(self: Any) -> None:
    if self._RTCRtpReceiver__started:
        self._RTCRtpReceiver__transport._unregister_rtp_receiver(self)
        self._RTCRtpReceiver__stop_decoder()
        rtcp = self._RTCRtpReceiver__rtcp_task
        rtcp.cancel()
        await _finished(rtcp)


async def _pc_close(self: Any) -> None:
    try:
        await _original_pc_close(self)
    finally:
        closed = self._RTCPeerConnection__isClosed
        if isinstance(closed, asyncio.Future) and not closed.done():
            closed.set_result(True)  # interrupted half-way: later close() calls must not wait for ever


def _release(pc: RTCPeerConnection) -> None:
    """What must not outlive a connection whose close() did not finish: decoder threads (they
    would hold up the interpreter's exit) and the ICE sockets (the far end then notices)."""
    for transceiver in pc.getTransceivers():
        transceiver.receiver._RTCRtpReceiver__stop_decoder()  # type: ignore[attr-defined]
    transports = {t.receiver.transport for t in pc.getTransceivers()}
    if pc.sctp is not None:
        transports.add(pc.sctp.transport)
    for dtls in transports:
        connection = dtls.transport._connection
        for protocol in getattr(connection, "_protocols", ()):
            if protocol.transport is not None:
                protocol.transport.close()


async def close_peer_connection(pc: RTCPeerConnection, timeout: float = CLOSE_TIMEOUT) -> None:
    """Close `pc` within `timeout` seconds, even while tasks around it are being cancelled."""
    try:
        await asyncio.wait_for(pc.close(), timeout)
    except TimeoutError:
        log.warning("a peer connection did not close within %g s; released by force", timeout)
        _release(pc)
    except asyncio.CancelledError:
        _release(pc)
        raise


def install() -> None:
    """Apply the changes to aiortc (once; later calls do nothing)."""
    global _installed
    if _installed:
        return
    RTCIceTransport.stop = _ice_transport_stop  # type: ignore[method-assign]
    RTCRtpSender.stop = _sender_stop  # type: ignore[method-assign]
    RTCRtpReceiver.stop = _receiver_stop  # type: ignore[method-assign]
    RTCPeerConnection.close = _pc_close  # type: ignore[method-assign]
    _installed = True
