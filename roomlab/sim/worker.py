"""A worker process of the farm: runs its share of the bots on an event loop of its own, and
streams their telemetry back to the parent over a pipe.

Messages over the pipe. Parent to worker: `start` (url, room, bot specs, duration, start time),
`link` (identity, changes), `bot` (identity, one of `BOT_COMMANDS` and its arguments), `stop`.
Worker to parent: `telemetry` (table, columns: new rows as in the live feed), `bot` (identity,
state, error), `done` (per-bot timer lateness).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
import time
from multiprocessing.connection import Client, Connection
from typing import Any

from .bot import Bot, settle

log = logging.getLogger(__name__)

#: Seconds between two pushes of new telemetry rows to the parent.
PUSH_INTERVAL = 0.5
#: What the parent may ask a bot to do while it runs (`Bot` methods).
BOT_COMMANDS = ("set_bandwidth_profile", "set_track_priority")


def worker_main(conn: Connection) -> None:
    """Run the bots the parent sends, over `conn`, until they are done."""
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(_serve(conn))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        conn.close()


def main(argv: list[str]) -> None:
    """`python -m roomlab.sim.worker ADDRESS AUTHKEY_HEX`: connect back to the parent and work.

    Workers are started as a module, not with multiprocessing's spawn, so that nothing of the
    parent's main script (or notebook) is imported into them."""
    address, key = argv
    # Ctrl-C reaches the whole process group: the parent stops the bots (and saves), not the signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker_main(Client(address, authkey=bytes.fromhex(key)))


async def _serve(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    start = conn.recv()
    bots = {spec.identity: Bot(spec, start["url"], start["room"]) for spec in start["bots"]}
    started = loop.time() + (start["started_at"] - time.time())  # the parent's wall-clock start
    lock = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        with lock:
            conn.send(message)

    def on_command(message: dict[str, Any] | None) -> None:
        if message is None or message.get("cmd") == "stop":
            for bot in bots.values():
                bot.stop()
        elif message.get("cmd") == "link":
            bot = bots.get(message["identity"])
            if bot is not None:
                try:
                    bot.change_link(message["changes"])
                except ValueError as exc:  # checked by the parent; a change that no longer fits is logged
                    log.warning("bot %s: link change %s refused: %s", bot.identity, message["changes"], exc)
        elif message.get("cmd") == "bot" and message.get("command") in BOT_COMMANDS:
            bot = bots.get(message["identity"])
            if bot is not None:
                try:
                    getattr(bot, message["command"])(*message["args"])
                except (ValueError, RuntimeError) as exc:  # checked by the parent; the bot's state may not fit
                    log.warning("bot %s: %s%s refused: %s", bot.identity, message["command"], message["args"], exc)

    def read_commands() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = None
            loop.call_soon_threadsafe(on_command, message)
            if message is None or message.get("cmd") == "stop":
                return

    threading.Thread(target=read_commands, name="roomlab-worker-commands", daemon=True).start()
    runs = [asyncio.ensure_future(bot.run(started, start["duration"])) for bot in bots.values()]
    cursors: dict[tuple[str, str], int] = {}
    states: dict[str, str] = {}
    joined = [0]

    def push() -> None:
        joined[0] = settle(list(bots.values()), joined[0])
        for bot in bots.values():
            if states.get(bot.identity) != bot.state:
                states[bot.identity] = bot.state
                send(
                    {
                        "type": "bot",
                        "identity": bot.identity,
                        "state": bot.state,
                        "error": bot.error,
                        "time": time.time(),
                    }
                )
            if bot.room is None:
                continue
            for name, table in bot.room.telemetry.tables.items():
                columns, cursors[(bot.identity, name)] = table.rows_since(cursors.get((bot.identity, name), 0))
                if columns:
                    send({"type": "telemetry", "table": name, "columns": columns})

    async def push_forever() -> None:
        while True:
            await asyncio.sleep(PUSH_INTERVAL)
            push()

    pusher = asyncio.ensure_future(push_forever())
    await asyncio.gather(*runs, return_exceptions=True)
    pusher.cancel()
    push()
    send({"type": "done", "lateness": {bot.identity: bot.lateness for bot in bots.values()}})


if __name__ == "__main__":
    main(sys.argv[1:])
