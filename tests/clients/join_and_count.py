"""A client process for tests: joins a room, says so, then counts the messages it receives on data
tracks (each starts with its number, 8 digits). Once it has `expected` of them, or none has come for
5 s, it prints how many, whether they came in order, and how many the server says it dropped for it;
then it waits to be killed."""

import asyncio
import sys
import time

import roomlab

QUIET_S = 5.0


async def main(url: str, token: str, room_name: str, expected: int) -> None:
    room = await roomlab.connect(url, token, name=room_name)
    received: list[int] = []
    last = time.monotonic()

    def on_message(data: bytes, track: roomlab.RemoteDataTrack, participant: roomlab.RemoteParticipant) -> None:
        nonlocal last
        received.append(int(data[:8]))
        last = time.monotonic()

    room.on("track_message", on_message)
    print("joined", room.local_participant.sid, flush=True)
    while len(received) < expected and (not received or time.monotonic() - last < QUIET_S):
        await asyncio.sleep(0.1)
    tracks = [
        publication.track
        for participant in room.participants.values()
        for publication in participant.tracks.values()
        if isinstance(publication.track, roomlab.RemoteDataTrack)
    ]
    dropped = sum(track.messages_dropped for track in tracks)
    print("received", len(received), received == list(range(len(received))), dropped, flush=True)
    await asyncio.sleep(120)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4], int(sys.argv[4])))
