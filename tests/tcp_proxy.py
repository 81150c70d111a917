"""A TCP proxy on 127.0.0.1 for tests that break a connection on purpose: `drop()` closes every
connection passing through it (each end sees its peer hang up, with no WebSocket close frame),
and while `refusing` it hangs up on new ones at once. Everything stays on loopback."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0
        #: hang up on new connections at once (the client cannot get back through)
        self.refusing = False
        #: connections accepted so far (refused ones included)
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refusing:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, upstream_writer))
        pipes = [
            asyncio.ensure_future(self._pipe(reader, upstream_writer)),
            asyncio.ensure_future(self._pipe(upstream_reader, writer)),
        ]
        self._pipes.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for pipe in pipes:
            pipe.cancel()
        for end in (writer, upstream_writer):
            end.close()
            self._writers.discard(end)
        self._pipes.difference_update(pipes)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    def drop(self) -> int:
        """Hang up both ends of every connection now; return how many ends were closed."""
        ends = list(self._writers)
        for writer in ends:
            writer.close()
        self._writers.clear()
        return len(ends)

    async def close(self) -> None:
        self.drop()
        for pipe in list(self._pipes):
            pipe.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
