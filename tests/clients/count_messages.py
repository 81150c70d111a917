"""A subscriber in a process of its own, for tests that need one that keeps up: joins, says so,
counts the messages of one data track and of publish_data (each payload starts with its number),
then prints how many arrived, whether in order, and how many the server dropped for it."""

import asyncio
import sys

import roomlab


async def main(url: str, token: str, room: str, track_name: str, expected: int) -> None:
    room_ = await roomlab.connect(url, token, name=room)
    numbers: dict[str, list[int]] = {"track": [], "data": []}
    dropped: list[int] = []
    done = asyncio.get_running_loop().create_future()

    def arrived(kind: str, data: bytes) -> None:
        numbers[kind].append(int(data[:8]))
        if len(numbers["track"]) + len(numbers["data"]) == expected and not done.done():
            done.set_result(None)

    def subscribed(track, publication, participant) -> None:  # type: ignore[no-untyped-def]
        if track.name == track_name:
            track.on("message", lambda data: arrived("track", data))
            track.on("dropped", dropped.append)

    room_.on("track_subscribed", subscribed)
    room_.on("data_received", lambda data, participant, topic: arrived("data", data))
    print("joined", flush=True)
    try:
        await asyncio.wait_for(done, 60)
    except TimeoutError:
        pass
    for kind, got in numbers.items():
        print(kind, len(got), got == list(range(len(got))), flush=True)
    print("dropped", sum(dropped), flush=True)
    await room_.disconnect()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5], int(sys.argv[5])))
