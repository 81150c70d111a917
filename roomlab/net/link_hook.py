"""Where a `Link` meets aiortc: the UDP datagrams of one RTCPeerConnection's ICE sockets.

The hook sits at aioice's `StunProtocol`, the asyncio datagram protocol of each ICE socket, per
instance (other connections in the process are untouched):

- outgoing: the protocol's `transport` becomes a `_ShapedTransport`, whose `sendto()` offers the
  datagram to the link's up direction. Both `send_data()` (DTLS, SRTP, SCTP) and `send_stun()`
  (connectivity checks, consent) write through it.
- incoming: the protocol's `datagram_received` is replaced by one that offers the datagram to the
  down direction and hands it to aioice's own when the link lets it out.

Why there and not at `RTCIceTransport._send`/`_recv`: STUN crosses the same queue and delay as
the media (ICE's round trip and consent see the path as it is), and the hook needs no task of its
own on the receiving side (`_recv` is a pull from a queue; `datagram_received` is a push).

How the sockets are found: the protocols exist once the ICE gatherer has gathered, so the hook
wraps each ICE connection's `gather_candidates()`; the connections exist once the peer connection
creates a DTLS transport, so the hook wraps that pc's private `__createDtlsTransport()` (every m-line
or data channel that needs a transport goes through it, in the first negotiation and in later
ones, bundled or not) and hooks the transports that exist already. aiortc and aioice are pinned
(pyproject.toml) because these are private names; tests/test_link.py covers them.

Deliveries are timed with `loop.call_at`, one timer per direction at a time for the packet at the
head of a FIFO, so a delayed packet never holds up the event loop and packets keep their order
(with `reorder`, each packet gets its own timer). A packet the link lets out at once is handed on
synchronously, as without a link.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from aioice.ice import Connection, StunProtocol
from aiortc import RTCPeerConnection
from aiortc.rtcicetransport import RTCIceTransport

from .link import IP_UDP_HEADER_BYTES, Direction, Link

log = logging.getLogger(__name__)

#: RFC 7983: a first byte in [0, 3] is STUN (the others here: DTLS 20-63, RTP/RTCP 128-191).
_STUN_FIRST_BYTE_MAX = 3


def _closed(transport: Any) -> bool:
    """Whether the socket is gone (aioice's TURN transport has no `is_closing()`)."""
    is_closing = getattr(transport, "is_closing", None)
    return bool(is_closing is not None and is_closing())


class _Conveyor:
    """One direction of a link on the event loop: asks the link when each datagram comes out, and
    hands it on then."""

    def __init__(self, link: Link, direction: Direction) -> None:
        self.link = link
        self.direction = direction
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fifo: deque[tuple[float, int, Callable[[], bool]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def offer(self, data: bytes, hand_on: Callable[[], bool]) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        loop = self._loop
        now = loop.time()
        size = len(data) + IP_UDP_HEADER_BYTES
        lossy = self.link.ice_loss or not data or data[0] > _STUN_FIRST_BYTE_MAX
        when = self.link.offer(self.direction, size, now, lossy)
        if when is None:
            return
        if self.link.shaper(self.direction).parameters.reorder:
            loop.call_at(when, self._hand_on, size, hand_on)
        elif not self._fifo and when <= now:
            self._hand_on(size, hand_on)
        else:
            self._fifo.append((when, size, hand_on))
            if self._timer is None:
                self._timer = loop.call_at(self._fifo[0][0], self._release)

    def _release(self) -> None:
        assert self._loop is not None
        self._timer = None
        now = self._loop.time()
        fifo = self._fifo
        while fifo and fifo[0][0] <= now:
            _, size, hand_on = fifo.popleft()
            self._hand_on(size, hand_on)
        if fifo:
            self._timer = self._loop.call_at(fifo[0][0], self._release)

    def _hand_on(self, size: int, hand_on: Callable[[], bool]) -> None:
        try:
            if not hand_on():
                return  # the socket closed while the datagram was on its way
        except Exception:  # one datagram's failure must not stop the others
            log.exception("link %s: handing on a datagram failed", self.direction)
            return
        assert self._loop is not None
        self.link.delivered(self.direction, size, self._loop.time())


class _ShapedTransport:
    """An ICE socket's datagram transport whose `sendto()` goes through the link's up direction."""

    def __init__(self, transport: asyncio.DatagramTransport, up: _Conveyor) -> None:
        self._roomlab_transport = transport
        self._roomlab_up = up

    def sendto(self, data: bytes, addr: Any = None) -> None:
        transport = self._roomlab_transport

        def send() -> bool:
            if _closed(transport):
                return False
            transport.sendto(data, addr)
            return True

        self._roomlab_up.offer(bytes(data), send)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._roomlab_transport, name)


def _hook_protocol(protocol: StunProtocol, up: _Conveyor, down: _Conveyor) -> None:
    if isinstance(protocol.transport, _ShapedTransport):
        return
    transport = protocol.transport
    protocol.transport = _ShapedTransport(transport, up)  # type: ignore[assignment]
    receive = protocol.datagram_received

    def datagram_received(data: bytes | str, addr: tuple[Any, ...]) -> None:
        def hand_on() -> bool:
            if _closed(transport):
                return False
            receive(data, addr)
            return True

        down.offer(data if isinstance(data, bytes) else data.encode(), hand_on)

    protocol.datagram_received = datagram_received  # type: ignore[method-assign]


def _hook_connection(connection: Connection, up: _Conveyor, down: _Conveyor) -> None:
    if getattr(connection, "_roomlab_link", None) is not None:
        return
    connection._roomlab_link = up.link  # type: ignore[attr-defined]
    gather = connection.gather_candidates

    async def gather_candidates() -> None:
        await gather()
        for protocol in connection._protocols:
            _hook_protocol(protocol, up, down)

    connection.gather_candidates = gather_candidates  # type: ignore[method-assign]
    for protocol in connection._protocols:  # gathered already: the link applies from now on
        _hook_protocol(protocol, up, down)


def attach(link: Link, pc: RTCPeerConnection) -> None:
    """Shape every datagram `pc` sends (up) and receives (down) with `link`.

    Call it before the pc negotiates, so that ICE's checks cross the link too; called later, it
    shapes from then on. A pc takes one link; a link may shape several pcs (they share the path).
    """
    if not isinstance(pc, RTCPeerConnection):
        raise ValueError(f"a link attaches to an aiortc RTCPeerConnection, got {type(pc).__name__}")
    if getattr(pc, "_roomlab_link", None) is not None:
        raise ValueError("this peer connection has a link already")
    pc._roomlab_link = link  # type: ignore[attr-defined]
    up, down = _Conveyor(link, "up"), _Conveyor(link, "down")
    create_dtls_transport = pc._RTCPeerConnection__createDtlsTransport  # type: ignore[attr-defined]

    def hook(ice_transport: RTCIceTransport) -> None:
        _hook_connection(ice_transport._connection, up, down)

    def create_hooked_dtls_transport() -> Any:
        dtls_transport = create_dtls_transport()
        hook(dtls_transport.transport)
        return dtls_transport

    pc._RTCPeerConnection__createDtlsTransport = create_hooked_dtls_transport  # type: ignore[attr-defined]
    for ice_transport in pc._RTCPeerConnection__iceTransports:  # type: ignore[attr-defined]
        hook(ice_transport)
    try:
        link.start(asyncio.get_running_loop().time())
    except RuntimeError:  # no loop running yet: the link starts with its first packet
        pass


def attached_link(pc: RTCPeerConnection) -> Link | None:
    """The link shaping `pc`, if any."""
    return getattr(pc, "_roomlab_link", None)
