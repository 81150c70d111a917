"""The `roomlab` command: `roomlab serve` runs a server in the foreground; `roomlab demo` shows one;
`roomlab whiteboard` serves the whiteboard demo page with simulated participants drawing on it."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .server import serve


def _print_server(server, out=sys.stdout) -> None:  # type: ignore[no-untyped-def]
    print(f"roomlab {__version__} serving on {server.url}", file=out)
    print(f"  account_sid  {server.account_sid}", file=out)
    print(f"  api_key      {server.api_key}", file=out)
    print(f"  api_secret   {server.api_secret}", file=out)
    out.flush()


def cmd_serve(args: argparse.Namespace) -> int:
    server = serve(
        host=args.host,
        port=args.port,
        db=args.db,
        api_key=args.api_key,
        api_secret=args.api_secret,
        media_path=args.media_path,
    )
    _print_server(server)
    print("  press Ctrl-C to stop", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait(args.duration)
    server.stop()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Start a server, manage a room through the official Twilio helper library, print it all."""
    with serve(db=args.db) as server:
        _print_server(server)
        client = server.twilio_client()
        room = client.video.v1.rooms.create(unique_name=args.room, type="group", max_participants=10)
        print(f"created room {room.sid} ({room.unique_name}), status {room.status}")
        token = server.token("alice", room=args.room)
        print(f"access token for alice in {args.room}: {token[:40]}...")
        listed = [r.unique_name for r in client.video.v1.rooms.list(status="in-progress")]
        print(f"in-progress rooms: {json.dumps(listed)}")
        ended = client.video.v1.rooms(room.sid).update(status="completed")
        print(f"ended room {ended.sid}: status {ended.status}, duration {ended.duration} s")
    return 0


def cmd_whiteboard(args: argparse.Namespace) -> int:
    """Serve the whiteboard page (twilio-video.js) while `Strokes` bots draw in its room."""
    import asyncio

    from .sim import Strokes
    from .sim.simulation import Simulation
    from .web import INSTALL_TWILIO_VIDEO, twilio_video_version

    version = twilio_video_version()
    if version is None:
        print(f"roomlab whiteboard: twilio-video is not installed: {INSTALL_TWILIO_VIDEO}", file=sys.stderr)
        return 2
    with serve(port=args.port) as server:
        _print_server(server)
        token = server.token(args.identity, room=args.room, ttl=86_400)
        print(f"whiteboard (twilio-video.js {version}), room {args.room!r}, {args.bots} bot(s) drawing:")
        print(f"  {server.url}/web/whiteboard.html?token={token}")
        print("  open it in Chromium or Chrome started with --allow-loopback-in-peer-connection; Ctrl-C stops")
        sys.stdout.flush()

        async def draw() -> None:
            simulation = Simulation(server, room=args.room, workers=0, seed=args.seed)
            simulation.add(args.bots, identity="bot-{i}", data=[Strokes(rate_hz=30, pause_s=2.0)])
            for sig in (signal.SIGINT, signal.SIGTERM):  # the bots leave, then the server stops
                asyncio.get_running_loop().add_signal_handler(sig, simulation.stop)
            await simulation.run(args.duration, progress=False)

        asyncio.run(draw())
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run a scenario file into a directory of Parquet frames and a PNG report. Ctrl-C ends the run
    early and saves what ran (exit 130); a second Ctrl-C quits without saving."""
    import asyncio

    from .sim.run_directory import RunDirectoryError
    from .sim.scenario import ScenarioError, run_scenario

    async def run() -> tuple[Path, bool]:
        loop = asyncio.get_running_loop()
        interrupt = asyncio.Event()
        main = asyncio.current_task()

        def on_interrupt() -> None:
            if interrupt.is_set() and main is not None:
                main.cancel()
            interrupt.set()

        loop.add_signal_handler(signal.SIGINT, on_interrupt)
        try:
            out = await run_scenario(
                args.scenario, args.out, progress=not args.quiet, force=args.force, interrupt=interrupt
            )
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        return out, interrupt.is_set()

    try:
        out, interrupted = asyncio.run(run())
    except (ScenarioError, RunDirectoryError) as error:
        print(f"roomlab simulate: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("roomlab simulate: interrupted again; nothing saved", file=sys.stderr)
        return 130
    if interrupted:
        summary = json.loads((out / "summary.json").read_text())
        print(
            f"roomlab simulate: interrupted at {summary['interrupted_at_s']:g} s of {summary['duration']:g} s;"
            f" the partial run is saved in {out}",
            file=sys.stderr,
        )
        return 130
    print(f"frames: {out}/*.parquet (roomlab.load({str(out)!r}))")
    print(f"report: {out / 'report.png'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="roomlab", description=__doc__)
    parser.add_argument("--version", action="version", version=f"roomlab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", help="run a room server in the foreground")
    run.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=0, help="port to bind (default: any free port)")
    run.add_argument("--db", default=None, help="SQLite file that keeps rooms across restarts (default: memory)")
    run.add_argument("--api-key", default=None, help="API key SID (SK...) to accept (default: generated)")
    run.add_argument("--api-secret", default=None, help="API key secret (default: generated)")
    run.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    run.add_argument(
        "--media-path",
        choices=("forward", "transcode"),
        default="forward",
        help="forward encoded media untouched (default) or decode and re-encode it per subscriber",
    )
    run.set_defaults(func=cmd_serve)

    demo = commands.add_parser("demo", help="start a server, create, list and end a room, and stop")
    demo.add_argument("--room", default="demo", help="room name (default: demo)")
    demo.add_argument("--db", default=None, help="SQLite file to keep the run's rooms in")
    demo.set_defaults(func=cmd_demo)

    board = commands.add_parser("whiteboard", help="serve the whiteboard demo page with bots drawing on it")
    board.add_argument("--bots", type=int, default=3, help="simulated participants drawing (default: 3)")
    board.add_argument("--room", default="whiteboard", help="room name (default: whiteboard)")
    board.add_argument("--identity", default="you", help="identity of the page's token (default: you)")
    board.add_argument("--port", type=int, default=8000, help="port to bind on 127.0.0.1 (default: 8000)")
    board.add_argument("--duration", type=float, default=3600, help="stop after this many seconds (default: 3600)")
    board.add_argument("--seed", type=int, default=None, help="seed for the bots' strokes")
    board.set_defaults(func=cmd_whiteboard)

    simulate = commands.add_parser("simulate", help="run a scenario file: frames (Parquet) and a PNG report")
    simulate.add_argument("scenario", help="scenario YAML file")
    simulate.add_argument(
        "--out",
        required=True,
        help="directory for the run's frames and report: new, empty, or an earlier run with --force",
    )
    simulate.add_argument("--force", action="store_true", help="replace the earlier run in --out (its files only)")
    simulate.add_argument("--quiet", action="store_true", help="no progress bar")
    simulate.set_defaults(func=cmd_simulate)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
