"""roomlab's changes to aiortc's SCTP (roomlab/net/sctp.py), on real aiortc peer connections."""

from __future__ import annotations

import asyncio
from struct import pack

from aiortc import RTCPeerConnection
from aiortc.rtcsctptransport import DataChunk, InitChunk, crc32c

from roomlab.net import ice, sctp

from .conftest import eventually


async def connected_pair(**channel_options):  # type: ignore[no-untyped-def]
    sctp.install()
    pc1, pc2 = RTCPeerConnection(ice.rtc_configuration()), RTCPeerConnection(ice.rtc_configuration())
    channel = pc1.createDataChannel("test", **channel_options)
    remote: list = []
    pc2.on("datachannel", remote.append)
    await pc1.setLocalDescription(await pc1.createOffer())
    await pc2.setRemoteDescription(pc1.localDescription)
    await pc2.setLocalDescription(await pc2.createAnswer())
    await pc1.setRemoteDescription(pc2.localDescription)
    await eventually(lambda: remote and channel.readyState == "open" and remote[0].readyState == "open")
    return pc1, pc2, channel, remote[0]


async def test_receiver_acknowledges_every_second_packet_not_each(monkeypatch):
    pc1, pc2, channel, remote = await connected_pair()
    try:
        receiver = pc2.sctp
        counts = {"data_packets": 0, "sacks": 0}
        handle, send_sack = receiver._handle_data, receiver._send_sack

        async def counting_handle(data: bytes) -> None:
            counts["data_packets"] += data[12] == 0  # first chunk type 0: DATA
            await handle(data)

        async def counting_sack() -> None:
            counts["sacks"] += 1
            await send_sack()

        receiver._handle_data, receiver._send_sack = counting_handle, counting_sack
        got: list = []
        remote.on("message", got.append)
        for i in range(400):
            channel.send(b"%04d" % i + b"x" * 1000)  # about one packet each
            if i % 20 == 19:
                await asyncio.sleep(0.005)
        await eventually(lambda: len(got) == 400, timeout=10)
        assert got[-1].startswith(b"0399")
        assert counts["data_packets"] >= 300
        assert counts["sacks"] <= 0.6 * counts["data_packets"], counts  # aiortc alone: one SACK per packet
        assert counts["sacks"] >= counts["data_packets"] // 2 - 5, counts  # but never fewer than RFC 4960 asks
    finally:
        await pc1.close()
        await pc2.close()


async def test_small_chunks_travel_bundled():
    pc1, pc2, channel, remote = await connected_pair()
    try:
        sender = pc1.sctp
        packets: list[bytes] = []
        send_data = sender.transport._send_data

        async def counting_send(data: bytes) -> None:
            packets.append(data)
            await send_data(data)

        sender.transport._send_data = counting_send
        got: list = []
        remote.on("message", got.append)
        first_tsn = sender._local_tsn
        for i in range(300):
            channel.send(b"m%03d" % i)  # tiny messages, many queued at once
        await eventually(lambda: len(got) == 300, timeout=10)
        data_chunks = (sender._local_tsn - first_tsn) % 2**32
        data_packets = [p for p in packets if p[12] == 0]
        assert data_chunks == 300
        assert len(data_packets) < data_chunks / 3, (len(data_packets), data_chunks)
        assert max(len(p) for p in packets) <= sctp.MAX_PACKET_BYTES
        assert got == [b"m%03d" % i for i in range(300)]
        assert sender._roomlab_retransmit_pending is False  # nothing lost: the retransmit walk is skipped
    finally:
        await pc1.close()
        await pc2.close()


async def test_reliable_channel_recovers_every_message_under_deterministic_loss():
    pc1, pc2, channel, remote = await connected_pair()
    try:
        sender = pc1.sctp
        send_data = sender.transport._send_data
        sent = {"n": 0}

        async def lossy_send(data: bytes) -> None:
            sent["n"] += 1
            if sent["n"] % 7 == 0:  # every 7th packet from pc1 is lost
                return
            await send_data(data)

        sender.transport._send_data = lossy_send
        got: list = []
        remote.on("message", got.append)
        for i in range(300):
            channel.send(b"%03d" % i * 20)
            if i % 10 == 9:
                await asyncio.sleep(0.002)
        await eventually(lambda: len(got) == 300, timeout=30)
        assert got == [b"%03d" % i * 20 for i in range(300)]  # all, in order, despite the losses
    finally:
        await pc1.close()
        await pc2.close()


async def test_init_bundled_with_other_chunks_is_dropped_not_fatal():
    pc1, pc2, channel, remote = await connected_pair()
    try:
        receiver = pc2.sctp
        header = pack("!HHL", receiver._remote_port, receiver._local_port, 0)
        body = bytes(InitChunk()) + bytes(DataChunk())
        packet = header + pack("<L", crc32c(header + b"\x00" * 4 + body)) + body
        await receiver._handle_data(packet)  # aiortc alone would fail an assert here
        got: list = []
        remote.on("message", got.append)
        channel.send("still here")
        assert await eventually(lambda: got) == ["still here"]
    finally:
        await pc1.close()
        await pc2.close()


def test_install_is_idempotent():
    from aiortc.rtcsctptransport import RTCSctpTransport

    sctp.install()
    handle = RTCSctpTransport._handle_data
    sctp.install()
    assert RTCSctpTransport._handle_data is handle and sctp.installed()


async def test_a_delayed_sack_after_the_connection_closed_is_quiet():
    pc1, pc2, channel, remote = await connected_pair()
    receiver = pc2.sctp
    await pc1.close()
    await pc2.close()
    failures: list = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: failures.append(context))
    try:
        receiver._sack_needed = True
        receiver._association_state = receiver.State.ESTABLISHED  # as when the timer was armed
        sctp._sack_later(receiver)
        await asyncio.sleep(0.05)
        import gc

        gc.collect()  # an unretrieved task exception is reported when the task is collected
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert failures == []
