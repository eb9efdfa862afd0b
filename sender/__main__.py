"""`python -m sender`: the sending end of a one-way call.

    python -m sender --signaling ws://HOST:PORT --room NAME --source webcam[:INDEX]|FILE [--loop]
                     [--frames N] [--config FILE.yaml] [--size 256|512] [--format ifvc|fomm|fv2v|cfte]
                     [--drop-params P --seed N]
                     [--sender-stats FILE.json] [--dump-sent FILE.jsonl] [--trace-sender FILE.jsonl]
                     [--ice-server URL ... --ice-username U --ice-credential C] [--log-level INFO]

Exits 0 when the source has ended (file without --loop, or --frames reached) or on Ctrl-C
/ SIGTERM; 1 with a one-line message when the signaling server cannot be reached, the
source cannot be opened or disappears, or a file never shows a face.  Started and stopped
by `live.runner` (docs/call.md has the shutdown order).
"""

from __future__ import annotations

import argparse
import sys

import live.threads  # noqa: F401  (first: one OpenMP thread, before torch loads)
from live.cli import add_connection_options, ice_servers
from live.config import DEFAULT
from live.runner import LiveRunner, run_command
from sender.cli import add_sender_options, build_sender

PROG = "python -m sender"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Send a face to a live call: a VVC key frame, "
                                     "then a few dozen face parameters per frame over WebRTC data channels.")
    add_connection_options(parser)
    add_sender_options(parser)
    return parser


def build_runner(args: argparse.Namespace) -> LiveRunner:
    """The sender half in its runner (raises SetupError, SourceError, ValueError)."""
    ice = ice_servers(args)
    return LiveRunner(args.signaling, args.room, sending=build_sender(args, DEFAULT), ice_servers=ice,
                      config=DEFAULT, sender_stats=args.sender_stats)


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, build_parser, build_runner, argv)


if __name__ == "__main__":
    sys.exit(main())
