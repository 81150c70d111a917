"""A script for exit tests: joins a room twice (one room left connected, one inside `async with`),
publishes a data track, prints "connected", then ends the way argv[1] says: `raise` (an exception
in main), `cancel` (main cancelled), or `wait` (until the test interrupts it with SIGINT)."""

import asyncio
import sys

import roomlab


async def main(mode: str, url: str, token_a: str, token_b: str, room: str) -> None:
    first = await roomlab.connect(url, token_a, name=room, tracks=[roomlab.LocalDataTrack("chat")])
    async with await roomlab.connect(url, token_b, name=room) as second:
        first.local_participant.publish_data("hello")
        print("connected", first.local_participant.sid, second.local_participant.sid, flush=True)
        if mode == "raise":
            raise RuntimeError("boom while connected")
        if mode == "cancel":
            asyncio.current_task().cancel()  # type: ignore[union-attr]
        await asyncio.sleep(60)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
