"""`python -m receiver`: the receiving end of a one-way call.

    python -m receiver --signaling ws://HOST:PORT --room NAME [--output OUT.mp4] [--window]
                       [--stats STATS.json] [--device cpu|cuda] [--threads N] [--wait-peer SECONDS]
                       [--decoder-format ifvc|fomm|fv2v|cfte] [--translator geometry|learned]
                       [--dump-levels FILE.jsonl] [--trace FILE.jsonl] [--dump-keyframes DIR]
                       [--ice-server URL ... --ice-username U --ice-credential C] [--log-level INFO]

Waits in the room for a sender, then decodes and synthesizes every frame as it arrives.
It ends (status 0, output closed, final stats written) when the sender's stream ends, on
Ctrl-C / SIGTERM, when the window is closed, or when a peer that left has not come back
within --wait-peer seconds (default 30; the output file and stats are finalised at once
when it leaves).  Status 1 with a one-line message: signaling server unreachable, room
full, no display for --window, no CUDA for --device cuda.  Started and stopped by
`live.runner` (docs/call.md has the shutdown order).
"""

from __future__ import annotations

import argparse
import sys

import live.threads  # noqa: F401  (first: one OpenMP thread, before torch loads)
from live.cli import add_connection_options, ice_servers
from live.config import DEFAULT
from live.runner import LiveRunner, run_command
from receiver.cli import add_receiver_options, build_receiver, check_receiver_args

PROG = "python -m receiver"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Receive a face from a live call and synthesize it.")
    add_connection_options(parser)
    add_receiver_options(parser)
    return parser


def build_runner(args: argparse.Namespace) -> LiveRunner:
    """The receiver half in its runner (raises SetupError, ValueError)."""
    ice = ice_servers(args)
    check_receiver_args(args)
    return LiveRunner(args.signaling, args.room, receiving=build_receiver(args, DEFAULT), ice_servers=ice,
                      config=DEFAULT, wait_peer=args.wait_peer, stats=args.stats)


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, build_parser, build_runner, argv)


if __name__ == "__main__":
    sys.exit(main())
