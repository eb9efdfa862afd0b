"""`python -m receiver`: the receiving end of a one-way call.

    python -m receiver --signaling ws://HOST:PORT --room NAME [--output OUT.mp4] [--window]
                       [--stats STATS.json] [--device cpu|cuda] [--wait-peer SECONDS]
                       [--dump-levels FILE.jsonl] [--trace FILE.jsonl]
                       [--ice-server URL ... --ice-username U --ice-credential C] [--log-level INFO]

Waits in the room for a sender, then decodes and synthesizes every frame as it arrives.
It ends (status 0, output closed, final stats written) when the sender's stream ends, on
Ctrl-C / SIGTERM, when the window is closed, or when a peer that left has not come back
within --wait-peer seconds (default 30; the output file and stats are finalised at once
when it leaves).  Status 1 with a one-line message: signaling server unreachable, room
full, no display for --window, no CUDA for --device cuda.
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
from receiver.cli import SetupError, add_receiver_options, build_receiver, check_receiver_args, stop_worker
from receiver.half import ReceiverHalf
from signaling.client import SignalingError

PROG = "python -m receiver"
log = logging.getLogger("receiver")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Receive a face from a live call and synthesize it.")
    add_connection_options(parser)
    add_receiver_options(parser)
    return parser


async def watch_receiver(half: ReceiverHalf, link: PeerLink, stop: asyncio.Event, wait_peer: float,
                         stats: StatsFile) -> str:
    """Wait until the call is over for this receiver; returns why."""
    in_session = False
    while True:
        if stop.is_set():
            return "interrupted"
        if half.quit_requested:
            return "window closed"
        if half.finished():
            return "the sender's stream ended"
        if half.session is None and in_session:
            stats.write(final=False)        # the peer left: numbers on disk now
        in_session = half.session is not None
        if half.session is None and link.sessions_opened > 0:
            if link.peer_absent_for() > wait_peer:
                return f"the peer did not come back within {wait_peer:g} s"
            if link.signaling_lost.is_set():
                return "the peer left and the signaling server is gone"
        elif half.session is None and link.signaling_lost.is_set():
            return "the signaling server is gone"
        await asyncio.sleep(0.05)


async def amain(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        ice = ice_servers(args)
        check_receiver_args(args)
    except (SetupError, ValueError) as exc:
        return fail(PROG, str(exc))
    half, worker = build_receiver(args, DEFAULT)
    link = PeerLink(args.signaling, args.room, [half], ice, DEFAULT)
    stats = StatsFile(args.stats, half.stats.snapshot, DEFAULT.stats_interval_s)
    status = 0
    try:
        await link.open()
        stats.start()
        reason = await watch_receiver(half, link, stop, args.wait_peer, stats)
        log.info("call over: %s", reason)
    except SignalingError as exc:
        status = fail(PROG, str(exc))
    finally:
        await link.close()
        await stop_worker(worker)
        half.close()
        half.stats.state = "ended"
        await stats.close()
    s = half.stats.snapshot()
    log.info("frames: %d received, %d rendered, %d lost; latency median %s ms, p95 %s ms; params %s kbps",
             s["frames_received"], s["frames_rendered"], s["frames_lost"], s["latency_ms"]["median"],
             s["latency_ms"]["p95"], s["param_kbps"])
    return status


def main(argv: list[str] | None = None) -> int:
    return run(build_parser, amain, argv)


if __name__ == "__main__":
    sys.exit(main())
