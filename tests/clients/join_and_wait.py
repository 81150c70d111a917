"""A client process for tests: joins a room, publishes a data track, says so, then waits to be
killed (it never leaves by itself within the test's time)."""

import asyncio
import sys

import roomlab


async def main(url: str, token: str, room: str) -> None:
    joined = await roomlab.connect(url, token, name=room, tracks=[roomlab.LocalDataTrack("heartbeat")])
    print("joined", joined.local_participant.sid, flush=True)
    await asyncio.sleep(120)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
