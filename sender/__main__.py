"""`python -m sender`: the sending end of a one-way call.

    python -m sender --signaling ws://HOST:PORT --room NAME --source webcam[:INDEX]|FILE [--loop]
                     [--frames N] [--config FILE.yaml] [--drop-params P --seed N]
                     [--sender-stats FILE.json] [--dump-sent FILE.jsonl] [--trace-sender FILE.jsonl]
                     [--ice-server URL ... --ice-username U --ice-credential C] [--log-level INFO]

Exits 0 when the source has ended (file without --loop, or --frames reached) or on Ctrl-C
/ SIGTERM; 1 with a one-line message when the signaling server cannot be reached, the
source cannot be opened or disappears, or a file never shows a face.
"""

from __future__ import annotations

import os

# torch's OpenMP worker threads spin between frames and take a third of a core each on a
# 2-core machine; the live ends run torch single-threaded (synthesis: --threads).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import asyncio
import logging
import sys

from live.cli import add_connection_options, fail, ice_servers, install_stop_signals, run
from live.config import DEFAULT
from live.peer import PeerLink
from live.stats import StatsFile
from codec_core.config import ConfigError
from codec_core.video import VideoError
from sender.cli import add_sender_options, build_sender
from sender.half import NoFaceFound
from sender.source import SourceError
from signaling.client import SignalingError

PROG = "python -m sender"
log = logging.getLogger("sender")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Send a face to a live call: a VVC key frame, "
                                     "then a few dozen face parameters per frame over WebRTC data channels.")
    add_connection_options(parser)
    add_sender_options(parser)
    return parser


async def amain(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        ice = ice_servers(args)
        source, analyser, half = build_sender(args, DEFAULT)
    except (SourceError, ConfigError, VideoError, ValueError) as exc:
        return fail(PROG, str(exc))
    link = PeerLink(args.signaling, args.room, [half], ice, DEFAULT)
    stats = StatsFile(args.sender_stats, half.stats.snapshot, DEFAULT.stats_interval_s)
    try:
        await link.open()
        stats.start()
        await half.run(stop)
        return 0
    except SignalingError as exc:
        return fail(PROG, str(exc))
    except (SourceError, NoFaceFound) as exc:
        return fail(PROG, str(exc))
    finally:
        await link.close()
        await stats.close()
        analyser.close()
        source.close()


def main(argv: list[str] | None = None) -> int:
    return run(build_parser, amain, argv)


if __name__ == "__main__":
    sys.exit(main())
