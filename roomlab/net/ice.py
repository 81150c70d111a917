"""ICE on loopback: which host addresses aioice gathers, and an RTCConfiguration with no servers.

aioice never gathers 127.0.0.1 by itself (RFC 8445 forbids loopback candidates), and aiortc falls
back to a public STUN server when `iceServers` is unset. roomlab gathers host candidates on
127.0.0.1 only unless the user names other addresses, and contacts no STUN or TURN server unless
the user configures one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aioice.ice
import aioice.turn
from aiortc import RTCConfiguration, RTCIceServer

LOOPBACK = ("127.0.0.1",)
#: UDP receive buffer for ICE sockets. aioice's 256 KiB lets the kernel drop bursts of small
#: datagrams even on loopback, which stalls SCTP; 4 MiB (the usual rmem_max) does not.
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024

_host_addresses: tuple[str, ...] = LOOPBACK
_original_get_host_addresses = aioice.ice.get_host_addresses
_original_request_received = aioice.ice.Connection.request_received


def _configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return [a for a in _host_addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


def _checks_from_host_addresses_only(self: aioice.ice.Connection, message: Any, addr: Any, protocol: Any) -> None:
    """Answer connectivity checks only from the configured addresses.

    A peer with other interfaces (a browser on a machine with a LAN address) may send checks
    from them too; aioice would take such a source as a peer-reflexive candidate and could pick
    it. Unanswered, those checks fail, and the pair on the configured addresses is the one used.
    """
    if addr[0] not in _host_addresses:
        return
    _original_request_received(self, message, addr, protocol)


def set_host_addresses(addresses: Sequence[str] | None = LOOPBACK) -> None:
    """Gather host candidates on these addresses only (default 127.0.0.1), and answer
    connectivity checks from them only; None restores aioice's own behaviour (every interface)."""
    global _host_addresses
    if addresses is None:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        aioice.ice.Connection.request_received = _original_request_received  # type: ignore[method-assign]
        return
    if isinstance(addresses, str) or not addresses:
        raise ValueError("addresses must be a non-empty list of IP address strings, or None")
    _host_addresses = tuple(addresses)
    aioice.ice.get_host_addresses = _configured_host_addresses
    aioice.ice.Connection.request_received = _checks_from_host_addresses_only  # type: ignore[method-assign]


def host_addresses() -> tuple[str, ...]:
    return _host_addresses


def rtc_configuration(ice_servers: Sequence[RTCIceServer] | None = None) -> RTCConfiguration:
    """An RTCConfiguration with exactly the ICE servers given (none by default).

    The bundle policy stays aiortc's default: with max-bundle, an offer whose data channels were
    created before its first media m-line puts no candidates on that m-line, and ICE fails.
    """
    return RTCConfiguration(iceServers=list(ice_servers or []))


set_host_addresses(LOOPBACK)
aioice.turn.UDP_SOCKET_BUFFER_SIZE = UDP_RECEIVE_BUFFER
