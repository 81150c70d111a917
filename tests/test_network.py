"""Everything stays on loopback: host candidates on 127.0.0.1 only, no STUN or TURN server."""

from __future__ import annotations

import json
import re

import aiohttp
import aioice.turn

import roomlab
from roomlab.net import ice
from roomlab.protocol import signaling


async def test_offers_carry_only_loopback_host_candidates(server):
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.url.replace("http", "ws") + signaling.PATH)
        await ws.send_str(json.dumps({"type": "connect", "version": 1, "token": server.token("n"), "room": "net"}))
        offer = None
        while offer is None:
            message = json.loads((await ws.receive(timeout=5)).data)
            offer = message if message["type"] == "offer" else None
        await ws.close()
    candidates = re.findall(r"a=candidate:(.*)", offer["sdp"])
    assert candidates
    for candidate in candidates:
        fields = candidate.split()
        assert fields[4] == "127.0.0.1" and fields[7] == "host", candidate


async def test_clients_use_no_ice_servers_unless_given(join):
    room = await join("alice", room="net")
    assert room.pc._RTCPeerConnection__configuration.iceServers == []
    assert ice.rtc_configuration().iceServers == []


def test_host_addresses_and_socket_buffer():
    assert ice.host_addresses() == ("127.0.0.1",)
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1"]
    assert aioice.turn.UDP_SOCKET_BUFFER_SIZE == 4 * 1024 * 1024
    try:
        ice.set_host_addresses(["127.0.0.1", "::1"])
        assert aioice.ice.get_host_addresses(use_ipv4=False, use_ipv6=True) == ["::1"]
    finally:
        ice.set_host_addresses()
    assert roomlab.net.ice.host_addresses() == ("127.0.0.1",)


def test_connectivity_checks_from_other_addresses_go_unanswered(monkeypatch):
    answered: list = []
    monkeypatch.setattr(ice, "_original_request_received", lambda self, message, addr, protocol: answered.append(addr))
    checks = aioice.ice.Connection.request_received
    checks(None, None, ("192.0.2.2", 50000), None)  # a browser's LAN socket
    checks(None, None, ("127.0.0.1", 50001), None)
    assert answered == [("127.0.0.1", 50001)]
