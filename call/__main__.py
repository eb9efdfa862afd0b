"""`python -m call`: one end of a two-way face call (a sender half and a receiver half on one
peer connection).  Two of these in the same room are a two-party call in which each side
sees the other.

    python -m call --signaling ws://HOST:PORT --room NAME --source webcam[:INDEX]|FILE [--loop]
                   [--frames N] [--size 256|512] [--output OUT.mp4] [--window] [--stats STATS.json]
                   [--sender-stats FILE.json] [--device cpu|cuda] [--wait-peer SECONDS]
                   [--format FORMAT] [--decoder-format FORMAT] [--translator geometry|learned]
                   [--ice-server URL ... --ice-username U --ice-credential C] [--log-level INFO]

Either side may start first, leave, and come back.  It ends (status 0, output closed,
final stats written) on Ctrl-C / SIGTERM or when the window is closed; when its own
source has ended (file without --loop) and the other side's stream has ended or the other
side has left; or when the other side left and has not come back within --wait-peer
seconds.  `--format` is the feature format this end sends, `--decoder-format` how it plays
what it receives (default: the other side's own format; docs/call.md, "Feature formats in a
call").  Status 1 with a one-line message for the errors of `python -m sender` and
`python -m receiver`.  Started and stopped by `live.runner` (docs/call.md has the
shutdown order).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import live.threads  # noqa: F401  (first: one OpenMP thread, before torch loads)
from live.cli import add_connection_options, ice_servers
from live.config import DEFAULT
from live.runner import LiveRunner, run_command
from receiver.cli import add_receiver_options, build_receiver, check_receiver_args
from sender.cli import add_sender_options, build_sender

PROG = "python -m call"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="One end of a two-way face call: sends your face "
                                     "and shows the other side's.")
    add_connection_options(parser)
    add_sender_options(parser)
    add_receiver_options(parser)
    return parser


def build_runner(args: argparse.Namespace) -> LiveRunner:
    """Both halves in one runner (raises SetupError, SourceError, ValueError)."""
    ice = ice_servers(args)
    check_receiver_args(args)
    sending = build_sender(args, DEFAULT)
    receiving = build_receiver(args, DEFAULT)
    if receiving.window is not None:          # `u` in the window mutes this end's voice
        loop = asyncio.get_running_loop()
        receiving.window.on_mute = lambda: loop.call_soon_threadsafe(sending.toggle_mute)
    return LiveRunner(args.signaling, args.room, sending=sending, receiving=receiving, ice_servers=ice,
                      config=DEFAULT, wait_peer=args.wait_peer, stats=args.stats, sender_stats=args.sender_stats)


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, build_parser, build_runner, argv)


if __name__ == "__main__":
    sys.exit(main())
