"""Focused changes to aiortc 1.16.0's SCTP transport, where its data channels spend their time.

Measured (baselines.md): aiortc acknowledges every received packet with a SACK of its own, and
sends every chunk in a packet of its own. Both cost a DTLS record, a CRC32c and a datagram each.
This module changes two methods of `RTCSctpTransport`, within the standard (RFC 4960):

- Delayed acknowledgement (RFC 4960 §6.2): a SACK for at least every second packet that carried
  DATA, and within `SACK_DELAY` of any DATA not yet acknowledged; at once when a gap or a
  duplicate is seen (so fast retransmit is not delayed), as the RFC asks.
- Bundling (RFC 4960 §6.10): while the data channels' queue is handed to SCTP, and while one
  `_transmit()` call chooses what to send (retransmissions, new DATA, FORWARD-TSN), chunks are
  collected instead of sent, then leave bundled into as few packets as fit `MAX_PACKET_BYTES`.
  (aiortc hands queued messages to SCTP one at a time and transmits each at once, so without
  this every small message costs a packet.)

- No scan without cause: aiortc's `_transmit()` walks every outstanding chunk looking for ones to
  retransmit, on every call (each SACK, each message). Chunks are marked for retransmission only
  in fast recovery or when the T3 timer expires, so otherwise the walk is skipped.

Also, a malformed packet that bundles an INIT with other chunks is dropped instead of tripping
aiortc's `assert` (which would end the receiving task). Chromium's SCTP does both itself and
accepts both: the browser test exchanges data over a patched server. And the delayed SACK and a
closing channel's stream reset, which aiortc sends from tasks of their own, find a connection that
closed meanwhile quietly (it is no error, and nobody would retrieve it).

`install()` applies the changes once per process (roomlab's client and server call it on import);
they apply to every aiortc connection in the process. aiortc is pinned to 1.16.0 because this
module replaces private methods; `tests/test_sctp.py` covers them.
"""

from __future__ import annotations

import asyncio
from struct import pack
from typing import Any

import OpenSSL.SSL
from aiortc import rtcsctptransport
from aiortc.rtcsctptransport import Chunk, DataChunk, InitChunk, RTCSctpTransport, crc32c, parse_packet

#: Longest wait before acknowledging DATA (RFC 4960 allows 200 ms; short keeps RTT samples true).
SACK_DELAY = 0.010
#: Packets carrying DATA that may go unacknowledged before a SACK leaves at once.
SACK_EVERY_PACKETS = 2
#: Largest SCTP packet built by bundling (what aiortc itself sends at most: one full DATA chunk).
MAX_PACKET_BYTES = 1200

_original_transmit = RTCSctpTransport._transmit
_original_data_channel_flush = RTCSctpTransport._data_channel_flush
_original_send_chunk = RTCSctpTransport._send_chunk
_original_transmit_reconfig = RTCSctpTransport._transmit_reconfig
_installed = False


async def _handle_data(self: Any, data: bytes) -> None:
    """Handle a received packet; acknowledge DATA as RFC 4960 §6.2 allows, not packet by packet."""
    try:
        _, _, verification_tag, chunks = parse_packet(data)
    except ValueError:
        return
    if any(isinstance(chunk, InitChunk) for chunk in chunks):
        if len(chunks) != 1:
            return  # an INIT must travel alone (RFC 4960 §6.10)
        expected_tag = 0
    else:
        expected_tag = self._local_verification_tag
    if verification_tag != expected_tag:
        return
    for chunk in chunks:
        await self._receive_chunk(chunk)
    if not self._sack_needed:
        return
    unacked = getattr(self, "_roomlab_unacked_packets", 0) + 1
    if unacked >= SACK_EVERY_PACKETS or self._sack_misordered or self._sack_duplicates:
        await _sack_now(self)
    else:
        self._roomlab_unacked_packets = unacked
        if getattr(self, "_roomlab_sack_timer", None) is None:
            loop = asyncio.get_running_loop()
            self._roomlab_sack_timer = loop.call_later(SACK_DELAY, _sack_later, self)


async def _sack_now(self: Any) -> None:
    timer = getattr(self, "_roomlab_sack_timer", None)
    if timer is not None:
        timer.cancel()
        self._roomlab_sack_timer = None
    self._roomlab_unacked_packets = 0
    if self._sack_needed:
        await self._send_sack()


def _sack_later(self: Any) -> None:
    self._roomlab_sack_timer = None
    if self._sack_needed and self._association_state == RTCSctpTransport.State.ESTABLISHED:
        asyncio.ensure_future(_sack_when_due(self))


