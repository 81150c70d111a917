"""A run that ends normally while the room is busy: offers in flight as one participant leaves,
the server stopped with another still connected. It must print nothing."""

import asyncio

import roomlab


async def main() -> None:
    server = roomlab.serve()
    alice = await roomlab.connect(server.url, server.token("alice"), name="busy")
    bob = await roomlab.connect(server.url, server.token("bob"), name="busy", tracks=[roomlab.LocalDataTrack("b0")])
    for i in range(1, 4):
        await bob.local_participant.publish_track(roomlab.LocalDataTrack(f"b{i}"))
    asyncio.ensure_future(bob.local_participant.publish_track(roomlab.LocalAudioTrack.tone()))
    await asyncio.sleep(0.05)
    await alice.disconnect()  # with offers for bob's new tracks on their way
    await asyncio.sleep(0.2)
    server.stop()  # bob is still connected: the server tells it 53000
    await asyncio.sleep(0.5)
    print(alice.state, bob.state, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