async def _sack_when_due(self: Any) -> None:
    """The delayed SACK; the connection may have closed under it meanwhile, which is no error."""
    try:
        await _sack_now(self)
    except (ConnectionError, OpenSSL.SSL.Error):
        pass


async def _transmit_reconfig(self: Any) -> None:
    """A data channel's stream reset; when the channel closed because the connection is going
    away, the connection may be gone by the time it is sent, which is no error (aiortc starts it
    in a task of its own, whose error nobody would retrieve)."""
    try:
        await _original_transmit_reconfig(self)
    except (ConnectionError, OpenSSL.SSL.Error):
        pass


def _corked(original: Any) -> Any:
    """`original`, with the chunks sent during it collected, then sent bundled when the
    outermost corked call returns (the corked calls do not suspend while chunks are collected)."""

    async def corked(self: Any) -> None:
        depth = getattr(self, "_roomlab_cork_depth", 0)
        if depth == 0:
            self._roomlab_bundle = []
        self._roomlab_cork_depth = depth + 1
        try:
            await original(self)
        finally:
            self._roomlab_cork_depth = depth
            if depth == 0:
                bundle, self._roomlab_bundle = self._roomlab_bundle, None
        if depth == 0 and bundle:
            await _send_bundled(self, bundle)

    corked.__doc__ = original.__doc__
    return corked


class _AppendOnly:
    """The sent queue as `_transmit` sees it when no chunk can be waiting for retransmission:
    nothing to walk, and new chunks still go to the real queue."""

    __slots__ = ("append",)

    def __init__(self, queue: Any) -> None:
        self.append = queue.append

    def __iter__(self) -> Any:
        return iter(())


def _scan_only_when_needed(original: Any) -> Any:
    async def transmit(self: Any) -> None:
        if self._fast_recovery_exit is not None or getattr(self, "_roomlab_retransmit_pending", True):
            await original(self)
            self._roomlab_retransmit_pending = any(chunk._retransmit for chunk in self._sent_queue)
            return
        sent = self._sent_queue
        self._sent_queue = _AppendOnly(sent)
        try:
            await original(self)  # does not suspend: its sends are collected by the cork
        finally:
            self._sent_queue = sent

    return transmit


def _t3_expired(self: Any) -> None:
    self._roomlab_retransmit_pending = True  # T3 marks every outstanding chunk for retransmission
    _original_t3_expired(self)


_original_t3_expired = RTCSctpTransport._t3_expired
_transmit = _corked(_scan_only_when_needed(_original_transmit))
_data_channel_flush = _corked(_original_data_channel_flush)


async def _send_chunk(self: Any, chunk: Chunk) -> None:
    bundle = getattr(self, "_roomlab_bundle", None)
    if bundle is not None:
        bundle.append(chunk)  # sent by _transmit when it is done choosing what to send
        return
    await _original_send_chunk(self, chunk)


def _packet(self: Any, body: bytes) -> bytes:
    header = pack("!HHL", self._local_port, self._remote_port, self._remote_verification_tag)
    checksum = crc32c(header + b"\x00\x00\x00\x00" + body)
    return header + pack("<L", checksum) + body


async def _send_bundled(self: Any, chunks: list[Chunk]) -> None:
    room = MAX_PACKET_BYTES - rtcsctptransport.SCTP_COMMON_HEADER_LENGTH
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        data = bytes(chunk)
        if parts and size + len(data) > room:
            await self.transport._send_data(_packet(self, b"".join(parts)))
            parts, size = [], 0
        parts.append(data)
        size += len(data)
    if parts:
        await self.transport._send_data(_packet(self, b"".join(parts)))


def install() -> None:
    """Apply the changes to aiortc's RTCSctpTransport (once; later calls do nothing)."""
    global _installed
    if _installed:
        return
    RTCSctpTransport._handle_data = _handle_data  # type: ignore[method-assign]
    RTCSctpTransport._transmit = _transmit  # type: ignore[method-assign]
    RTCSctpTransport._data_channel_flush = _data_channel_flush  # type: ignore[method-assign]
    RTCSctpTransport._t3_expired = _t3_expired  # type: ignore[method-assign]
    RTCSctpTransport._send_chunk = _send_chunk  # type: ignore[method-assign]
    RTCSctpTransport._transmit_reconfig = _transmit_reconfig  # type: ignore[method-assign]
    _installed = True


def installed() -> bool:
    return _installed


__all__ = ["DataChunk", "install", "installed"]
